package main

// naive-ndjson: a deliberately naive design, for reference. Newline-
// delimited encoding/json envelopes {"id","method","payload","error"} with a
// fresh random UUID string per call, a mutex-guarded map of pending
// channels keyed by that string, and the payload decoded twice on each side
// (envelope decoded with payload as `any`, then re-marshalled and decoded
// into the typed value). []byte payloads travel as base64 (encoding/json's
// default). The child handles each request in its own goroutine.

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"sync"
)

type naiveEnvelope struct {
	ID      string `json:"id"`
	Method  string `json:"method,omitempty"`
	Payload any    `json:"payload,omitempty"`
	Error   string `json:"error,omitempty"`
}

type naiveClient struct {
	lc      *listeningChild
	wmu     sync.Mutex
	mu      sync.Mutex
	pending map[string]chan naiveEnvelope
	err     error
}

func spawnNaive(ctx context.Context) (Client, error) {
	lc, err := startListeningChild("naive")
	if err != nil {
		return nil, err
	}
	c := &naiveClient{lc: lc, pending: make(map[string]chan naiveEnvelope)}
	go c.readLoop()
	return c, nil
}

func newUUID() string {
	var u [16]byte
	rand.Read(u[:])
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

func (c *naiveClient) readLoop() {
	br := bufio.NewReaderSize(c.lc.Conn, 64<<10)
	var err error
	for {
		var line []byte
		line, err = br.ReadBytes('\n')
		if err != nil {
			break
		}
		var env naiveEnvelope
		if err = json.Unmarshal(line, &env); err != nil {
			break
		}
		c.mu.Lock()
		ch := c.pending[env.ID]
		delete(c.pending, env.ID)
		c.mu.Unlock()
		if ch != nil {
			ch <- env
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

func (c *naiveClient) call(ctx context.Context, method string, req, res any) error {
	id := newUUID()
	ch := make(chan naiveEnvelope, 1)
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return c.err
	}
	c.pending[id] = ch
	c.mu.Unlock()
	line, err := json.Marshal(naiveEnvelope{ID: id, Method: method, Payload: req})
	if err != nil {
		return err
	}
	line = append(line, '\n')
	c.wmu.Lock()
	_, err = c.lc.Conn.Write(line)
	c.wmu.Unlock()
	if err != nil {
		return err
	}
	select {
	case env, ok := <-ch:
		if !ok {
			return errors.New("naive: connection closed")
		}
		if env.Error != "" {
			return errors.New(env.Error)
		}
		b, err := json.Marshal(env.Payload) // second decode of the payload
		if err != nil {
			return err
		}
		return json.Unmarshal(b, res)
	case <-ctx.Done():
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
		return ctx.Err()
	}
}

func (c *naiveClient) Ping(ctx context.Context) error {
	var res PingRes
	if err := c.call(ctx, "ping", PingReq{Message: pingMessage}, &res); err != nil {
		return err
	}
	return checkPing(res.Message)
}

func (c *naiveClient) Echo(ctx context.Context, p []byte) ([]byte, error) {
	var res []byte
	err := c.call(ctx, "echo", p, &res)
	return res, err
}

func (c *naiveClient) Close() error { return c.lc.Close() }

func naiveChild() {
	conn := childListen()
	br := bufio.NewReaderSize(conn, 64<<10)
	var wmu sync.Mutex
	reply := func(env naiveEnvelope) {
		line, err := json.Marshal(env)
		if err != nil {
			line, _ = json.Marshal(naiveEnvelope{ID: env.ID, Error: err.Error()})
		}
		wmu.Lock()
		_, err = conn.Write(append(line, '\n'))
		wmu.Unlock()
		if err != nil {
			os.Exit(0)
		}
	}
	for {
		line, err := br.ReadBytes('\n')
		if err != nil {
			os.Exit(0)
		}
		go func(line []byte) {
			var env naiveEnvelope
			if err := json.Unmarshal(line, &env); err != nil {
				fatal(err)
			}
			b, err := json.Marshal(env.Payload) // second decode of the payload
			if err != nil {
				reply(naiveEnvelope{ID: env.ID, Error: err.Error()})
				return
			}
			switch env.Method {
			case "ping":
				var req PingReq
				if err := json.Unmarshal(b, &req); err != nil {
					reply(naiveEnvelope{ID: env.ID, Error: err.Error()})
					return
				}
				reply(naiveEnvelope{ID: env.ID, Payload: PingRes{Message: req.Message}})
			case "echo":
				var req []byte
				if err := json.Unmarshal(b, &req); err != nil {
					reply(naiveEnvelope{ID: env.ID, Error: err.Error()})
					return
				}
				reply(naiveEnvelope{ID: env.ID, Payload: req})
			default:
				reply(naiveEnvelope{ID: env.ID, Error: "unknown method " + env.Method})
			}
		}(line)
	}
}
