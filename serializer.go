package worker

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"sync"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/isolated-workers/worker/internal/wire"
)

// Serializer turns messages into frames and back. The host and its worker
// must use the same one: the host hands the worker its Name at spawn, and a
// worker configured with another fails to start with ErrSerializerMismatch
// (an attaching host learns of a mismatch in the handshake).
//
// A frame on the wire is the output of AppendMessage followed by Terminator,
// or, when Terminator is empty, preceded by its length as a 4-byte
// big-endian integer. Implementations must be safe for concurrent use.
// JSON (the default, compatible with the TypeScript library) and Binary are
// built in.
type Serializer interface {
	// Name identifies the format; it must differ between formats.
	Name() string
	// Terminator returns the bytes that end a frame, or nil for
	// length-prefixed frames. The terminator must not occur inside a frame.
	Terminator() []byte
	// AppendPayload appends the encoding of v to dst.
	AppendPayload(dst []byte, v any) ([]byte, error)
	// DecodePayload decodes data, as produced by AppendPayload, into v.
	DecodePayload(data []byte, v any) error
	// AppendMessage appends the encoding of m, whose payload is already
	// encoded by AppendPayload, to dst.
	AppendMessage(dst []byte, m *Message) ([]byte, error)
	// ParseMessage decodes one frame into m. m.Payload may alias frame; it
	// must be nil when the frame has no payload. The Kind is set by the
	// caller, not the serializer.
	ParseMessage(frame []byte, m *Message) error
}

// envelopeCodec is the allocation-free path of the built-in serializers.
type envelopeCodec interface {
	appendEnvelope(dst []byte, typ, tx string, payload []byte, deadline int64) []byte
	parseEnvelope(frame []byte, e *wire.Envelope) error
}

// JSON is the default serializer: one JSON object per line, exactly as the
// TypeScript isolated-workers library writes them. Payloads are encoded with
// encoding/json; characters outside ASCII are escaped, so that a TypeScript
// receiver cannot corrupt a character split between two reads.
type JSON struct{}

// Name returns "JsonSerializer", the name the TypeScript library uses.
func (JSON) Name() string { return "JsonSerializer" }

var newline = []byte{'\n'}

// Terminator returns "\n".
func (JSON) Terminator() []byte { return newline }

type jsonEncoder struct {
	buf bytes.Buffer
	enc *json.Encoder
}

var jsonEncoders = sync.Pool{New: func() any {
	e := &jsonEncoder{}
	e.enc = json.NewEncoder(&e.buf)
	e.enc.SetEscapeHTML(false)
	return e
}}

// maxPooled bounds the buffers kept for reuse, so that one huge message does
// not pin its memory for the life of the process.
const maxPooled = 4 << 20

// AppendPayload appends v encoded by encoding/json, with non-ASCII escaped.
func (JSON) AppendPayload(dst []byte, v any) ([]byte, error) {
	switch b := v.(type) {
	case *[]byte:
		if b == nil {
			return append(dst, "null"...), nil
		}
		return appendJSONBytes(dst, *b), nil
	case []byte:
		return appendJSONBytes(dst, b), nil
	}
	if pl, p := planned(v); pl != nil {
		if out, ok := pl.encode(dst, p); ok {
			return out, nil
		}
	}
	e := jsonEncoders.Get().(*jsonEncoder)
	e.buf.Reset()
	err := e.enc.Encode(v)
	if err == nil {
		js := bytes.TrimSuffix(e.buf.Bytes(), newline)
		if wire.IsASCII(js) {
			dst = append(dst, js...)
		} else {
			dst = wire.AppendASCII(dst, js)
		}
	}
	if e.buf.Cap() <= maxPooled {
		jsonEncoders.Put(e)
	}
	return dst, err
}

// DecodePayload decodes data with encoding/json.
func (JSON) DecodePayload(data []byte, v any) error { return decodeJSON(data, v) }

// AppendMessage appends m as a JSON object.
func (j JSON) AppendMessage(dst []byte, m *Message) ([]byte, error) {
	return j.appendEnvelope(dst, m.Type, m.Tx, m.Payload, unixMilli(m.Deadline)), nil
}

// ParseMessage parses one JSON object.
func (j JSON) ParseMessage(frame []byte, m *Message) error {
	var e wire.Envelope
	if err := j.parseEnvelope(frame, &e); err != nil {
		return err
	}
	*m = Message{Type: string(e.Type), Tx: string(e.Tx), Payload: e.Payload, Deadline: fromUnixMilli(e.Deadline)}
	return nil
}

func (JSON) appendEnvelope(dst []byte, typ, tx string, payload []byte, deadline int64) []byte {
	return wire.AppendJSON(dst, typ, tx, payload, deadline)
}

func (JSON) parseEnvelope(frame []byte, e *wire.Envelope) error { return wire.ParseJSON(frame, e) }

// Binary is a compact serializer: length-prefixed frames, a small binary
// envelope, and payloads in CBOR (RFC 8949) by github.com/fxamacker/cbor,
// which honours `cbor` and then `json` struct tags. Byte slices travel as
// bytes, without base64. The TypeScript library does not speak it.
type Binary struct{}

var (
	cborEnc, _ = cbor.EncOptions{}.EncMode()
	cborDec, _ = cbor.DecOptions{
		DefaultMapType:  reflect.TypeOf(map[string]any(nil)),
		MaxNestedLevels: 256,
	}.DecMode()
)

// Name returns "BinarySerializer".
func (Binary) Name() string { return "BinarySerializer" }

// Terminator returns nil: Binary frames are length-prefixed.
func (Binary) Terminator() []byte { return nil }

// AppendPayload appends v encoded as CBOR.
func (Binary) AppendPayload(dst []byte, v any) ([]byte, error) {
	// A []byte payload is the common case for bulk data: encode its header
	// and append it directly, avoiding the encoder's intermediate copy.
	if b, ok := v.(*[]byte); ok && *b != nil {
		return append(appendCBORHead(dst, 2, uint64(len(*b))), *b...), nil
	}
	enc, err := cborEnc.Marshal(v)
	return append(dst, enc...), err
}

// DecodePayload decodes CBOR data into v.
func (Binary) DecodePayload(data []byte, v any) error { return cborDec.Unmarshal(data, v) }

// appendCBORHead appends a CBOR head of major type mt with argument n.
func appendCBORHead(dst []byte, mt byte, n uint64) []byte {
	mt <<= 5
	switch {
	case n < 24:
		return append(dst, mt|byte(n))
	case n <= 0xff:
		return append(dst, mt|24, byte(n))
	case n <= 0xffff:
		return append(dst, mt|25, byte(n>>8), byte(n))
	case n <= 0xffffffff:
		return append(dst, mt|26, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return append(dst, mt|27, byte(n>>56), byte(n>>48), byte(n>>40), byte(n>>32), byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
}

// AppendMessage appends m's binary envelope.
func (b Binary) AppendMessage(dst []byte, m *Message) ([]byte, error) {
	return b.appendEnvelope(dst, m.Type, m.Tx, m.Payload, unixMilli(m.Deadline)), nil
}

// ParseMessage parses a binary envelope.
func (b Binary) ParseMessage(frame []byte, m *Message) error {
	var e wire.Envelope
	if err := b.parseEnvelope(frame, &e); err != nil {
		return err
	}
	*m = Message{Type: string(e.Type), Tx: string(e.Tx), Payload: e.Payload, Deadline: fromUnixMilli(e.Deadline)}
	return nil
}

func (Binary) appendEnvelope(dst []byte, typ, tx string, payload []byte, deadline int64) []byte {
	return wire.AppendBinary(dst, typ, tx, payload, deadline)
}

func (Binary) parseEnvelope(frame []byte, e *wire.Envelope) error { return wire.ParseBinary(frame, e) }

// unixMilli rounds a deadline up to whole milliseconds, so that the
// worker's copy never expires before the caller's own.
func unixMilli(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	ms := t.UnixMilli()
	if t.After(time.UnixMilli(ms)) {
		ms++
	}
	return ms
}

func fromUnixMilli(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

// codec is a connection's view of its serializer: framing, the size limit
// and the fast path of the built-in serializers.
type codec struct {
	ser    Serializer
	fast   envelopeCodec
	term   []byte
	max    int
	direct direct // how frameValue encodes (see codec_fast.go)
}

func newCodec(ser Serializer, max int) *codec {
	c := &codec{ser: ser, term: ser.Terminator(), max: max}
	c.fast, _ = ser.(envelopeCodec)
	c.direct = directOf(ser)
	return c
}

// frame appends the complete frame of a message to dst.
func (c *codec) frame(dst []byte, typ, tx string, payload []byte, deadline int64) ([]byte, error) {
	start := len(dst)
	if len(c.term) == 0 {
		dst = wire.AppendPrefix(dst)
	}
	var err error
	if c.fast != nil {
		dst = c.fast.appendEnvelope(dst, typ, tx, payload, deadline)
	} else {
		m := Message{Type: typ, Tx: tx, Payload: payload, Deadline: fromUnixMilli(deadline), ser: c.ser}
		dst, err = c.ser.AppendMessage(dst, &m)
		if err != nil {
			return dst[:start], fmt.Errorf("worker: %s: encoding message %q: %w", c.ser.Name(), typ, err)
		}
	}
	body := len(dst) - start
	if len(c.term) == 0 {
		body -= wire.LengthPrefixSize
		wire.PutPrefix(dst, start)
	} else {
		if bytes.Contains(dst[start:], c.term) {
			return dst[:start], fmt.Errorf("worker: %s: encoded message %q contains the terminator", c.ser.Name(), typ)
		}
		dst = append(dst, c.term...)
	}
	if body > c.max {
		return dst[:start], fmt.Errorf("%w: %q is %d bytes, the limit is %d", ErrTooLarge, typ, body, c.max)
	}
	return dst, nil
}

// frameMessage frames a message that middleware may have changed.
func (c *codec) frameMessage(dst []byte, m *Message) ([]byte, error) {
	return c.frame(dst, m.Type, m.Tx, m.Payload, unixMilli(m.Deadline))
}

// parse parses one frame.
func (c *codec) parse(frame []byte, e *wire.Envelope) error {
	var err error
	if c.fast != nil {
		err = c.fast.parseEnvelope(frame, e)
	} else {
		var m Message
		if err = c.ser.ParseMessage(frame, &m); err == nil {
			*e = wire.Envelope{Type: []byte(m.Type), Tx: []byte(m.Tx), Payload: m.Payload, Deadline: unixMilli(m.Deadline)}
		}
	}
	if err != nil {
		return fmt.Errorf("%w: %s cannot parse a frame: %v", ErrProtocol, c.ser.Name(), err)
	}
	return nil
}

// message builds the untyped view of a parsed envelope, for middleware.
func (c *codec) message(k Kind, e *wire.Envelope) *Message {
	return &Message{Kind: k, Type: string(e.Type), Tx: string(e.Tx), Payload: e.Payload,
		Deadline: fromUnixMilli(e.Deadline), ser: c.ser}
}
