package worker_test

// Hostile input from the host's side, over raw connections: what a Server
// does with a host that breaks the protocol (hostile_client_test.go has the
// Client's side). docs/reliability.md lists the outcomes asserted here.

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
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
