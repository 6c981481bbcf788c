package worker_test

import (
	"context"
	"errors"
	"net"
	"strings"
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
