//go:build unix

package worker_test

// Unix hooks of the lifecycle tests: processes through kill(2) and /proc
// (Linux), addresses are socket files, a worker's tree is its process
// group, and the lifeline pipe tells it that its host died.

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/isolated-workers/worker"
	"github.com/isolated-workers/worker/internal/wire"
)

const (
	lcCallsInFlight    = 64
	lcOrphanGrandchild = true // a worker whose host died kills its process group
	lcOrphanWithin     = time.Second
	lcStopRole         = "lc-worker"
	lcGoneAfterKill    = 0 // Close and Shutdown reap the worker before they return
	// lcLifelineStopsStubborn: a worker that ignores SIGTERM still exits
	// when the lifeline closes.
	lcLifelineStopsStubborn = true
	lcCloseKillCode         = -1 // unknown here: lcCheckExitCode does not check on Unix
	// lcHostDiedEnd: a worker whose host died kills itself.
	lcHostDiedEnd = "signal: killed"
)

func lcStopCmd(cmd *exec.Cmd) *exec.Cmd { return cmd }

func lcRequireSIGTERM(t *testing.T) {}

func lcTermSelf() error { return syscall.Kill(os.Getpid(), syscall.SIGTERM) }

func lcIgnoreTerm() { signal.Ignore(syscall.SIGTERM) }

// lcDir makes a directory, short enough for socket paths, removed at the
// end of the test.
func lcDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "lc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// lcSocketPath returns a socket path in a directory of the test's own.
func lcSocketPath(t testing.TB) string { return filepath.Join(lcDir(t), "w.sock") }

func lcAddrExists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

func lcCheckListening(t testing.TB, path string) {
	t.Helper()
	if fi, err := os.Lstat(path); err != nil || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("no socket at %s: %v", path, err)
	}
}

// lcProc is a process, by pid.
type lcProc struct{ pid int }

// lcWatch returns the process pid. At the end of the test, if it still runs
// (the test failed), it is killed, with its process group.
func lcWatch(t testing.TB, pid int) *lcProc {
	p := &lcProc{pid: pid}
	t.Cleanup(func() {
		if p.running() {
			t.Logf("process %d still runs at the end of the test: killing it", pid)
			syscall.Kill(-pid, syscall.SIGKILL)
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	return p
}

func (p *lcProc) running() bool { return !lcPidGone(p.pid) }

// goneWithin waits up to d for the process to exit and reports whether it did.
func (p *lcProc) goneWithin(d time.Duration) bool {
	return poll(d, func() bool { return lcPidGone(p.pid) })
}

// exitCode is not known: p is not this process's child.
func (p *lcProc) exitCode(t testing.TB) (int, bool) { return 0, false }

// lcPidGone reports whether pid has exited: it no longer exists, or it is
// a zombie (an orphan's zombie may never be reaped by this system's init).
func lcPidGone(pid int) bool {
	if syscall.Kill(pid, 0) == syscall.ESRCH {
		return true
	}
	_, state := procStat(pid)
	return state == "Z" || state == "X" || state == ""
}

// lcKill kills p with SIGKILL, and returns the crash it makes.
func lcKill(t testing.TB, p *lcProc) (code int, signal string) {
	t.Helper()
	if err := syscall.Kill(p.pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	return -1, "SIGKILL"
}

// lcStatFields returns the fields of /proc/<pid>/stat after the command
// name: state, ppid, pgrp, session, ...
func lcStatFields(t testing.TB, pid string) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
}

// lcCheckContained checks that p is a child of parent and, with group
// non-zero, in process group group.
func lcCheckContained(t testing.TB, p *lcProc, parent, group int) {
	t.Helper()
	f := lcStatFields(t, strconv.Itoa(p.pid))
	if f[1] != strconv.Itoa(parent) || group != 0 && f[2] != strconv.Itoa(group) {
		t.Fatalf("process %d: state %s, parent %s, group %s; want parent %d, group %d", p.pid, f[0], f[1], f[2], parent, group)
	}
}

// lcCheckDetached checks that a detached worker has a session of its own,
// and that another shares this process's.
func lcCheckDetached(t testing.TB, p *lcProc, detached bool) {
	t.Helper()
	mine := lcStatFields(t, "self")[3]
	f := lcStatFields(t, strconv.Itoa(p.pid))
	if detached && (f[3] == mine || f[3] != strconv.Itoa(p.pid)) || !detached && f[3] != mine {
		t.Fatalf("the worker's session is %s (detached: %v); ours is %s", f[3], detached, mine)
	}
}

// lcBreakawayJob: there are no jobs here.
func lcBreakawayJob(t *testing.T) *lcJob {
	t.Skip("job objects are Windows-only")
	return nil
}

type lcJob struct{}

func (*lcJob) start(*exec.Cmd) error      { return nil }
func (*lcJob) leftBy(testing.TB, *lcProc) {}

// lcStubbornGrace is the grace period of the stubborn worker: detached,
// only SIGKILL after it stops the worker; otherwise the lifeline does,
// well before it.
func lcStubbornGrace(detached bool) time.Duration {
	if detached {
		return 500 * time.Millisecond
	}
	return 3 * time.Second
}

// lcStubbornCall makes a call to w that never returns, on a handler that
// ignores SIGTERM.
func lcStubbornCall(t testing.TB, ctx context.Context, w *worker.Worker, p *lcProc) <-chan error {
	t.Helper()
	call := make(chan error, 1)
	go func() {
		_, err := worker.Call(ctx, w, LCStubborn, worker.Void{})
		call <- err
	}()
	awaitStarted(t, ctx, w, LCStubborn.Name(), 1)
	return call
}

// lcStandIn is a stand-in host process (the block role) for a worker
// started by hand.
type lcStandIn struct {
	*exec.Cmd
	life *os.File // the read end of the lifeline it holds
}

// lcStartStandIn starts a stand-in host that holds the write end of a
// lifeline, whose read end lcStartByHand gives the worker.
func lcStartStandIn(t testing.TB) *lcStandIn {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	s := &lcStandIn{Cmd: roleCmd(t, "block"), life: r}
	s.ExtraFiles = []*os.File{w}
	err = s.Start()
	w.Close()
	if err != nil {
		r.Close()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { s.Wait(); close(done) }()
	t.Cleanup(func() { s.Process.Kill(); <-done; r.Close() })
	return s
}

// lcStartByHand starts the test binary in role as a worker with startup
// data of its own: at a socket path of the test's, with a host-connect
// timeout, and, with a stand-in host, that host's lifeline. It returns
// once the worker listens (it says so on its ready pipe).
func lcStartByHand(t testing.TB, role string, connectTimeout time.Duration, host *lcStandIn) *lcHandWorker {
	t.Helper()
	sock := lcSocketPath(t)
	readyR, readyW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer readyR.Close()
	sd := wire.StartupData{Driver: wire.Driver, SocketPath: sock, Serializer: worker.JSON.Name(),
		ServerConnectTimeout: connectTimeout.Milliseconds(), ReadyFD: 3}
	cmd := roleCmd(t, role)
	cmd.ExtraFiles = []*os.File{readyW}
	if host != nil {
		sd.LifeFD = 4
		cmd.ExtraFiles = append(cmd.ExtraFiles, host.life)
	}
	cmd.Env = append(cmd.Env, sd.Env()...)
	hw := lcStartHand(t, cmd, sock)
	readyW.Close()
	if host != nil {
		host.life.Close() // the worker's now
	}
	var b [1]byte
	if n, _ := readyR.Read(b[:]); n != 1 {
		t.Fatal("the worker did not report listening")
	}
	lcCheckListening(t, sock)
	return hw
}

// lcDialByHand connects to a worker started by lcStartByHand.
func lcDialByHand(t testing.TB, ctx context.Context, hw *lcHandWorker) *worker.Client {
	t.Helper()
	conn, err := net.Dial("unix", hw.addr)
	if err != nil {
		t.Fatal(err)
	}
	c, err := worker.NewClient(ctx, conn, nil)
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	return c
}

// lcStartupIsolate points TMPDIR, where Spawn makes the socket's
// directory, at a directory of the test's, and returns a check that a
// failed Spawn left no process and no file behind.
func lcStartupIsolate(t *testing.T) func(*testing.T) {
	tmp, err := os.MkdirTemp("", "lc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(tmp) })
	t.Setenv("TMPDIR", tmp)
	before := children()
	return func(t *testing.T) {
		t.Helper()
		for _, pid := range children() {
			if !slices.Contains(before, pid) {
				t.Fatalf("child process %d left", pid)
			}
		}
		if f := leftovers(tmp); len(f) > 0 {
			t.Fatalf("files left: %v", f)
		}
	}
}
