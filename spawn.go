package worker

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"

	"github.com/isolated-workers/worker/internal/proc"
	"github.com/isolated-workers/worker/internal/transport"
	"github.com/isolated-workers/worker/internal/wire"
)

// Spawn starts cmd as a worker and connects to it. cmd must not have been
// started; Spawn adds the protocol's environment variables to cmd.Env (or
// to the host's environment when cmd.Env is nil), two inherited pipes to
// cmd.ExtraFiles, and process-group attributes to cmd.SysProcAttr, then
// starts it (cmd.Process is set). Its Stdin, Stdout, Stderr, Dir and the
// rest keep their exec.Cmd meaning, the context of exec.CommandContext
// included; the tail of Stderr is also kept for error reports. A worker
// restarted after a crash (see CrashPolicy) runs a copy of cmd as it was
// passed, without that context.
//
// Spawn returns once the host is connected, within ctx and
// opts.StartupTimeout: to a Go worker after the handshake, to any other
// (a TypeScript worker) once it has listened and stayed silent for 50ms,
// a base-protocol peer that is then sent nothing but the calls. If the
// process exits first, Spawn fails at once with a *CrashError carrying its
// exit status and the tail of its stderr.
func Spawn(ctx context.Context, cmd *exec.Cmd, opts *Options) (*Worker, error) {
	if cmd.Process != nil {
		return nil, errors.New("worker: Spawn: cmd was already started")
	}
	if _, started, _ := wire.ParseStartup(os.Getenv); started {
		// Serve removes the startup data: this process was started as a
		// worker and runs the host's code instead (in one binary, worker.Main
		// missing or called too late), which would spawn workers of its own.
		return nil, errors.New("worker: Spawn: this process was started as a worker but has not served: call worker.Main(srv) at the top of main (or srv.Serve) before anything else")
	}
	w := newWorker(opts.resolve())
	// Restarts start clones of cmd as it is now, before Spawn adds to it.
	w.tmpl, w.id, w.secret = cloneCmd(cmd), newUUID(), newSecret()
	w.addr = w.cfg.socketPath
	if w.addr == "" {
		var err error
		if w.addr, w.dir, err = transport.NewPath(); err != nil {
			return nil, fmt.Errorf("worker: Spawn: %w", err)
		}
	}
	p, c, err := w.launch(ctx, cmd)
	if err != nil {
		w.removeDir()
		return nil, err
	}
	w.mu.Lock()
	w.connected(p, c)
	w.mu.Unlock()
	return w, nil
}

func newSecret() string {
	var b [32]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// stderrTail is how much of a worker's stderr is kept for error reports.
const stderrTail = 4 << 10

// launch starts one worker process for w and connects to it. It fails at
// once, with the exit status, if the process exits first.
// cmd is the caller's own for the first start (keeping what
// exec.CommandContext attached to it), a clone of it for restarts.
func (w *Worker) launch(ctx context.Context, cmd *exec.Cmd) (*proc.Process, *Client, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, w.cfg.startup,
		fmt.Errorf("worker: the worker did not answer within the startup timeout (%v): %w", w.cfg.startup, context.DeadlineExceeded))
	defer cancel()
	sd := wire.StartupData{Driver: wire.Driver, SocketPath: w.addr, Serializer: w.cfg.ser.Name(),
		ServerConnectTimeout: w.cfg.hostConnect.Milliseconds(), ID: w.id, Secret: w.secret,
		HostPID: proc.Self, Detached: w.cfg.detached, OwnDir: w.dir != "", Greet: !w.cfg.base}
	if w.cfg.hostConnect < 0 {
		sd.ServerConnectTimeout = 0
	}
	env := withoutStartupEnv(cmd.Environ())
	if cmd.Stderr == nil && !w.cfg.detached && w.cfg.log.h != nil {
		cmd.Stderr = &stderrLog{log: w.cfg.log, cmd: cmd} // else only the crash report's tail keeps it
	}
	p, err := proc.Start(cmd, proc.Spec{Detached: w.cfg.detached, StderrTail: stderrTail,
		Env: func(readyFD, lifeFD int) []string {
			sd.ReadyFD, sd.LifeFD = readyFD, lifeFD
			return append(env, sd.Env()...)
		}})
	if err != nil {
		return nil, nil, fmt.Errorf("worker: starting %s: %w", cmd.Path, err)
	}
	w.cfg.log.debug("worker process started", "pid", p.Pid(), "path", cmd.Path)
	c, err := w.connect(ctx, p)
	p.EndStartup()
	if err != nil {
		p.Stop(0)
		transport.Remove(w.addr)
		return nil, nil, err
	}
	return p, c, nil
}

// connect dials the worker as soon as it says it is listening (or, for a
// worker that does not, by polling), and runs the handshake.
func (w *Worker) connect(ctx context.Context, p *proc.Process) (*Client, error) {
	var c *Client
	dialed := false
	err := w.cfg.connect.retry(ctx, p.Ready(), func() (bool, error) {
		if p.HasExited() {
			return true, crashOf(p, errStartupExit(p))
		}
		conn, err := transport.Dial(ctx, w.addr)
		if err != nil {
			return false, err
		}
		dialed = true
		c, err = newClient(ctx, conn, w.cfg, w.setup(p, &greeting{wait: greetWait, expect: expectOf(p)}))
		return refused(err), err
	})
	if err != nil && !refused(err) && p.HasExited() {
		return nil, crashOf(p, errStartupExit(p))
	}
	if err != nil && !dialed && !p.Noted(proc.NoteListening) {
		err = fmt.Errorf("%w; it never listened on its socket: a Go worker must call worker.Main or Server.Serve before anything else", err)
	}
	return c, err
}

// errStartupExit says that p exited during startup, with a hint when it
// exited 0 without listening: a program that never served.
func errStartupExit(p *proc.Process) error {
	if st := p.Status(); st.ExitCode == 0 && !p.Noted(proc.NoteListening) {
		return fmt.Errorf("%w, with status 0 and without listening: a Go worker must call worker.Main or Server.Serve before anything else", errExitedAtStartup)
	}
	return errExitedAtStartup
}

// expectOf tells, for a greeting, what p has said on its ready pipe.
func expectOf(p *proc.Process) func() (greets, ours bool) {
	return func() (greets, ours bool) {
		greets = p.Noted(noteGreets)
		return greets, greets || p.Noted(proc.NoteListening)
	}
}

// crashOf describes the death of p (or, if it is alive, the loss of its
// connection, cause).
func crashOf(p *proc.Process, cause error) *CrashError {
	st := p.Status()
	e := &CrashError{Pid: p.Pid(), ExitCode: st.ExitCode, Signal: st.Signal, Err: cause, Reason: st.Reason, Stderr: st.Stderr}
	if st.Exited && cause == nil {
		e.Err = errors.New(st.Desc)
	}
	return e
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

// Token returns a string that lets another process Attach to this worker:
// its address, identity and secret. Treat it as a credential.
func (w *Worker) Token() string {
	b, _ := json.Marshal(token{Addr: w.addr, ID: w.id, Secret: w.secret, Pid: w.Pid()})
	return base64.RawURLEncoding.EncodeToString(b)
}

type token struct {
	Addr   string `json:"addr"`
	ID     string `json:"id"`
	Secret string `json:"secret"`
	Pid    int    `json:"pid"`
}

// Attach connects to a running worker, typically a detached one started by
// another host process, from the Token that host handed over. It verifies
// that the worker at the address is the same one (its identity and secret),
// never trusting a bare pid. The returned Worker has no process of its own:
// Close asks the worker to exit, Disconnect leaves it running, and if it
// dies, calls fail with a *CrashError.
func Attach(ctx context.Context, tok string, opts *Options) (*Worker, error) {
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	var t token
	if err == nil {
		err = json.Unmarshal(raw, &t)
	}
	if err != nil || t.Addr == "" || t.ID == "" {
		return nil, fmt.Errorf("worker: Attach: malformed token")
	}
	w := newWorker(opts.resolve())
	w.id, w.secret, w.addr = t.ID, t.Secret, t.Addr
	c, err := w.dial(ctx, nil, t.Pid)
	if err != nil {
		return nil, fmt.Errorf("worker: Attach: %w", err)
	}
	if !c.peer.extended || c.peer.id != t.ID {
		c.Close()
		return nil, fmt.Errorf("worker: Attach: %w: the worker did not prove its identity", ErrUnauthorized)
	}
	w.mu.Lock()
	w.connected(nil, c)
	w.mu.Unlock()
	return w, nil
}

// stderrLog writes a worker's standard error to the host's logger, a
// record per line, with the worker's pid: a record of slog's JSON handler
// (the worker's own log, see ServerOptions.Logger) as that record, at its
// level, with its attributes; any other line as a "worker stderr" record,
// at the level it names (see lineLevel) or info.
type stderrLog struct {
	log  *logger
	cmd  *exec.Cmd // its Process is set before anything is written
	line []byte
}

// maxStderrLine bounds a record: a longer line is logged in pieces. A line
// that may be a record (it starts with "{") may be longer: a record cut in
// pieces would be logged as plain lines.
const (
	maxStderrLine = 4 << 10
	maxRecordLine = 64 << 10
)

func (s *stderrLog) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			s.line = append(s.line, p...)
			if len(s.line) >= maxStderrLine && (s.line[0] != '{' || len(s.line) >= maxRecordLine) {
				s.flush()
			}
			break
		}
		s.line = append(s.line, p[:i]...)
		s.flush()
		p = p[i+1:]
	}
	return n, nil
}

func (s *stderrLog) flush() {
	line := bytes.TrimSuffix(s.line, []byte("\r"))
	pid := s.cmd.Process.Pid
	if r, ok := parseRecord(line, slog.Int("pid", pid)); ok {
		s.log.forward(r)
	} else {
		s.log.at(lineLevel(line), "worker stderr", "pid", pid, "line", string(line))
	}
	s.line = s.line[:0]
}
