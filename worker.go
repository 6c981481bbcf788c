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
// the process dies meanwhile (or is declared stuck, see
// Options.StuckTimeout), the calls in flight fail at once with a
// *CrashError, and the CrashPolicy decides what follows: by default the
// Worker is dead (Done is closed, Err and every later call report the
// crash and when it happened); with Restart, a fresh process serves the
// next calls. Options.OnEvent follows it all. Close always stops the
// process and its children, reaps it and removes its socket; a
// non-detached worker also exits by itself, with its children, if the
// host dies.
type Worker struct {
	cfg    *hostConfig
	tmpl   *exec.Cmd // nil for an attached worker
	id     string
	secret string
	addr   string
	dir    string // the private socket directory we made, removed on Close
	ev     events

	mu       sync.RWMutex  // read-locked by every call (current), written rarely
	proc     *proc.Process // nil for an attached worker
	client   *Client       // nil while disconnected
	peer     peerInfo
	changing bool          // a restart or reconnect is in progress
	changed  chan struct{} // closed (and replaced) when the state changes
	dead     *CrashError   // set when the worker died and will not be replaced
	closing  bool
	calls    sync.WaitGroup // calls in flight, for Shutdown
	quick    int            // crashes in a row of processes that answered nothing
	stuckRep *stuckReport   // why the current process is being killed
	lostC    *Client        // a connection whose loss transition handled, for watch
	stopping bool           // Close has begun: losses are not crashes
	bg       sync.WaitGroup // watch goroutines (restarts, reconnections): Close waits

	done    chan struct{} // closed when the Worker is finished (see Done)
	doneErr error

	closeOnce sync.Once
	stopCtx   context.Context    // cancelled by Close: ends a restart in progress
	stop      context.CancelFunc // cancels stopCtx
}

// stuckReport is what the crash report of a process that the host killed
// (stuck, or past a pool's call time limit) adds.
type stuckReport struct {
	pid        int
	why        error // matches ErrStuck or ErrCallTimeLimit
	goroutines string
}

func newWorker(cfg *hostConfig) *Worker {
	w := &Worker{cfg: cfg, ev: events{f: cfg.onEvent}, changed: make(chan struct{}), done: make(chan struct{})}
	w.stopCtx, w.stop = context.WithCancel(context.Background())
	return w
}

// Done returns a channel that is closed when the Worker is finished: it
// was closed (Close or Shutdown returned), or its process died and the
// CrashPolicy does not restart it. Close is still needed then, to release
// what the Worker holds.
func (w *Worker) Done() <-chan struct{} { return w.done }

// Err returns nil while the Worker is usable; once Done is closed, the
// *CrashError of a worker that died for good, or ErrClosed.
func (w *Worker) Err() error {
	w.mu.RLock()
	defer w.mu.RUnlock()
	return w.doneErr
}

// finish marks the Worker finished with err; w.mu must be held.
func (w *Worker) finish(err error) {
	if w.doneErr == nil {
		w.doneErr = err
		close(w.done)
	}
}

// broadcast wakes the calls waiting for the state to change; w.mu must be
// held.
func (w *Worker) broadcast() {
	close(w.changed)
	w.changed = make(chan struct{})
}

// connected makes c, to p, the current connection; w.mu must be held.
func (w *Worker) connected(p *proc.Process, c *Client) {
	w.proc, w.client, w.peer, w.changing, w.dead = p, c, c.peer, false, nil
	w.stuckRep = nil
	w.bg.Add(1)
	w.broadcast()
	w.ev.emit(EventConnected, c.peer.pid, nil)
	go func() {
		defer w.bg.Done()
		w.watch(p, c)
	}()
}

// setup returns what a Worker adds to its Clients to p (nil when attached).
func (w *Worker) setup(p *proc.Process, g *greeting) clientSetup {
	return clientSetup{secret: w.secret, id: w.id, greet: g,
		lost:  func(c *Client, cause error) error { return w.lostErr(p, c, cause) },
		stuck: func(c *Client, s stuck) { w.onStuck(p, c, s) }}
}

// watch notices the death of the process or the loss of its connection,
// and handles it (see lost).
func (w *Worker) watch(p *proc.Process, c *Client) {
	var exited <-chan struct{}
	if p != nil {
		exited = p.Exited()
	}
	select {
	case <-exited:
		if c.Err() == nil {
			c.fail(w.lostErr(p, c, nil))
		}
	case <-c.Done():
	}
	<-c.Done()
	err := c.Err()
	if !w.takeLost(c) {
		// Not lost through lostErr: ended on purpose (Close, Disconnect),
		// or by a peer that broke the protocol, alive but unreachable.
		if !errors.Is(err, ErrProtocol) || !w.transition(p, c, w.crashReport(p, c.peer.pid, err)) {
			return
		}
		w.takeLost(c)
	}
	w.lost(p, c, err)
}

// lostErr is what the calls on c, to p, get when it breaks: usually a
// *CrashError, since it usually means that p died; an error that matches
// ErrNotConnected when the connection to a keep-alive worker broke while
// the worker lives and Options.Reconnect is set. Before the calls get it,
// the Worker's state moves on (see transition), so that a caller who sees
// the error sees the Worker dead, or new calls wait for what follows.
func (w *Worker) lostErr(p *proc.Process, c *Client, cause error) error {
	w.mu.RLock()
	stopping := w.stopping
	w.mu.RUnlock()
	if stopping {
		return ErrClosed // Close stops it: its calls fail with ErrClosed, not as if it crashed
	}
	pid := c.peer.pid
	if p != nil {
		p.AwaitExit(time.Second) // for its exit status
		pid = p.Pid()
	}
	alive := p != nil && !p.HasExited() || p == nil && proc.Alive(pid)
	w.mu.RLock()
	stuck := w.stuckRep != nil && w.stuckRep.pid == pid
	w.mu.RUnlock()
	var err error
	if alive && !stuck && c.peer.keepAlive && w.cfg.reconnect && !errors.Is(cause, ErrProtocol) {
		err = fmt.Errorf("%w: the connection to worker process %d broke (%v); the host is reconnecting", ErrNotConnected, pid, cause)
	} else {
		err = w.crashReport(p, pid, cause)
	}
	w.transition(p, c, err)
	return err
}

// transition moves the Worker on from the loss of c, its current
// connection, with err: to a reconnection or restart in progress, or dead.
// It reports false if c was not current (closed or disconnected on
// purpose, or already handled).
func (w *Worker) transition(p *proc.Process, c *Client, err error) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closing || w.client != c {
		return false
	}
	w.client, w.lostC = nil, c
	crash, isCrash := err.(*CrashError)
	if isCrash && (p == nil || !w.cfg.crash.restarts()) {
		w.dead = crash
		w.finish(crash)
	} else {
		w.changing = true
	}
	w.broadcast()
	return true
}

// takeLost reports whether transition handled the loss of c, once.
func (w *Worker) takeLost(c *Client) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.lostC != c {
		return false
	}
	w.lostC = nil
	return true
}

// lost handles the loss of c (to p), whose calls got err: it reconnects,
// or reports the crash, kills what is left of the process and restarts
// it if the policy says so.
func (w *Worker) lost(p *proc.Process, c *Client, err error) {
	if errors.Is(err, ErrNotConnected) {
		if w.reconnect(p, c, err) {
			return
		}
		crash := w.crashReport(p, c.peer.pid, err)
		w.mu.Lock()
		if !w.closing && (p == nil || !w.cfg.crash.restarts()) {
			w.dead, w.changing = crash, false
			w.finish(crash)
			w.broadcast()
		}
		w.mu.Unlock()
		err = crash
	}
	crash, ok := err.(*CrashError)
	if !ok {
		// Close failed the connection first, after the loss was seen.
		w.mu.RLock()
		closing := w.closing
		w.mu.RUnlock()
		if closing {
			return
		}
		crash = w.crashReport(p, c.peer.pid, err)
	}
	w.cfg.log.warn("worker crashed", "pid", crash.Pid, "err", crash)
	w.ev.emit(EventCrashed, crash.Pid, crash)
	if p != nil {
		p.Stop(w.cfg.grace) // alive but unreachable, or its children left behind
	}
	w.mu.RLock()
	restart := w.changing && !w.closing
	w.mu.RUnlock()
	if restart {
		w.restart(crash, c.reads.Load() > 0)
	}
}

// crashReport describes the death of p (pid, when attached), or the loss
// of its connection (cause), with why it was killed if it was stuck.
func (w *Worker) crashReport(p *proc.Process, pid int, cause error) *CrashError {
	var e *CrashError
	if p != nil {
		e = crashOf(p, cause)
	} else {
		e = &CrashError{Pid: pid, ExitCode: -1, Err: cause}
	}
	e.Time = time.Now()
	w.mu.RLock()
	r := w.stuckRep
	w.mu.RUnlock()
	if r != nil && r.pid == e.Pid {
		e.Err, e.Goroutines = r.why, r.goroutines
	}
	return e
}

// onStuck handles a worker declared stuck on c (to p): see killFor.
func (w *Worker) onStuck(p *proc.Process, c *Client, s stuck) {
	w.killFor(p, c, s.typ, fmt.Errorf("%w: %s", ErrStuck, s))
}

// kill kills the current worker process because of why (a call of type
// typ ran past a pool's time limit): see killFor.
func (w *Worker) kill(typ string, why error) {
	w.mu.RLock()
	p, c := w.proc, w.client
	w.mu.RUnlock()
	if c != nil {
		w.killFor(p, c, typ, why)
	}
}

// killFor kills the worker process p, connected by c, because of why: the
// goroutines that run the handler of typ are captured first; the loss
// that follows is a crash that says why (see crashReport).
func (w *Worker) killFor(p *proc.Process, c *Client, typ string, why error) {
	w.mu.RLock()
	current := w.client == c && !w.closing
	w.mu.RUnlock()
	if !current {
		return
	}
	g := ""
	if c.peer.probe {
		var err error
		if g, err = c.goroutines(typ, min(time.Second, max(w.cfg.stuck, 100*time.Millisecond))); err != nil {
			g = fmt.Sprintf("(the worker did not send its goroutines: %v)", err)
		}
	}
	pid := c.peer.pid
	if p != nil {
		pid = p.Pid()
	}
	w.mu.Lock()
	w.stuckRep = &stuckReport{pid: pid, why: why, goroutines: g}
	w.mu.Unlock()
	if errors.Is(why, ErrStuck) {
		w.ev.emit(EventStuck, pid, &CrashError{Pid: pid, ExitCode: -1, Err: why, Goroutines: g, Time: time.Now()})
	}
	if p != nil {
		p.Kill()
	} else {
		proc.KillPid(pid)
	}
}

// rss returns the resident memory of the worker process, in bytes.
func (w *Worker) rss() (int64, error) {
	w.mu.RLock()
	p := w.proc
	w.mu.RUnlock()
	if p == nil {
		return 0, errors.New("worker: an attached worker's memory is not known")
	}
	return p.RSS()
}

// reconnect connects again to the keep-alive worker p, whose connection
// c broke while it lives (Options.Reconnect). It reports false if it could
// not: the worker is then handled as crashed.
func (w *Worker) reconnect(p *proc.Process, c *Client, cause error) bool {
	w.ev.emit(EventDisconnected, c.peer.pid, cause)
	w.cfg.log.info("the connection to the worker broke; reconnecting", "pid", c.peer.pid, "cause", cause)
	nc, err := w.dial(w.stopCtx, p, c.peer.pid)
	if err != nil {
		w.cfg.log.warn("could not reconnect to the worker", "pid", c.peer.pid, "err", err)
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closing || w.client != nil { // closed, or Reconnect won the race
		go nc.Close()
		return true
	}
	w.connected(p, nc)
	return true
}

// restart replaces a crashed process, after a pause if it had answered
// nothing (see CrashPolicy.Restart).
func (w *Worker) restart(crash *CrashError, answered bool) {
	if d := w.restartDelay(answered); d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-w.stopCtx.Done():
			t.Stop()
		}
	}
	if w.stopCtx.Err() != nil {
		return // closed meanwhile
	}
	transport.Remove(w.addr)
	if w.dir != "" {
		// A worker that exited cleanly removed its private directory.
		os.Mkdir(w.dir, 0o700)
	}
	p, c, err := w.launch(w.stopCtx, cloneCmd(w.tmpl))
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.closing && err == nil:
		c.Close()
		p.Stop(w.cfg.grace) // Close waits for this goroutine: nothing outlives it
	case w.closing:
	case err != nil:
		crash.Err = errors.Join(crash.Err, fmt.Errorf("restarting the worker: %w", err))
		w.dead, w.changing = crash, false
		w.broadcast()
		w.finish(crash)
	default:
		w.connected(p, c)
		w.ev.emit(EventRestarted, p.Pid(), crash)
	}
}

// restartDelay returns the pause before a restart: none after a process
// that answered something, else 50ms doubling up to 5s with each such
// process in a row.
func (w *Worker) restartDelay(answered bool) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	if answered {
		w.quick = 0
		return 0
	}
	w.quick++
	return min(50*time.Millisecond<<min(w.quick-1, 10), 5*time.Second)
}

// current returns the connection to call through, waiting, within ctx,
// for a restart or reconnection in progress.
func (w *Worker) current(ctx context.Context) (*Client, error) {
	for {
		// A read lock is enough for calls.Add: Shutdown sets closing under
		// the write lock before it waits for calls.
		w.mu.RLock()
		c, changing, changed, dead, closing := w.client, w.changing, w.changed, w.dead, w.closing
		usable := c != nil && !closing && c.Err() == nil
		if usable {
			w.calls.Add(1)
		}
		w.mu.RUnlock()
		switch {
		case closing:
			return nil, ErrClosed
		case usable:
			return c, nil
		case dead != nil:
			return nil, dead
		case c == nil && !changing:
			return nil, ErrNotConnected
		}
		// A restart or reconnection is in progress, or the connection
		// just broke and watch is on it.
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
	}
}

// Invoke implements Caller: it sends the call, and sends it again to a
// fresh worker as the CrashPolicy allows.
func (w *Worker) Invoke(ctx context.Context, typ string, payload, out any) error {
	attempts := w.cfg.crash.attempts(typ)
	tx := ""
	for attempt := 1; ; attempt++ {
		sent, err := w.call(ctx, typ, payload, out, &tx)
		var crash *CrashError
		if !errors.As(err, &crash) {
			return err
		}
		e := *crash
		e.Type, e.Attempt, e.MaxAttempts = typ, attempt, attempts
		if !sent {
			e.Attempt = attempt - 1 // not sent: 0 says that the worker died earlier
		}
		if !sent || attempt >= attempts || ctx.Err() != nil || !resendable(out) {
			return &e
		}
		observerOf(ctx).resent(attempt + 1)
		w.cfg.log.info("retrying a call after a crash", "type", typ, "attempt", attempt+1, "of", attempts)
	}
}

// call makes one attempt of a call; sent reports whether it reached a
// connection (a dead worker's calls are not sent).
func (w *Worker) call(ctx context.Context, typ string, payload, out any, tx *string) (sent bool, err error) {
	c, err := w.current(ctx)
	if err != nil {
		return false, err
	}
	err = c.send(ctx, typ, payload, out, tx)
	w.calls.Done()
	return true, err
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
	w.broadcast()
	w.mu.Unlock()
	if c != nil {
		c.fail(fmt.Errorf("%w: disconnected", ErrNotConnected))
		<-c.Done()
		w.ev.emit(EventDisconnected, c.peer.pid, nil)
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
	err, connected, p, pid := w.canDisconnect(), w.client != nil, w.proc, w.peer.pid
	changing, changed := w.changing, w.changed
	w.mu.Unlock()
	if err == nil && !connected && changing {
		// Reconnecting by itself (Options.Reconnect): wait for it.
		select {
		case <-changed:
			return w.Reconnect(ctx)
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
	if err != nil || connected {
		return err
	}
	c, err := w.dial(ctx, p, pid)
	if err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closing || w.client != nil {
		c.Close()
		return nil
	}
	w.connected(p, c)
	return nil
}

// dial connects to the worker p (nil when attached) with the connect
// policy.
func (w *Worker) dial(ctx context.Context, p *proc.Process, pid int) (*Client, error) {
	var c *Client
	err := w.cfg.connect.retry(ctx, nil, func() (bool, error) {
		conn, err := transport.Dial(ctx, w.addr)
		if err != nil {
			return false, err
		}
		c, err = newClient(ctx, conn, w.cfg, w.setup(p, nil))
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
	w.closing, w.stopping = true, true
	c, p := w.client, w.proc
	w.client = nil
	w.broadcast()
	w.mu.Unlock()
	w.stop() // a restart or reconnection in progress stops what it started
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
	w.bg.Wait() // a restart in progress stops what it started
	w.removeDir()
	w.cfg.log.debug("worker closed", "id", w.id)
	w.mu.Lock()
	w.finish(ErrClosed)
	w.mu.Unlock()
}

// Shutdown stops the worker gracefully: new calls fail with ErrClosed,
// calls in flight may complete until ctx ends, the worker is asked to drain
// its handlers and exit, and then Close finishes the job. It returns ctx's
// error if it had to cut the drain short.
func (w *Worker) Shutdown(ctx context.Context) error {
	w.mu.Lock()
	w.closing = true
	w.broadcast()
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
