package worker_test

// Hostile input from the worker's side, over raw connections: what a
// Client does with a worker that breaks the protocol (hostile_test.go has
// the Server's side). docs/reliability.md lists the outcomes asserted here.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/isolated-workers/worker"
	"github.com/isolated-workers/worker/internal/wire"
)

// hsFake is a test acting as a worker on a raw connection to a Client.
type hsFake struct {
	t    *testing.T
	conn net.Conn
	rd   *wire.Reader
}

// hsNewFake returns a Client (base protocol: no handshake) connected
// to a fake worker driven by the test.
func hsNewFake(t *testing.T, opts *worker.Options) (*worker.Client, *hsFake) {
	t.Helper()
	if opts == nil {
		opts = &worker.Options{}
	}
	opts.BaseProtocol = true
	host, wk := net.Pipe()
	f := &hsFake{t: t, conn: wk}
	var term []byte
	if opts.Serializer != worker.Binary {
		term = []byte("\n")
	}
	f.rd = wire.NewReader(wk, term, 64<<20)
	c, err := worker.NewClient(testCtx(t), host, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		wk.Close()
	})
	return c, f
}

// next reads the next request.
func (f *hsFake) next() wire.Envelope {
	f.t.Helper()
	f.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	frame, err := f.rd.Next()
	if err != nil {
		f.t.Fatalf("fake worker: reading a request: %v", err)
	}
	var e wire.Envelope
	if err := wire.ParseJSON(frame, &e); err != nil {
		f.t.Fatalf("fake worker: %v", err)
	}
	e.Type, e.Tx = bytes.Clone(e.Type), bytes.Clone(e.Tx)
	e.Payload = bytes.Clone(e.Payload)
	return e
}

func (f *hsFake) send(line string) {
	f.t.Helper()
	f.write([]byte(line + "\n"))
}

func (f *hsFake) write(b []byte) {
	f.t.Helper()
	f.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := f.conn.Write(b); err != nil {
		f.t.Fatalf("fake worker: writing: %v", err)
	}
}

// result is the outcome of a call run in the background.
type hsResult struct {
	res PingRes
	err error
}

func hsGoPing(ctx context.Context, c worker.Caller, msg string) <-chan hsResult {
	ch := make(chan hsResult, 1)
	go func() {
		res, err := worker.Call(ctx, c, Ping, PingReq{Message: msg})
		ch <- hsResult{res, err}
	}()
	return ch
}

func hsAwait(t *testing.T, ch <-chan hsResult) hsResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("the call did not return within 10s")
		return hsResult{}
	}
}

// hsPingReply answers a ping request.
func hsPingReply(e wire.Envelope) string {
	var p PingReq
	json.Unmarshal(e.Payload, &p)
	return fmt.Sprintf(`{"type":"pingResult","tx":%q,"payload":{"message":"pong: %s"}}`, e.Tx, p.Message)
}

func TestHostileClientReplyToUnknownTx(t *testing.T) {
	c, f := hsNewFake(t, nil)
	ch := hsGoPing(testCtx(t), c, "a")
	req := f.next()
	f.send(`{"type":"pingResult","tx":"no-such-call","payload":{"message":"stray"}}`)
	f.send(`{"type":"pingError","tx":"","payload":{"message":"stray","name":"Error"}}`)
	f.send(hsPingReply(req))
	if r := hsAwait(t, ch); r.err != nil || r.res.Message != "pong: a" {
		t.Fatalf("got %+v; want the call's own result", r)
	}
	if err := c.Err(); err != nil {
		t.Fatalf("the connection failed: %v", err)
	}
}

func TestHostileClientReplyOfWrongType(t *testing.T) {
	for _, typ := range []string{"addResult", "ping", "pingresult", "Result", "pingResultX"} {
		t.Run(typ, func(t *testing.T) {
			c, f := hsNewFake(t, nil)
			ch := hsGoPing(testCtx(t), c, "a")
			req := f.next()
			f.send(fmt.Sprintf(`{"type":%q,"tx":%q,"payload":{"message":"x"}}`, typ, req.Tx))
			r := hsAwait(t, ch)
			if !errors.Is(r.err, worker.ErrProtocol) {
				t.Fatalf("got %+v; want an error matching ErrProtocol", r)
			}
			// Only that call failed.
			ch = hsGoPing(testCtx(t), c, "b")
			f.send(hsPingReply(f.next()))
			if r := hsAwait(t, ch); r.err != nil || r.res.Message != "pong: b" {
				t.Fatalf("the next call got %+v", r)
			}
		})
	}
}

func TestHostileClientUndecodableErrorReply(t *testing.T) {
	c, f := hsNewFake(t, nil)
	ch := hsGoPing(testCtx(t), c, "a")
	req := f.next()
	f.send(fmt.Sprintf(`{"type":"pingError","tx":%q,"payload":[1,2]}`, req.Tx))
	if r := hsAwait(t, ch); !errors.Is(r.err, worker.ErrProtocol) {
		t.Fatalf("got %+v; want an error matching ErrProtocol", r)
	}
	ch = hsGoPing(testCtx(t), c, "b")
	f.send(hsPingReply(f.next()))
	if r := hsAwait(t, ch); r.err != nil {
		t.Fatalf("the next call got %+v", r)
	}
}

// hsPending starts n pings and waits until the fake worker has read
// them all, so that they are all waiting for replies.
func hsPending(t *testing.T, c *worker.Client, f *hsFake, n int) []<-chan hsResult {
	var chs []<-chan hsResult
	for i := range n {
		chs = append(chs, hsGoPing(testCtx(t), c, fmt.Sprint(i)))
	}
	for range n {
		f.next()
	}
	return chs
}

func TestHostileClientGarbage(t *testing.T) {
	for _, garbage := range []string{"garbage\n", "{\"type\":\"pingResult\",\"tx\":\n", "\x00\x01\x02\n"} {
		t.Run("", func(t *testing.T) {
			c, f := hsNewFake(t, nil)
			chs := hsPending(t, c, f, 3)
			f.write([]byte(garbage))
			for _, ch := range chs {
				if r := hsAwait(t, ch); !errors.Is(r.err, worker.ErrProtocol) {
					t.Fatalf("a pending call got %+v; want an error matching ErrProtocol", r)
				}
			}
			<-c.Done()
			if !errors.Is(c.Err(), worker.ErrProtocol) {
				t.Fatalf("Client.Err() = %v; want ErrProtocol", c.Err())
			}
			// Later calls fail at once with the same error.
			if r := hsAwait(t, hsGoPing(testCtx(t), c, "late")); !errors.Is(r.err, worker.ErrProtocol) {
				t.Fatalf("a later call got %+v", r)
			}
		})
	}
}

func TestHostileClientClosedMidReply(t *testing.T) {
	c, f := hsNewFake(t, nil)
	chs := hsPending(t, c, f, 3)
	f.write([]byte(`{"type":"pingResult","tx":"`))
	f.conn.Close()
	for _, ch := range chs {
		if r := hsAwait(t, ch); !errors.Is(r.err, io.ErrUnexpectedEOF) {
			t.Fatalf("a pending call got %+v; want an error matching io.ErrUnexpectedEOF", r)
		}
	}
}

func TestHostileClientWorkerNeverAnswers(t *testing.T) {
	c, f := hsNewFake(t, nil)
	ctx, cancel := context.WithTimeout(testCtx(t), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	ch := hsGoPing(ctx, c, "silence")
	f.next() // read, never answered
	r := hsAwait(t, ch)
	if !errors.Is(r.err, context.DeadlineExceeded) {
		t.Fatalf("got %+v; want context.DeadlineExceeded", r)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("the call returned %v after its 200ms deadline", d)
	}
	// The connection is fine: a late answer is dropped, the next call works.
	ch = hsGoPing(testCtx(t), c, "next")
	next := f.next()
	f.send(`{"type":"pingResult","tx":"late","payload":{"message":"late"}}`)
	f.send(hsPingReply(next))
	if r := hsAwait(t, ch); r.err != nil || r.res.Message != "pong: next" {
		t.Fatalf("the next call got %+v", r)
	}
}

func TestHostileClientReplyOverLimit(t *testing.T) {
	c, f := hsNewFake(t, &worker.Options{MaxMessageSize: 4 << 10})
	chs := hsPending(t, c, f, 2)
	go f.conn.Write(bytes.Repeat([]byte("z"), 1<<20))
	for _, ch := range chs {
		r := hsAwait(t, ch)
		if !errors.Is(r.err, worker.ErrProtocol) || !strings.Contains(r.err.Error(), "exceeds the maximum message size") {
			t.Fatalf("a pending call got %+v; want ErrProtocol naming the size", r)
		}
	}
}

func TestHostileClientHugeLengthPrefix(t *testing.T) {
	c, f := hsNewFake(t, &worker.Options{Serializer: worker.Binary})
	ch := hsGoPing(testCtx(t), c, "a")
	f.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := f.rd.Next(); err != nil {
		t.Fatal(err)
	}
	go f.conn.Write([]byte{0xff, 0xff, 0xff, 0xff, 1, 2, 3})
	if r := hsAwait(t, ch); !errors.Is(r.err, worker.ErrProtocol) {
		t.Fatalf("got %+v; want ErrProtocol", r)
	}
}

// An oversized request fails with ErrTooLarge before anything is written:
// the fake worker is not even reading when it is made, and the next frame
// it reads is the next call's.
func TestHostileOversizedRequestNotSent(t *testing.T) {
	c, f := hsNewFake(t, &worker.Options{MaxMessageSize: 1 << 10})
	ctx, cancel := context.WithTimeout(testCtx(t), 5*time.Second)
	defer cancel()
	_, err := worker.Call(ctx, c, Echo, bytes.Repeat([]byte("b"), 2<<10))
	if !errors.Is(err, worker.ErrTooLarge) {
		t.Fatalf("got %v; want ErrTooLarge", err)
	}
	ch := hsGoPing(testCtx(t), c, "after")
	req := f.next()
	if string(req.Type) != "ping" {
		t.Fatalf("the first frame the worker got is a %q", req.Type)
	}
	f.send(hsPingReply(req))
	if r := hsAwait(t, ch); r.err != nil {
		t.Fatalf("the next call got %+v", r)
	}
}

// A request over the worker's limit (but not the host's) makes the worker
// close the connection; an extended host is told why, and every call in
// flight fails with ErrProtocol.
func TestHostileRequestOverWorkerLimit(t *testing.T) {
	s := worker.NewServer(&worker.ServerOptions{MaxMessageSize: 1 << 10})
	worker.Handle(s, Echo, func(ctx context.Context, p []byte) ([]byte, error) { return p, nil })
	host, srv := net.Pipe()
	done := make(chan error, 1)
	go func() { done <- s.ServeConn(context.Background(), srv) }()
	c, err := worker.NewClient(testCtx(t), host, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = worker.Call(testCtx(t), c, Echo, bytes.Repeat([]byte("b"), 4<<10))
	// The host hears the worker's explanation, unless the rest of its own
	// write fails first (the worker stops reading at its limit): a race.
	switch {
	case errors.Is(err, worker.ErrProtocol) && strings.Contains(err.Error(), "exceeds the maximum message size"):
	case err != nil && strings.Contains(err.Error(), "writing to the worker"):
	default:
		t.Fatalf("got %v; want ErrProtocol naming the size, or the failed write", err)
	}
	if err := hsWait(t, done, "ServeConn returning"); !errors.Is(err, worker.ErrProtocol) ||
		!strings.Contains(err.Error(), "exceeds the maximum message size") {
		t.Fatalf("ServeConn returned %v; want ErrProtocol naming the size", err)
	}
	hsWait(t, c.Done(), "the client noticing the closed connection")
}

// A peer that stops reading cannot hold a call past its own deadline, nor
// the calls queued behind it; and once it reads again, the connection
// works.
func TestHostileClientWorkerStopsReading(t *testing.T) {
	c, f := hsNewFake(t, nil)
	var wg sync.WaitGroup
	errs := make([]error, 8)
	took := make([]time.Duration, 8)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := time.Duration(100+50*i) * time.Millisecond
			ctx, cancel := context.WithTimeout(testCtx(t), d)
			defer cancel()
			start := time.Now()
			_, errs[i] = worker.Call(ctx, c, Echo, bytes.Repeat([]byte("p"), 1<<10))
			took[i] = time.Since(start) - d
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("call %d: %v; want context.DeadlineExceeded", i, err)
		}
		if took[i] > 2*time.Second {
			t.Errorf("call %d returned %v after its deadline", i, took[i])
		}
	}
	if err := c.Err(); err != nil {
		t.Fatalf("the connection failed: %v", err)
	}
	ch := hsGoPing(testCtx(t), c, "again")
	f.send(hsPingReply(f.next()))
	if r := hsAwait(t, ch); r.err != nil {
		t.Fatalf("after the worker read again: %+v", r)
	}
}

// A host that sends requests and never reads the replies: the server
// stops reading once its in-flight bound is reached, instead of growing,
// and it ends when the host hangs up.
func TestHostileServerHostStopsReading(t *testing.T) {
	h := hsServe(t, nil, false)
	base := runtime.NumGoroutine()
	const tries = 5000
	sent := 0
	for ; sent < tries; sent++ {
		h.conn.SetWriteDeadline(time.Now().Add(500 * time.Millisecond))
		line := fmt.Sprintf(`{"type":"ping","tx":"%d","payload":{"message":"m"}}`+"\n", sent)
		if _, err := h.conn.Write([]byte(line)); err != nil {
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("write %d: %v", sent, err)
			}
			break
		}
	}
	if sent == tries {
		t.Fatalf("the server read all %d requests while none of the replies was read", tries)
	}
	if sent < 1024 {
		t.Fatalf("the server stopped reading after %d requests; it allows 1024 in flight", sent)
	}
	// 1024 handlers in flight (the server's bound), plus slack for the
	// rest of the process.
	if g := runtime.NumGoroutine() - base; g > 1024+300 {
		t.Fatalf("%d goroutines after %d unread requests", g, sent)
	}
	t.Logf("the server stopped reading after %d requests", sent)
	h.conn.Close()
	if err := h.waitDone(); err != nil {
		t.Fatalf("ServeConn: %v", err)
	}
}

// A server shutdown is not held up forever by a host that does not read
// its replies: past the drain timeout, the stuck writes are abandoned.
func TestHostileServerShutdownWithStuckHost(t *testing.T) {
	s := worker.NewServer(nil)
	started := make(chan struct{})
	worker.Handle(s, Ping, func(ctx context.Context, p PingReq) (PingRes, error) {
		close(started)
		return PingRes(p), nil
	})
	host, srv := net.Pipe()
	defer host.Close()
	done := make(chan error, 1)
	go func() { done <- s.ServeConn(context.Background(), srv) }()
	host.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := host.Write([]byte(`{"type":"ping","tx":"1","payload":{"message":"m"}}` + "\n")); err != nil {
		t.Fatal(err)
	}
	<-started
	// The reply cannot be written: nobody reads the host's end.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	stopped := make(chan error, 1)
	go func() { stopped <- s.Shutdown(ctx) }()
	select {
	case err := <-stopped:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Shutdown returned %v; want the drain deadline's error", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown hung on a host that does not read")
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("ServeConn did not return after Shutdown")
	}
}

// hsStillServes asserts that the worker still answers its host.
func hsStillServes(t *testing.T, w *worker.Worker) {
	t.Helper()
	res, err := worker.Call(testCtx(t), w, Ping, PingReq{Message: "still?"})
	if err != nil || res.Message != "pong: still?" {
		t.Fatalf("the worker no longer serves its host: %+v, %v", res, err)
	}
}

// hsExpectPanic asserts that err is a panic reported by the worker, with
// its stack.
func hsExpectPanic(t *testing.T, err error, msg string) {
	t.Helper()
	var re *worker.RemoteError
	if !errors.As(err, &re) {
		t.Fatalf("got %v (%T); want a *worker.RemoteError", err, err)
	}
	if re.Code != "E_PANIC" || !strings.Contains(re.Message, msg) {
		t.Fatalf("got %+v; want code %s and a message containing %q", re, "E_PANIC", msg)
	}
	if !strings.Contains(re.Stack, "goroutine ") || !strings.Contains(re.Stack, ".go:") {
		t.Fatalf("the error carries no stack: %q", re.Stack)
	}
}

func TestHostileHandlerPanic(t *testing.T) {
	w := spawn(t, "hostile", nil)
	pid := w.Pid()
	_, err := worker.Call(testCtx(t), w, Panic, "kaboom")
	hsExpectPanic(t, err, "kaboom")
	if !strings.Contains(err.(*worker.RemoteError).Stack, "main_test.go") {
		t.Fatalf("the stack does not show the handler: %s", err.(*worker.RemoteError).Stack)
	}
	hsStillServes(t, w)
	if w.Pid() != pid {
		t.Fatalf("the worker was replaced (pid %d, then %d)", pid, w.Pid())
	}
}

func TestHostileMiddlewarePanic(t *testing.T) {
	w := spawn(t, "hostile", nil)
	pid := w.Pid()
	_, err := worker.Call(testCtx(t), w, HSMwPanicIn, "x")
	hsExpectPanic(t, err, "incoming middleware exploded")
	hsStillServes(t, w)
	_, err = worker.Call(testCtx(t), w, HSMwPanicOut, "x")
	hsExpectPanic(t, err, "outgoing middleware exploded")
	hsStillServes(t, w)
	if w.Pid() != pid {
		t.Fatalf("the worker was replaced (pid %d, then %d)", pid, w.Pid())
	}
}

// A panic in the host's own middleware fails that call only.
func TestHostileHostMiddlewarePanic(t *testing.T) {
	mw := func(ctx context.Context, m *worker.Message) error {
		switch {
		case !m.Incoming && m.Type == Add.Name():
			var req AddReq
			if m.Decode(&req) == nil && req.A < 0 {
				panic("host middleware exploded")
			}
		case m.Incoming && m.Type == Add.Name()+"Result" && bytes.Contains(m.Payload, []byte("-")):
			panic("host middleware exploded")
		}
		return nil
	}
	w := spawn(t, "worker", &worker.Options{Middleware: []worker.Middleware{mw}})
	_, err := worker.Call(testCtx(t), w, Add, AddReq{A: -1, B: 0})
	hsExpectPanic(t, err, "host middleware exploded")
	_, err = worker.Call(testCtx(t), w, Add, AddReq{A: 1, B: -5}) // the result, -4, makes it panic
	hsExpectPanic(t, err, "host middleware exploded")
	if res, err := worker.Call(testCtx(t), w, Add, AddReq{A: 1, B: 2}); err != nil || res.Sum != 3 {
		t.Fatalf("the next call got %+v, %v", res, err)
	}
}

// Against a real worker process: an oversized request fails alone, with
// ErrTooLarge, and the connection stays usable. Under Binary, a []byte of
// more than 32 KiB is written after its frame's head rather than copied
// into the frame; the limit holds for it too, and it arrives whole.
func TestHostileOversizedRequestRealWorker(t *testing.T) {
	for _, s := range serializers {
		t.Run(s.name, func(t *testing.T) {
			w := spawn(t, s.role, &worker.Options{Serializer: s.ser, MaxMessageSize: 64 << 10})
			_, err := worker.Call(testCtx(t), w, Echo, bytes.Repeat([]byte("o"), 64<<10))
			if !errors.Is(err, worker.ErrTooLarge) {
				t.Fatalf("got %v; want ErrTooLarge", err)
			}
			for _, n := range []int{16 << 10, 40 << 10} {
				p := bytes.Repeat([]byte("s"), n)
				if got, err := worker.Call(testCtx(t), w, Echo, p); err != nil || !bytes.Equal(got, p) {
					t.Fatalf("the next call (%d bytes) got %d bytes, %v", n, len(got), err)
				}
			}
			hsStillServes(t, w)
		})
	}
}

// wireError is the payload of an error reply on the wire.
type wireError struct {
	Message string `json:"message" cbor:"message"`
	Name    string `json:"name" cbor:"name"`
	Stack   string `json:"stack,omitempty" cbor:"stack,omitempty"`
	Code    string `json:"code,omitempty" cbor:"code,omitempty"`
}
