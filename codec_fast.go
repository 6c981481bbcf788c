package worker

import (
	"encoding/binary"
	"fmt"

	"github.com/isolated-workers/worker/internal/wire"
)

// direct tells how a codec frames a message straight from its payload's
// value: the payload is encoded into the frame, between the two halves of
// the envelope, instead of into a buffer of its own that is then copied.
type direct uint8

const (
	directNone   direct = iota // any other serializer: encode, then frame
	directJSON                 // exactly JSON{}
	directBinary               // exactly Binary{}
)

// directOf tells the built-in serializers apart from the rest, including
// types that embed them (their AppendPayload may be their own).
func directOf(ser Serializer) direct {
	switch ser.(type) {
	case JSON:
		return directJSON
	case Binary:
		return directBinary
	}
	return directNone
}

// frameValue appends the complete frame of a message whose payload is the
// encoding of v. encErr is the serializer's error encoding v; err is a
// framing error (ErrTooLarge). On error dst is returned unchanged. It
// needs c.direct != directNone.
//
// A big []byte under Binary is not copied: the frame is frame followed by
// tail, which is that slice (see tailOf), to be written together.
func (c *codec) frameValue(dst []byte, typ, tx string, v any, deadline int64) (frame, tail []byte, encErr, err error) {
	start := len(dst)
	if tail = c.tailOf(v); tail != nil {
		dst = wire.AppendBinaryHead(wire.AppendPrefix(dst), typ, tx, deadline)
		dst = appendCBORHead(dst, 2, uint64(len(tail)))
		body := len(dst) - start - wire.LengthPrefixSize + len(tail)
		if body > c.max {
			return dst[:start], nil, nil, fmt.Errorf("%w: %q is %d bytes, the limit is %d", ErrTooLarge, typ, body, c.max)
		}
		binary.BigEndian.PutUint32(dst[start:], uint32(body))
		return dst, tail, nil, nil
	}
	switch c.direct {
	case directJSON:
		dst = wire.AppendJSONHead(dst, typ, tx)
	case directBinary:
		dst = wire.AppendBinaryHead(wire.AppendPrefix(dst), typ, tx, deadline)
	default:
		panic("worker: frameValue without a direct codec")
	}
	dst, encErr = c.ser.AppendPayload(dst, v)
	if encErr != nil {
		return dst[:start], nil, encErr, nil
	}
	body := len(dst) - start
	if c.direct == directJSON {
		// encoding/json never writes a raw newline, and the envelope's
		// strings are escaped: no terminator can occur inside the frame.
		dst = append(wire.AppendJSONTail(dst, deadline), c.term...)
		body = len(dst) - start - len(c.term)
	} else {
		body -= wire.LengthPrefixSize
		wire.PutPrefix(dst, start)
	}
	if body > c.max {
		return dst[:start], nil, nil, fmt.Errorf("%w: %q is %d bytes, the limit is %d", ErrTooLarge, typ, body, c.max)
	}
	return dst, nil, nil, nil
}

// tailOf returns the bytes of v if v is a []byte payload that the Binary
// codec writes as it is, after the frame's head, instead of copying it into
// the frame: one bigger than what the write queue would copy anyway (see
// coalesceMax). Its encoding is a CBOR byte string: a head, then the bytes.
func (c *codec) tailOf(v any) []byte {
	if c.direct != directBinary {
		return nil
	}
	if b, ok := v.(*[]byte); ok && len(*b) > coalesceMax {
		return *b
	}
	return nil
}

// ownedBinary is Binary for payloads in memory that nobody reuses (a big
// frame read into a buffer of its own): a byte string decoded into a
// []byte is that memory, not a copy of it.
type ownedBinary struct{ Binary }

func (o ownedBinary) DecodePayload(data []byte, v any) error {
	if b, ok := v.(*[]byte); ok && b != nil {
		if s, ok := cborByteString(data); ok {
			*b = s
			return nil
		}
	}
	return o.Binary.DecodePayload(data, v)
}

// cborByteString returns the content of data if data is exactly one
// definite-length, non-empty CBOR byte string.
func cborByteString(data []byte) ([]byte, bool) {
	if len(data) == 0 || data[0]>>5 != 2 {
		return nil, false
	}
	var n uint64
	h := 1
	switch ai := data[0] & 0x1f; {
	case ai < 24:
		n = uint64(ai)
	case ai <= 27:
		w := 1 << (ai - 24)
		if len(data) < 1+w {
			return nil, false
		}
		for _, c := range data[1 : 1+w] {
			n = n<<8 | uint64(c)
		}
		h += w
	default:
		return nil, false // indefinite length, or reserved
	}
	if n == 0 || n != uint64(len(data)-h) {
		return nil, false
	}
	return data[h:len(data):len(data)], true
}
