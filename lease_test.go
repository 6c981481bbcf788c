package worker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// A handler type is run by the reader (under a lease) once it has been
// answered within quickTime several times running, and no longer once it
// has been slow a few times.
func TestHandlerQuickScore(t *testing.T) {
	h := &handler{}
	for i := range quickInline {
		if h.inline() {
			t.Fatalf("inline after %d quick requests; want it after %d", i, quickInline)
		}
		h.observe(time.Microsecond)
	}
	if !h.inline() {
		t.Fatalf("not inline after %d quick requests", quickInline)
	}
	for range 2 * quickMax {
		h.observe(time.Microsecond)
	}
	if got := h.quick.Load(); got != quickMax {
		t.Fatalf("score %d after many quick requests; want the cap, %d", got, quickMax)
	}
	slow := 0
	for h.inline() {
		h.observe(quickTime)
		slow++
	}
	if slow != 3 { // 16 → 8 → 4 → 2
		t.Fatalf("still inline after %d slow requests from the cap; want 3", slow)
	}
}

var leaseBlock = Define[bool, string]("leaseBlock")

// A request of a quick type that blocks while the reader runs it must not
// hold up the connection: the lease's watch passes the reader role on, so
// that the next request is served and a cancellation of the blocked one
// reaches its handler; and the type is no longer run by the reader, so
// that its next blocking requests do not each hold up the connection.
// Without the watch, the second call below would wait for the first, which
// waits for its cancellation, which nobody would read. The watch is tried
// both while it runs (leases were just taken) and after it stopped for
// want of leases: the blocking request's lease must start it again.
func TestLeaseExpiresWhenAQuickHandlerBlocks(t *testing.T) {
	for _, kind := range []string{"pipe", "unix"} {
		for _, stopped := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/watch-stopped=%v", kind, stopped), func(t *testing.T) {
				testLeaseExpires(t, kind, stopped)
			})
		}
	}
}

func testLeaseExpires(t *testing.T, kind string, stopped bool) {
	entered := make(chan struct{}, 1)
	sawCancel := make(chan error, 1)
	s := NewServer(nil)
	Handle(s, leaseBlock, func(ctx context.Context, block bool) (string, error) {
		if !block {
			return "quick", nil
		}
		entered <- struct{}{}
		<-ctx.Done()
		sawCancel <- ctx.Err()
		return "", ctx.Err()
	})
	h := (*s.handlers.Load())[leaseBlock.Name()]
	a, b := testConnPair(t, kind)
	served := make(chan error, 1)
	go func() { served <- s.ServeConn(context.Background(), b) }()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := NewClient(ctx, a, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		c.Close()
		if err := <-served; err != nil {
			t.Errorf("ServeConn: %v", err)
		}
	}()

	// The type's score, as many quick calls would have made it (set here:
	// how long a call takes under the race detector varies), and calls
	// that the reader runs under leases, which start the watch.
	h.quick.Store(quickMax)
	for range 3 {
		if res, err := Call(ctx, c, leaseBlock, false); err != nil || res != "quick" {
			t.Fatalf("quick call: %q, %v", res, err)
		}
	}
	ss := s.snapshot()[0]
	if ss.leases.seq.Load() == 0 {
		t.Fatal("no quick call was run under a lease")
	}
	if stopped {
		// The watch stops one or two leaseTimes after the last lease.
		for deadline := time.Now().Add(10 * time.Second); ss.leases.watching.Load(); {
			if time.Now().After(deadline) {
				t.Fatal("the watch of leases never stopped")
			}
			time.Sleep(leaseTime / 4)
		}
	}
	h.quick.Store(quickMax)

	blockCtx, unblock := context.WithCancel(ctx)
	blocked := make(chan error, 1)
	go func() {
		_, err := Call(blockCtx, c, leaseBlock, true)
		blocked <- err
	}()
	<-entered
	ctx2, cancel2 := context.WithTimeout(ctx, 5*time.Second)
	defer cancel2()
	if res, err := Call(ctx2, c, leaseBlock, false); err != nil || res != "quick" {
		t.Fatalf("a call while a leased handler blocks: %q, %v", res, err)
	}
	if h.inline() {
		t.Errorf("the type is still run by the reader after its lease had to be ended (score %d)", h.quick.Load())
	}
	unblock()
	if err := <-blocked; !errors.Is(err, context.Canceled) {
		t.Fatalf("the blocked call returned %v; want context.Canceled", err)
	}
	if err := <-sawCancel; !errors.Is(err, context.Canceled) {
		t.Fatalf("the blocked handler saw %v; want context.Canceled", err)
	}
}

// testConnPair returns the two ends of a connection of the kind ("pipe"
// or "unix").
func testConnPair(t *testing.T, kind string) (net.Conn, net.Conn) {
	if kind == "pipe" {
		return net.Pipe()
	}
	if runtime.GOOS == "windows" {
		// Wine has no AF_UNIX, and its os.RemoveAll breaks t.TempDir.
		t.Skip("no Unix sockets here; the pipe case covers the queue")
	}
	// Not t.TempDir: a path under it, named after the test, can pass the
	// 104-108 bytes that a socket address holds.
	dir, err := os.MkdirTemp("", "wq")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ln, err := net.Listen("unix", filepath.Join(dir, "s"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	acc := make(chan net.Conn, 1)
	go func() { c, _ := ln.Accept(); acc <- c }()
	a, err := net.Dial("unix", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	return a, <-acc
}
