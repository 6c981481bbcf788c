package proc

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// prepareOS asks Linux to send SIGTERM to a non-detached worker when its
// host dies, however it dies.
//
// The signal stays SIGTERM, not SIGKILL, for workers not built with this
// library (a Node or Python worker): it is all they have, and it lets them
// remove their socket. A worker built with this library turns it off as it
// starts (DisarmParentDeath), because it cannot tell it from a supervisor's
// polite SIGTERM: Linux sends it whenever the thread that forked the worker
// exits, so when a host is killed it can come while the host's other
// threads still exit and the worker's parent is still the host; taken for a
// stop, it started a drain, and a drained worker exited without its
// children. That worker watches its lifeline instead, whose end of file
// comes only once the host is gone.
func prepareOS(a *syscall.SysProcAttr, detached bool) {
	if !detached {
		a.Pdeathsig = syscall.SIGTERM
	} else {
		a.Pdeathsig = 0
	}
}

// startProcess starts cmd and waits for it on the same locked OS thread.
// The parent-death signal fires when the *thread* that forked the child
// exits, not the process (golang/go#27505); a thread locked by a goroutine
// that stays alive as long as the child cannot be retired by the runtime,
// so the signal only comes when the host really dies.
func startProcess(cmd *exec.Cmd, _ bool) (*Process, error) {
	started := make(chan error, 1)
	p := newProcess(cmd)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		err := cmd.Start()
		started <- err
		if err == nil {
			p.wait()
		}
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	p.pid = cmd.Process.Pid
	p.sys.pgid = p.pid
	return p, nil
}

// zombie reports whether pid has exited but is not reaped yet.
func zombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')') // the command name may contain anything
	return i >= 0 && i+2 < len(b) && b[i+2] == 'Z'
}

// DisarmParentDeath turns off the parent-death signal that Start asked for
// (see prepareOS), in a worker that watches its lifeline instead. Linux
// keeps that signal per thread, on the thread that exec'd the worker: its
// main thread, where Go runs init functions. Call it from one.
func DisarmParentDeath() {
	unix.Prctl(unix.PR_SET_PDEATHSIG, 0, 0, 0, 0)
}
