package worker_test

// Fuzzing of both ends of a connection with arbitrary bytes from the peer:
// FuzzServeConn plays a host that sends anything to a Server, FuzzClient a
// worker that answers anything to a Client. Neither may panic or hang.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/isolated-workers/worker"
	"github.com/isolated-workers/worker/internal/wire"
)

const (
	hsFuzzLimit   = 4 << 10 // MaxMessageSize in the fuzzed connections
	hsHelloPrefix = `{"type":"__iw.hello"`
	hsHangBound   = 5 * time.Second
)

func hsSerializer(bin bool) (worker.Serializer, []byte) {
	if bin {
		return worker.Binary, nil
	}
	return worker.JSON, []byte("\n")
}

func hsParse(bin bool, frame []byte, e *wire.Envelope) error {
	if bin {
		return wire.ParseBinary(frame, e)
	}
	return wire.ParseJSON(frame, e)
}

// hsFrame frames a request for the fuzz seeds.
func hsFrame(bin bool, typ, tx, payload string) []byte {
	if !bin {
		var p []byte
		if payload != "" {
			p = []byte(payload)
		}
		return append(wire.AppendJSON(nil, typ, tx, p, 0), '\n')
	}
	var p []byte
	if payload != "" {
		var v any
		json.Unmarshal([]byte(payload), &v)
		p, _ = worker.Binary.AppendPayload(nil, v)
	}
	b := wire.AppendPrefix(nil)
	b = wire.AppendBinary(b, typ, tx, p, 0)
	wire.PutPrefix(b, 0)
	return b
}

// hsHello is the handshake line of an extended host.
func hsHello(ser worker.Serializer) string {
	return `{"type":"__iw.hello","tx":"h","payload":{"protocol":1,"serializer":"` + ser.Name() +
		`","capabilities":["cancel","deadline","shutdown"]}}` + "\n"
}

// hsHelloStream is a hello that asks for the stream extension.
func hsHelloStream(ser worker.Serializer) string {
	return `{"type":"__iw.hello","tx":"h","payload":{"protocol":1,"serializer":"` + ser.Name() +
		`","capabilities":["cancel","deadline","shutdown","probe","stream"]}}` + "\n"
}

// hsExpectation is what a correct Server answers to a host stream.
type hsExpectation struct {
	replies map[string]int             // tx -> number of replies due
	types   map[string]map[string]bool // tx -> the reply types that may answer it
	exact   bool                       // false when a shutdown makes later replies optional
	peer    bool                       // the handshake succeeded: a protocol error is announced
	streams bool                       // the host asked for the stream extension
}

func (x *hsExpectation) expect(tx string, types ...string) {
	x.replies[tx]++
	if x.types[tx] == nil {
		x.types[tx] = map[string]bool{}
	}
	for _, t := range types {
		x.types[tx][t] = true
	}
}

// hsModel works out the replies that a Server owes to the host stream data:
// one per request with a tx, up to the first frame it cannot read.
func hsModel(data []byte, bin bool) *hsExpectation {
	ser, term := hsSerializer(bin)
	x := &hsExpectation{replies: map[string]int{}, types: map[string]map[string]bool{}, exact: true}
	rest := data
	if bytes.HasPrefix(data, []byte(hsHelloPrefix)) {
		jr := wire.NewReader(bytes.NewReader(data), []byte("\n"), 64<<10)
		line, err := jr.Next()
		if err != nil {
			return x // cut or too long: the connection ends unanswered
		}
		var e wire.Envelope
		var h struct {
			Protocol     int      `json:"protocol"`
			Serializer   string   `json:"serializer"`
			Secret       string   `json:"secret,omitempty"`
			ID           string   `json:"id,omitempty"`
			Capabilities []string `json:"capabilities"`
		}
		if wire.ParseJSON(line, &e) != nil || json.Unmarshal(e.Payload, &h) != nil {
			return x // not a handshake: the connection ends unanswered
		}
		if h.ID != "" || h.Serializer != ser.Name() {
			x.expect(string(e.Tx), "__iw.helloError") // refused, then closed
			return x
		}
		x.expect(string(e.Tx), "__iw.helloResult")
		x.peer = true
		x.streams = slices.Contains(h.Capabilities, "stream")
		rest = jr.Buffered()
	}
	rd := wire.NewReader(bytes.NewReader(rest), term, hsFuzzLimit)
	for {
		frame, err := rd.Next()
		if err != nil {
			return x
		}
		var e wire.Envelope
		if hsParse(bin, frame, &e) != nil || len(e.Tx) == 0 {
			return x
		}
		switch typ := string(e.Type); {
		case x.streams && strings.HasPrefix(string(e.Tx), "__iw.r"):
			// A reply to a call of the worker to the host: none is in
			// flight, so it is dropped.
		case typ == "__iw.cancel", typ == "__iw.credit":
			// Never answered.
		case typ == "__iw.ping", typ == "__iw.goroutines":
			x.expect(string(e.Tx), typ+"Result", typ+"Error") // a dump may be too large
		case typ == "__iw.shutdown":
			x.expect(string(e.Tx), "__iw.shutdownResult")
			x.exact = false // what was not read before the connection closed gets no reply
		default:
			x.expect(string(e.Tx), typ+"Result", typ+"Error")
		}
	}
}

// hsFuzzServer returns a server with quick handlers only.
func hsFuzzServer(ser worker.Serializer) *worker.Server {
	s := worker.NewServer(&worker.ServerOptions{Serializer: ser, MaxMessageSize: hsFuzzLimit, DrainTimeout: hsHangBound})
	worker.Handle(s, Ping, func(ctx context.Context, p PingReq) (PingRes, error) {
		return PingRes{Message: "pong: " + p.Message}, nil
	})
	worker.Handle(s, Add, func(ctx context.Context, p AddReq) (AddRes, error) { return AddRes{Sum: p.A + p.B}, nil })
	worker.Handle(s, Echo, func(ctx context.Context, p []byte) ([]byte, error) { return p, nil })
	worker.Handle(s, Notify, func(ctx context.Context, p PingReq) (worker.Void, error) { return worker.Void{}, nil })
	worker.Handle(s, Fail, func(ctx context.Context, p FailReq) (worker.Void, error) {
		return worker.Void{}, worker.NewError(p.Code, p.Message)
	})
	worker.Handle(s, Panic, func(ctx context.Context, msg string) (worker.Void, error) { panic(msg) })
	return s
}

// hsReadReplies reads the server's replies until the connection ends,
// calling got for each; a frame that the host cannot parse is an error.
func hsReadReplies(conn net.Conn, bin, hello bool, got func(typ, tx string)) error {
	_, term := hsSerializer(bin)
	var rd *wire.Reader
	if hello {
		// The handshake reply is a JSON line, whatever the serializer.
		jr := wire.NewReader(conn, []byte("\n"), 64<<10)
		line, err := jr.Next()
		if err != nil {
			return nil
		}
		var e wire.Envelope
		if err := wire.ParseJSON(line, &e); err != nil {
			return fmt.Errorf("unparsable handshake reply %q: %v", line, err)
		}
		got(string(e.Type), string(e.Tx))
		rd = wire.NewReader(conn, term, 64<<20)
		rd.Prime(append([]byte(nil), jr.Buffered()...))
	} else {
		rd = wire.NewReader(conn, term, 64<<20)
	}
	for {
		frame, err := rd.Next()
		if err != nil {
			return nil
		}
		var e wire.Envelope
		if err := hsParse(bin, frame, &e); err != nil {
			return fmt.Errorf("unparsable reply %q: %v", frame, err)
		}
		got(string(e.Type), string(e.Tx))
	}
}

func hsWait[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(hsHangBound):
		t.Fatalf("hang: %s did not happen within %v", what, hsHangBound)
		panic("unreachable")
	}
}

// FuzzServeConn sends arbitrary bytes, in arbitrary chunks, as the host's
// stream to a Server. The server must not panic or hang: either it ends
// the connection, or every request with a tx gets exactly one reply of a
// matching type; and never more than one.
func FuzzServeConn(f *testing.F) {
	for _, bin := range []bool{false, true} {
		ser, _ := hsSerializer(bin)
		req := func(typ, tx, payload string) []byte { return hsFrame(bin, typ, tx, payload) }
		cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
		f.Add(cat(req("ping", "1", `{"message":"a"}`), req("add", "2", `{"A":1,"B":2}`), req("notify", "3", `{}`)), bin, uint8(0))
		f.Add(cat(req("ping", "d", `{"message":"a"}`), req("ping", "d", `{"message":"b"}`), req("nope", "u", ``)), bin, uint8(3))
		f.Add(cat(req("panic", "p", `"boom"`), req("fail", "f", `{"Message":"m","Code":"E_X"}`), req("", "t", ``)), bin, uint8(7))
		f.Add(cat([]byte(hsHello(ser)), req("ping", "1", `{"message":"a"}`), req("__iw.cancel", "c", `{"tx":"1"}`)), bin, uint8(1))
		f.Add(cat([]byte(hsHello(ser)), req("echo", "e", `"aGk="`), req("__iw.shutdown", "s", ``), req("ping", "late", `{}`)), bin, uint8(9))
		f.Add(cat(req("ping", "1", `{"message":"a"}`), req("ping", "", `{}`), req("ping", "2", `{}`)), bin, uint8(2))
		f.Add(cat([]byte(hsHello(worker.Binary)), req("ping", "1", `{}`)), bin, uint8(5))
		// The extensions: credit for a stream that never comes, a credit
		// before an ordinary request, a probe, a goroutine dump, a reply
		// to a call to the host that nobody made.
		f.Add(cat([]byte(hsHelloStream(ser)), req("__iw.credit", "s1", `{"items":4,"bytes":1024}`), req("ping", "s1", `{"message":"a"}`),
			req("__iw.ping", "p", ``), req("__iw.goroutines", "g", `{"type":"ping"}`), req("pingResult", "__iw.r1", `{}`),
			req("__iw.credit", "s2", `{"items":-1,"bytes":"x"}`)), bin, uint8(6))
		f.Add(cat(req("ping", "1", `{"message":"a"}`), []byte("garbage\n\x00\x00\x00\x01x")), bin, uint8(255))
	}
	f.Add([]byte("\n\n \n{\"type\":\"ping\",\"tx\":\"1\",\"payload\":[[[[[[]]]]]]}\n{\"tx\":\"2\"}\n"), false, uint8(4))
	f.Add([]byte(strings.Repeat("x", hsFuzzLimit+10)), false, uint8(255))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff}, true, uint8(0))
	f.Fuzz(func(t *testing.T, data []byte, bin bool, chunk uint8) {
		ser, _ := hsSerializer(bin)
		want := hsModel(data, bin)
		s := hsFuzzServer(ser)
		host, srv := net.Pipe()
		defer host.Close()
		served := make(chan error, 1)
		go func() { served <- s.ServeConn(context.Background(), srv) }()

		wrote := make(chan struct{})
		go func() {
			defer close(wrote)
			for b, step := data, 1+int(chunk); len(b) > 0; {
				n := min(step, len(b))
				if _, err := host.Write(b[:n]); err != nil {
					return
				}
				b = b[n:]
			}
		}()

		var mu sync.Mutex
		got := map[string]int{}
		var problems []string
		protocolErrors := 0
		due := 0
		for _, n := range want.replies {
			due += n
		}
		all := make(chan struct{})
		if due == 0 {
			close(all)
		}
		received := 0
		read := make(chan error, 1)
		go func() {
			read <- hsReadReplies(host, bin, bytes.HasPrefix(data, []byte(hsHelloPrefix)), func(typ, tx string) {
				mu.Lock()
				defer mu.Unlock()
				if typ == "__iw.protocolError" && tx == "" {
					if protocolErrors++; protocolErrors > 1 || !want.peer {
						problems = append(problems, "an unexpected protocol-error message")
					}
					return
				}
				got[tx]++
				switch {
				case got[tx] > want.replies[tx]:
					problems = append(problems, fmt.Sprintf("reply %d of type %q to tx %q; %d due", got[tx], typ, tx, want.replies[tx]))
				case !want.types[tx][typ]:
					problems = append(problems, fmt.Sprintf("a reply of type %q to tx %q; want one of %v", typ, tx, want.types[tx]))
				default:
					if received++; received == due {
						close(all)
					}
				}
			})
		}()

		ended := false
		select {
		case <-all:
			// Everything due arrived; a graceful shutdown lets anything
			// else the server might still send come out.
			ctx, cancel := context.WithTimeout(context.Background(), hsHangBound)
			s.Shutdown(ctx)
			cancel()
			hsWait(t, served, "ServeConn returning after Shutdown")
		case <-served:
			ended = true
		case <-time.After(hsHangBound):
			mu.Lock()
			t.Fatalf("hang: the connection is open, %d of %d replies arrived; due %v, got %v; problems %v", received, due, want.replies, got, problems)
		}
		if err := hsWait(t, read, "the end of the replies"); err != nil {
			t.Fatal(err)
		}
		host.Close()
		hsWait(t, wrote, "the end of the host's writes")

		mu.Lock()
		defer mu.Unlock()
		if len(problems) > 0 {
			t.Fatalf("the server broke the one-reply rule: %s", strings.Join(problems, "; "))
		}
		if !ended || want.exact {
			for tx, n := range want.replies {
				if got[tx] != n {
					t.Fatalf("tx %q got %d replies; %d due (server ended the connection: %v)", tx, got[tx], n, ended)
				}
			}
		}
	})
}

// FuzzClient answers three pending calls of a Client with arbitrary bytes,
// in arbitrary chunks, then closes the connection. Every call must return,
// and so must the Client; nothing may panic.
func FuzzClient(f *testing.F) {
	for _, bin := range []bool{false, true} {
		rep := func(typ, tx, payload string) []byte { return hsFrame(bin, typ, tx, payload) }
		cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
		f.Add(cat(rep("pingResult", "t0", `{"message":"x"}`), rep("addResult", "t1", `{"Sum":3}`), rep("notifyResult", "t2", ``)), bin, false, uint8(0))
		f.Add(cat(rep("pingError", "t0", `{"message":"m","name":"E","code":"E_X"}`), rep("addResult", "t9", `{}`), rep("pingResult", "t1", `{}`)), bin, true, uint8(3))
		f.Add(cat(rep("__iw.protocolError", "", `{"message":"bye","name":"ProtocolError"}`)), bin, true, uint8(1))
		f.Add(cat(rep("addResult", "t1", `"not a sum"`), rep("pingError", "t0", `[1]`), rep("notifyResult", "t2", `{"x":1}`)), bin, false, uint8(9))
		f.Add(cat(rep("pingResult", "t0", `{}`), []byte("garbage\n\xff\xff\xff\xff")), bin, false, uint8(255))
	}
	f.Add([]byte(strings.Repeat("y", hsFuzzLimit+1)+"\n"), false, false, uint8(200))
	f.Fuzz(func(t *testing.T, data []byte, bin, extended bool, chunk uint8) {
		ser, term := hsSerializer(bin)
		host, wk := net.Pipe()
		defer wk.Close()
		var next atomic.Int32
		opts := &worker.Options{Serializer: ser, BaseProtocol: !extended, MaxMessageSize: hsFuzzLimit,
			NewTx: func(*worker.Message) string { return fmt.Sprintf("t%d", next.Add(1)-1) }}

		const calls = 3
		fake := make(chan error, 1)
		go func() {
			fake <- func() error {
				defer wk.Close()
				rd := wire.NewReader(wk, term, 64<<20)
				if extended {
					jr := wire.NewReader(wk, []byte("\n"), 64<<10)
					line, err := jr.Next()
					var e wire.Envelope
					if err != nil || wire.ParseJSON(line, &e) != nil {
						return fmt.Errorf("no handshake: %q, %v", line, err)
					}
					reply := wire.AppendJSON(nil, "__iw.helloResult", string(e.Tx), []byte(`{"protocol":1,"serializer":"`+
						ser.Name()+`","pid":1,"keepAlive":false,"capabilities":["cancel","deadline","shutdown"]}`), 0)
					if _, err := wk.Write(append(reply, '\n')); err != nil {
						return err
					}
					rd.Prime(append([]byte(nil), jr.Buffered()...))
				}
				for range calls {
					if _, err := rd.Next(); err != nil {
						return fmt.Errorf("reading the requests: %v", err)
					}
				}
				for b, step := data, 1+int(chunk); len(b) > 0; {
					n := min(step, len(b))
					if _, err := wk.Write(b[:n]); err != nil {
						return nil // the client hung up, which it may
					}
					b = b[n:]
				}
				return nil
			}()
		}()

		ctx := context.Background()
		c, err := worker.NewClient(ctx, host, opts)
		if err != nil {
			t.Fatalf("NewClient: %v", err)
		}
		defer c.Close()
		returned := make(chan error, calls)
		go func() { _, err := worker.Call(ctx, c, Ping, PingReq{Message: "a"}); returned <- err }()
		go func() { _, err := worker.Call(ctx, c, Add, AddReq{A: 1, B: 2}); returned <- err }()
		go func() { _, err := worker.Call(ctx, c, Notify, PingReq{}); returned <- err }()
		for range calls {
			hsWait(t, returned, "a pending call returning")
		}
		if err := hsWait(t, fake, "the fake worker's end"); err != nil {
			t.Fatal(err)
		}
		hsWait(t, c.Done(), "the client noticing the closed connection")
		if c.Err() == nil {
			t.Fatal("the connection ended, but Client.Err() is nil")
		}
		late := make(chan error, 1)
		go func() { _, err := worker.Call(ctx, c, Ping, PingReq{}); late <- err }()
		if err := hsWait(t, late, "a call on the ended connection returning"); err == nil {
			t.Fatal("a call on the ended connection succeeded")
		}
	})
}
