//go:build unix

package proc

import (
	"errors"
	"golang.org/x/sys/unix"
	"os"
	"os/exec"
	"syscall"
)

// prepare sets the process attributes of a worker: its own process group,
// so that stopping it reaches its children too, or for a detached worker
// its own session, so that it outlives the host and its terminal.
func prepare(cmd *exec.Cmd, detached bool) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	a := cmd.SysProcAttr
	if detached {
		a.Setsid, a.Setpgid = true, false
	} else if !a.Setsid {
		a.Setpgid = true
	}
	prepareOS(a, detached)
}

// inheritPipes passes the ready pipe and the lifeline to the worker and
// returns their descriptor numbers there.
func inheritPipes(cmd *exec.Cmd, readyW, lifeR *os.File) (readyFD, lifeFD int) {
	readyFD = 3 + len(cmd.ExtraFiles)
	cmd.ExtraFiles = append(cmd.ExtraFiles, readyW)
	if lifeR != nil {
		lifeFD = 3 + len(cmd.ExtraFiles)
		cmd.ExtraFiles = append(cmd.ExtraFiles, lifeR)
	}
	return readyFD, lifeFD
}

// procSys holds, on Unix, the worker's process group: it has the worker's
// pid as its id (see prepare), and outlives the worker while the worker's
// children are in it.
type procSys struct{ pgid int }

// lifelinePipe tells that workers get an inherited lifeline pipe.
const lifelinePipe = true

// terminate asks the worker's process group to stop.
func (p *Process) terminate() error { return signalGroup(p.sys.pgid, syscall.SIGTERM) }

// kill kills the worker's process group. Once the worker is reaped its
// pid may belong to another process, so only the group is signalled then:
// a process group id is never reused while the group has members.
func (p *Process) kill() error {
	if p.HasExited() {
		return syscall.Kill(-p.sys.pgid, syscall.SIGKILL)
	}
	return signalGroup(p.sys.pgid, syscall.SIGKILL)
}

func (p *Process) release() {}

// KillPid kills a process that is not our child (an attached worker).
func KillPid(pid int) error { return syscall.Kill(pid, syscall.SIGKILL) }

// errNoProcess is returned when signalling a process that was never started.
var errNoProcess = errors.New("no process")

func signalGroup(pid int, sig syscall.Signal) error {
	if pid <= 0 {
		return errNoProcess
	}
	if err := syscall.Kill(-pid, sig); err == nil {
		return nil
	}
	return syscall.Kill(pid, sig)
}

// Alive reports whether a process with this pid exists and has not
// exited: a zombie waiting for its parent to reap it counts as gone.
func Alive(pid int) bool {
	return pid > 0 && syscall.Kill(pid, 0) != syscall.ESRCH && !zombie(pid)
}

// exitDetail returns the exit code and the name of the killing signal
// ("SIGKILL").
func exitDetail(st *os.ProcessState) (code int, signal string) {
	if st == nil {
		return -1, ""
	}
	if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		if name := unix.SignalName(ws.Signal()); name != "" {
			return -1, name
		}
		return -1, ws.Signal().String()
	}
	return st.ExitCode(), ""
}

// NoInherit makes an inherited descriptor close on exec, so that the
// worker's own children do not inherit it.
func NoInherit(fd int) { syscall.CloseOnExec(fd) }
