// Package wire holds the byte-level parts of the protocol: framing of a byte
// stream into messages, the JSON envelope codec of the TypeScript
// isolated-workers protocol, and the process startup data.
//
// Nothing here knows about processes or connections' owners; it works on
// io.Reader and byte slices so that it can be fuzzed in isolation.
package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// ErrTooLarge reports a frame longer than the reader's limit. After it the
// stream cannot be trusted any more and must be closed.
var ErrTooLarge = errors.New("message exceeds the maximum message size")

// LengthPrefixSize is the size of the big-endian length that starts each frame
// of a serializer without a terminator.
const LengthPrefixSize = 4

// Reader splits a byte stream into frames. A frame ends at Term when Term is
// not empty, and is otherwise preceded by a 4-byte big-endian length.
// Frames are returned as slices of an internal buffer that stay valid until
// the next call to Next, unless Owned says that they are the caller's.
//
// Memory: reading one frame costs at most about 1.125 times the limit
// (Max), however long the incoming frame is or claims to be. A frame of
// known length (a length prefix) of OwnedMin bytes or more is read into
// memory of its own, allocated once; a prefix over the limit is refused
// before anything is allocated. A frame of unknown length (a terminator)
// is read into a buffer that doubles while it is small and then grows to
// the size of a whole frame of the limit at once (see grow), so that the
// buffers outgrown on the way never add up to more than an eighth of the
// limit. A buffer larger than keepMax is not kept past its frame: that
// frame is handed over (Owned) and the Reader starts again small. After an
// error other than a timeout (see IsTimeout), such as ErrTooLarge or the
// end of the stream, the Reader holds no buffer at all.
type Reader struct {
	r    io.Reader
	term []byte
	max  int

	buf        []byte
	start, end int  // unread bytes are buf[start:end]
	scanned    int  // bytes of buf[start:end] already searched for term
	owned      bool // the last frame returned is not in buf (see Owned)
	keep       int  // the largest buffer kept past its frame: keepMax (less in tests)
}

// OwnedMin is the size from which a length-prefixed frame is read into a
// buffer of its own, straight from the stream, instead of through the
// Reader's buffer: the caller may keep it (see Owned).
const OwnedMin = 64 << 10

// keepMax is the largest buffer that a Reader keeps from one frame to the
// next: a connection that once carried a big frame does not hold its
// memory for the rest of its life.
const keepMax = 4 << 20

// readChunk is the size of a Reader's first buffer, and the least room it
// makes for a read.
const readChunk = 4096

// jumpAt is the fraction of the largest buffer a Reader may need (see
// most) past which its buffer stops doubling and takes that size at once.
const jumpAt = 16

// Owned reports whether the frame that Next returned last is the caller's
// to keep: the Reader does not reuse its memory.
func (r *Reader) Owned() bool { return r.owned }

// NewReader returns a Reader of frames from r. max bounds the size of one
// frame (without its terminator or length prefix).
func NewReader(r io.Reader, term []byte, max int) *Reader {
	return &Reader{r: r, term: term, max: max, buf: make([]byte, readChunk), keep: keepMax}
}

// Buffered reports the bytes read from the stream but not yet returned.
func (r *Reader) Buffered() []byte { return r.buf[r.start:r.end] }

// Next returns the next frame. With a terminator, frames made only of white
// space are skipped (the TypeScript peer ignores blank lines). At the end of
// the stream it returns io.EOF, or io.ErrUnexpectedEOF if a frame was cut.
// After an error other than a timeout the stream is over for the Reader:
// it lets go of its memory.
func (r *Reader) Next() ([]byte, error) {
	var f []byte
	var err error
	if len(r.term) == 0 {
		r.owned = false
		f, err = r.nextPrefixed()
	} else {
		for {
			r.owned = false // a blank frame skipped may have been handed over
			f, err = r.nextTerminated()
			if err != nil || len(bytes.TrimSpace(f)) > 0 {
				break
			}
		}
	}
	if err != nil && !IsTimeout(err) {
		r.buf, r.start, r.end, r.scanned = nil, 0, 0, 0
	}
	return f, err
}

func (r *Reader) nextTerminated() ([]byte, error) {
	for {
		from := r.start + r.scanned
		if i := bytes.Index(r.buf[from:r.end], r.term); i >= 0 {
			f := r.buf[r.start : from+i]
			r.start = from + i + len(r.term)
			r.scanned = 0
			if len(f) > r.max {
				return nil, fmt.Errorf("%w (%d bytes, limit %d)", ErrTooLarge, len(f), r.max)
			}
			if len(r.buf) > r.keep {
				r.handOver()
			}
			return f, nil
		}
		// Keep the last len(term)-1 bytes unscanned: a terminator may straddle reads.
		r.scanned = max(0, r.end-r.start-len(r.term)+1)
		if r.end-r.start > r.max+len(r.term) {
			return nil, fmt.Errorf("%w (more than %d bytes without a terminator)", ErrTooLarge, r.max)
		}
		if err := r.fill(r.end - r.start + 1); err != nil {
			return nil, err
		}
	}
}

// handOver gives the buffer, with the frame just returned in it, to the
// caller (see Owned), and moves the bytes read past that frame to a buffer
// of their own.
func (r *Reader) handOver() {
	rest := r.buf[r.start:r.end]
	nb := make([]byte, max(readChunk, len(rest)))
	r.buf, r.start, r.end, r.scanned = nb, 0, copy(nb, rest), 0
	r.owned = true
}

func (r *Reader) nextPrefixed() ([]byte, error) {
	if err := r.need(LengthPrefixSize); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(r.buf[r.start:])
	if uint64(n) > uint64(r.max) {
		return nil, fmt.Errorf("%w (%d bytes, limit %d)", ErrTooLarge, n, r.max)
	}
	if n >= OwnedMin {
		return r.readOwned(int(n))
	}
	if err := r.need(LengthPrefixSize + int(n)); err != nil {
		return nil, err
	}
	f := r.buf[r.start+LengthPrefixSize : r.start+LengthPrefixSize+int(n)]
	r.start += LengthPrefixSize + int(n)
	return f, nil
}

// readOwned reads the n-byte body of the frame whose prefix is next into a
// buffer of its own.
func (r *Reader) readOwned(n int) ([]byte, error) {
	r.start += LengthPrefixSize
	f := make([]byte, n)
	k := copy(f, r.buf[r.start:r.end])
	r.start += k
	for k < n {
		m, err := r.r.Read(f[k:])
		k += m
		if m > 0 {
			continue
		}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		} else if err == nil {
			err = io.ErrNoProgress
		}
		return nil, err
	}
	r.owned = true
	return f, nil
}

// need makes sure that n unread bytes are buffered.
func (r *Reader) need(n int) error {
	for r.end-r.start < n {
		if err := r.fill(n); err != nil {
			return err
		}
	}
	return nil
}

// fill reads at least once, first making room for want unread bytes.
func (r *Reader) fill(want int) error {
	if r.start == r.end {
		r.start, r.end, r.scanned = 0, 0, 0
	}
	if len(r.buf)-r.start < want || r.end == len(r.buf) {
		unread := r.end - r.start
		if want > len(r.buf) || unread == len(r.buf) {
			nb := make([]byte, r.grow(want))
			copy(nb, r.buf[r.start:r.end])
			r.buf = nb
		} else {
			copy(r.buf, r.buf[r.start:r.end])
		}
		r.start, r.end = 0, unread
	}
	n, err := r.r.Read(r.buf[r.end:])
	r.end += n
	if n > 0 {
		return nil
	}
	if err == io.EOF && r.end > r.start {
		return io.ErrUnexpectedEOF
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// grow returns the size of the buffer that replaces one too small for want
// unread bytes. Growing copies the old buffer into the new one, so both
// exist for a moment, and the buffers outgrown before stay until the
// garbage collector runs: plain doubling up to a frame of the limit would
// cost three times the limit. So the buffer doubles only while it is at
// most 1/jumpAt of the largest it may need (most); the next step is that
// size itself. A frame of the limit then costs the limit, plus at most
// 2/jumpAt of it in buffers outgrown on the way.
func (r *Reader) grow(want int) int {
	most := r.most()
	next := max(2*len(r.buf), readChunk)
	if next > most/jumpAt {
		next = most
	}
	return max(min(next, most), want)
}

// most returns the largest buffer that the Reader may need: a whole frame
// of the limit (with a length prefix, of less than OwnedMin: larger ones
// are read into memory of their own), its framing, and one read.
func (r *Reader) most() int {
	frame := r.max
	if len(r.term) == 0 {
		frame = min(r.max, OwnedMin-1)
	}
	return frame + len(r.term) + LengthPrefixSize + readChunk
}

// AppendPrefix reserves room for a length prefix at the end of dst; call
// PutPrefix once the frame's body has been appended after it.
func AppendPrefix(dst []byte) []byte { return append(dst, 0, 0, 0, 0) }

// PutPrefix writes the length of frame[at+4:] into the prefix reserved at at.
func PutPrefix(frame []byte, at int) {
	binary.BigEndian.PutUint32(frame[at:], uint32(len(frame)-at-LengthPrefixSize))
}

// Prime makes b the first bytes that Next reads, before the stream's own.
func (r *Reader) Prime(b []byte) {
	if len(b) > len(r.buf) {
		r.buf = make([]byte, len(b))
	}
	r.start, r.end, r.scanned = 0, copy(r.buf, b), 0
}
