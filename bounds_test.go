package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/isolated-workers/worker"
)

// A NewTx that returns an id the JSON wire cannot carry unchanged fails
// the call at once instead of leaving it unanswerable.
func TestInvalidTransactionIDFailsTheCall(t *testing.T) {
	s := worker.NewServer(nil)
	registerHandlers(s)
	host, wk := net.Pipe()
	served := make(chan error, 1)
	go func() { served <- s.ServeConn(context.Background(), wk) }()
	c, err := worker.NewClient(testCtx(t), host, &worker.Options{NewTx: func(*worker.Message) string { return "bad\xff" }})
	if err != nil {
		t.Fatal(err)
	}
	_, err = worker.Call(testCtx(t), c, Ping, PingReq{})
	if err == nil || !strings.Contains(err.Error(), "valid UTF-8") {
		t.Fatalf("got %v", err)
	}
	c.Close()
	if err := <-served; err != nil {
		t.Fatal(err)
	}
}

// Shutdown returns even when a handler ignores its cancelled context.
func TestShutdownBoundedByStuckHandler(t *testing.T) {
	s := worker.NewServer(nil)
	stuck := worker.Define[string, string]("stuck")
	started, release := make(chan struct{}), make(chan struct{})
	defer close(release)
	worker.Handle(s, stuck, func(ctx context.Context, _ string) (string, error) {
		close(started)
		<-release // ignores ctx on purpose
		return "", nil
	})
	host, wk := net.Pipe()
	go s.ServeConn(context.Background(), wk)
	c, err := worker.NewClient(testCtx(t), host, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go worker.Call(testCtx(t), c, stuck, "")
	<-started
	expired, cancel := context.WithCancel(context.Background())
	cancel()
	done := make(chan error, 1)
	go func() { done <- s.Shutdown(expired) }()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Shutdown: got %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown hung on a handler that ignores its context")
	}
}

// json.Number is a string type that encoding/json writes as a number; the
// JSON fast paths must not treat it as a string.
func TestJSONNumberMatchesEncodingJSON(t *testing.T) {
	type withNumber struct {
		N json.Number `json:"n"`
	}
	v := withNumber{N: "42"}
	got, err := worker.JSON.AppendPayload(nil, &v)
	want, _ := json.Marshal(&v)
	if err != nil || string(got) != string(want) {
		t.Fatalf("got %s (%v), want %s", got, err, want)
	}
	var back withNumber
	err = worker.JSON.DecodePayload([]byte(`{"n":"abc"}`), &back)
	wantErr := json.Unmarshal([]byte(`{"n":"abc"}`), &back)
	if (err == nil) != (wantErr == nil) {
		t.Fatalf("decoding a non-number: got %v, encoding/json says %v", err, wantErr)
	}
}

// A call whose context is cancelled (without a deadline) returns even
// while its request is stuck in a write to a peer that does not read.
func TestCanceledCallReturnsDuringABlockedWrite(t *testing.T) {
	host, peer := net.Pipe() // unbuffered: a write blocks until the peer reads
	defer peer.Close()
	writing := make(chan struct{})
	conn := &notifyingConn{Conn: host, writing: writing}
	c, err := worker.NewClient(testCtx(t), conn, &worker.Options{BaseProtocol: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := worker.Call(ctx, c, Ping, PingReq{Message: "never read"})
		done <- err
	}()
	<-writing // the request is being written, and no one reads it
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the call hung in a write after its context was cancelled")
	}
}

// notifyingConn closes writing when the first Write begins.
type notifyingConn struct {
	net.Conn
	writing chan struct{}
	once    sync.Once
}

func (c *notifyingConn) Write(b []byte) (int, error) {
	c.once.Do(func() { close(c.writing) })
	return c.Conn.Write(b)
}

// Spawn starts the caller's own exec.Cmd: exec.CommandContext's context
// still kills the worker, and the crash is reported.
func TestSpawnKeepsCommandContext(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmdCtx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := exec.CommandContext(cmdCtx, exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
	w, err := worker.Spawn(testCtx(t), cmd, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if cmd.Process == nil || cmd.Process.Pid != w.Pid() {
		t.Fatal("Spawn did not start the caller's exec.Cmd")
	}
	cancel()
	_, err = worker.Call(testCtx(t), w, Sleep, SleepReq{Ms: 60_000})
	if !errors.Is(err, worker.ErrCrashed) {
		t.Fatalf("after the command's context ended: got %v, want a crash", err)
	}
}
