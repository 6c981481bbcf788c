package main

import (
	"encoding/json"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/isolated-workers/worker"
)

// RecordSeparatorJSON is a custom worker.Serializer: each message is a JSON
// object ended by the ASCII record separator 0x1E instead of a newline (the
// framing of RFC 7464 JSON text sequences, minus the leading RS). JSON never
// contains a raw 0x1E, since encoding/json escapes control characters, so
// the terminator cannot occur inside a frame.
//
// A Serializer has six methods: its name, which the host hands the worker
// so that both sides can check they agree; its framing (a terminator, or
// nil for length-prefixed frames); the encoding of payloads; and the
// encoding of the envelope around an already encoded payload. It must be
// safe for concurrent use, which a stateless struct is.
type RecordSeparatorJSON struct{}

// Name identifies the format. It must differ from every other format's.
func (RecordSeparatorJSON) Name() string { return "RecordSeparatorJSON" }

// Terminator returns the byte that ends each frame.
func (RecordSeparatorJSON) Terminator() []byte { return []byte{0x1E} }

// AppendPayload appends the JSON encoding of v.
func (RecordSeparatorJSON) AppendPayload(dst []byte, v any) ([]byte, error) {
	b, err := json.Marshal(v)
	return append(dst, b...), err
}

// DecodePayload decodes JSON into v.
func (RecordSeparatorJSON) DecodePayload(data []byte, v any) error {
	return json.Unmarshal(data, v)
}

// envelope is the wire shape of a message. The payload is embedded as the
// JSON it already is; it is omitted when the message has none.
type envelope struct {
	Type     string          `json:"type"`
	Tx       string          `json:"tx"`
	Payload  json.RawMessage `json:"payload,omitempty"`
	Deadline int64           `json:"deadline,omitempty"` // Unix milliseconds
}

// AppendMessage appends the envelope of m; m.Payload was produced by
// AppendPayload. Characters outside ASCII are escaped, as the built-in
// worker.JSON does: a TypeScript peer decodes UTF-8 per read from the
// socket, and would corrupt a character split between two reads.
func (RecordSeparatorJSON) AppendMessage(dst []byte, m *worker.Message) ([]byte, error) {
	e := envelope{Type: m.Type, Tx: m.Tx, Payload: m.Payload}
	if !m.Deadline.IsZero() {
		e.Deadline = m.Deadline.UnixMilli()
	}
	b, err := json.Marshal(&e)
	return appendEscaped(dst, b), err
}

// appendEscaped appends the JSON text js with every character outside ASCII
// written as a \uXXXX escape (a surrogate pair above U+FFFF). It is the
// same JSON: outside strings, JSON text is ASCII.
func appendEscaped(dst, js []byte) []byte {
	const hex = "0123456789abcdef"
	u := func(dst []byte, r rune) []byte {
		return append(dst, '\\', 'u', hex[r>>12&15], hex[r>>8&15], hex[r>>4&15], hex[r&15])
	}
	for _, r := range string(js) {
		switch {
		case r < utf8.RuneSelf:
			dst = append(dst, byte(r))
		case r > 0xFFFF:
			r1, r2 := utf16.EncodeRune(r)
			dst = u(u(dst, r1), r2)
		default:
			dst = u(dst, r)
		}
	}
	return dst
}

// ParseMessage decodes one frame, without its terminator, into m.
func (RecordSeparatorJSON) ParseMessage(frame []byte, m *worker.Message) error {
	var e envelope
	if err := json.Unmarshal(frame, &e); err != nil {
		return err
	}
	m.Type, m.Tx, m.Payload = e.Type, e.Tx, e.Payload // nil when absent
	m.Deadline = time.Time{}
	if e.Deadline != 0 {
		m.Deadline = time.UnixMilli(e.Deadline)
	}
	return nil
}

// Compile-time check that the type implements the interface.
var _ worker.Serializer = RecordSeparatorJSON{}
