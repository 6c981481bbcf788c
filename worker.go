package worker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"time"

	"github.com/isolated-workers/worker/internal/proc"
	"github.com/isolated-workers/worker/internal/transport"
)

// Worker is a worker process and the host's connection to it. Spawn
// starts one; Attach connects to a detached one. All its methods are safe
// for concurrent use.
//
// Lifecycle: a Worker is usable from Spawn until Close (or Shutdown). If
// the process dies meanwhile, the calls in flight fail at once with a
// *CrashError, or, under a CrashPolicy with retries, are sent again to a
// fresh process. Close always stops the process, reaps it and removes its
// socket; a non-detached worker also exits by itself if the host dies.
type Worker struct {
	cfg    *hostConfig
	tmpl   *exec.Cmd // nil for an attached worker
	id     string
	secret string
	addr   string
	dir    string // the private socket directory we made, removed on Close

	mu         sync.RWMutex  // read-locked by every call (current), written rarely
	proc       *proc.Process // nil for an attached worker
	client     *Client       // nil while disconnected
	peer       peerInfo
	dead       *CrashError   // set when the worker died and will not be replaced
	restarting chan struct{} // closed when the restart in progress ends
	closing    bool
	calls      sync.WaitGroup // calls in flight, for Shutdown

	closeOnce sync.Once
	stopCtx   context.Context    // cancelled by Close: ends a restart in progress
	stop      context.CancelFunc // cancels stopCtx
}

func newWorker(cfg *hostConfig) *Worker {
	w := &Worker{cfg: cfg}
	w.stopCtx, w.stop = context.WithCancel(context.Background())
	return w
}

// watch notices the death of the process or the loss of its connection.
func (w *Worker) watch(p *proc.Process, c *Client) {
	var exited <-chan struct{}
	if p != nil {
		exited = p.Exited()
	}
	select {
	case <-exited:
		w.lost(p, c, nil)
	case <-c.Done():
		w.lost(p, c, c.Err())
	}
}

// lost handles the unexpected end of a process or connection: calls in
// flight fail with a *CrashError at once, and a fresh worker is started if
// the crash policy allows retries.
func (w *Worker) lost(p *proc.Process, c *Client, cause error) {
	w.mu.Lock()
	if w.closing || w.client != c {
		w.mu.Unlock()
		return // closed, disconnected or already replaced on purpose
	}
	w.mu.Unlock()
	var crash *CrashError
	if p != nil {
		p.AwaitExit(time.Second)
		crash = crashOf(p, cause)
	} else {
		crash = &CrashError{Pid: w.peer.pid, ExitCode: -1, Err: cause}
	}
	c.fail(crash)
	w.cfg.log.warn("worker lost", "pid", crash.Pid, "err", crash)

	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closing || w.client != c {
		return
	}
	w.client = nil
	if p == nil || !w.cfg.crash.restarts() {
		w.dead = crash
		if p != nil && !p.HasExited() {
			go p.Stop(w.cfg.grace) // alive but unreachable: do not leave it behind
		}
		return
	}
	w.restarting = make(chan struct{})
	go w.restart(p, crash, w.restarting)
}

// restart replaces a crashed process.
func (w *Worker) restart(old *proc.Process, crash *CrashError, done chan struct{}) {
	defer close(done)
	if !old.HasExited() {
		old.Stop(w.cfg.grace)
	}
	transport.Remove(w.addr)
	if w.dir != "" {
		// A worker that exited cleanly removed its private directory.
		os.Mkdir(w.dir, 0o700)
	}
	p, c, err := w.launch(w.stopCtx, cloneCmd(w.tmpl))
	w.mu.Lock()
	defer w.mu.Unlock()
	w.restarting = nil
	if err != nil {
		crash.Err = errors.Join(crash.Err, fmt.Errorf("restarting the worker: %w", err))
		w.dead = crash
		return
	}
	if w.closing {
		go func() { c.Close(); p.Stop(w.cfg.grace) }()
		return
	}
	w.proc, w.client, w.peer = p, c, c.peer
	go w.watch(p, c)
	if f := w.cfg.crash.OnRestart; f != nil {
		go f(crash, p.Pid())
	}
}

// current returns the connection to call through, waiting for a restart
// in progress.
func (w *Worker) current(ctx context.Context) (*Client, error) {
	for {
		// A read lock is enough for calls.Add: Shutdown sets closing under
		// the write lock before it waits for calls.
		w.mu.RLock()
		c, restarting, dead, closing := w.client, w.restarting, w.dead, w.closing
		if c != nil && !closing && c.Err() != nil {
			// The connection broke and watch has not handled it yet: do it
			// here, so that a retry does not meet the same dead connection.
			p := w.proc
			w.mu.RUnlock()
			<-c.Done()
			w.lost(p, c, c.Err())
			continue
		}
		if c != nil && !closing {
			w.calls.Add(1)
		}
		w.mu.RUnlock()
		switch {
		case closing:
			return nil, ErrClosed
		case c != nil:
			return c, nil
		case restarting != nil:
			select {
			case <-restarting:
				continue
			case <-ctx.Done():
				return nil, context.Cause(ctx)
			}
		case dead != nil:
			return nil, dead
		}
		return nil, ErrNotConnected
	}
}

func (w *Worker) invoke(ctx context.Context, typ string, payload, out any) error {
	attempts := w.cfg.crash.attempts(typ)
	tx := ""
	for attempt := 1; ; attempt++ {
		c, err := w.current(ctx)
		if err == nil {
			err = c.send(ctx, typ, payload, out, &tx)
			w.calls.Done()
		}
		var crash *CrashError
		if !errors.As(err, &crash) {
			return err
		}
		e := *crash
		e.Type, e.Attempt, e.MaxAttempts = typ, attempt, attempts
		if attempt >= attempts || ctx.Err() != nil {
			return &e
		}
		w.cfg.log.info("retrying a call after a crash", "type", typ, "attempt", attempt+1, "of", attempts)
	}
}

// Pid returns the process id of the current worker process (after a
// restart, the new one's).
func (w *Worker) Pid() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.proc != nil {
		return w.proc.Pid()
	}
	return w.peer.pid
}

// IsActive reports whether the worker process is running.
func (w *Worker) IsActive() bool {
	w.mu.Lock()
	p, pid, closing := w.proc, w.peer.pid, w.closing
	w.mu.Unlock()
	if p != nil {
		return !p.HasExited()
	}
	return !closing && proc.Alive(pid)
}

// IsConnected reports whether the host is connected to the worker.
func (w *Worker) IsConnected() bool {
	w.mu.Lock()
	c := w.client
	w.mu.Unlock()
	return c != nil && c.Err() == nil
}

// ID returns the worker's identity, exchanged at spawn and verified by
// Attach.
func (w *Worker) ID() string { return w.id }

// Disconnect closes the connection and leaves the process running, for a
// later Reconnect (by this host) or Attach (by another). Calls in flight
// fail with ErrNotConnected. It returns ErrNotKeepAlive for a worker that
// would exit on disconnect.
func (w *Worker) Disconnect() error {
	w.mu.Lock()
	c := w.client
	if err := w.canDisconnect(); err != nil {
		w.mu.Unlock()
		return err
	}
	w.client = nil
	w.mu.Unlock()
	if c != nil {
		c.fail(fmt.Errorf("%w: disconnected", ErrNotConnected))
		<-c.Done()
	}
	return nil
}

// canDisconnect tells whether the connection may be closed and opened
// again; w.mu must be held.
func (w *Worker) canDisconnect() error {
	switch {
	case w.closing:
		return ErrClosed
	case !w.peer.keepAlive:
		return ErrNotKeepAlive
	}
	return nil
}

// Reconnect connects again to a keep-alive worker after Disconnect, with
// Options.ConnectAttempts and ConnectDelay. It does nothing if already
// connected.
func (w *Worker) Reconnect(ctx context.Context) error {
	w.mu.Lock()
	err, connected := w.canDisconnect(), w.client != nil
	w.mu.Unlock()
	if err != nil || connected {
		return err
	}
	c, err := w.dial(ctx)
	if err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closing || w.client != nil {
		c.Close()
		return nil
	}
	w.client, w.peer, w.dead = c, c.peer, nil
	go w.watch(w.proc, c)
	return nil
}

func (w *Worker) dial(ctx context.Context) (*Client, error) {
	w.mu.Lock()
	p, peerPid := w.proc, w.peer.pid
	w.mu.Unlock()
	lost := func(cause error) error { return &CrashError{Pid: peerPid, ExitCode: -1, Err: cause} }
	if p != nil {
		lost = lostConn(p)
	}
	var c *Client
	err := w.cfg.connect.retry(ctx, nil, func() (bool, error) {
		conn, err := transport.Dial(ctx, w.addr)
		if err != nil {
			return false, err
		}
		c, err = newClient(ctx, conn, w.cfg, w.secret, w.id, lost, nil)
		return refused(err), err
	})
	return c, err
}

// Close stops the worker: calls in flight fail with ErrClosed, the
// connection is closed, the worker is asked to exit and, after the grace
// period, killed with its process group; then the process is reaped and
// the socket removed. It is idempotent and returns promptly (within the
// grace period). A worker whose process already died returns nil.
func (w *Worker) Close() error {
	w.closeOnce.Do(w.close)
	return nil
}

func (w *Worker) close() {
	w.mu.Lock()
	w.closing = true
	c, p, restarting := w.client, w.proc, w.restarting
	w.client = nil
	w.mu.Unlock()
	w.stop()
	if restarting != nil {
		<-restarting // the restart sees closing and stops what it started
	}
	var cleaned chan struct{}
	if p != nil {
		// Nobody needs the socket any more: it goes while the process
		// exits, rather than after; the worker, told, leaves it to us.
		p.ClosingInOrder()
		cleaned = make(chan struct{})
		go func() {
			transport.Remove(w.addr)
			w.removeDir()
			close(cleaned)
		}()
	}
	if c != nil {
		if c.peer.shutdown && (p == nil || c.peer.keepAlive) {
			// An attached or keep-alive worker would outlive the
			// connection; this asks it to go without a signal (Windows
			// has none). Calls in flight fail with ErrClosed right after.
			c.notify(typeShutdown, nil)
		}
		c.fail(ErrClosed)
		<-c.Done()
	}
	if p != nil {
		p.Stop(w.cfg.grace)
		<-cleaned
	} else if w.peer.pid != 0 && !proc.WaitGone(w.peer.pid, w.cfg.grace) {
		proc.KillPid(w.peer.pid)
	}
	w.removeDir()
	w.cfg.log.debug("worker closed", "id", w.id)
}

// Shutdown stops the worker gracefully: new calls fail with ErrClosed,
// calls in flight may complete until ctx ends, the worker is asked to drain
// its handlers and exit, and then Close finishes the job. It returns ctx's
// error if it had to cut the drain short.
func (w *Worker) Shutdown(ctx context.Context) error {
	w.mu.Lock()
	w.closing = true
	c := w.client
	w.mu.Unlock()
	var err error
	if !waitCtx(ctx, &w.calls) {
		err = context.Cause(ctx)
	}
	if c != nil && c.peer.shutdown && err == nil {
		if d, ok := ctx.Deadline(); ok {
			w.askShutdown(c, time.Until(d))
		} else {
			w.askShutdown(c, w.cfg.grace)
		}
	}
	w.Close()
	return err
}

// askShutdown asks the worker to drain and exit, waiting up to d.
func (w *Worker) askShutdown(c *Client, d time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	tx := ""
	_ = c.send(ctx, typeShutdown, nil, nil, &tx)
}

func (w *Worker) removeDir() {
	if w.dir != "" {
		os.RemoveAll(w.dir)
	}
}
