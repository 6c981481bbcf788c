//go:build unix || windows

package worker_test

// Lifecycle: cancellation and timeouts reach the handler in the worker.

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/isolated-workers/worker"
)

func TestLifecycleCancelReachesHandler(t *testing.T) {
	t.Parallel()
	w := lcSpawn(t, "lc-worker", nil)
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	call := make(chan error, 1)
	go func() {
		_, err := worker.Call(ctx, w, Sleep, SleepReq{Ms: 60_000})
		call <- err
	}()
	awaitStarted(t, testCtx(t), w, Sleep.Name(), 1)
	cancel()
	start := time.Now()
	err := recvWithin(t, call, 5*time.Second, "the cancelled call")
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("the cancelled call returned after %v", d)
	}
	lctx, lcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer lcancel()
	if got, err := worker.Call(lctx, w, Canceled, ""); err != nil || got != context.Canceled.Error() {
		t.Fatalf("the handler observed %q, %v; want %q", got, err, context.Canceled.Error())
	}
}

func TestLifecycleDeadlineReachesHandler(t *testing.T) {
	t.Parallel()
	w := lcSpawn(t, "lc-worker", nil)
	dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if res, err := worker.Call(dctx, w, Sleep, SleepReq{Ms: 1}); err != nil || !res.HasDeadline {
		t.Fatalf("with a deadline: %+v, %v; want the handler to have it", res, err)
	}
	if res, err := worker.Call(context.Background(), w, Sleep, SleepReq{Ms: 1}); err != nil || res.HasDeadline {
		t.Fatalf("without a deadline: %+v, %v; want none in the handler", res, err)
	}
	// A deadline that passes ends the call and the handler.
	sctx, scancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer scancel()
	start := time.Now()
	_, err := worker.Call(sctx, w, Sleep, SleepReq{Ms: 60_000})
	if d := time.Since(start); !errors.Is(err, context.DeadlineExceeded) || d < 250*time.Millisecond || d > 3*time.Second {
		t.Fatalf("got %v after %v, want context.DeadlineExceeded after 300ms", err, d)
	}
	handlerCanceled(t, w)
}

func TestLifecycleOptionsTimeouts(t *testing.T) {
	t.Parallel()
	t.Run("Timeout", func(t *testing.T) {
		w := lcSpawn(t, "lc-worker", &worker.Options{Timeout: 300 * time.Millisecond})
		start := time.Now()
		_, err := worker.Call(testCtx(t), w, Sleep, SleepReq{Ms: 60_000})
		if d := time.Since(start); !errors.Is(err, context.DeadlineExceeded) || d < 250*time.Millisecond || d > 3*time.Second {
			t.Fatalf("got %v after %v, want context.DeadlineExceeded after 300ms", err, d)
		}
		handlerCanceled(t, w)
		if res, err := worker.Call(context.Background(), w, Sleep, SleepReq{Ms: 1}); err != nil || !res.HasDeadline {
			t.Fatalf("the timeout is the handler's deadline: %+v, %v", res, err)
		}
	})
	t.Run("Timeouts", func(t *testing.T) {
		w := lcSpawn(t, "lc-worker", &worker.Options{Timeout: 200 * time.Millisecond,
			Timeouts: map[string]time.Duration{Sleep.Name(): 10 * time.Second, Echo.Name(): 300 * time.Millisecond}})
		// sleep's own timeout is longer than Timeout.
		if res, err := worker.Call(testCtx(t), w, Sleep, SleepReq{Ms: 500}); err != nil || !res.Slept {
			t.Fatalf("sleep under its 10s timeout: %+v, %v", res, err)
		}
		// lastCanceled has nothing to report: it blocks until Timeout.
		start := time.Now()
		_, err := worker.Call(testCtx(t), w, Canceled, "")
		if d := time.Since(start); !errors.Is(err, context.DeadlineExceeded) || d > 3*time.Second {
			t.Fatalf("lastCanceled: got %v after %v, want context.DeadlineExceeded after 200ms", err, d)
		}
		w2 := lcSpawn(t, "lc-worker", &worker.Options{Timeouts: map[string]time.Duration{Sleep.Name(): 300 * time.Millisecond}})
		start = time.Now()
		_, err = worker.Call(testCtx(t), w2, Sleep, SleepReq{Ms: 60_000})
		if d := time.Since(start); !errors.Is(err, context.DeadlineExceeded) || d < 250*time.Millisecond || d > 3*time.Second {
			t.Fatalf("sleep: got %v after %v, want context.DeadlineExceeded after 300ms", err, d)
		}
		handlerCanceled(t, w2)
	})
}
