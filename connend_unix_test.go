//go:build unix

package worker_test

// How a connection ends, seen from a host on a raw Unix socket to a real
// worker: a host that half-closes (CloseWrite) has no more requests and
// gets the replies to those it sent; a host that closes the connection,
// or dies, gets its handlers cancelled.

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/isolated-workers/worker"
	"github.com/isolated-workers/worker/internal/wire"
)

// rawHost is a test acting as a host on a connection of its own to a
// spawned worker, after the handshake (with the worker's secret).
type rawHost struct {
	t    testing.TB
	conn *net.UnixConn
	rd   *wire.Reader
	term []byte // nil: length-prefixed frames (Binary)
}

// dialRaw connects to w as a second host; bin speaks Binary.
func dialRaw(t testing.TB, w *worker.Worker, bin bool) *rawHost {
	t.Helper()
	tok := lcToken(t, w.Token())
	c, err := net.DialTimeout("unix", tok["addr"].(string), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	h := &rawHost{t: t, conn: c.(*net.UnixConn), term: []byte("\n")}
	h.conn.SetDeadline(time.Now().Add(time.Minute))
	jr := wire.NewReader(c, h.term, 1<<20)
	if line, err := jr.Next(); err != nil || !strings.Contains(string(line), `"__iw.greeting"`) {
		t.Fatalf("the worker's greeting: %q, %v", line, err)
	}
	ser := map[bool]string{false: "JsonSerializer", true: "BinarySerializer"}[bin]
	payload, _ := json.Marshal(map[string]any{"protocol": 1, "serializer": ser, "secret": tok["secret"],
		"id": tok["id"], "capabilities": []string{"cancel", "deadline", "shutdown"}})
	h.write(append(wire.AppendJSON(nil, "__iw.hello", "hello", payload, 0), '\n'))
	if line, err := jr.Next(); err != nil || !strings.Contains(string(line), `"__iw.helloResult"`) {
		t.Fatalf("the reply to the hello: %q, %v", line, err)
	}
	if bin {
		h.term = nil
	}
	h.rd = wire.NewReader(c, h.term, 64<<20)
	h.rd.Prime(append([]byte(nil), jr.Buffered()...))
	return h
}

func (h *rawHost) write(b []byte) {
	h.t.Helper()
	if _, err := h.conn.Write(b); err != nil {
		h.t.Fatalf("writing to the worker: %v", err)
	}
}

// recv reads and parses the next frame.
func (h *rawHost) recv() (wire.Envelope, error) {
	var e wire.Envelope
	frame, err := h.rd.Next()
	if err != nil {
		return e, err
	}
	if h.term == nil {
		err = wire.ParseBinary(frame, &e)
	} else {
		err = wire.ParseJSON(frame, &e)
	}
	return e, err
}

// sendSleeps sends n sleep requests of ms each (JSON), and returns once
// all n handlers run.
func (h *rawHost) sendSleeps(w *worker.Worker, n, ms int) {
	h.t.Helper()
	var b []byte
	for i := range n {
		b = fmt.Appendf(b, `{"type":"sleep","tx":"s%d","payload":{"ms":%d}}`+"\n", i, ms)
	}
	h.write(b)
	awaitStarted(h.t, testCtx(h.t), w, Sleep.Name(), n)
}

// A host that half-closes the connection after its requests gets the
// reply of each (their handlers are not cancelled), and then the end of
// the connection; the worker goes on serving its own host.
func TestHalfCloseGetsEveryReply(t *testing.T) {
	w := spawn(t, "lc-worker", nil)
	h := dialRaw(t, w, false)
	const n = 8
	h.sendSleeps(w, n, 500)
	if err := h.conn.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for range n {
		e, err := h.recv()
		if err != nil {
			t.Fatalf("after %d replies: %v", len(seen), err)
		}
		var res SleepRes
		if string(e.Type) != "sleepResult" || json.Unmarshal(e.Payload, &res) != nil || !res.Slept || seen[string(e.Tx)] {
			t.Fatalf("reply %q to %q: %s; want each sleep to complete, once", e.Type, e.Tx, e.Payload)
		}
		seen[string(e.Tx)] = true
	}
	if e, err := h.recv(); err != io.EOF {
		t.Fatalf("after the replies: %q, %v; want the end of the connection", e.Type, err)
	}
	if _, err := worker.Call(testCtx(t), w, Ping, PingReq{}); err != nil {
		t.Fatalf("the worker's own host, afterwards: %v", err)
	}
}

// A host that closes the connection, or half-closes it and then closes
// it, gets its handlers cancelled at once: nobody would read their
// replies.
func TestCloseCancelsHandlers(t *testing.T) {
	for _, half := range []bool{false, true} {
		t.Run(map[bool]string{false: "close", true: "half-close then close"}[half], func(t *testing.T) {
			w := spawn(t, "lc-worker", nil)
			h := dialRaw(t, w, false)
			const n = 4
			h.sendSleeps(w, n, 60_000)
			if half {
				h.conn.CloseWrite()
				// Most likely, the worker reads the end of input before
				// the close: then it is waiting for the handlers when the
				// host closes. Either way, they must be cancelled.
				if _, err := worker.Call(testCtx(t), w, Ping, PingReq{}); err != nil {
					t.Fatal(err)
				}
			}
			h.conn.Close()
			for range n {
				handlerCanceled(t, w)
			}
		})
	}
}
