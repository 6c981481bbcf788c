package wire

import (
	"bytes"
	"errors"
	"io"
	"runtime"
	"strings"
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

// allocated returns the bytes that f allocates (with nothing else
// running in the test binary).
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// within reports whether n bytes are at most 1.2 times the limit: what
// reading one frame may cost, every buffer outgrown on the way included
// (see Reader), where plain doubling of the buffer would cost 3 times.
func within(n uint64, limit int) bool { return n <= uint64(limit)*6/5 }

// A stream that never sends a terminator, or claims a frame longer than
// the limit, costs the reader little more than the limit in all (plain
// doubling of its buffer would cost three times), and once the frame is
// refused the reader lets go of its memory at once.
func TestReaderMemoryBoundedByLimit(t *testing.T) {
	const limit = 8 << 20
	for _, tc := range []struct {
		name string
		r    io.Reader
		term []byte
	}{
		{"terminator", endless('x'), []byte("\n")},
		{"two-byte terminator", endless('x'), []byte("\r\n")},
		// A frame of limit bytes claimed, then a stream too short for it.
		{"prefix", io.MultiReader(bytes.NewReader([]byte{0, 0x80, 0, 0}), io.LimitReader(endless('y'), limit-1)), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r *Reader
			var err error
			n := allocated(func() {
				r = NewReader(tc.r, tc.term, limit)
				_, err = r.Next()
			})
			if !errors.Is(err, ErrTooLarge) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("Next: %v", err)
			}
			if !within(n, limit) {
				t.Fatalf("reading the frame allocated %d bytes, %.2f times the limit of %d", n, float64(n)/limit, limit)
			}
			if cap(r.buf) != 0 {
				t.Fatalf("after %v the reader still holds a buffer of %d bytes", err, cap(r.buf))
			}
		})
	}
}

// A frame just under the limit costs little more than the limit too; a
// big one is handed over to the caller, and the reader goes on with a
// small buffer holding what followed it.
func TestReaderBigFrameHandedOver(t *testing.T) {
	const limit = 8 << 20
	for _, tc := range []struct {
		name string
		in   io.Reader
		term []byte
	}{
		{"terminator", io.MultiReader(io.LimitReader(endless('x'), limit-1), strings.NewReader("\nnext\n")), []byte("\n")},
		{"prefix", io.MultiReader(bytes.NewReader([]byte{0, 0x7f, 0xff, 0xff}), io.LimitReader(endless('x'), limit-1),
			bytes.NewReader([]byte{0, 0, 0, 4}), strings.NewReader("next")), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r *Reader
			var f []byte
			var err error
			n := allocated(func() {
				r = NewReader(tc.in, tc.term, limit)
				f, err = r.Next()
			})
			if err != nil || len(f) != limit-1 {
				t.Fatalf("Next: %d bytes, %v", len(f), err)
			}
			if !within(n, limit) {
				t.Fatalf("reading the frame allocated %d bytes, %.2f times the limit of %d", n, float64(n)/limit, limit)
			}
			if !r.Owned() || cap(r.buf) > keepMax {
				t.Fatalf("owned %v, the reader keeps a buffer of %d bytes; want the frame handed over", r.Owned(), cap(r.buf))
			}
			if next, err := r.Next(); err != nil || string(next) != "next" || r.Owned() {
				t.Fatalf("the frame after it: %q, %v, owned %v", next, err, r.Owned())
			}
			if bytes.Count(f, []byte("x")) != limit-1 {
				t.Fatal("reading on changed the frame handed over")
			}
		})
	}
}

// A length prefix over the limit is refused before anything is allocated
// for it.
func TestReaderHugePrefixAllocatesNothing(t *testing.T) {
	src := bytes.NewReader([]byte{0xff, 0xff, 0xff, 0xff, 'a', 'b'})
	r := NewReader(src, nil, 64<<20)
	var err error
	if n := allocated(func() { _, err = r.Next() }); n > readChunk {
		t.Fatalf("refusing the prefix allocated %d bytes", n)
	}
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Next: %v; want ErrTooLarge", err)
	}
}
