package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
	"unicode/utf8"
)

// allocBound is the most memory the buffer of a Reader with these settings
// may ever take, however long the frames that the stream claims: one
// frame of the limit, its framing, and one read (readChunk, also the
// smallest read it does into an empty buffer).
func allocBound(term []byte, max int) int {
	return readChunk + max + len(term) + LengthPrefixSize
}

// chunker hands out its data in pseudo-random slices, as a socket does.
type chunker struct {
	data []byte
	rng  *rand.Rand
	most int
}

func (c *chunker) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := 1 + c.rng.IntN(c.most)
	n = min(n, len(p), len(c.data))
	copy(p, c.data[:n])
	c.data = c.data[n:]
	return n, nil
}

// modelFrame is what a correct Reader returns next.
type modelFrame struct {
	frame []byte
	err   error // io.EOF, io.ErrUnexpectedEOF or ErrTooLarge
	// eitherErr: for a last, unterminated frame longer than the limit but
	// within limit+len(term), both ErrUnexpectedEOF and ErrTooLarge are right.
	eitherErr bool
}

// model splits data the way a Reader must, up to and including the first error.
func model(data, term []byte, max int) []modelFrame {
	var out []modelFrame
	if len(term) == 0 {
		for {
			if len(data) == 0 {
				return append(out, modelFrame{err: io.EOF})
			}
			if len(data) < LengthPrefixSize {
				return append(out, modelFrame{err: io.ErrUnexpectedEOF})
			}
			n := binary.BigEndian.Uint32(data)
			if uint64(n) > uint64(max) {
				return append(out, modelFrame{err: ErrTooLarge})
			}
			if uint64(len(data)-LengthPrefixSize) < uint64(n) {
				return append(out, modelFrame{err: io.ErrUnexpectedEOF})
			}
			out = append(out, modelFrame{frame: data[LengthPrefixSize : LengthPrefixSize+int(n)]})
			data = data[LengthPrefixSize+int(n):]
		}
	}
	for {
		i := bytes.Index(data, term)
		if i < 0 {
			switch {
			case len(data) == 0:
				return append(out, modelFrame{err: io.EOF})
			case len(data) > max+len(term):
				return append(out, modelFrame{err: ErrTooLarge})
			case len(data) > max:
				return append(out, modelFrame{err: io.ErrUnexpectedEOF, eitherErr: true})
			}
			return append(out, modelFrame{err: io.ErrUnexpectedEOF})
		}
		f := data[:i]
		data = data[i+len(term):]
		if len(f) > max {
			return append(out, modelFrame{err: ErrTooLarge})
		}
		if len(bytes.TrimSpace(f)) > 0 {
			out = append(out, modelFrame{frame: f})
		}
	}
}

var terms = [][]byte{{'\n'}, []byte("\r\n"), nil, []byte("\x00\xff\x00")}

// FuzzReader feeds a stream, in random chunks, to a Reader in terminator or
// length-prefix mode, and checks every frame and error against a model of
// the framing. A Reader must never panic, never return a frame over its
// limit, and never hold more than the limit plus one read, whatever the
// stream claims.
func FuzzReader(f *testing.F) {
	f.Add([]byte("{\"type\":\"ping\",\"tx\":\"1\"}\n\n  \n{\"type\":\"x\"}\n"), uint8(0), uint16(64), uint64(1), uint8(3))
	f.Add([]byte("a\r\nb\r\r\n\r\nccc"), uint8(1), uint16(2), uint64(2), uint8(1))
	f.Add([]byte("\x00\x00\x00\x03abc\x00\x00\x00\x00\xff\xff\xff\xff"), uint8(2), uint16(16), uint64(3), uint8(2))
	f.Add(bytes.Repeat([]byte("x"), 9000), uint8(0), uint16(8000), uint64(4), uint8(255))
	f.Add(append(bytes.Repeat([]byte(" "), 5000), '\n', 'y', '\n'), uint8(0), uint16(4096), uint64(5), uint8(200))
	f.Add([]byte("ab\x00\xff\x00cd\x00\xff"), uint8(3), uint16(10), uint64(6), uint8(1))
	// A blank line handed over, then frames in a buffer that is kept.
	f.Add(append(append(bytes.Repeat([]byte(" "), 5000), "\nabc\n"...), bytes.Repeat([]byte("0123456789\n"), 900)...),
		uint8(0), uint16(6000), uint64(7), uint8(1))
	f.Fuzz(func(t *testing.T, data []byte, mode uint8, limit uint16, seed uint64, chunk uint8) {
		term := terms[int(mode)%len(terms)]
		max := int(limit)
		// Stretch some inputs so that frames cross the initial buffer.
		if mode&0x80 != 0 && len(data) > 0 {
			data = bytes.Repeat(data, 1+12000/len(data))
			max *= 2
		}
		src := &chunker{data: data, rng: rand.New(rand.NewPCG(seed, seed>>1|1)), most: 1 + int(chunk)*32}
		r := NewReader(src, term, max)
		if seed&1 != 0 {
			r.keep = readChunk // hand over the frames of a buffer that grew
		}
		bound := allocBound(term, max)
		want := model(data, term, max)
		var owned [][2][]byte // frames handed over, and copies of them
		for i := 0; ; i++ {
			got, err := r.Next()
			if r.Owned() {
				owned = append(owned, [2][]byte{got, bytes.Clone(got)})
			}
			for _, o := range owned {
				if !bytes.Equal(o[0], o[1]) {
					t.Fatalf("frame %d: a frame handed over earlier changed to %q; was %q", i, o[0], o[1])
				}
			}
			if cap(r.buf) > bound {
				t.Fatalf("frame %d: the reader's buffer grew to %d bytes; limit %d allows at most %d", i, cap(r.buf), max, bound)
			}
			if len(got) > max {
				t.Fatalf("frame %d: %d bytes, over the limit of %d", i, len(got), max)
			}
			if i >= len(want) {
				t.Fatalf("frame %d: the model ended at %d frames; got %q, %v", i, len(want), got, err)
			}
			w := want[i]
			if w.err == nil {
				if err != nil || !bytes.Equal(got, w.frame) {
					t.Fatalf("frame %d: got %q, %v; want %q", i, got, err, w.frame)
				}
				continue
			}
			if !errors.Is(err, w.err) && !(w.eitherErr && errors.Is(err, ErrTooLarge)) {
				t.Fatalf("frame %d: got %q, %v; want error %v", i, got, err, w.err)
			}
			return
		}
	})
}

func sameEnvelope(a, b *Envelope) bool {
	return bytes.Equal(a.Type, b.Type) && bytes.Equal(a.Tx, b.Tx) &&
		(a.Payload == nil) == (b.Payload == nil) && bytes.Equal(a.Payload, b.Payload) && a.Deadline == b.Deadline
}

// FuzzParseJSON checks that ParseJSON never panics, that the type and tx
// it returns are valid UTF-8 (invalid bytes become U+FFFD, as AppendJSON
// would send them), that whatever it accepts survives AppendJSON and a
// second parse unchanged, and that the encoding is a fixed point.
func FuzzParseJSON(f *testing.F) {
	for _, s := range []string{
		`{"type":"ping","tx":"1","payload":{"message":"hi"}}`,
		`{"tx":"a","type":"pingResult"}`,
		`{"type":"x","tx":"y","payload":[1,2,{"a":"}"}],"deadline":1700000000000,"extra":{"k":[null,true]}}`,
		` { "type" : "\u00e9\ud83d\ude00\n\"" , "tx" : "\\" } `,
		`{"type":"a","payload":"str","payload":12.5e3}`,
		`{"type":"a","tx":"b","deadline":-1}`,
		`{}`,
		`{"tx":"only"}`,
		`{"type":""}`,
		`{"type":"a","payload":[[[[[[[[[[]]]]]]]]]]}`,
		`{"type":"\xff\xfe","tx":"\xc3"}`,
		`[1,2]`,
		`{"type":"a",}`,
		`{"type":"a"} trailing`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		var e Envelope
		if err := ParseJSON(frame, &e); err != nil {
			return
		}
		if !utf8.Valid(e.Type) || !utf8.Valid(e.Tx) {
			t.Fatalf("ParseJSON returned invalid UTF-8: type %q, tx %q", e.Type, e.Tx)
		}
		enc := AppendJSON(nil, string(e.Type), string(e.Tx), e.Payload, e.Deadline)
		var e2 Envelope
		if err := ParseJSON(enc, &e2); err != nil {
			t.Fatalf("ParseJSON accepted %q, but not its re-encoding %q: %v", frame, enc, err)
		}
		if !sameEnvelope(&e, &e2) {
			t.Fatalf("round trip changed the envelope:\n in: %q\nout: %q\n%+v\n%+v", frame, enc, e, e2)
		}
		if s := AppendString(AppendString(nil, string(e.Type)), string(e.Tx)); !IsASCII(s) {
			t.Fatalf("AppendString wrote non-ASCII bytes: %q", s)
		}
		enc2 := AppendJSON(nil, string(e2.Type), string(e2.Tx), e2.Payload, e2.Deadline)
		if !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding is not a fixed point:\n%q\n%q", enc, enc2)
		}
	})
}

// FuzzParseBinary checks that ParseBinary never panics and that what it
// accepts survives AppendBinary and a second parse exactly.
func FuzzParseBinary(f *testing.F) {
	f.Add(AppendBinary(nil, "ping", "tx-1", []byte{0xa1, 0x61, 0x61, 0x01}, 0))
	f.Add(AppendBinary(nil, "pingResult", "tx-2", nil, 0))
	f.Add(AppendBinary(nil, "sleep", "tx-3", []byte{}, 1700000000000))
	f.Add(AppendBinary(nil, "", "", nil, -5))
	f.Add([]byte{flagDeadline, 0, 0, 0})
	f.Add([]byte{flagPayload, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Add([]byte{0x04})
	f.Add([]byte{flagDeadline, 1, 'a', 1, 'b', 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01})
	f.Fuzz(func(t *testing.T, frame []byte) {
		var e Envelope
		if err := ParseBinary(frame, &e); err != nil {
			return
		}
		enc := AppendBinary(nil, string(e.Type), string(e.Tx), e.Payload, e.Deadline)
		var e2 Envelope
		if err := ParseBinary(enc, &e2); err != nil {
			t.Fatalf("ParseBinary accepted %x, but not its re-encoding %x: %v", frame, enc, err)
		}
		if !sameEnvelope(&e, &e2) {
			t.Fatalf("round trip changed the envelope:\n in: %x\nout: %x\n%+v\n%+v", frame, enc, e, e2)
		}
		if enc2 := AppendBinary(nil, string(e2.Type), string(e2.Tx), e2.Payload, e2.Deadline); !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding is not a fixed point:\n%x\n%x", enc, enc2)
		}
	})
}
