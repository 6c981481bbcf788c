package wire

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// endless is a stream of one byte, forever.
type endless byte

func (e endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(e)
	}
	return len(p), nil
}

// A stream that never sends a terminator, or claims a frame longer than
// the limit, costs the reader at most the limit plus one read, not (up to)
// twice the limit as plain doubling of its buffer would.
func TestReaderMemoryBoundedByLimit(t *testing.T) {
	const limit = 1 << 20
	for _, tc := range []struct {
		name string
		r    io.Reader
		term []byte
	}{
		{"terminator", endless('x'), []byte("\n")},
		{"two-byte terminator", endless('x'), []byte("\r\n")},
		// A frame of limit bytes claimed, then a stream too short for it.
		{"prefix", io.MultiReader(bytes.NewReader([]byte{0, 0x10, 0, 0}), io.LimitReader(endless('y'), limit-1)), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := NewReader(tc.r, tc.term, limit)
			_, err := r.Next()
			if !errors.Is(err, ErrTooLarge) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("Next: %v", err)
			}
			if bound := allocBound(tc.term, limit); cap(r.buf) > bound {
				t.Fatalf("the buffer grew to %d bytes for a limit of %d (bound %d)", cap(r.buf), limit, bound)
			}
		})
	}
}

// A length prefix over the limit is refused before anything is allocated
// for it.
func TestReaderHugePrefixAllocatesNothing(t *testing.T) {
	src := bytes.NewReader([]byte{0xff, 0xff, 0xff, 0xff, 'a', 'b'})
	r := NewReader(src, nil, 64<<20)
	before := cap(r.buf)
	if _, err := r.Next(); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Next: %v; want ErrTooLarge", err)
	}
	if cap(r.buf) != before {
		t.Fatalf("the buffer grew from %d to %d bytes", before, cap(r.buf))
	}
}
