//go:build unix || windows

package worker_test

// Lifecycle tests that read the same on every platform; the per-OS files
// provide lifecycleSpawn and awaitSleeping.

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/isolated-workers/worker"
)

// recvWithin receives from ch, failing the test after d.
func recvWithin[T any](t testing.TB, ch <-chan T, d time.Duration, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(d):
		t.Fatalf("timed out after %v waiting for %s", d, what)
		panic("unreachable")
	}
}

// asCrash returns err as a *worker.CrashError, failing the test if it is not one.
func asCrash(t testing.TB, err error) *worker.CrashError {
	t.Helper()
	var ce *worker.CrashError
	if !errors.Is(err, worker.ErrCrashed) || !errors.As(err, &ce) {
		t.Fatalf("got %v (%T), want a *worker.CrashError matching ErrCrashed", err, err)
	}
	return ce
}

// handlerCanceled checks that the last Sleep handler saw its context end.
func handlerCanceled(t testing.TB, w *worker.Worker) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := worker.Call(ctx, w, Canceled, "")
	if err != nil || (got != context.Canceled.Error() && got != context.DeadlineExceeded.Error()) {
		t.Fatalf("the handler observed %q, %v; want its context to end", got, err)
	}
}

func TestLifecycleCancelReachesHandler(t *testing.T) {
	w := lifecycleSpawn(t, "", nil)
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	call := make(chan error, 1)
	go func() {
		_, err := worker.Call(ctx, w, Sleep, SleepReq{Ms: 60_000})
		call <- err
	}()
	awaitSleeping(t, w, 1)
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
	w := lifecycleSpawn(t, "", nil)
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

// reconnectAndHandOver checks, on a disconnected keep-alive worker with
// process pid, that Reconnect reaches the same process, and that a second
// host can Attach after the first disconnects, and hand it back.
func reconnectAndHandOver(t *testing.T, ctx context.Context, w *worker.Worker, pid int) {
	t.Helper()
	if err := w.Reconnect(ctx); err != nil {
		t.Fatalf("Reconnect: %v", err)
	}
	if got, err := worker.Call(ctx, w, GetPid, worker.Void{}); err != nil || got != pid || !w.IsConnected() {
		t.Fatalf("after Reconnect: %d, %v, connected %v", got, err, w.IsConnected())
	}

	// A second host takes over once the first has disconnected.
	if err := w.Disconnect(); err != nil {
		t.Fatal(err)
	}
	other, err := worker.Attach(ctx, w.Token(), nil)
	if err != nil {
		t.Fatalf("Attach: %v", err)
	}
	if got, err := worker.Call(ctx, other, GetPid, worker.Void{}); err != nil || got != pid || other.Pid() != pid {
		t.Fatalf("through the second host: %d, %v (Pid %d); want %d", got, err, other.Pid(), pid)
	}
	if err := other.Disconnect(); err != nil {
		t.Fatalf("second host's Disconnect: %v", err)
	}
	if err := w.Reconnect(ctx); err != nil {
		t.Fatalf("Reconnect after the second host: %v", err)
	}
	if _, err := worker.Call(ctx, w, Ping, PingReq{}); err != nil {
		t.Fatal(err)
	}
}

func TestLifecycleDisconnectNeedsKeepAlive(t *testing.T) {
	w := lifecycleSpawn(t, "", nil)
	ctx := testCtx(t)
	if err := w.Disconnect(); !errors.Is(err, worker.ErrNotKeepAlive) {
		t.Fatalf("Disconnect: got %v, want ErrNotKeepAlive", err)
	}
	if err := w.Reconnect(ctx); !errors.Is(err, worker.ErrNotKeepAlive) {
		t.Fatalf("Reconnect: got %v, want ErrNotKeepAlive", err)
	}
	if _, err := worker.Call(ctx, w, Ping, PingReq{}); err != nil || !w.IsConnected() {
		t.Fatalf("the connection was touched: %v, connected %v", err, w.IsConnected())
	}
}
