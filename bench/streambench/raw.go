package main

// The floor: a minimal length-prefixed framing on one Unix-socket
// connection, with no flow control at all. The host writes a request of
// 17 bytes (kind 'i' or 'b', then Req.wire()); the child answers with
// N frames written back to back — 4-byte big-endian length + body: an
// int64 (8 bytes) into a 64 KiB buffered writer flushed only when full, or
// the big item's bytes with its header in one writev — then an end frame
// (length 0xFFFFFFFF). The host reads the frames through a 64 KiB
// bufio.Reader; a big item is read into a []byte of its own (every other
// subject hands the consumer an item it owns too), an int64 is decoded
// from a stack buffer.

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"

	"github.com/isolated-workers/worker/bench/internal/child"
)

const rawEnd = 0xFFFFFFFF

type rawConn struct {
	lc     *listeningChild
	br     *bufio.Reader
	broken error // a stream left before its end: the frames that follow are not read
}

func spawnRaw(context.Context) (Conn, error) {
	lc, err := startListeningChild("raw")
	if err != nil {
		return nil, err
	}
	return &rawConn{lc: lc, br: bufio.NewReaderSize(lc.Conn, 64<<10)}, nil
}

// start sends a request; next returns the length of the next frame
// (rawEnd at the end of the stream).
func (c *rawConn) start(kind byte, r Req) error {
	if c.broken != nil {
		return c.broken
	}
	_, err := c.lc.Conn.Write(append([]byte{kind}, r.wire()...))
	return err
}

func (c *rawConn) next() (uint32, error) {
	var h [4]byte
	if _, err := io.ReadFull(c.br, h[:]); err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint32(h[:]), nil
}

func (c *rawConn) stop(err error) error {
	c.broken = fmt.Errorf("raw: a stream was left before its end: %w", err)
	return err
}

func (c *rawConn) Ints(_ context.Context, n int, each func(int64) error) (int, error) {
	if err := c.start('i', Req{N: n}); err != nil {
		return 0, err
	}
	var v [8]byte
	for got := 0; ; got++ {
		l, err := c.next()
		if err != nil {
			return got, err
		}
		if l == rawEnd {
			return got, nil
		}
		if l != 8 {
			return got, c.stop(fmt.Errorf("raw: int frame of %d bytes", l))
		}
		if _, err := io.ReadFull(c.br, v[:]); err != nil {
			return got, err
		}
		if err := each(int64(binary.BigEndian.Uint64(v[:]))); err != nil {
			return got, c.stop(err)
		}
	}
}

func (c *rawConn) Bytes(_ context.Context, n, size int, each func([]byte) error) (int, error) {
	if err := c.start('b', Req{N: n, Size: size}); err != nil {
		return 0, err
	}
	for got := 0; ; got++ {
		l, err := c.next()
		if err != nil {
			return got, err
		}
		if l == rawEnd {
			return got, nil
		}
		b := make([]byte, l)
		if _, err := io.ReadFull(c.br, b); err != nil {
			return got, err
		}
		if err := each(b); err != nil {
			return got, c.stop(err)
		}
	}
}

func (c *rawConn) Close() error { return c.lc.Close() }

// rawChild serves requests one after the other until the connection ends.
func rawChild() {
	conn := childListen()
	br := bufio.NewReader(conn)
	bw := bufio.NewWriterSize(conn, 64<<10)
	check := func(err error) {
		if err != nil {
			os.Exit(0) // the host went away
		}
	}
	var req [17]byte
	var f [12]byte
	for {
		_, err := io.ReadFull(br, req[:])
		check(err)
		r, err := reqFromWire(req[1:])
		if err != nil {
			fatal(err)
		}
		switch req[0] {
		case 'i':
			binary.BigEndian.PutUint32(f[:4], 8)
			for i := range r.N {
				binary.BigEndian.PutUint64(f[4:], uint64(i))
				_, err := bw.Write(f[:])
				check(err)
			}
		case 'b':
			p := child.Payload(r.Size)
			binary.BigEndian.PutUint32(f[:4], uint32(r.Size))
			check(bw.Flush())
			for range r.N {
				bufs := net.Buffers{f[:4], p}
				_, err := bufs.WriteTo(conn)
				check(err)
			}
		default:
			fatal(fmt.Errorf("unknown request kind %q", req[0]))
		}
		binary.BigEndian.PutUint32(f[:4], rawEnd)
		_, err = bw.Write(f[:4])
		check(err)
		check(bw.Flush())
	}
}
