package worker

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/isolated-workers/worker/internal/wire"
)

// codec is a connection's view of its serializer: framing, the size limit
// and the fast path of the built-in serializers.
type codec struct {
	ser    Serializer
	fast   envelopeCodec
	term   []byte
	max    int
	direct direct // how frameValue encodes
	warned atomic.Bool
}

// direct tells how a codec frames a message straight from its payload's
// value: the payload is encoded into the frame, between the two halves of
// the envelope, instead of into a buffer of its own that is then copied.
type direct uint8

const (
	directNone   direct = iota // any other serializer: encode, then frame
	directJSON                 // exactly JSON
	directBinary               // exactly Binary
)

func newCodec(ser Serializer, max int) *codec {
	c := &codec{ser: ser, term: ser.Terminator(), max: max}
	c.fast, _ = ser.(envelopeCodec)
	// The built-in serializers only, not types that embed them: their
	// AppendPayload may be their own.
	switch ser.(type) {
	case jsonSerializer:
		c.direct = directJSON
	case binarySerializer:
		c.direct = directBinary
	}
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
	return c.checkSize(dst, start, typ, body)
}

func (c *codec) checkSize(dst []byte, start int, typ string, body int) ([]byte, error) {
	if body > c.max {
		return dst[:start], fmt.Errorf("%w: %q is %d bytes, the limit is %d", ErrTooLarge, typ, body, c.max)
	}
	return dst, nil
}

// frameMessage frames a message that middleware may have changed.
func (c *codec) frameMessage(dst []byte, m *Message) ([]byte, error) {
	return c.frame(dst, m.Type, m.Tx, m.Payload, unixMilli(m.Deadline))
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
		dst = wire.AppendCBORHead(dst, 2, uint64(len(tail)))
		body := len(dst) - start - wire.LengthPrefixSize + len(tail)
		if dst, err = c.checkSize(dst, start, typ, body); err != nil {
			return dst, nil, nil, err
		}
		binary.BigEndian.PutUint32(dst[start:], uint32(body))
		return dst, tail, nil, nil
	}
	if c.direct == directJSON {
		dst = wire.AppendJSONHead(dst, typ, tx)
	} else {
		dst = wire.AppendBinaryHead(wire.AppendPrefix(dst), typ, tx, deadline)
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
	dst, err = c.checkSize(dst, start, typ, body)
	return dst, nil, nil, err
}

// tailOf returns the bytes of v if v is a []byte payload that the Binary
// codec writes as it is, after the frame's head, instead of copying it into
// the frame: one bigger than what the write queue would copy anyway (see
// wire.CoalesceMax). Its encoding is a CBOR byte string: a head, then the
// bytes.
func (c *codec) tailOf(v any) []byte {
	if c.direct != directBinary {
		return nil
	}
	if b, ok := v.(*[]byte); ok && len(*b) > wire.CoalesceMax {
		return *b
	}
	return nil
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

// warnNonASCII warns, once per connection, of a frame of a custom text
// serializer with bytes outside ASCII, written to a peer that speaks only
// the base protocol: a TypeScript receiver decodes UTF-8 per read and can
// corrupt a character split between two reads. (The built-in JSON escapes
// them.)
func (c *codec) warnNonASCII(frame []byte, lg *logger) {
	if c.direct != directNone || len(c.term) == 0 || c.warned.Load() || wire.IsASCII(frame) {
		return
	}
	if c.warned.CompareAndSwap(false, true) {
		lg.warn("the serializer writes characters outside ASCII to a base-protocol peer, which may corrupt one split between two reads (a TypeScript peer does): escape them as \\uXXXX, see examples/custom-serializer",
			"serializer", c.ser.Name())
	}
}

// message builds the untyped view of a parsed envelope, for middleware.
func (c *codec) message(e *wire.Envelope, incoming bool) *Message {
	return &Message{Type: string(e.Type), Tx: string(e.Tx), Payload: e.Payload,
		Deadline: fromUnixMilli(e.Deadline), Incoming: incoming, ser: c.ser}
}

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

// Buffers and ids shared by the host and the worker sides.

var bufs = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// maxPooled bounds the buffers kept for reuse, so that one huge message does
// not pin its memory for the life of the process.
const maxPooled = 4 << 20

func getBuf() *[]byte { return bufs.Get().(*[]byte) }

func putBuf(b *[]byte) {
	if cap(*b) <= maxPooled {
		bufs.Put(b)
	}
}

// newUUID returns a random UUID version 4. It draws from math/rand/v2's
// ChaCha8-based global source, which is seeded from the OS and needs no
// system call per id.
func newUUID() string {
	var u [16]byte
	binary.LittleEndian.PutUint64(u[:8], rand.Uint64())
	binary.LittleEndian.PutUint64(u[8:], rand.Uint64())
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	var s [36]byte
	hex.Encode(s[0:8], u[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], u[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], u[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], u[8:10])
	s[23] = '-'
	hex.Encode(s[24:], u[10:])
	return string(s[:])
}

// A batch of stream items travels as an array of the items in the
// serializer's encoding: JSON's array, CBOR's array of indefinite length
// (its size is not known when it opens) or, for another serializer, the
// encoding of a [][]byte whose elements are the items' encodings. The
// worker builds it item by item (appendElem, the item's encoding,
// endElem), closes it (closeBatch); the host walks it (eachElem).

// appendElem appends to a batch of n items what precedes the next one.
func (c *codec) appendElem(b []byte, n int) []byte {
	switch {
	case c.direct == directJSON && n == 0:
		return append(b, '[')
	case c.direct == directJSON:
		return append(b, ',')
	case c.direct == directBinary && n == 0:
		return append(b, 0x9f)
	case c.direct == directBinary:
		return b
	}
	return append(b, 0, 0, 0, 0) // the item's length, set by endElem
}

// endElem completes the item whose encoding starts at b[at:].
func (c *codec) endElem(b []byte, at int) {
	if c.direct == directNone {
		binary.BigEndian.PutUint32(b[at-4:], uint32(len(b)-at))
	}
}

// closeBatch returns the payload of the batch b (whose memory it may use).
func (c *codec) closeBatch(b []byte) ([]byte, error) {
	switch c.direct {
	case directJSON:
		return append(b, ']'), nil
	case directBinary:
		return append(b, 0xff), nil
	}
	var parts [][]byte
	for len(b) >= 4 {
		n := int(binary.BigEndian.Uint32(b)) + 4
		parts, b = append(parts, b[4:n]), b[n:]
	}
	return c.ser.AppendPayload(nil, &parts)
}

// eachElem calls f with each item's encoding in the batch payload b,
// until f returns false.
func (c *codec) eachElem(b []byte, f func([]byte) bool) error {
	switch c.direct {
	case directJSON:
		return wire.EachJSON(b, f)
	case directBinary:
		return wire.EachCBOR(b, f)
	}
	var parts [][]byte
	if err := c.ser.DecodePayload(b, &parts); err != nil {
		return err
	}
	for _, p := range parts {
		if !f(p) {
			break
		}
	}
	return nil
}
