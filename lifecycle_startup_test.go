//go:build unix || windows

package worker_test

// Lifecycle: startup. A worker that fails to start, or never listens,
// fails Spawn and leaves nothing behind; one that no host connects to
// exits by itself.

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/isolated-workers/worker"
)

// TestLifecycleHostConnectTimeout: a worker started by hand, that no host
// connects to, exits by itself, cleanly, once its host-connect timeout is
// over (and not before), and its address goes with it.
func TestLifecycleHostConnectTimeout(t *testing.T) {
	t.Parallel()
	const timeout = 300 * time.Millisecond
	hw := lcStartByHand(t, "worker", timeout, nil)
	recvWithin(t, hw.done, 10*time.Second, "the unconnected worker to exit")
	elapsed := time.Since(hw.started)
	if hw.err != nil {
		t.Fatalf("the worker exited with %v, want 0", hw.err)
	}
	if elapsed < timeout {
		t.Fatalf("the worker exited after %v, before its host-connect timeout", elapsed)
	}
	if lcAddrExists(hw.addr) {
		t.Fatalf("the worker left its address %s behind", hw.addr)
	}
	t.Logf("the unconnected worker exited after %v", elapsed.Round(time.Millisecond))
}

// TestLifecycleStartupFailures counts this process's children: it does not
// run in parallel with other tests.
func TestLifecycleStartupFailures(t *testing.T) {
	t.Run("exit-at-startup", func(t *testing.T) {
		nothingLeft := lcStartupIsolate(t)
		start := time.Now()
		w, err := worker.Spawn(testCtx(t), roleCmd(t, "exit-at-startup"), &worker.Options{StartupTimeout: 10 * time.Second})
		elapsed := time.Since(start)
		if err == nil {
			w.Close()
			t.Fatal("Spawn succeeded")
		}
		ce := asCrash(t, err)
		if ce.ExitCode != 3 || !strings.Contains(ce.Stderr, "boom") || ce.Pid <= 0 {
			t.Fatalf("got pid %d, exit code %d, stderr %q: %v", ce.Pid, ce.ExitCode, ce.Stderr, err)
		}
		if elapsed > 3*time.Second {
			t.Fatalf("Spawn failed after %v; want at once", elapsed)
		}
		if !lcPidGone(ce.Pid) {
			t.Fatalf("the worker %d is still there", ce.Pid)
		}
		nothingLeft(t)
	})
	t.Run("never-listen", func(t *testing.T) {
		nothingLeft := lcStartupIsolate(t)
		start := time.Now()
		// The block role runs without listening for blockFor.
		w, err := worker.Spawn(testCtx(t), roleCmd(t, "block"), &worker.Options{StartupTimeout: 300 * time.Millisecond})
		elapsed := time.Since(start)
		if err == nil {
			w.Close()
			t.Fatal("Spawn succeeded")
		}
		var ce *worker.CrashError
		if !errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ce) {
			t.Fatalf("got %v, want context.DeadlineExceeded", err)
		}
		if elapsed < 300*time.Millisecond || elapsed > 3*time.Second {
			t.Fatalf("Spawn failed after %v; want the startup timeout, 300ms", elapsed)
		}
		if !strings.Contains(err.Error(), "worker.Main") {
			t.Fatalf("the error of a worker that never listened does not hint at worker.Main: %v", err)
		}
		nothingLeft(t)
	})
	t.Run("never-served", func(t *testing.T) {
		// A program that forgot worker.Main: it runs its host code and exits 0.
		nothingLeft := lcStartupIsolate(t)
		_, err := worker.Spawn(testCtx(t), roleCmd(t, "no-main"), nil)
		ce := asCrash(t, err)
		if ce.ExitCode != 0 || !strings.Contains(err.Error(), "worker.Main") {
			t.Fatalf("got exit code %d: %v; want 0 and a hint at worker.Main", ce.ExitCode, err)
		}
		nothingLeft(t)
	})
}

// Spawn in a process that was started as a worker but never served (the
// single-binary pattern without worker.Main) fails at once, instead of
// spawning a chain of workers that each run the host's code.
func TestSpawnInAnUnservedWorker(t *testing.T) {
	t.Setenv("ISOLATED_WORKERS_STARTUP_DATA", `{"driver":"child_process","socketPath":"/nonexistent/w.sock"}`)
	cmd := roleCmd(t, "worker")
	_, err := worker.Spawn(testCtx(t), cmd, nil)
	if err == nil || !strings.Contains(err.Error(), "worker.Main") || cmd.Process != nil {
		t.Fatalf("Spawn in an unserved worker: %v (started: %v); want an error naming worker.Main, nothing started", err, cmd.Process != nil)
	}
}
