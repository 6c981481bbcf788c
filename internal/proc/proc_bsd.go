//go:build unix && !linux

package proc

import (
	"os/exec"
	"syscall"
)

// prepareOS has nothing to add outside Linux: there is no parent-death
// signal, so a worker watches its lifeline pipe instead.
func prepareOS(*syscall.SysProcAttr, bool) {}

func startProcess(cmd *exec.Cmd, _ bool) (*Process, error) {
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := newProcess(cmd)
	p.pid = cmd.Process.Pid
	p.sys.pgid = p.pid
	go p.wait()
	return p, nil
}

// zombie cannot be told portably here; a zombie counts as alive until
// its parent reaps it.
func zombie(int) bool { return false }

// DisarmParentDeath has nothing to turn off: there is no parent-death
// signal here.
func DisarmParentDeath() {}
