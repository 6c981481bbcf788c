package main

// The floor: a raw length-prefixed echo multiplexed on one Unix-socket
// connection. Frame = 4-byte big-endian body length + 8-byte call id + body.
// The client combines the frames of concurrent callers into one write (as
// any tuned multiplexing client does), has a reader goroutine that
// dispatches each reply by id to the waiting caller through a pooled
// buffered channel, and no serialization at all. The child echoes each
// frame from its read loop and flushes when no whole request is waiting.

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
)

const rawHdr = 12

type rawClient struct {
	lc *listeningChild

	// The write side combines frames: a caller that finds another caller
	// writing appends its frame to wbuf and leaves; the writing caller
	// sends everything queued before it returns, in one write per batch.
	wmu     sync.Mutex
	writing bool
	wbuf    []byte
	spare   []byte
	werr    error

	nextID  atomic.Uint64
	mu      sync.Mutex
	pending map[uint64]chan []byte
	err     error // set once the reader stops
}

var rawChanPool = sync.Pool{New: func() any { return make(chan []byte, 1) }}

func spawnRaw(ctx context.Context) (Client, error) {
	lc, err := startListeningChild("raw")
	if err != nil {
		return nil, err
	}
	c := &rawClient{lc: lc, pending: make(map[uint64]chan []byte),
		wbuf: make([]byte, 0, 64<<10), spare: make([]byte, 0, 64<<10)}
	go c.readLoop()
	return c, nil
}

func (c *rawClient) readLoop() {
	br := bufio.NewReaderSize(c.lc.Conn, 64<<10)
	var hdr [rawHdr]byte
	var err error
	for {
		if _, err = io.ReadFull(br, hdr[:]); err != nil {
			break
		}
		n := binary.BigEndian.Uint32(hdr[0:4])
		id := binary.BigEndian.Uint64(hdr[4:12])
		body := make([]byte, n)
		if _, err = io.ReadFull(br, body); err != nil {
			break
		}
		c.mu.Lock()
		ch := c.pending[id]
		delete(c.pending, id)
		c.mu.Unlock()
		if ch != nil {
			ch <- body
		}
	}
	c.mu.Lock()
	c.err = err
	for id, ch := range c.pending {
		delete(c.pending, id)
		close(ch)
	}
	c.mu.Unlock()
}

// rawBig is the body size from which a frame is written on its own
// (header and body in one writev) rather than copied into the batch.
const rawBig = 16 << 10

// send writes one frame, batched with the frames of concurrent callers.
func (c *rawClient) send(id uint64, p []byte) error {
	var hdr [rawHdr]byte
	binary.BigEndian.PutUint32(hdr[0:4], uint32(len(p)))
	binary.BigEndian.PutUint64(hdr[4:12], id)
	c.wmu.Lock()
	if c.werr != nil {
		c.wmu.Unlock()
		return c.werr
	}
	if c.writing || len(p) < rawBig {
		c.wbuf = append(append(c.wbuf, hdr[:]...), p...)
		if c.writing {
			c.wmu.Unlock()
			return nil // the writing caller sends it
		}
	}
	c.writing = true
	var err error
	if len(p) >= rawBig && len(c.wbuf) == 0 {
		c.wmu.Unlock()
		bufs := net.Buffers{hdr[:], p}
		_, err = bufs.WriteTo(c.lc.Conn)
		c.wmu.Lock()
	}
	for err == nil && len(c.wbuf) > 0 {
		b := c.wbuf
		c.wbuf = c.spare[:0]
		c.wmu.Unlock()
		_, err = c.lc.Conn.Write(b)
		c.wmu.Lock()
		c.spare = b[:0]
	}
	if err != nil {
		c.werr = err
	}
	c.writing = false
	c.wmu.Unlock()
	return err
}

func (c *rawClient) call(ctx context.Context, p []byte) ([]byte, error) {
	id := c.nextID.Add(1)
	ch := rawChanPool.Get().(chan []byte)
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return nil, c.err
	}
	c.pending[id] = ch
	c.mu.Unlock()

	if err := c.send(id, p); err != nil {
		c.forget(id)
		return nil, err
	}

	select {
	case body, ok := <-ch:
		if !ok {
			return nil, errors.New("raw: connection closed")
		}
		rawChanPool.Put(ch)
		return body, nil
	case <-ctx.Done():
		c.forget(id) // ch may still receive; do not reuse it
		return nil, ctx.Err()
	}
}

func (c *rawClient) forget(id uint64) {
	c.mu.Lock()
	delete(c.pending, id)
	c.mu.Unlock()
}

func (c *rawClient) Ping(ctx context.Context) error {
	b, err := c.call(ctx, pingJSON)
	if err != nil {
		return err
	}
	return checkPingBytes(b)
}

func (c *rawClient) Echo(ctx context.Context, p []byte) ([]byte, error) { return c.call(ctx, p) }

func (c *rawClient) Close() error { return c.lc.Close() }

// rawChild: read frames and echo them from the read loop; replies collect
// in a buffered writer that is flushed whenever no further complete request
// is already buffered, so a burst of requests is answered in one write.
// Exits on EOF.
func rawChild() {
	conn := childListen()
	br := bufio.NewReaderSize(conn, 64<<10)
	bw := bufio.NewWriterSize(conn, 64<<10)
	frame := make([]byte, 0, 64<<10)
	for {
		if _, err := io.ReadFull(br, frame[:rawHdr]); err != nil {
			os.Exit(0)
		}
		n := int(binary.BigEndian.Uint32(frame[0:4]))
		if rawHdr+n > cap(frame) {
			f := make([]byte, rawHdr, rawHdr+n)
			copy(f, frame[:rawHdr])
			frame = f
		}
		frame = frame[:rawHdr+n]
		if _, err := io.ReadFull(br, frame[rawHdr:]); err != nil {
			os.Exit(0)
		}
		var err error
		if len(frame) > bw.Available() {
			if err = bw.Flush(); err == nil {
				_, err = conn.Write(frame)
			}
		} else {
			_, err = bw.Write(frame)
		}
		if err == nil && !frameBuffered(br) {
			err = bw.Flush()
		}
		if err != nil {
			os.Exit(0)
		}
	}
}

// frameBuffered reports whether br already holds a whole frame.
func frameBuffered(br *bufio.Reader) bool {
	if br.Buffered() < rawHdr {
		return false
	}
	h, _ := br.Peek(4)
	return br.Buffered() >= rawHdr+int(binary.BigEndian.Uint32(h))
}
