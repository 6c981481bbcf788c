package worker

import (
	"reflect"

	"github.com/fxamacker/cbor/v2"

	"github.com/isolated-workers/worker/internal/jsonfast"
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
	// must be nil when the frame has no payload.
	ParseMessage(frame []byte, m *Message) error
}

// The built-in serializers.
var (
	// JSON is the default serializer: one JSON object per line, exactly as
	// the TypeScript isolated-workers library writes them, named
	// "JsonSerializer" as there. Payloads are encoded as encoding/json
	// does, and characters outside ASCII are escaped, so that a TypeScript
	// receiver cannot corrupt a character split between two reads.
	JSON Serializer = jsonSerializer{}

	// Binary is a compact serializer, named "BinarySerializer":
	// length-prefixed frames, a small binary envelope, and payloads in CBOR
	// (RFC 8949) by github.com/fxamacker/cbor, which honours `cbor` and
	// then `json` struct tags. Byte slices travel as bytes, without base64.
	// The TypeScript library does not speak it.
	Binary Serializer = binarySerializer{}
)

// envelopeCodec is the allocation-free path of the built-in serializers.
type envelopeCodec interface {
	appendEnvelope(dst []byte, typ, tx string, payload []byte, deadline int64) []byte
	parseEnvelope(frame []byte, e *wire.Envelope) error
}

type jsonSerializer struct{}

var newline = []byte{'\n'}

func (jsonSerializer) Name() string       { return "JsonSerializer" }
func (jsonSerializer) Terminator() []byte { return newline }

func (jsonSerializer) AppendPayload(dst []byte, v any) ([]byte, error) {
	return jsonfast.Append(dst, v)
}

func (jsonSerializer) DecodePayload(data []byte, v any) error { return jsonfast.Decode(data, v) }

func (j jsonSerializer) AppendMessage(dst []byte, m *Message) ([]byte, error) {
	return j.appendEnvelope(dst, m.Type, m.Tx, m.Payload, unixMilli(m.Deadline)), nil
}

func (j jsonSerializer) ParseMessage(frame []byte, m *Message) error {
	return parseMessage(j, frame, m)
}

func (jsonSerializer) appendEnvelope(dst []byte, typ, tx string, payload []byte, deadline int64) []byte {
	return wire.AppendJSON(dst, typ, tx, payload, deadline)
}

func (jsonSerializer) parseEnvelope(frame []byte, e *wire.Envelope) error {
	return wire.ParseJSON(frame, e)
}

type binarySerializer struct{}

var (
	cborEnc, _ = cbor.EncOptions{}.EncMode()
	cborDec, _ = cbor.DecOptions{
		DefaultMapType:  reflect.TypeOf(map[string]any(nil)),
		MaxNestedLevels: 256,
	}.DecMode()
)

func (binarySerializer) Name() string       { return "BinarySerializer" }
func (binarySerializer) Terminator() []byte { return nil }

func (binarySerializer) AppendPayload(dst []byte, v any) ([]byte, error) {
	// A []byte payload is the common case for bulk data: encode its header
	// and append it directly, avoiding the encoder's intermediate copy.
	if b, ok := v.(*[]byte); ok && *b != nil {
		return append(wire.AppendCBORHead(dst, 2, uint64(len(*b))), *b...), nil
	}
	enc, err := cborEnc.Marshal(v)
	return append(dst, enc...), err
}

func (binarySerializer) DecodePayload(data []byte, v any) error { return cborDec.Unmarshal(data, v) }

func (b binarySerializer) AppendMessage(dst []byte, m *Message) ([]byte, error) {
	return b.appendEnvelope(dst, m.Type, m.Tx, m.Payload, unixMilli(m.Deadline)), nil
}

func (b binarySerializer) ParseMessage(frame []byte, m *Message) error {
	return parseMessage(b, frame, m)
}

func (binarySerializer) appendEnvelope(dst []byte, typ, tx string, payload []byte, deadline int64) []byte {
	return wire.AppendBinary(dst, typ, tx, payload, deadline)
}

func (binarySerializer) parseEnvelope(frame []byte, e *wire.Envelope) error {
	return wire.ParseBinary(frame, e)
}

// ownedBinary is Binary for payloads in memory that nobody reuses (a big
// frame read into a buffer of its own): a byte string decoded into a
// []byte is that memory, not a copy of it.
type ownedBinary struct{ binarySerializer }

func (o ownedBinary) DecodePayload(data []byte, v any) error {
	if b, ok := v.(*[]byte); ok && b != nil {
		if s, ok := wire.CBORByteString(data); ok {
			*b = s
			return nil
		}
	}
	return o.binarySerializer.DecodePayload(data, v)
}

// parseMessage is ParseMessage of a built-in serializer.
func parseMessage(c envelopeCodec, frame []byte, m *Message) error {
	var e wire.Envelope
	if err := c.parseEnvelope(frame, &e); err != nil {
		return err
	}
	*m = Message{Type: string(e.Type), Tx: string(e.Tx), Payload: e.Payload, Deadline: fromUnixMilli(e.Deadline)}
	return nil
}
