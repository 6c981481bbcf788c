package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"time"

	"github.com/isolated-workers/worker/internal/wire"
)

// stderrTail is how much of a worker's stderr is kept for error reports.
const stderrTail = 4 << 10

// process is one started worker process.
type process struct {
	cmd    *exec.Cmd
	pid    int
	exited chan struct{} // closed once the process has been reaped
	state  *os.ProcessState
	stderr *tail
	life   *os.File // the host's end of the lifeline; closing it tells the worker to go
	sys    procSys  // per-OS handles (the Windows job object)
}

func (p *process) wait() {
	p.cmd.Wait()
	p.state = p.cmd.ProcessState
	close(p.exited)
}

func (p *process) hasExited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// crash describes the process's death (or, if it is alive, the loss of
// its connection, cause).
func (p *process) crash(cause error) *CrashError {
	e := &CrashError{Pid: p.pid, ExitCode: -1, Err: cause, Stderr: p.stderr.String()}
	if p.hasExited() {
		e.ExitCode, e.Signal = exitDetail(p.state)
		if cause == nil {
			e.Err = errors.New(p.state.String())
		}
	}
	return e
}

// awaitExit waits up to d for the process to exit, so that an error can
// report its exit status: a lost connection usually means an exit.
func (p *process) awaitExit(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.exited:
	case <-t.C:
	}
}

// lostConn is what calls get when the connection to p breaks: it usually
// means that p died, so wait a moment for its exit status.
func (p *process) lostConn(cause error) error {
	p.awaitExit(time.Second)
	return p.crash(cause)
}

// stop asks the process to exit, and kills it (with its process group)
// if it has not after grace. It returns once the process is reaped.
func (p *process) stop(grace time.Duration) {
	if p.life != nil {
		p.life.Close()
	}
	if !p.hasExited() {
		p.terminate()
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.exited:
	case <-t.C:
	}
	p.kill() // also reaches children left in the group or job
	<-p.exited
	p.release()
}

// launch starts one worker process for w and connects to it. It fails at
// once, with the exit status, if the process exits first.
// cmd is the caller's own for the first start (keeping what
// exec.CommandContext attached to it), a clone of it for restarts.
func (w *Worker) launch(ctx context.Context, cmd *exec.Cmd) (*process, *Client, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, w.cfg.startup,
		fmt.Errorf("worker: the worker did not answer within the startup timeout (%v): %w", w.cfg.startup, context.DeadlineExceeded))
	defer cancel()

	readyR, readyW, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	defer readyR.Close()
	var lifeR, lifeW *os.File
	if !w.cfg.detached && lifelinePipe {
		if lifeR, lifeW, err = os.Pipe(); err != nil {
			readyW.Close()
			return nil, nil, err
		}
	}
	sd := wire.StartupData{Driver: wire.Driver, SocketPath: w.addr, Serializer: w.cfg.ser.Name(),
		ServerConnectTimeout: w.cfg.hostConnect.Milliseconds(), ID: w.id, Secret: w.secret,
		HostPID: pid, Detached: w.cfg.detached, OwnDir: w.dir != ""}
	if w.cfg.hostConnect < 0 {
		sd.ServerConnectTimeout = 0
	}
	sd.ReadyFD, sd.LifeFD = inheritPipes(cmd, readyW, lifeR)
	cmd.Env = append(withoutStartupEnv(cmd.Environ()), sd.Env()...)
	prepare(cmd, w.cfg.detached)
	var stderr *tail
	if !w.cfg.detached {
		// A detached worker outlives the host; a pipe to the host would
		// break under it, so its stderr is left as the caller set it.
		stderr = newTail(stderrTail)
		cmd.Stderr = teeWriter(cmd.Stderr, stderr)
		if cmd.WaitDelay == 0 {
			cmd.WaitDelay = time.Second
		}
	}
	p, err := startProcess(cmd, w.cfg.detached)
	readyW.Close()
	if lifeR != nil {
		lifeR.Close()
	}
	if err != nil {
		if lifeW != nil {
			lifeW.Close()
		}
		return nil, nil, fmt.Errorf("worker: starting %s: %w", cmd.Path, err)
	}
	p.stderr, p.life = stderr, lifeW
	w.cfg.log.debug("worker process started", "pid", p.pid, "path", cmd.Path)

	c, err := w.connect(ctx, p, readyR)
	if err != nil {
		p.stop(0)
		removeSocket(w.addr)
		return nil, nil, err
	}
	return p, c, nil
}

// connect dials the worker as soon as it says it is listening (or, for a
// worker that does not, by polling), and runs the handshake.
func (w *Worker) connect(ctx context.Context, p *process, readyR *os.File) (*Client, error) {
	ready := make(chan struct{})
	go func() {
		var b [1]byte
		readyR.Read(b[:]) // a byte when listening; EOF when the process is gone
		close(ready)
	}()
	var c *Client
	err := w.cfg.connect.retry(ctx, ready, func() (bool, error) {
		if p.hasExited() {
			return true, p.crash(errors.New("the worker exited during startup"))
		}
		conn, err := dial(ctx, w.addr)
		if err != nil {
			return false, err
		}
		c, err = newClient(ctx, conn, w.cfg, w.secret, w.id, p.lostConn)
		return refused(err), err
	})
	if err != nil && !refused(err) && p.hasExited() {
		return nil, p.crash(errors.New("the worker exited during startup"))
	}
	return c, err
}

// refused reports a handshake that the worker refused: trying again
// cannot help.
func refused(err error) bool {
	return errors.Is(err, ErrUnauthorized) || errors.Is(err, ErrSerializerMismatch)
}

// cloneCmd copies the parts of an exec.Cmd that describe what to run, so
// that a crashed worker can be started again from the same template.
func cloneCmd(t *exec.Cmd) *exec.Cmd {
	c := &exec.Cmd{Path: t.Path, Args: append([]string(nil), t.Args...), Dir: t.Dir,
		Stdin: t.Stdin, Stdout: t.Stdout, Stderr: t.Stderr, WaitDelay: t.WaitDelay, Err: t.Err}
	if t.Env != nil {
		c.Env = append([]string(nil), t.Env...)
	}
	c.ExtraFiles = append([]*os.File(nil), t.ExtraFiles...)
	if t.SysProcAttr != nil {
		a := *t.SysProcAttr
		c.SysProcAttr = &a
	}
	return c
}

func withoutStartupEnv(env []string) []string {
	out := env[:0:0]
	for _, kv := range env {
		switch {
		case hasKey(kv, wire.EnvStartupData), hasKey(kv, wire.EnvSocketPath),
			hasKey(kv, wire.EnvServerConnectTimeout), hasKey(kv, wire.EnvSerializer):
			continue
		}
		out = append(out, kv)
	}
	return out
}

func hasKey(kv, key string) bool {
	return len(kv) > len(key) && kv[len(key)] == '=' && kv[:len(key)] == key
}

func teeWriter(user io.Writer, t *tail) io.Writer {
	if user == nil {
		return t
	}
	return io.MultiWriter(user, t)
}
