package worker

import (
	"context"
	"errors"
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
// reaches its handler. Without the watch, the second call below would wait
// for the first, which waits for its cancellation, which nobody would read.
func TestLeaseExpiresWhenAQuickHandlerBlocks(t *testing.T) {
	for _, kind := range []string{"pipe", "unix"} {
		t.Run(kind, func(t *testing.T) {
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

			if res, err := Call(ctx, c, leaseBlock, false); err != nil || res != "quick" {
				t.Fatalf("first call: %q, %v", res, err)
			}
			// The type's score, as many quick calls would have made it (set
			// here: how long a call takes under the race detector varies).
			(*s.handlers.Load())[leaseBlock.Name()].quick.Store(quickMax)

			blockCtx, unblock := context.WithCancel(ctx)
			blocked := make(chan error, 1)
			go func() {
				_, err := Call(blockCtx, c, leaseBlock, true)
				blocked <- err
			}()
			<-entered
			if res, err := Call(ctx, c, leaseBlock, false); err != nil || res != "quick" {
				t.Fatalf("a call while a leased handler blocks: %q, %v", res, err)
			}
			unblock()
			if err := <-blocked; !errors.Is(err, context.Canceled) {
				t.Fatalf("the blocked call returned %v; want context.Canceled", err)
			}
			if err := <-sawCancel; !errors.Is(err, context.Canceled) {
				t.Fatalf("the blocked handler saw %v; want context.Canceled", err)
			}
		})
	}
}
