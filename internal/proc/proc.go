// Package proc is the process layer of a worker: it starts a worker
// process so that it cannot outlive its host (its own process group with a
// parent-death signal and a lifeline pipe on Unix, a kill-on-close job
// object on Windows), tells when it is listening, stops it (politely, then
// by killing its whole group or job), reaps it and describes its end. The
// worker side's half: WatchHost notices the host's death (or its word that
// it is stopping the worker), and KillOwnGroup ends the worker with its
// process group.
//
// It knows nothing of the protocol: the caller supplies the environment
// that carries its startup data.
package proc

import (
	"io"
	"os"
	"os/exec"
	"sync/atomic"
	"time"
)

// Self is this process's id.
var Self = os.Getpid()

// Spec says how to start a worker process.
type Spec struct {
	// Detached starts the process in its own session (Unix) or outside the
	// host's job (Windows), so that it outlives the host; its stderr is
	// left as the caller set it, since a pipe to the host would break.
	Detached bool
	// Env returns the worker's whole environment, given the descriptor
	// numbers that the ready pipe and the lifeline have in the child (0:
	// not inherited).
	Env func(readyFD, lifeFD int) []string
	// StderrTail is how many bytes of the worker's stderr are kept for
	// Status (a detached worker's are not).
	StderrTail int
}

// Process is one started worker process.
type Process struct {
	cmd    *exec.Cmd
	pid    int
	exited chan struct{} // closed once the process has been reaped
	ready  chan struct{} // closed when the worker listens, or exits
	readyR *os.File      // the ready pipe's read end, until EndStartup
	notes  atomic.Uint32 // bit b is set once the worker wrote byte b on the ready pipe
	state  *os.ProcessState
	stderr *Tail
	life   *os.File // the host's end of the lifeline; closing it tells the worker to go
	sys    procSys  // per-OS handles (the Windows job object)
}

// Start starts cmd as a worker process. cmd keeps its exec.Cmd meaning;
// Start adds the ready pipe and the lifeline to cmd.ExtraFiles, process
// attributes to cmd.SysProcAttr, a copy of stderr to cmd.Stderr, and sets
// cmd.Env to spec.Env's.
func Start(cmd *exec.Cmd, spec Spec) (*Process, error) {
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	var lifeR, lifeW *os.File
	if !spec.Detached && lifelinePipe {
		if lifeR, lifeW, err = os.Pipe(); err != nil {
			readyR.Close()
			readyW.Close()
			return nil, err
		}
	}
	readyFD, lifeFD := inheritPipes(cmd, readyW, lifeR)
	cmd.Env = spec.Env(readyFD, lifeFD)
	prepare(cmd, spec.Detached)
	var stderr *Tail
	if !spec.Detached {
		stderr = NewTail(spec.StderrTail)
		cmd.Stderr = teeWriter(cmd.Stderr, stderr)
		if cmd.WaitDelay == 0 {
			cmd.WaitDelay = time.Second
		}
	}
	p, err := startProcess(cmd, spec.Detached)
	readyW.Close()
	if lifeR != nil {
		lifeR.Close()
	}
	if err != nil {
		readyR.Close()
		if lifeW != nil {
			lifeW.Close()
		}
		return nil, err
	}
	p.stderr, p.life = stderr, lifeW
	p.ready, p.readyR = make(chan struct{}), readyR
	go p.readReady(readyR)
	return p, nil
}

func newProcess(cmd *exec.Cmd) *Process {
	return &Process{cmd: cmd, exited: make(chan struct{})}
}

func (p *Process) wait() {
	p.cmd.Wait()
	p.state = p.cmd.ProcessState
	close(p.exited)
}

// Pid returns the process id.
func (p *Process) Pid() int { return p.pid }

// Exited returns a channel that is closed once the process has been reaped.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Ready returns a channel that is closed when the worker says that it
// listens (NoteListening), or when it exits before (a worker that does not
// say so is polled by the caller).
func (p *Process) Ready() <-chan struct{} { return p.ready }

// NoteListening is the byte a worker writes on its ready pipe once it
// listens; it may write other bytes (below 32) before, which Noted reports.
const NoteListening = 1

// readReady records what the worker writes on the ready pipe until it
// listens, exits, or EndStartup.
func (p *Process) readReady(r *os.File) {
	defer close(p.ready)
	var b [8]byte
	for {
		n, err := r.Read(b[:])
		for _, c := range b[:n] {
			if c < 32 {
				p.notes.Or(1 << c)
			}
			if c == NoteListening {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// Noted reports whether the worker wrote byte b (below 32) on its ready
// pipe: only a worker built with this library writes on it.
func (p *Process) Noted(b byte) bool { return b < 32 && p.notes.Load()&(1<<b) != 0 }

// EndStartup stops watching for the worker to say that it listens: the
// caller has connected, or given up. Ready is closed then, if it was not.
func (p *Process) EndStartup() {
	p.readyR.Close()
}

// HasExited reports whether the process has been reaped.
func (p *Process) HasExited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// AwaitExit waits up to d for the process to exit, so that an error can
// report its exit status: a lost connection usually means an exit.
func (p *Process) AwaitExit(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.exited:
	case <-t.C:
	}
}

// Status describes how a process ended.
type Status struct {
	Exited   bool   // the process has been reaped; the rest is zero otherwise
	ExitCode int    // -1 when killed by a signal, or not exited
	Signal   string // the signal that killed it, if one did
	Desc     string // the exit as the OS package words it ("exit status 3")
	Stderr   string // the tail of what it wrote to stderr
	Reason   string // the line of its whole stderr that tells why it ended (see Tail.Reason)
}

// Status returns how the process ended, if it has.
func (p *Process) Status() Status {
	st := Status{ExitCode: -1, Stderr: p.stderr.String(), Reason: p.stderr.Reason()}
	if p.HasExited() {
		st.Exited = true
		st.ExitCode, st.Signal = exitDetail(p.state)
		st.Desc = p.state.String()
	}
	return st
}

// Stop asks the process to exit, and kills it (with its process group or
// job) if it has not after grace. It returns once the process is reaped.
func (p *Process) Stop(grace time.Duration) {
	deadline := time.Now().Add(grace)
	// A worker of ours (it said it listens) watches its lifeline: closing
	// it is enough, and a SIGTERM on its heels would be taken for a stop
	// by a supervisor (a drain, a log line). It gets a moment to go.
	watches := p.life != nil && p.Noted(NoteListening)
	p.closeLifeline()
	if watches {
		p.AwaitExit(min(grace, lifelineMoment))
	}
	if !p.HasExited() {
		p.terminate()
	}
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-p.exited:
	case <-t.C:
	}
	p.kill() // also reaches children left in the group or job
	<-p.exited
	p.release()
}

// lifelineMoment is how long Stop lets a worker that watches its lifeline
// go by itself before it signals it.
const lifelineMoment = 200 * time.Millisecond

// Kill kills the process at once, with its process group or job, and
// returns once it is reaped: for a worker that is stuck, and so would not
// heed a request to exit.
func (p *Process) Kill() {
	p.kill()
	<-p.exited
}

// WaitGone waits up to d for a process that is not our child to exit (it
// cannot be waited for, only polled), and reports whether it did.
func WaitGone(pid int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for wait := time.Millisecond; Alive(pid); wait = min(2*wait, 50*time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(wait)
	}
	return true
}

func teeWriter(user io.Writer, t *Tail) io.Writer {
	if user == nil {
		return t
	}
	return io.MultiWriter(user, t)
}
