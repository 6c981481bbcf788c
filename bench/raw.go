package main

// The floor: a raw length-prefixed echo multiplexed on one Unix-socket
// connection. Frame = 4-byte big-endian body length + 8-byte call id + body.
// The client has one writer mutex (one write syscall per small frame), a
// reader goroutine that dispatches each reply by id to the waiting caller
// through a pooled buffered channel, and no serialization at all. The child
// reads frames and echoes each one from its own goroutine.

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"sync"
	"sync/atomic"
)

const rawHdr = 12

type rawClient struct {
	lc *listeningChild

	wmu     sync.Mutex
	scratch []byte

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
	c := &rawClient{lc: lc, pending: make(map[uint64]chan []byte), scratch: make([]byte, 0, 64<<10)}
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

	c.wmu.Lock()
	var err error
	if rawHdr+len(p) <= cap(c.scratch) {
		b := c.scratch[:rawHdr]
		binary.BigEndian.PutUint32(b[0:4], uint32(len(p)))
		binary.BigEndian.PutUint64(b[4:12], id)
		b = append(b, p...)
		_, err = c.lc.Conn.Write(b)
	} else {
		var hdr [rawHdr]byte
		binary.BigEndian.PutUint32(hdr[0:4], uint32(len(p)))
		binary.BigEndian.PutUint64(hdr[4:12], id)
		if _, err = c.lc.Conn.Write(hdr[:]); err == nil {
			_, err = c.lc.Conn.Write(p)
		}
	}
	c.wmu.Unlock()
	if err != nil {
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

// rawChild: read frames, echo each concurrently; exit on EOF.
func rawChild() {
	conn := childListen()
	br := bufio.NewReaderSize(conn, 64<<10)
	var wmu sync.Mutex
	for {
		frame := make([]byte, rawHdr, rawHdr+64)
		if _, err := io.ReadFull(br, frame); err != nil {
			os.Exit(0)
		}
		n := int(binary.BigEndian.Uint32(frame[0:4]))
		if n > cap(frame)-rawHdr {
			f := make([]byte, rawHdr, rawHdr+n)
			copy(f, frame)
			frame = f
		}
		frame = frame[:rawHdr+n]
		if _, err := io.ReadFull(br, frame[rawHdr:]); err != nil {
			os.Exit(0)
		}
		go func(frame []byte) {
			wmu.Lock()
			_, err := conn.Write(frame) // header (same length, same id) + body
			wmu.Unlock()
			if err != nil {
				os.Exit(0)
			}
		}(frame)
	}
}
