package proc

import (
	"os"
	"os/exec"
	"syscall"

	"golang.org/x/sys/windows"

	"github.com/isolated-workers/worker/internal/winproc"
)

// procSys holds the job object that ties a worker to its host: it is
// killed, with every process it started, when the job's last handle
// closes, which happens when the host exits or dies.
type procSys struct{ job *winproc.Job }

// lifelinePipe is false on Windows: exec.Cmd cannot pass extra files, and
// the job object and the host's process handle do the lifeline's work.
const lifelinePipe = false

func prepare(cmd *exec.Cmd, detached bool) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	attr := winproc.WorkerSysProcAttr()
	if detached {
		attr = winproc.DetachedSysProcAttr()
	}
	cmd.SysProcAttr.CreationFlags |= attr.CreationFlags
}

// inheritPipes passes the ready pipe to the worker as an inherited handle,
// whose value it returns (the child sees the same value). There is no
// lifeline on Windows: the job object and the worker's wait on the host's
// process handle do its work.
func inheritPipes(cmd *exec.Cmd, readyW, _ *os.File) (readyFD, lifeFD int) {
	h := windows.Handle(readyW.Fd())
	if windows.SetHandleInformation(h, windows.HANDLE_FLAG_INHERIT, windows.HANDLE_FLAG_INHERIT) != nil {
		return 0, 0 // the worker is then found by polling
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.AdditionalInheritedHandles = append(cmd.SysProcAttr.AdditionalInheritedHandles, syscall.Handle(h))
	return int(h), 0
}

// startProcess starts a non-detached worker inside a kill-on-close job,
// before it can run any code, so that none of its children escape.
func startProcess(cmd *exec.Cmd, detached bool) (*Process, error) {
	p := newProcess(cmd)
	if detached {
		if err := cmd.Start(); err != nil {
			return nil, err
		}
	} else {
		job, err := winproc.NewJob()
		if err != nil {
			return nil, err
		}
		if err := job.Start(cmd); err != nil {
			job.Close()
			return nil, err
		}
		p.sys.job = job
	}
	p.pid = cmd.Process.Pid
	go p.wait()
	return p, nil
}

// terminate asks the worker to stop with a console break event to its
// process group, the closest Windows has to SIGTERM. A worker is normally
// stopped over its connection before this.
func (p *Process) terminate() error { return winproc.Interrupt(p.pid) }

// kill terminates the worker and every process in its job.
func (p *Process) kill() error {
	if p.sys.job != nil {
		return p.sys.job.Terminate(1)
	}
	return p.cmd.Process.Kill()
}

func (p *Process) release() {
	if p.sys.job != nil {
		p.sys.job.Close()
	}
}

func KillPid(pid int) error {
	proc, err := os.FindProcess(pid)
	if err != nil {
		return err
	}
	defer proc.Release()
	return proc.Kill()
}

// Alive reports whether a process with this pid is running.
func Alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	h, err := windows.OpenProcess(windows.PROCESS_QUERY_LIMITED_INFORMATION, false, uint32(pid))
	if err != nil {
		return false
	}
	defer windows.CloseHandle(h)
	var code uint32
	return windows.GetExitCodeProcess(h, &code) == nil && code == 259 // STILL_ACTIVE
}

func exitDetail(st *os.ProcessState) (code int, signal string) {
	if st == nil {
		return -1, ""
	}
	return st.ExitCode(), ""
}

// NoInherit has nothing to do on Windows: a child inherits only the
// handles it is given.
func NoInherit(int) {}
