//go:build windows

package worker_test

// Windows hooks of the lifecycle tests: processes that are not our
// children are watched through a handle opened while they are known to run
// (so their pid cannot be reused meanwhile): WaitForSingleObject tells
// whether they are gone, GetExitCodeProcess how they ended. A worker's
// tree is its kill-on-close job; addresses are named pipes; a worker
// watches its host's process handle. There is no SIGTERM.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/windows"

	"github.com/isolated-workers/worker"
	"github.com/isolated-workers/worker/internal/npipe"
	"github.com/isolated-workers/worker/internal/winproc"
	"github.com/isolated-workers/worker/internal/wire"
)

const (
	lcCallsInFlight    = 16
	lcOrphanGrandchild = true // the job kills the worker's own children with it
	lcOrphanWithin     = 2 * time.Second
	// lcStopRole is keep-alive, and lcStopCmd starts it without a console:
	// only the __iw.shutdown message can make it exit before a kill.
	lcStopRole      = "lc-worker-keepalive"
	lcGoneAfterKill = 2 * time.Second
	// lcLifelineStopsStubborn: a worker whose threads are all suspended
	// does nothing until it is killed.
	lcLifelineStopsStubborn = false
	lcCloseKillCode         = 1 // what Job.Terminate and a detached worker's kill leave
	// lcHostDiedEnd: a worker whose host died ends itself with code 1.
	lcHostDiedEnd = "exit status 1"

	lwStillActive = 259 // GetExitCodeProcess's code for a running process
)

// lcStopCmd makes a worker's command start without a console
// (DETACHED_PROCESS): no console control event can reach it, so only the
// connection can ask it to stop.
func lcStopCmd(cmd *exec.Cmd) *exec.Cmd {
	cmd.SysProcAttr = &syscall.SysProcAttr{CreationFlags: windows.DETACHED_PROCESS}
	return cmd
}

func lcRequireSIGTERM(t *testing.T) { t.Skip("Windows has no SIGTERM") }

func lcTermSelf() error { return errors.New("no SIGTERM on Windows") }

func lcIgnoreTerm() {}

// lcSocketPath: Spawn picks the pipe name.
func lcSocketPath(testing.TB) string { return "" }

// lcAddrExists reports whether a named pipe exists at path. It connects
// if it can, so it is only for pipes whose server should be gone.
func lcAddrExists(path string) bool {
	p, err := windows.UTF16PtrFromString(path)
	if err != nil {
		return false
	}
	h, err := windows.CreateFile(p, 0, 0, nil, windows.OPEN_EXISTING,
		windows.SECURITY_SQOS_PRESENT|windows.SECURITY_ANONYMOUS, 0)
	if err == nil {
		windows.CloseHandle(h)
		return true
	}
	return !errors.Is(err, windows.ERROR_FILE_NOT_FOUND)
}

// lcCheckListening cannot look without connecting: a no-op.
func lcCheckListening(testing.TB, string) {}

// lcProc is a handle to a process, opened while it runs.
type lcProc struct {
	pid int
	h   windows.Handle
}

// lcWatch opens a handle to process pid. At the end of the test, a process
// still running (the test failed) is terminated, and the handle closed.
func lcWatch(t testing.TB, pid int) *lcProc {
	t.Helper()
	h, err := windows.OpenProcess(windows.SYNCHRONIZE|windows.PROCESS_QUERY_INFORMATION|windows.PROCESS_TERMINATE,
		false, uint32(pid))
	if err != nil {
		t.Fatalf("OpenProcess(%d): %v", pid, err)
	}
	p := &lcProc{pid: pid, h: h}
	t.Cleanup(func() {
		if p.running() {
			t.Logf("process %d still runs at the end of the test: terminating it", pid)
			windows.TerminateProcess(h, 1)
			windows.WaitForSingleObject(h, 5000)
		}
		windows.CloseHandle(h)
	})
	return p
}

// running reports whether the process is running, by its exit code.
func (p *lcProc) running() bool {
	var code uint32
	return windows.GetExitCodeProcess(p.h, &code) == nil && code == lwStillActive
}

// goneWithin waits up to d for the process to exit and reports whether it did.
func (p *lcProc) goneWithin(d time.Duration) bool {
	ev, err := windows.WaitForSingleObject(p.h, uint32(d/time.Millisecond))
	return err == nil && ev == windows.WAIT_OBJECT_0
}

// exitCode returns the exit code of the exited process.
func (p *lcProc) exitCode(t testing.TB) (int, bool) {
	t.Helper()
	var code uint32
	if err := windows.GetExitCodeProcess(p.h, &code); err != nil {
		t.Fatal(err)
	}
	return int(code), true
}

var lwIsProcessInJob = windows.NewLazySystemDLL("kernel32.dll").NewProc("IsProcessInJob")

// inJob reports whether the process is in job, or with job 0 in any job.
func (p *lcProc) inJob(t testing.TB, job windows.Handle) bool {
	t.Helper()
	var result int32
	r, _, err := lwIsProcessInJob.Call(uintptr(p.h), uintptr(job), uintptr(unsafe.Pointer(&result)))
	if r == 0 {
		t.Fatalf("IsProcessInJob(%d): %v", p.pid, err)
	}
	return result != 0
}

// lcPidGone reports whether process pid does not run.
func lcPidGone(pid int) bool {
	h, err := windows.OpenProcess(windows.PROCESS_QUERY_LIMITED_INFORMATION, false, uint32(pid))
	if err != nil {
		return true
	}
	defer windows.CloseHandle(h)
	var code uint32
	return !(windows.GetExitCodeProcess(h, &code) == nil && code == lwStillActive)
}

// lcKill terminates p with exit code 9, and returns the crash it makes.
func lcKill(t testing.TB, p *lcProc) (code int, signal string) {
	t.Helper()
	if err := windows.TerminateProcess(p.h, 9); err != nil {
		t.Fatal(err)
	}
	return 9, ""
}

// lcCheckContained checks that p is in a job (its host's, or its worker's).
func lcCheckContained(t testing.TB, p *lcProc, parent, group int) {
	t.Helper()
	if !p.inJob(t, 0) {
		t.Fatalf("process %d is in no job", p.pid)
	}
}

// lwSelfInJob reports whether this process is in a job.
func lwSelfInJob(t testing.TB) bool {
	return (&lcProc{pid: os.Getpid(), h: windows.CurrentProcess()}).inJob(t, 0)
}

func lwBreakawayAllowed(t testing.TB) bool {
	t.Helper()
	ok, err := winproc.BreakawayAllowed()
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

// lcCheckDetached checks that a worker is in a job unless it is detached
// (in a job then only if this test runs in one that it cannot leave).
func lcCheckDetached(t testing.TB, p *lcProc, detached bool) {
	t.Helper()
	if p.inJob(t, 0) == detached && !(detached && lwSelfInJob(t) && !lwBreakawayAllowed(t)) {
		t.Fatalf("the worker is in a job: %v; detached %v", !detached, detached)
	}
}

// lcJob is a kill-on-close job that allows breakaway, as a CI system's or
// a terminal's may.
type lcJob struct{ *winproc.Job }

func lcBreakawayJob(t *testing.T) *lcJob {
	t.Helper()
	if lwSelfInJob(t) && !lwBreakawayAllowed(t) {
		t.Skip("this test runs in a job that does not allow breakaway, so no process it starts can leave it")
	}
	job, err := winproc.NewJob()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { job.Close() })
	var info windows.JOBOBJECT_EXTENDED_LIMIT_INFORMATION
	info.BasicLimitInformation.LimitFlags = windows.JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE | windows.JOB_OBJECT_LIMIT_BREAKAWAY_OK
	if _, err := windows.SetInformationJobObject(job.Handle(), windows.JobObjectExtendedLimitInformation,
		uintptr(unsafe.Pointer(&info)), uint32(unsafe.Sizeof(info))); err != nil {
		t.Fatal(err)
	}
	return &lcJob{job}
}

func (j *lcJob) start(cmd *exec.Cmd) error { return j.Start(cmd) }

// leftBy checks that the detached worker p broke away from the job, and
// closes the job: p must survive that.
func (j *lcJob) leftBy(t testing.TB, p *lcProc) {
	t.Helper()
	if p.inJob(t, j.Handle()) {
		if lwIsWine() {
			t.Skip("Wine 8.0's QueryInformationJobObject reports no limit flags, so winproc.BreakawayAllowed " +
				"cannot see JOB_OBJECT_LIMIT_BREAKAWAY_OK and leaves CREATE_BREAKAWAY_FROM_JOB out: the detached " +
				"worker stays in the host's job and would die with it")
		}
		t.Fatalf("the detached worker %d is in its host's job, which allows breakaway", p.pid)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
}

// lwIsWine reports whether the test runs under Wine (whose ntdll exports
// wine_get_version).
func lwIsWine() bool {
	return windows.NewLazySystemDLL("ntdll.dll").NewProc("wine_get_version").Find() == nil
}

// lcStubbornGrace: the grace period, after which Close kills the worker.
func lcStubbornGrace(bool) time.Duration { return 500 * time.Millisecond }

// lcStubbornCall makes a call to w that never returns, then suspends every
// thread of the worker (as a debugger would): it can no longer answer
// anything, not even the shutdown message, which makes it the most
// stubborn of workers.
func lcStubbornCall(t testing.TB, ctx context.Context, w *worker.Worker, p *lcProc) <-chan error {
	t.Helper()
	call := make(chan error, 1)
	go func() {
		_, err := worker.Call(ctx, w, Sleep, SleepReq{Ms: 60_000})
		call <- err
	}()
	awaitStarted(t, ctx, w, Sleep.Name(), 1)
	lwSuspend(t, p)
	return call
}

var lwSuspendThread = windows.NewLazySystemDLL("kernel32.dll").NewProc("SuspendThread")

// lwSuspend suspends every thread of process p. The threads are counted to
// make sure that some were found.
func lwSuspend(t testing.TB, p *lcProc) {
	t.Helper()
	snap, err := windows.CreateToolhelp32Snapshot(windows.TH32CS_SNAPTHREAD, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer windows.CloseHandle(snap)
	te := windows.ThreadEntry32{Size: uint32(unsafe.Sizeof(windows.ThreadEntry32{}))}
	n := 0
	for err = windows.Thread32First(snap, &te); err == nil; err = windows.Thread32Next(snap, &te) {
		if te.OwnerProcessID != uint32(p.pid) {
			continue
		}
		th, err := windows.OpenThread(windows.THREAD_SUSPEND_RESUME, false, te.ThreadID)
		if err != nil {
			t.Fatalf("OpenThread(%d): %v", te.ThreadID, err)
		}
		r, _, err := lwSuspendThread.Call(uintptr(th))
		windows.CloseHandle(th)
		if int32(r) == -1 {
			t.Fatalf("SuspendThread(%d): %v", te.ThreadID, err)
		}
		n++
	}
	if !errors.Is(err, windows.ERROR_NO_MORE_FILES) {
		t.Fatalf("enumerating threads: %v", err)
	}
	if n == 0 {
		t.Fatalf("no thread of process %d found to suspend", p.pid)
	}
}

// lcStandIn is a stand-in host process (the block role) for a worker
// started by hand.
type lcStandIn struct{ *exec.Cmd }

// lcStartStandIn starts a stand-in host, whose pid lcStartByHand gives the
// worker to watch.
func lcStartStandIn(t testing.TB) *lcStandIn {
	t.Helper()
	s := &lcStandIn{Cmd: roleCmd(t, "block")}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { s.Wait(); close(done) }()
	t.Cleanup(func() { s.Process.Kill(); <-done })
	return s
}

// lcStartByHand starts the test binary in role as a worker with startup
// data of its own: at a fresh pipe name, with a host-connect timeout, and
// the stand-in host's pid (or this process's) to watch. With a stand-in
// host, the worker must be in no job: only its watch can stop it.
func lcStartByHand(t testing.TB, role string, connectTimeout time.Duration, host *lcStandIn) *lcHandWorker {
	t.Helper()
	path, err := npipe.NewPath()
	if err != nil {
		t.Fatal(err)
	}
	sd := wire.StartupData{Driver: wire.Driver, SocketPath: path, Serializer: worker.JSON.Name(),
		ServerConnectTimeout: connectTimeout.Milliseconds(), HostPID: os.Getpid()}
	if host != nil {
		sd.HostPID = host.Process.Pid
	}
	cmd := roleCmd(t, role)
	cmd.Env = append(cmd.Env, sd.Env()...)
	hw := lcStartHand(t, cmd, path)
	if host != nil && hw.p.inJob(t, 0) {
		t.Fatal("the worker is in a job")
	}
	return hw
}

// lcDialByHand connects to a worker that was started by hand and may not
// listen yet, the way Spawn does: it dials again while the pipe does not
// exist, and also when the handshake breaks because the dial won the race
// with npipe.Listen for the pipe's first instance (where that instance is
// connectable, as under Wine, Listen drops such a client and listens
// again). The worker announces nothing to a hand-started host, so polling
// is the only way to learn that it listens; the wait ends early if the
// worker dies.
func lcDialByHand(t testing.TB, ctx context.Context, hw *lcHandWorker) *worker.Client {
	t.Helper()
	var c *worker.Client
	var err error
	eventually(t, 20*time.Second, func() bool {
		conn, derr := npipe.Dial(ctx, hw.addr)
		if err = derr; err == nil {
			var herr error
			if c, herr = worker.NewClient(ctx, conn, nil); herr == nil {
				return true
			}
			err = fmt.Errorf("handshake: %w", herr)
			t.Logf("dialling again after %v", err)
		} else if !errors.Is(err, windows.ERROR_FILE_NOT_FOUND) {
			t.Fatalf("connecting to the worker: %v", err)
		}
		if !hw.p.running() {
			t.Fatalf("connecting to the worker: %v; and it exited", err)
		}
		return false
	}, "the worker started by hand to accept a connection")
	return c
}

// lcStartupIsolate returns a check that a failed Spawn left no child
// process running (pipes leave no file).
func lcStartupIsolate(t *testing.T) func(*testing.T) {
	before := lwChildren(t)
	return func(t *testing.T) {
		t.Helper()
		for pid := range lwChildren(t) {
			if !before[pid] {
				t.Fatalf("child process %d left running", pid)
			}
		}
	}
}

// lwChildren lists the running processes whose parent is this process.
func lwChildren(t testing.TB) map[int]bool {
	t.Helper()
	snap, err := windows.CreateToolhelp32Snapshot(windows.TH32CS_SNAPPROCESS, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer windows.CloseHandle(snap)
	pe := windows.ProcessEntry32{Size: uint32(unsafe.Sizeof(windows.ProcessEntry32{}))}
	out := map[int]bool{}
	me := uint32(os.Getpid())
	for err = windows.Process32First(snap, &pe); err == nil; err = windows.Process32Next(snap, &pe) {
		if pe.ParentProcessID == me && !lcPidGone(int(pe.ProcessID)) {
			out[int(pe.ProcessID)] = true
		}
	}
	return out
}
