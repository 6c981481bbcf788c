package proc

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"syscall"
)

// prepareOS asks Linux to send SIGTERM to a non-detached worker when its
// host dies, however it dies.
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
