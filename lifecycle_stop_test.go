//go:build unix || windows

package worker_test

// Lifecycle: stops. Shutdown drains the calls in flight; Close asks the
// worker to stop, then kills it after the grace period; SIGTERM drains
// (Unix).

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/isolated-workers/worker"
)

func TestLifecycleShutdownDrainsCallInFlight(t *testing.T) {
	t.Parallel()
	sent, sentCh := lcSent(Sleep.Name())
	held := make(chan struct{})
	release := make(chan struct{})
	// Hold the sleep's reply on its way in: the call stays in flight for as
	// long as the test needs.
	hold := func(ctx context.Context, m *worker.Message) error {
		if m.Incoming && m.Type == Sleep.Name()+"Result" {
			close(held)
			<-release
		}
		return nil
	}
	const grace = 5 * time.Second
	w := lcSpawnCmd(t, lcStopCmd(roleCmd(t, lcStopRole)), &worker.Options{SocketPath: lcSocketPath(t),
		GracePeriod: grace, Middleware: []worker.Middleware{sent, hold}})
	p := lcWatch(t, w.Pid())
	addr := lcAddr(t, w.Token())
	ctx := testCtx(t)

	type result struct {
		res SleepRes
		err error
	}
	call := make(chan result, 1)
	go func() {
		res, err := worker.Call(ctx, w, Sleep, SleepReq{Ms: 300})
		call <- result{res, err}
	}()
	recvWithin(t, sentCh, 10*time.Second, "the sleep to be sent")
	start := time.Now()
	shut := make(chan error, 1)
	go func() { shut <- w.Shutdown(ctx) }()

	// New calls fail with ErrClosed once Shutdown has begun (before, they
	// succeed: the held sleep does not block them).
	eventually(t, 5*time.Second, func() bool {
		_, err := worker.Call(ctx, w, Ping, PingReq{})
		if err != nil && !errors.Is(err, worker.ErrClosed) {
			t.Fatalf("a new call during Shutdown: got %v, want ErrClosed", err)
		}
		return err != nil
	}, "Shutdown to begin (a new call failing with ErrClosed)")
	// So does Disconnect (which, before, reports ErrNotKeepAlive on a
	// shutdown-on-disconnect worker, and disconnects a keep-alive one).
	if err := w.Disconnect(); !errors.Is(err, worker.ErrClosed) {
		t.Fatalf("Disconnect during Shutdown: got %v, want ErrClosed", err)
	}
	recvWithin(t, held, 10*time.Second, "the sleep's reply")
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with a call in flight", err)
	default:
	}
	close(release)
	if r := recvWithin(t, call, 10*time.Second, "the sleep"); r.err != nil || !r.res.Slept {
		t.Fatalf("the call in flight: got %+v, %v; want it to complete", r.res, r.err)
	}
	if err := recvWithin(t, shut, 10*time.Second, "Shutdown"); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Fatalf("Shutdown took %v (grace period %v): the worker did not stop when asked", elapsed, grace)
	}
	if !p.goneWithin(0) || w.IsActive() || lcAddrExists(addr) {
		t.Fatalf("after Shutdown: process running %v, IsActive %v, address %s there %v", p.running(), w.IsActive(), addr, lcAddrExists(addr))
	}
	lcCheckExitCode(t, p, 0) // a clean exit, not a kill
}

func TestLifecycleShutdownExpiredContext(t *testing.T) {
	t.Parallel()
	sent, sentCh := lcSent(Sleep.Name())
	w := lcSpawn(t, "lc-worker", &worker.Options{SocketPath: lcSocketPath(t), GracePeriod: 5 * time.Second,
		Middleware: []worker.Middleware{sent}})
	p := lcWatch(t, w.Pid())
	addr := lcAddr(t, w.Token())
	call := make(chan error, 1)
	go func() {
		_, err := worker.Call(testCtx(t), w, Sleep, SleepReq{Ms: 60_000})
		call <- err
	}()
	recvWithin(t, sentCh, 10*time.Second, "the sleep to be sent")

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	err := w.Shutdown(ctx)
	elapsed := time.Since(start)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Shutdown: got %v, want context.Canceled", err)
	}
	if elapsed > 2500*time.Millisecond { // half the grace period: no drain, no wait for a kill
		t.Fatalf("Shutdown with an expired context took %v", elapsed)
	}
	if err := recvWithin(t, call, 5*time.Second, "the call in flight"); !errors.Is(err, worker.ErrClosed) {
		t.Fatalf("the call in flight: got %v, want ErrClosed", err)
	}
	if !p.goneWithin(lcGoneAfterKill) || lcAddrExists(addr) {
		t.Fatalf("after Shutdown: process running %v, address %s there %v", p.running(), addr, lcAddrExists(addr))
	}
}

func TestLifecycleSIGTERMDrainsAndExitsZero(t *testing.T) {
	lcRequireSIGTERM(t)
	t.Parallel()
	w := lcSpawn(t, "lc-worker", nil)
	ctx := testCtx(t)
	start := time.Now()
	// The handler sends SIGTERM to its own worker, then sleeps 300ms: the
	// signal arrives with the call in flight.
	res, err := worker.Call(ctx, w, LCTermSelf, 300)
	if err != nil || !res.Slept {
		t.Fatalf("the call in flight during SIGTERM: got %+v, %v", res, err)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Fatalf("the call took %v", d)
	}
	eventually(t, 5*time.Second, func() bool { return !w.IsActive() && !w.IsConnected() }, "the worker to exit after SIGTERM")
	_, err = worker.Call(ctx, w, Ping, PingReq{})
	if ce := asCrash(t, err); ce.ExitCode != 0 || ce.Signal != "" {
		t.Fatalf("got exit code %d, signal %q; want a clean exit: %v", ce.ExitCode, ce.Signal, ce)
	}
}

// TestLifecycleCloseStopsKeepAliveOverConnection: Close asks a keep-alive
// worker to stop over the connection, and it exits at once, cleanly. On
// Windows the worker has no console: it cannot get CTRL_BREAK (which fails
// under Wine anyway), so only the __iw.shutdown message can make it exit
// before the kill that follows the grace period.
func TestLifecycleCloseStopsKeepAliveOverConnection(t *testing.T) {
	t.Parallel()
	const grace = 5 * time.Second
	w := lcSpawnCmd(t, lcStopCmd(roleCmd(t, "worker-keepalive")), &worker.Options{GracePeriod: grace})
	p := lcWatch(t, w.Pid())
	if _, err := worker.Call(testCtx(t), w, Ping, PingReq{}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	if elapsed > 2*time.Second {
		t.Fatalf("Close took %v (grace period %v): the worker did not stop when asked", elapsed, grace)
	}
	if !p.goneWithin(0) {
		t.Fatal("the worker still runs after Close returned")
	}
	lcCheckExitCode(t, p, 0) // a kill would have left another
	t.Logf("Close took %v", elapsed.Round(time.Millisecond))
}

// TestLifecycleCloseIdempotentAndBounded: a stubborn worker, with a call in
// flight, is stopped by Close within bounds: where the worker still runs
// (Unix: a handler that ignores SIGTERM and its context), the lifeline
// stops it well before the grace period, unless it is detached; where it
// answers nothing at all (Windows: every thread suspended), and detached,
// it is killed once the grace period is over, not before. Close is
// idempotent, and fails the call in flight and later calls with ErrClosed.
func TestLifecycleCloseIdempotentAndBounded(t *testing.T) {
	t.Parallel()
	for _, detached := range []bool{false, true} {
		t.Run(fmt.Sprintf("detached=%v", detached), func(t *testing.T) {
			grace := lcStubbornGrace(detached)
			w := lcSpawnCmd(t, lcStopCmd(roleCmd(t, lcStopRole)),
				&worker.Options{SocketPath: lcSocketPath(t), GracePeriod: grace, Detached: detached})
			p := lcWatch(t, w.Pid())
			addr := lcAddr(t, w.Token())
			lcCheckDetached(t, p, detached)
			ctx := testCtx(t)
			call := lcStubbornCall(t, ctx, w, p)

			start := time.Now()
			errs := make(chan error, 2)
			for range 2 {
				go func() { errs <- w.Close() }()
			}
			for range 2 {
				if err := recvWithin(t, errs, 10*time.Second, "Close"); err != nil {
					t.Fatalf("Close: %v", err)
				}
			}
			elapsed := time.Since(start)
			if lcLifelineStopsStubborn && !detached {
				// The lifeline stops it without waiting for the grace period.
				if elapsed > grace {
					t.Fatalf("Close took %v, more than the grace period %v", elapsed, grace)
				}
			} else if elapsed < grace || elapsed > grace+2*time.Second {
				// Only a kill, after the grace period, stops it.
				t.Fatalf("Close took %v; want the grace period %v, then a kill", elapsed, grace)
			}
			if !p.goneWithin(lcGoneAfterKill) || w.IsActive() || lcAddrExists(addr) {
				t.Fatalf("after Close: process running %v, IsActive %v, address %s there %v", p.running(), w.IsActive(), addr, lcAddrExists(addr))
			}
			if !lcLifelineStopsStubborn || detached {
				lcCheckExitCode(t, p, lcCloseKillCode) // what Close's kill leaves
			}
			if err := recvWithin(t, call, 5*time.Second, "the call in flight"); !errors.Is(err, worker.ErrClosed) {
				t.Fatalf("the call in flight: got %v, want ErrClosed", err)
			}
			start = time.Now()
			if err := w.Close(); err != nil || time.Since(start) > 100*time.Millisecond {
				t.Fatalf("a further Close: %v after %v", err, time.Since(start))
			}
			if _, err := worker.Call(ctx, w, Ping, PingReq{}); !errors.Is(err, worker.ErrClosed) {
				t.Fatalf("a call after Close: got %v, want ErrClosed", err)
			}
			t.Logf("Close took %v (grace period %v)", elapsed.Round(time.Millisecond), grace)
		})
	}
}
