//go:build unix

package worker_test

import (
	"context"
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/isolated-workers/worker"
	"golang.org/x/sys/unix"
)

// svDropConns shuts down every connected socket of this process (not its
// listener), as a broken connection would end, and returns how many.
func svDropConns() (int, error) {
	n := 0
	for fd := 3; fd < 1024; fd++ {
		if typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE); err != nil || typ != unix.SOCK_STREAM {
			continue
		}
		if listening, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || listening != 0 {
			continue
		}
		if unix.Shutdown(fd, unix.SHUT_RDWR) == nil {
			n++
		}
	}
	return n, nil
}

// svStop stops process pid with SIGSTOP, and returns once it is stopped.
func svStop(t testing.TB, pid int) {
	t.Helper()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	if stateKnown := func() bool { _, s := procStat(pid); return s != "" }(); stateKnown {
		eventually(t, 10*time.Second, func() bool { _, s := procStat(pid); return s == "T" }, "the worker to stop")
	}
}

// A worker that stops answering altogether (here: stopped by SIGSTOP)
// while a call waits is declared stuck after the stuck timeout, killed,
// and its call fails with a crash that says so.
func TestSupervisionSilentWorkerIsStuck(t *testing.T) {
	t.Parallel()
	w := lcSpawn(t, "sv-worker", &worker.Options{StuckTimeout: 400 * time.Millisecond})
	p := lcWatch(t, w.Pid())
	errc := make(chan error, 1)
	go func() {
		_, err := worker.Call(testCtx(t), w, Sleep, SleepReq{Ms: 60_000})
		errc <- err
	}()
	svStop(t, p.pid)
	err := recvWithin(t, errc, 20*time.Second, "the call to a stopped worker")
	ce := asCrash(t, err)
	if !errors.Is(err, worker.ErrStuck) || !strings.Contains(err.Error(), "answered nothing") || ce.Signal != "SIGKILL" {
		t.Fatalf("got %+v: %v", ce, err)
	}
	if !p.goneWithin(5 * time.Second) {
		t.Fatal("the stopped worker was not killed")
	}
}

// A call whose deadline passes while its big request is being written to
// a worker that does not read returns at its deadline with
// DeadlineExceeded; so do the calls queued behind it. The request is
// written whole afterwards, so the connection survives.
func TestSupervisionDeadlineWhileWriting(t *testing.T) {
	t.Parallel()
	w := lcSpawn(t, "sv-worker", nil)
	pid := w.Pid()
	lcWatch(t, pid)
	svStop(t, pid)
	const timeout = 300 * time.Millisecond
	late := make(chan time.Duration, 2)
	call := func(size int) {
		ctx, cancel := context.WithTimeout(testCtx(t), timeout)
		defer cancel()
		_, err := worker.Call(ctx, w, Echo, make([]byte, size))
		d, _ := ctx.Deadline()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("a %d-byte call: got %v, want DeadlineExceeded", size, err)
		}
		late <- time.Since(d)
	}
	go call(1 << 20) // far more than the socket buffers: the write blocks
	go call(100)
	for range 2 {
		// The promise is 10ms; the bound here only tells it from the
		// second it took before (a -race build on a loaded machine is slow).
		if d := recvWithin(t, late, 10*time.Second, "a call to return"); d > 500*time.Millisecond {
			t.Errorf("a call returned %v after its deadline", d)
		} else {
			t.Logf("a call returned %v after its deadline", d)
		}
	}
	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if got, err := worker.Call(testCtx(t), w, GetPid, worker.Void{}); err != nil || got != pid {
		t.Fatalf("after the worker resumed: %d, %v; want the same worker (%d) on the same connection", got, err, pid)
	}
}

// With Options.Reconnect, a keep-alive worker whose connection breaks
// while it lives is connected to again by itself; the call in flight
// fails with ErrNotConnected.
func TestSupervisionReconnect(t *testing.T) {
	t.Parallel()
	ev := newSVEvents()
	cmd := roleCmd(t, "sv-worker")
	cmd.Env = append(cmd.Env, "IW_SV_KEEPALIVE=1")
	w := lcSpawnCmd(t, cmd, &worker.Options{Reconnect: true, OnEvent: ev.on})
	pid := w.Pid()
	lcWatch(t, pid)
	ev.next(t, worker.EventConnected)
	if _, err := worker.Call(testCtx(t), w, SVDrop, worker.Void{}); !errors.Is(err, worker.ErrNotConnected) {
		t.Fatalf("the call whose connection broke: %v", err)
	}
	if d := ev.next(t, worker.EventDisconnected); d.Pid != pid || d.Err == nil {
		t.Fatalf("EventDisconnected: %+v", d)
	}
	if c := ev.next(t, worker.EventConnected); c.Pid != pid {
		t.Fatalf("EventConnected: %+v", c)
	}
	if got, err := worker.Call(testCtx(t), w, GetPid, worker.Void{}); err != nil || got != pid {
		t.Fatalf("after the reconnection: %d, %v; want %d", got, err, pid)
	}
}

// lcKillPid kills process pid with SIGKILL and reports whether it could.
func lcKillPid(pid int) bool { return syscall.Kill(pid, syscall.SIGKILL) == nil }

// pidGoneWithin waits up to d for process pid to be gone, and reports
// whether it is (a zombie counts as gone).
func pidGoneWithin(pid int, d time.Duration) bool {
	return poll(d, func() bool { return lcPidGone(pid) })
}

// underWine is false: Wine runs Windows binaries.
func underWine() bool { return false }
