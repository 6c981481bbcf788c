package worker_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"regexp"
	"strings"
	"testing"

	"github.com/isolated-workers/worker"
)

// serveRaw serves the test handlers on one end of a pipe and returns the
// other end, for tests that speak the protocol byte by byte.
func serveRaw(t *testing.T, opts *worker.ServerOptions) (net.Conn, *bufio.Reader) {
	t.Helper()
	s := worker.NewServer(opts)
	registerHandlers(s)
	host, wk := net.Pipe()
	done := make(chan error, 1)
	go func() { done <- s.ServeConn(context.Background(), wk) }()
	t.Cleanup(func() {
		host.Close()
		if err := <-done; err != nil {
			t.Errorf("ServeConn: %v", err)
		}
	})
	return host, bufio.NewReader(host)
}

func roundTrip(t *testing.T, conn net.Conn, r *bufio.Reader, line string) string {
	t.Helper()
	if _, err := conn.Write([]byte(line)); err != nil {
		t.Fatal(err)
	}
	reply, err := r.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	return reply
}

// The reply shapes of the TypeScript protocol, byte for byte.
func TestWireReplyShapes(t *testing.T) {
	conn, r := serveRaw(t, nil)
	for _, tc := range []struct{ name, send, want string }{
		{"result", `{"type":"ping","payload":{"message":"x"},"tx":"t1"}` + "\n",
			`{"type":"pingResult","tx":"t1","payload":{"message":"pong: x"}}` + "\n"},
		{"void result has no payload key", `{"type":"notify","payload":{"message":"x"},"tx":"t2"}` + "\n",
			`{"type":"notifyResult","tx":"t2"}` + "\n"},
		{"error", `{"type":"fail","payload":{"Message":"bad","Code":"E_X"},"tx":"t3"}` + "\n",
			`{"type":"failError","tx":"t3","payload":{"message":"bad","name":"Error","code":"E_X"}}` + "\n"},
		{"unknown type", `{"type":"nope","payload":{},"tx":"t4"}` + "\n",
			`{"type":"nopeError","tx":"t4","payload":{"message":"Unknown message type: nope","name":"Error","code":"E_UNKNOWN_MESSAGE"}}` + "\n"},
		{"blank lines are ignored", "\n  \n" + `{"tx":"t5","type":"ping"}` + "\n",
			`{"type":"pingResult","tx":"t5","payload":{"message":"pong: "}}` + "\n"},
		{"non-ASCII is escaped", `{"type":"ping","payload":{"message":"é🎉"},"tx":"t6"}` + "\n",
			`{"type":"pingResult","tx":"t6","payload":{"message":"pong: \u00e9\ud83c\udf89"}}` + "\n"},
	} {
		if got := roundTrip(t, conn, r, tc.send); got != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.name, got, tc.want)
		}
	}
}

var uuidV4 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

// The request shape the host writes, byte for byte, and the handling of a
// TypeScript peer that does not know the handshake.
func TestWireRequestShape(t *testing.T) {
	host, peer := net.Pipe()
	defer peer.Close()
	r := bufio.NewReader(peer)
	type out struct {
		c   *worker.Client
		err error
	}
	made := make(chan out, 1)
	go func() {
		c, err := worker.NewClient(context.Background(), host, nil)
		made <- out{c, err}
	}()
	// The handshake comes first; a base-protocol peer refuses it as an
	// unknown type, exactly as the TypeScript worker does.
	hello, err := r.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	var env struct{ Type, Tx string }
	if err := json.Unmarshal([]byte(hello), &env); err != nil || env.Type != "__iw.hello" {
		t.Fatalf("handshake line %q: %v", hello, err)
	}
	peer.Write([]byte(`{"tx":"` + env.Tx + `","type":"__iw.helloError","payload":{"message":"Unknown message type: __iw.hello","name":"Error","stack":"Error: ..."}}` + "\n"))
	o := <-made
	if o.err != nil {
		t.Fatal(o.err)
	}
	defer o.c.Close()

	res := make(chan error, 1)
	go func() {
		_, err := worker.Call(context.Background(), o.c, Ping, PingReq{Message: "é"})
		res <- err
	}()
	line, err := r.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	var req struct {
		Type    string          `json:"type"`
		Tx      string          `json:"tx"`
		Payload json.RawMessage `json:"payload"`
	}
	if err := json.Unmarshal([]byte(line), &req); err != nil {
		t.Fatal(err)
	}
	if want := `{"type":"ping","tx":"` + req.Tx + `","payload":{"message":"\u00e9"}}` + "\n"; line != want {
		t.Fatalf("request:\n got %s\nwant %s", line, want)
	}
	if !uuidV4.MatchString(req.Tx) {
		t.Fatalf("tx %q is not a UUID v4", req.Tx)
	}
	// No deadline or other extension goes to a base-protocol peer.
	if strings.Contains(line, "deadline") {
		t.Fatal("an extension was sent to a base-protocol peer")
	}
	peer.Write([]byte(`{"tx":"` + req.Tx + `","type":"pingResult","payload":{"message":"ok"}}` + "\n"))
	if err := <-res; err != nil {
		t.Fatal(err)
	}
}

// In-process client and server over net.Pipe: the extensions work without
// any process, and cancellation reaches the handler.
func TestInProcessCancellation(t *testing.T) {
	s := worker.NewServer(nil)
	started, observed := make(chan struct{}), make(chan error, 1)
	block := worker.Define[string, string]("block")
	worker.Handle(s, block, func(ctx context.Context, _ string) (string, error) {
		close(started)
		<-ctx.Done()
		observed <- ctx.Err()
		return "", ctx.Err()
	})
	host, wk := net.Pipe()
	served := make(chan error, 1)
	go func() { served <- s.ServeConn(context.Background(), wk) }()
	c, err := worker.NewClient(testCtx(t), host, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(testCtx(t))
	done := make(chan error, 1)
	go func() {
		_, err := worker.Call(ctx, c, block, "")
		done <- err
	}()
	<-started
	cancel()
	if err := <-done; err != context.Canceled {
		t.Fatalf("caller: got %v, want context.Canceled", err)
	}
	if err := <-observed; err != context.Canceled {
		t.Fatalf("handler saw %v, want context.Canceled", err)
	}
	c.Close()
	if err := <-served; err != nil {
		t.Fatal(err)
	}
}
