package worker_test

// Hostile input in both directions, over raw connections: what a Server
// does with a host that breaks the protocol, and what a Client does with
// a worker that does. docs/reliability.md lists the outcomes asserted here.

import (
	"bytes"
	"context"
	"encoding/binary"
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

// HSGate's handler blocks until the test releases it.
var HSGate = worker.Define[string, string]("gate")

// hsHost is a test acting as a host on a raw connection to a Server.
type hsHost struct {
	t    *testing.T
	conn net.Conn
	rd   *wire.Reader
	bin  bool
	done chan error // ServeConn's result
	gate chan struct{}
}

// hsServe serves a fresh Server with a few handlers on one end of a
// net.Pipe and returns the other end. With hello, it first runs the
// handshake as an extended host would.
func hsServe(t *testing.T, opts *worker.ServerOptions, hello bool) *hsHost {
	t.Helper()
	if opts == nil {
		opts = &worker.ServerOptions{}
	}
	s := worker.NewServer(opts)
	h := &hsHost{t: t, done: make(chan error, 1), gate: make(chan struct{})}
	worker.Handle(s, Ping, func(ctx context.Context, p PingReq) (PingRes, error) {
		return PingRes{Message: "pong: " + p.Message}, nil
	})
	worker.Handle(s, Echo, func(ctx context.Context, p []byte) ([]byte, error) { return p, nil })
	worker.Handle(s, HSGate, func(ctx context.Context, p string) (string, error) {
		select {
		case <-h.gate:
			return "released " + p, nil
		case <-ctx.Done():
			return "", ctx.Err()
		}
	})
	h.bin = opts.Serializer == worker.Binary
	var srv net.Conn
	h.conn, srv = net.Pipe()
	go func() { h.done <- s.ServeConn(context.Background(), srv) }()
	t.Cleanup(func() {
		h.conn.Close()
		h.waitDone()
	})
	var term []byte
	if !h.bin {
		term = []byte("\n")
	}
	if hello {
		h.send(`{"type":"__iw.hello","tx":"hello","payload":{"protocol":1,"serializer":"` +
			map[bool]string{false: "JsonSerializer", true: "BinarySerializer"}[h.bin] + `","capabilities":[]}}`)
		jr := wire.NewReader(h.conn, []byte("\n"), 1<<20)
		h.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		line, err := jr.Next()
		if err != nil || !bytes.Contains(line, []byte(`"__iw.helloResult"`)) {
			t.Fatalf("handshake: %q, %v", line, err)
		}
		h.rd = wire.NewReader(h.conn, term, 64<<20)
		h.rd.Prime(append([]byte(nil), jr.Buffered()...))
	} else {
		h.rd = wire.NewReader(h.conn, term, 64<<20)
	}
	return h
}

// send writes one JSON line (a frame of the JSON serializer).
func (h *hsHost) send(line string) {
	h.t.Helper()
	h.write([]byte(line + "\n"))
}

func (h *hsHost) write(b []byte) {
	h.t.Helper()
	h.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := h.conn.Write(b); err != nil {
		h.t.Fatalf("writing to the server: %v", err)
	}
}

// reply is one parsed reply frame.
type hsReply struct {
	Type, Tx string
	Payload  []byte
	Err      wireError // decoded when Type ends in "Error"
}

// recv reads the next reply.
func (h *hsHost) recv() hsReply {
	h.t.Helper()
	r, err := h.tryRecv()
	if err != nil {
		h.t.Fatalf("reading a reply: %v", err)
	}
	return r
}

func (h *hsHost) tryRecv() (hsReply, error) {
	h.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	frame, err := h.rd.Next()
	if err != nil {
		return hsReply{}, err
	}
	var e wire.Envelope
	var ser worker.Serializer = worker.JSON
	if h.bin {
		ser = worker.Binary
		err = wire.ParseBinary(frame, &e)
	} else {
		err = wire.ParseJSON(frame, &e)
	}
	if err != nil {
		return hsReply{}, fmt.Errorf("the server sent an unparsable frame %q: %v", frame, err)
	}
	r := hsReply{Type: string(e.Type), Tx: string(e.Tx), Payload: append([]byte(nil), e.Payload...)}
	if strings.HasSuffix(r.Type, "Error") {
		if err := ser.DecodePayload(e.Payload, &r.Err); err != nil {
			return r, fmt.Errorf("undecodable error payload %q: %v", e.Payload, err)
		}
	}
	return r, nil
}

// expectClosed asserts that the server closes the connection, without
// sending anything else, and that ServeConn returns an error matching
// every target.
func (h *hsHost) expectClosed(targets ...error) error {
	h.t.Helper()
	if r, err := h.tryRecv(); err == nil {
		h.t.Fatalf("got a reply %+v; want the connection closed", r)
	} else if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrClosedPipe) {
		h.t.Fatalf("reading: %v; want the connection closed (EOF)", err)
	}
	err := h.waitDone()
	for _, target := range targets {
		if !errors.Is(err, target) {
			h.t.Fatalf("ServeConn returned %v; want an error matching %v", err, target)
		}
	}
	return err
}

// waitDone waits for ServeConn to return and returns its result.
func (h *hsHost) waitDone() error {
	h.t.Helper()
	select {
	case err := <-h.done:
		h.done <- err // for the next caller
		return err
	case <-time.After(10 * time.Second):
		h.t.Fatal("ServeConn did not return within 10s")
		return nil
	}
}

// expectError asserts that the next reply is an error reply of the given
// type and tx, with the code and a message containing msg.
func (h *hsHost) expectError(typ, tx, code, msg string) {
	h.t.Helper()
	r := h.recv()
	if r.Type != typ || r.Tx != tx || r.Err.Code != code || !strings.Contains(r.Err.Message, msg) {
		h.t.Fatalf("got %+v; want a %q reply to tx %q with code %s and a message containing %q", r, typ, tx, code, msg)
	}
}

// expectUsable asserts that a ping still gets its answer.
func (h *hsHost) expectUsable() {
	h.t.Helper()
	h.send(`{"type":"ping","tx":"still-there","payload":{"message":"?"}}`)
	r := h.recv()
	if r.Type != "pingResult" || r.Tx != "still-there" || string(r.Payload) != `{"message":"pong: ?"}` {
		h.t.Fatalf("the connection is not usable any more: got %+v", r)
	}
}

func TestHostileServerInvalidJSON(t *testing.T) {
	for _, line := range []string{
		`{"type":"ping","tx":"1",`,
		`not json at all`,
		`["type","ping"]`,
		`{"type":"ping","tx":"1"} {"type":"ping","tx":"2"}`,
		`{"type":"ping","tx":1}`,
		"{\"type\":\"ping\",\"tx\":\"a\x01b\"}",
		`{"type":"ping","tx":"1","payload":[[[[}`,
	} {
		t.Run("", func(t *testing.T) {
			h := hsServe(t, nil, false)
			h.send(line)
			h.expectClosed(worker.ErrProtocol)
		})
	}
}

// An extended host is told why, in a protocol-error message, before the
// connection closes.
func TestHostileServerInvalidJSONExtendedHost(t *testing.T) {
	h := hsServe(t, nil, true)
	h.send(`{"type":"ping","tx":"1",`)
	r := h.recv()
	if r.Type != "__iw.protocolError" || r.Tx != "" || r.Err.Name != "ProtocolError" || !strings.Contains(r.Err.Message, "cannot parse") {
		t.Fatalf("got %+v; want a __iw.protocolError with the reason", r)
	}
	h.expectClosed(worker.ErrProtocol)
}

func TestHostileServerMessageWithoutTx(t *testing.T) {
	for _, line := range []string{
		`{"type":"ping","payload":{"message":"x"}}`,
		`{"type":"ping","tx":"","payload":{"message":"x"}}`,
		`{}`,
	} {
		t.Run("", func(t *testing.T) {
			h := hsServe(t, nil, false)
			h.send(line)
			err := h.expectClosed(worker.ErrProtocol)
			if !strings.Contains(err.Error(), "transaction id") {
				t.Fatalf("ServeConn returned %q; want it to name the missing transaction id", err)
			}
		})
	}
}

func TestHostileServerMessageWithoutType(t *testing.T) {
	h := hsServe(t, nil, false)
	h.send(`{"tx":"7","payload":{"message":"x"}}`)
	h.expectError("Error", "7", "E_BAD_PAYLOAD", "message without a type")
	h.send(`{"type":"","tx":"8"}`)
	h.expectError("Error", "8", "E_BAD_PAYLOAD", "message without a type")
	h.expectUsable()
}

func TestHostileServerDuplicateTx(t *testing.T) {
	h := hsServe(t, nil, false)
	h.send(`{"type":"gate","tx":"d","payload":"first"}`)
	h.send(`{"type":"ping","tx":"d","payload":{"message":"second"}}`)
	h.expectError("pingError", "d", "E_DUPLICATE_TX", `"d" is already in flight`)
	close(h.gate)
	if r := h.recv(); r.Type != "gateResult" || r.Tx != "d" || string(r.Payload) != `"released first"` {
		t.Fatalf("the first request got %+v; want its own result", r)
	}
	// Once the first is answered, the tx may be used again.
	h.send(`{"type":"ping","tx":"d","payload":{"message":"third"}}`)
	if r := h.recv(); r.Type != "pingResult" || r.Tx != "d" {
		t.Fatalf("got %+v", r)
	}
}

func TestHostileServerUnknownType(t *testing.T) {
	h := hsServe(t, nil, false)
	h.send(`{"type":"nope","tx":"u","payload":{"a":1}}`)
	h.expectError("nopeError", "u", "E_UNKNOWN_MESSAGE", "Unknown message type: nope")
	// The reserved prefix is no way in: the handshake is only valid first.
	h.send(`{"type":"__iw.hello","tx":"late","payload":{}}`)
	h.expectError("__iw.helloError", "late", "E_UNKNOWN_MESSAGE", "Unknown message type: __iw.hello")
	h.expectUsable()
}

func TestHostileServerBlankLines(t *testing.T) {
	h := hsServe(t, nil, false)
	h.write([]byte("\n\n   \n\t\r\n \r\n"))
	h.send(`{"type":"ping","tx":"1","payload":{"message":"a"}}`)
	h.write([]byte("\n\n"))
	if r := h.recv(); r.Type != "pingResult" || r.Tx != "1" {
		t.Fatalf("got %+v", r)
	}
	// The next reply is the next request's: blank lines got none.
	h.expectUsable()
}

func TestHostileServerBadPayload(t *testing.T) {
	h := hsServe(t, nil, false)
	h.send(`{"type":"ping","tx":"p","payload":{"message":5}}`)
	h.expectError("pingError", "p", "E_BAD_PAYLOAD", `invalid payload for "ping"`)
	h.send(`{"type":"ping","tx":"q","payload":{bad}}`)
	h.expectError("pingError", "q", "E_BAD_PAYLOAD", `invalid payload for "ping"`)
	h.expectUsable()
}

// hsAllocated returns the bytes hsAllocated by the whole process while f ran.
func hsAllocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

func TestHostileServerLineOverLimit(t *testing.T) {
	const limit = 64 << 10
	for _, tc := range []struct {
		name string
		data []byte
	}{
		// A line that never ends: the server must not wait for the end.
		{"unterminated", bytes.Repeat([]byte("x"), 16<<20)},
		// A complete line one byte over the limit.
		{"terminated", append(bytes.Repeat([]byte("y"), limit+1), '\n')},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := hsServe(t, &worker.ServerOptions{MaxMessageSize: limit}, false)
			var err error
			alloc := hsAllocated(func() {
				wrote := make(chan error, 1)
				go func() {
					h.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
					_, err := h.conn.Write(tc.data)
					wrote <- err
				}()
				err = h.expectClosed(worker.ErrProtocol)
				<-wrote
			})
			if !strings.Contains(err.Error(), "exceeds the maximum message size") {
				t.Fatalf("ServeConn returned %q; want it to say that the message is too large", err)
			}
			// The server holds at most the limit and one read of the line;
			// 2 MiB leaves room for everything else the process does.
			if alloc > 2<<20 {
				t.Fatalf("the server hsAllocated %d bytes for a line over a %d-byte limit", alloc, limit)
			}
		})
	}
}

func TestHostileServerHugeLengthPrefix(t *testing.T) {
	for _, n := range []uint32{0xffffffff, 0x7fffffff, 64<<20 + 1} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			h := hsServe(t, &worker.ServerOptions{Serializer: worker.Binary}, false)
			var err error
			alloc := hsAllocated(func() {
				frame := binary.BigEndian.AppendUint32(nil, n)
				go h.conn.Write(append(frame, "and some bytes of the claimed frame"...))
				err = h.expectClosed(worker.ErrProtocol)
			})
			if !strings.Contains(err.Error(), "exceeds the maximum message size") {
				t.Fatalf("ServeConn returned %q; want it to say that the message is too large", err)
			}
			if alloc > 1<<20 {
				t.Fatalf("a frame claiming %d bytes made the server allocate %d bytes", n, alloc)
			}
		})
	}
}

func TestHostileServerBinaryGarbage(t *testing.T) {
	h := hsServe(t, &worker.ServerOptions{Serializer: worker.Binary}, false)
	// A frame of 3 bytes whose envelope has unknown flags.
	h.write([]byte{0, 0, 0, 3, 0xf0, 0, 0})
	h.expectClosed(worker.ErrProtocol)
}

func TestHostileServerDeepNesting(t *testing.T) {
	const depth = 200_000
	deep := strings.Repeat(`{"a":`, depth) + "1" + strings.Repeat("}", depth)
	opts := &worker.ServerOptions{MaxMessageSize: 8 << 20}

	t.Run("payload", func(t *testing.T) {
		// The envelope parser does not recurse; the payload's decoder
		// refuses the depth, and only this call fails.
		h := hsServe(t, opts, false)
		h.send(`{"type":"ping","tx":"deep","payload":` + deep + `}`)
		h.expectError("pingError", "deep", "E_BAD_PAYLOAD", "invalid payload")
		h.expectUsable()
	})
	t.Run("unknown-key", func(t *testing.T) {
		// Skipped unknown keys cost no stack either.
		h := hsServe(t, opts, false)
		h.send(`{"type":"ping","tx":"k","x":` + strings.Repeat("[", depth) + strings.Repeat("]", depth) + `,"payload":{"message":"m"}}`)
		if r := h.recv(); r.Type != "pingResult" || r.Tx != "k" {
			t.Fatalf("got %+v", r)
		}
	})
	t.Run("unbalanced", func(t *testing.T) {
		h := hsServe(t, opts, false)
		h.send(`{"type":"ping","tx":"u","payload":` + strings.Repeat("[", depth))
		h.expectClosed(worker.ErrProtocol)
	})
	t.Run("binary", func(t *testing.T) {
		h := hsServe(t, &worker.ServerOptions{Serializer: worker.Binary, MaxMessageSize: 8 << 20}, false)
		payload := append(bytes.Repeat([]byte{0x81}, depth), 0x01) // [[[[...1]]]] in CBOR
		body := wire.AppendBinary(nil, "ping", "cbor", payload, 0)
		h.write(append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...))
		h.expectError("pingError", "cbor", "E_BAD_PAYLOAD", "invalid payload")
	})
}

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
	w := spawn(t, "", &worker.Options{Middleware: []worker.Middleware{mw}})
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
			w := spawn(t, s.mode, &worker.Options{Serializer: s.ser, MaxMessageSize: 64 << 10})
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
