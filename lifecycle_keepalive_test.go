//go:build unix || windows

package worker_test

// Lifecycle: keep-alive workers. Disconnect leaves the worker running;
// Reconnect and Attach (from this process or another) reach it again; a
// detached worker outlives its host.

import (
	"context"
	"errors"
	"os/exec"
	"testing"
	"time"

	"github.com/isolated-workers/worker"
)

// TestLifecycleKeepAliveDisconnectReconnectAttach: Disconnect fails the
// call in flight with ErrNotConnected and leaves the worker running;
// Reconnect reaches the same process; a second host Attaches in between;
// Close then stops the worker cleanly and its address goes.
func TestLifecycleKeepAliveDisconnectReconnectAttach(t *testing.T) {
	t.Parallel()
	sent, sentCh := lcSent(Sleep.Name())
	w := lcSpawnCmd(t, lcStopCmd(roleCmd(t, "lc-worker-keepalive")), &worker.Options{SocketPath: lcSocketPath(t),
		GracePeriod: 5 * time.Second, Middleware: []worker.Middleware{sent}})
	pid := w.Pid()
	p := lcWatch(t, pid)
	addr := lcAddr(t, w.Token())
	ctx := testCtx(t)

	call := make(chan error, 1)
	go func() {
		_, err := worker.Call(ctx, w, Sleep, SleepReq{Ms: 60_000})
		call <- err
	}()
	recvWithin(t, sentCh, 10*time.Second, "the sleep to be sent")
	if err := w.Disconnect(); err != nil {
		t.Fatalf("Disconnect: %v", err)
	}
	if err := recvWithin(t, call, 5*time.Second, "the call in flight"); !errors.Is(err, worker.ErrNotConnected) {
		t.Fatalf("the call in flight: got %v, want ErrNotConnected", err)
	}
	if !w.IsActive() || w.IsConnected() || p.goneWithin(200*time.Millisecond) {
		t.Fatalf("after Disconnect: IsActive %v, IsConnected %v, running %v", w.IsActive(), w.IsConnected(), p.running())
	}
	lcCheckListening(t, addr)
	if _, err := worker.Call(ctx, w, Ping, PingReq{}); !errors.Is(err, worker.ErrNotConnected) {
		t.Fatalf("a call while disconnected: got %v, want ErrNotConnected", err)
	}

	reconnectAndHandOver(t, ctx, w, pid)
	start := time.Now()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); !p.goneWithin(0) || d > 2*time.Second {
		t.Fatalf("Close took %v, process running %v; want a prompt exit", d, p.running())
	}
	lcCheckExitCode(t, p, 0)
	if lcAddrExists(addr) {
		t.Fatalf("the worker's address %s outlived it", addr)
	}
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
	t.Parallel()
	w := lcSpawn(t, "lc-worker", nil)
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

func TestLifecycleDetachedSurvivesHostAndAttach(t *testing.T) {
	t.Parallel()
	t.Run("host-in-no-job", func(t *testing.T) {
		host := lcStartHost(t, "lc-detached-host", (*exec.Cmd).Start, envLCSock+"="+lcSocketPath(t))
		wpid, tok, _ := host.readWorker(t)
		p := lcWatch(t, wpid)
		if err := host.wait(); err != nil {
			t.Fatalf("the detached host: %v", err)
		}
		lcCheckDetached(t, p, true)
		lcAttachAndClose(t, p, tok)
	})
	t.Run("host-in-job", func(t *testing.T) {
		// The host runs in a kill-on-close job that allows breakaway, as a
		// CI system's or a terminal's may: the detached worker must break
		// away from it, and survive its closing.
		job := lcBreakawayJob(t) // skips where there are no jobs
		host := lcStartHost(t, "lc-detached-host", job.start)
		wpid, tok, _ := host.readWorker(t)
		p := lcWatch(t, wpid)
		if err := host.wait(); err != nil {
			t.Fatalf("the detached host: %v", err)
		}
		job.leftBy(t, p)
		lcAttachAndClose(t, p, tok)
	})
}

// lcAttachAndClose attaches to the detached worker p, which must have
// outlived its host, refuses a tampered token, calls it, and closes it:
// it must exit at once, cleanly, on the shutdown message (the fallback, a
// kill after the grace period, would take longer, and on Windows leave
// exit code 1).
func lcAttachAndClose(t *testing.T, p *lcProc, tok string) {
	t.Helper()
	addr := lcAddr(t, tok)
	if !p.running() {
		t.Fatalf("the detached worker %d did not survive its host", p.pid)
	}
	lcCheckListening(t, addr)
	ctx := testCtx(t)
	for _, field := range []string{"id", "secret"} {
		bad := lcTamper(t, tok, field)
		if a, err := worker.Attach(ctx, bad, nil); !errors.Is(err, worker.ErrUnauthorized) {
			if a != nil {
				a.Close()
			}
			t.Fatalf("Attach with a wrong %s: got %v, want ErrUnauthorized", field, err)
		}
	}

	const grace = 5 * time.Second
	w, err := worker.Attach(ctx, tok, &worker.Options{GracePeriod: grace})
	if err != nil {
		t.Fatalf("Attach: %v", err)
	}
	defer w.Close()
	if res, err := worker.Call(ctx, w, Ping, PingReq{Message: "attached"}); err != nil || res.Message != "pong: attached" {
		t.Fatalf("Ping: %+v, %v", res, err)
	}
	if w.Pid() != p.pid {
		t.Fatalf("Pid: %d, want %d", w.Pid(), p.pid)
	}
	start := time.Now()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	if !p.goneWithin(2 * time.Second) {
		t.Fatalf("the worker %d still runs 2s after Close", p.pid)
	}
	if elapsed > 2*time.Second {
		t.Fatalf("Close took %v (grace period %v); want a prompt exit", elapsed, grace)
	}
	lcCheckExitCode(t, p, 0)
	eventually(t, 2*time.Second, func() bool { return !lcAddrExists(addr) }, "the worker's address "+addr+" to go")
	t.Logf("Close of the attached worker took %v", elapsed.Round(time.Millisecond))
}
