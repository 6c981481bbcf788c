package worker

import (
	"encoding"
	"reflect"
	"strconv"
	"unicode/utf8"
	"unsafe"

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

// cborScalar is Binary's fast path for values of one plain scalar type
// (an integer, a string or a bool without methods of its own), found once
// for a stream's items rather than through the encoder's reflection on
// every item; its zero value has none.
type cborScalar struct{ kind reflect.Kind }

var cborMethods = []reflect.Type{
	reflect.TypeFor[cbor.Marshaler](), reflect.TypeFor[cbor.Unmarshaler](),
	reflect.TypeFor[encoding.BinaryMarshaler](), reflect.TypeFor[encoding.BinaryUnmarshaler](),
	reflect.TypeFor[encoding.TextMarshaler](), reflect.TypeFor[encoding.TextUnmarshaler](),
}

func cborScalarFor(t reflect.Type) cborScalar {
	for _, m := range cborMethods {
		if t.Implements(m) || reflect.PointerTo(t).Implements(m) {
			return cborScalar{}
		}
	}
	switch k := t.Kind(); k {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.String, reflect.Bool:
		return cborScalar{k}
	}
	return cborScalar{}
}

// append appends the encoding of the value at p, as Binary does.
func (c cborScalar) append(dst []byte, p unsafe.Pointer) ([]byte, bool) {
	var n int64
	switch c.kind {
	case reflect.String:
		s := *(*string)(p)
		return append(wire.AppendCBORHead(dst, 3, uint64(len(s))), s...), true
	case reflect.Bool:
		if *(*bool)(p) {
			return append(dst, 0xf5), true
		}
		return append(dst, 0xf4), true
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return wire.AppendCBORHead(dst, 0, uintAt(c.kind, p)), true
	case reflect.Int:
		n = int64(*(*int)(p))
	case reflect.Int8:
		n = int64(*(*int8)(p))
	case reflect.Int16:
		n = int64(*(*int16)(p))
	case reflect.Int32:
		n = int64(*(*int32)(p))
	case reflect.Int64:
		n = *(*int64)(p)
	default:
		return dst, false
	}
	if n < 0 {
		return wire.AppendCBORHead(dst, 1, uint64(-1-n)), true
	}
	return wire.AppendCBORHead(dst, 0, uint64(n)), true
}

func uintAt(k reflect.Kind, p unsafe.Pointer) uint64 {
	switch k {
	case reflect.Uint8:
		return uint64(*(*uint8)(p))
	case reflect.Uint16:
		return uint64(*(*uint16)(p))
	case reflect.Uint32:
		return uint64(*(*uint32)(p))
	case reflect.Uint64:
		return *(*uint64)(p)
	}
	return uint64(*(*uint)(p))
}

// decode decodes data into the value at p when data is the plainest
// encoding of such a value; it reports false, having changed nothing,
// otherwise (Binary's decoder then decides, with its own errors).
func (c cborScalar) decode(data []byte, p unsafe.Pointer) bool {
	switch c.kind {
	case reflect.Invalid:
		return false
	case reflect.Bool:
		if len(data) == 1 && (data[0] == 0xf4 || data[0] == 0xf5) {
			*(*bool)(p) = data[0] == 0xf5
			return true
		}
		return false
	}
	mt, n, body, ok := wire.CBORHeadOf(data)
	if !ok {
		return false
	}
	switch {
	case c.kind == reflect.String && mt == 3 && uint64(len(body)) == n && utf8.Valid(body):
		*(*string)(p) = string(body)
		return true
	case len(body) != 0 || c.kind == reflect.String:
		return false
	case mt == 0:
		return storeInt(c.kind, p, n, false)
	case mt == 1:
		return storeInt(c.kind, p, n, true)
	}
	return false
}

// storeInt stores n (or -1-n when neg) at p, a value of kind k, if it
// fits.
func storeInt(k reflect.Kind, p unsafe.Pointer, n uint64, neg bool) bool {
	bits := uint(64)
	switch k {
	case reflect.Int8, reflect.Uint8:
		bits = 8
	case reflect.Int16, reflect.Uint16:
		bits = 16
	case reflect.Int32, reflect.Uint32:
		bits = 32
	case reflect.Int, reflect.Uint:
		bits = strconv.IntSize
	}
	switch k {
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if neg || bits < 64 && n>>bits != 0 {
			return false
		}
		switch k {
		case reflect.Uint8:
			*(*uint8)(p) = uint8(n)
		case reflect.Uint16:
			*(*uint16)(p) = uint16(n)
		case reflect.Uint32:
			*(*uint32)(p) = uint32(n)
		case reflect.Uint64:
			*(*uint64)(p) = n
		default:
			*(*uint)(p) = uint(n)
		}
		return true
	}
	if n>>(bits-1) != 0 {
		return false // beyond the type's range (-1-n included)
	}
	v := int64(n)
	if neg {
		v = -1 - v
	}
	switch k {
	case reflect.Int8:
		*(*int8)(p) = int8(v)
	case reflect.Int16:
		*(*int16)(p) = int16(v)
	case reflect.Int32:
		*(*int32)(p) = int32(v)
	case reflect.Int64:
		*(*int64)(p) = v
	default:
		*(*int)(p) = int(v)
	}
	return true
}
