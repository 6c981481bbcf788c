package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/isolated-workers/worker/internal/proc"
	"github.com/isolated-workers/worker/internal/transport"
	"github.com/isolated-workers/worker/internal/wire"
)

// The connection layer's way to tell a host that half-closed its
// connection (it still reads the replies) from one that closed it (see
// session.finish); only this file of the root may use transport.
var (
	halfClosed  = transport.HalfClosed
	awaitHangup = transport.AwaitHangup
)

// Serve runs this process as the worker that a host started: it reads the
// startup data from the environment (and removes it, so that the worker's
// own children do not inherit it), listens on the address it names, and
// serves s to the host that connects. It returns nil after a graceful
// stop: the host asked, or disconnected (unless s is KeepAlive), or SIGTERM
// or SIGINT arrived, or ctx ended; in each case in-flight handlers are
// drained for up to the drain timeout first. It removes its socket file on
// the way out.
//
// When the host process dies, however it dies, a worker that is not
// detached does not return and does not drain, even in the middle of a
// drain: nobody is left to reply to. It removes its socket file, logs it,
// and kills itself with SIGKILL, together with every process in its
// process group (the processes its handlers started, and theirs, unless
// they left the group); on Windows the host's job object ends those, and
// the worker ends itself with exit code 1.
//
// It returns ErrNotWorker when the startup data is missing, and an error
// wrapping ErrSerializerMismatch when the host uses another serializer.
func (s *Server) Serve(ctx context.Context) error { return s.serveProcess(ctx, false) }

// Main turns this process into a worker if a host started it as one:
// it serves s (see Server.Serve) and exits, with status 0 after a graceful
// stop and 1, after printing the error to stderr, otherwise (or killed,
// when its host died: see Server.Serve). In a process
// that was not started as a worker, Main returns at once, so that one
// binary can be both the host and its worker:
//
//	func main() {
//		worker.Main(newServer()) // returns only in the host
//		...
//	}
func Main(s *Server) {
	if _, ok, _ := wire.ParseStartup(os.Getenv); !ok {
		return
	}
	if err := s.serveProcess(context.Background(), true); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// init turns off the parent-death signal of a worker that watches its
// host's lifeline, on the main thread, where Linux keeps it: that signal is
// a SIGTERM that can come while the host is still dying (see
// proc.DisarmParentDeath), and this worker must not take its host's death
// for a polite stop. Nothing is lost meanwhile: the lifeline's end of file
// waits for Serve to read it.
func init() {
	if d, ok, err := wire.ParseStartup(os.Getenv); ok && err == nil && !d.Detached && d.LifeFD > 0 {
		proc.DisarmParentDeath()
	}
}

// serveProcess is Serve; exiting says that the process exits as soon as
// it returns (Main), so that what only matters to a process that goes on
// can be skipped.
func (s *Server) serveProcess(ctx context.Context, exiting bool) error {
	d, ok, err := wire.ParseStartup(os.Getenv)
	if !ok {
		return ErrNotWorker
	}
	if err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	ps := s.startupState(d)
	// Registering for signals starts threads, and encoding/json analyses a
	// type on its first use: both are done while this goroutine listens
	// and the host connects. The handshake waits for the registration, so
	// that a host that has connected knows SIGTERM to be handled.
	sigs, pipes := make(chan os.Signal, 1), make(chan os.Signal, 1)
	notified := make(chan struct{})
	go func() {
		signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
		if !d.Detached && d.LifeFD > 0 {
			// Writing to stdout or stderr once the host is dead (they are
			// often pipes to it) must not kill this worker with SIGPIPE
			// before it kills the processes it started: the write fails
			// with EPIPE instead, and the lifeline does the rest.
			signal.Notify(pipes, syscall.SIGPIPE)
		}
		close(notified)
		warmJSON()
	}()
	stopSignals := func() { <-notified; signal.Stop(sigs); signal.Stop(pipes) }
	ready := readyPipe(d)
	ln, err := transport.Listen(d.SocketPath)
	if err != nil {
		ready.Close()
		stopSignals()
		return fmt.Errorf("worker: listening on %s: %w", d.SocketPath, err)
	}
	ready.Write([]byte{proc.NoteListening}) // the host dials now
	ready.Close()
	if !exiting {
		// A process about to exit does not need this: it would only wait
		// for a signal being delivered (SIGTERM, from a closing host) to
		// settle.
		defer stopSignals()
	}
	ps.sigReady = notified
	wp := &workerProcess{s: s, ps: ps, d: d, ln: ln, sigs: sigs, exiting: exiting}
	return wp.run(ctx)
}

// noteGreets, written on the ready pipe before the worker listens, tells
// the host that the worker will greet it first (see greeting): the host
// knows it before it can connect. An older worker writes only
// proc.NoteListening, and is sent the hello at once.
const noteGreets = 2

// readyPipe opens the pipe on which the host waits for this worker to
// listen, and says there that it will greet, if it will. Its methods do
// nothing when the host passed none.
func readyPipe(d wire.StartupData) *os.File {
	if d.ReadyFD <= 0 {
		return nil
	}
	f := os.NewFile(uintptr(d.ReadyFD), "ready")
	if d.Greet {
		f.Write([]byte{noteGreets})
	}
	return f
}

// startupState reads what the startup data says about this worker's
// connections, and removes the startup data from the environment.
func (s *Server) startupState(d wire.StartupData) *procState {
	ps := &procState{secret: d.Secret, id: d.ID, greet: d.Greet}
	if !s.cfg.serChosen && d.Serializer == (binarySerializer{}).Name() {
		s.cfg.ser = binarySerializer{} // no choice made here: follow the host's
	}
	if !s.cfg.logChosen && d.HostPID != 0 {
		// A Go host (only it says its pid) reads these records from the
		// worker's stderr (see stderrLog).
		s.cfg.log.h = slog.NewJSONHandler(proc.LogStderr(), &slog.HandlerOptions{Level: s.cfg.log.level})
	}
	if d.Serializer != "" && d.Serializer != s.cfg.ser.Name() {
		// Not a reason to exit before the host connects: the handshake
		// refuses the host with ErrSerializerMismatch, so that the host
		// learns why, and then the worker exits with this error.
		ps.mismatch = fmt.Errorf("%w: the host uses %s, this worker uses %s; configure the same serializer on both sides",
			ErrSerializerMismatch, d.Serializer, s.cfg.ser.Name())
	}
	// The secret is not for the worker's own children, nor should they
	// take themselves for workers.
	for _, k := range []string{wire.EnvStartupData, wire.EnvSocketPath, wire.EnvServerConnectTimeout, wire.EnvSerializer} {
		os.Unsetenv(k)
	}
	// A TypeScript host starts its workers with Node's fork(), which gives
	// them its IPC channel: not for the worker's children either.
	if fd, err := strconv.Atoi(os.Getenv("NODE_CHANNEL_FD")); err == nil && fd > 2 {
		proc.NoInherit(fd)
		os.Unsetenv("NODE_CHANNEL_FD")
		os.Unsetenv("NODE_CHANNEL_SERIALIZATION_MODE")
	}
	return ps
}

var warmed sync.Once

// warmJSON has encoding/json analyse the types of the handshake ahead of
// their first use.
func warmJSON() {
	warmed.Do(func() {
		var h helloRequest
		json.Unmarshal([]byte(`{}`), &h)
		json.Marshal(&helloReply{})
		json.Marshal(&errorPayload{})
	})
}

// workerProcess is a Server serving as a worker process: it accepts hosts
// on its listener until it is time to stop.
type workerProcess struct {
	s       *Server
	ps      *procState
	d       wire.StartupData
	ln      net.Listener
	sigs    <-chan os.Signal
	exiting bool // the process exits when run returns
	parent  int  // the parent process when serving began

	closing  chan struct{} // closed when the host stops this worker through the lifeline
	dying    chan struct{} // closed when the host died: hostDied is ending the worker
	dieOnce  sync.Once
	connLost bool // the worker stops because its host's connection ended

	conns     chan net.Conn
	acceptErr chan error
	quit      chan struct{}
	wg        sync.WaitGroup // the sessions
	ended     chan struct{}  // a session ended
	active    int            // sessions running
	abandon   bool           // the host closed this worker: do not wait for handlers
}

// run serves until it is time to stop, then cleans up.
func (wp *workerProcess) run(ctx context.Context) error {
	ctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	wp.parent = os.Getppid()
	wp.watchHost()
	wp.conns, wp.acceptErr, wp.quit = make(chan net.Conn), make(chan error, 1), make(chan struct{})
	wp.ended = make(chan struct{}, 1)
	go acceptLoop(wp.ln, wp.conns, wp.acceptErr, wp.quit)
	var firstHost <-chan time.Time
	if t := wp.connectTimeout(); t > 0 {
		timer := time.NewTimer(t)
		defer timer.Stop()
		firstHost = timer.C
	}
	defer wp.cleanUp()
	for {
		select {
		case conn, ok := <-wp.conns:
			if !ok {
				return nil
			}
			firstHost = nil
			wp.serve(ctx, conn)
		case <-wp.ended:
			if done, err := wp.sessionEnded(); done {
				return err
			}
		case <-firstHost:
			wp.s.cfg.log.debug("no host connected in time; exiting", "timeout", wp.connectTimeout())
			return nil
		case err := <-wp.acceptErr:
			return fmt.Errorf("worker: accepting connections: %w", err)
		case <-wp.s.drained:
			return wp.s.drain()
		case sig := <-wp.sigs:
			return wp.signaled(sig)
		case <-wp.closing:
			wp.s.cfg.log.debug("the host closed this worker; exiting")
			stop(errors.New("the host is gone"))
			wp.abandon = true
			return nil
		case <-ctx.Done():
			return wp.s.drain()
		}
	}
}

// watchHost watches the host of a worker that is not detached, for the
// worker's whole life, whatever else it is doing. wp.closing is closed
// when the host stops this worker, alive (it said so on the lifeline
// before closing it); when the host dies, hostDied ends the worker from the
// watching goroutine itself, so that no drain in progress in run can hold
// it.
func (wp *workerProcess) watchHost() {
	wp.closing, wp.dying = make(chan struct{}), make(chan struct{})
	if wp.d.Detached {
		return
	}
	proc.WatchHost(wp.d.LifeFD, wp.d.HostPID, func() {
		if !proc.HostStops() {
			wp.hostDied()
		}
		close(wp.closing)
	})
}

// hostDied ends this worker because its host died: it removes its socket
// (and the directory the host made for it), logs it (for a moment at
// most: a logger writing to the dead host's pipe must not hold the
// worker), then kills this process and its process group (see
// proc.KillOwnGroup). It does not return.
func (wp *workerProcess) hostDied() {
	wp.dieOnce.Do(func() {
		close(wp.dying)
		transport.Remove(wp.d.SocketPath)
		if wp.d.OwnDir {
			os.Remove(filepath.Dir(wp.d.SocketPath)) // only if empty
		}
		logged := make(chan struct{})
		go func() {
			defer close(logged)
			wp.s.cfg.log.info("the host died; killing this worker and the processes it started",
				"pid", os.Getpid(), "host", wp.d.HostPID)
		}()
		t := time.NewTimer(hostDiedLogWait)
		select {
		case <-logged:
		case <-t.C:
		}
		proc.KillOwnGroup()
	})
	select {} // another goroutine is killing this process
}

// awaitVerdict, as the worker stops, gives the lifeline the last word:
// a host that died must not have its worker exit as if it had been
// stopped, leaving the worker's children behind. When the host's
// connection ended, that may be the host dying, whose lifeline closes in
// the same instant, give or take the host's last system call: it waits
// for the lifeline up to hostVerdictWait (a host that lives may have
// ended the connection and say nothing). If the host died, it does not
// return.
func (wp *workerProcess) awaitVerdict() {
	if wp.d.Detached {
		return
	}
	var d time.Duration
	if wp.connLost {
		d = hostVerdictWait
	}
	if proc.HostSpoke(d) {
		select { // WatchHost's verdict follows
		case <-wp.closing:
		case <-wp.dying:
			select {} // hostDied is killing this process
		}
	}
}

const (
	// hostDiedLogWait is how long hostDied waits for its log record.
	hostDiedLogWait = 100 * time.Millisecond
	// hostVerdictWait is how long a worker whose host's connection ended
	// waits for the lifeline before it exits.
	hostVerdictWait = 100 * time.Millisecond
)

func (wp *workerProcess) connectTimeout() time.Duration {
	if t := wp.s.cfg.hostConnect; t != 0 {
		return t
	}
	return time.Duration(wp.d.ServerConnectTimeout) * time.Millisecond
}

// serve serves a host's connection on a goroutine of its own.
func (wp *workerProcess) serve(ctx context.Context, conn net.Conn) {
	if err := transport.CheckPeer(conn); err != nil {
		wp.s.cfg.log.warn("refused a connection", "err", fmt.Errorf("%w: %w", ErrUnauthorized, err))
		conn.Close()
		return
	}
	wp.active++
	wp.wg.Add(1)
	go func() {
		defer wp.wg.Done()
		if err := wp.s.serveConn(ctx, conn, wp.ps); err != nil && ctx.Err() == nil {
			wp.s.cfg.log.info("host connection ended", "err", err)
		}
		wp.ended <- struct{}{}
	}()
}

// sessionEnded tells whether the worker stops now that a session ended,
// and with what error.
func (wp *workerProcess) sessionEnded() (done bool, err error) {
	wp.active--
	if wp.ps.mismatch != nil {
		return true, wp.ps.mismatch
	}
	if wp.active == 0 && !wp.s.cfg.keepAlive && wp.ps.served.Load() {
		wp.connLost = true
		return true, wp.s.drain()
	}
	return false, nil
}

// signaled handles SIGTERM or SIGINT: a graceful stop, unless the host is
// already dead (a supervisor stopping every process at once, a host not
// written with this library that set a parent-death signal).
func (wp *workerProcess) signaled(sig os.Signal) error {
	if !wp.d.Detached && os.Getppid() != wp.parent {
		wp.hostDied() // nobody is left to drain for
	}
	wp.s.cfg.log.info("stopping on signal", "signal", sig.String())
	return wp.s.drain()
}

// cleanUp closes the listener, removes the socket (unless the host does)
// and waits a moment for the sessions to end.
func (wp *workerProcess) cleanUp() {
	wp.awaitVerdict()
	cleanUp := !proc.HostCleansUp() // else the host is doing it meanwhile
	if _, unix := wp.ln.(*net.UnixListener); unix && wp.exiting {
		// The process exits next, closing the listener: closing it here
		// would wait for acceptLoop to see it closed. Only the socket file
		// needs removing.
		if cleanUp {
			os.Remove(wp.d.SocketPath)
		}
	} else {
		if ul, ok := wp.ln.(*net.UnixListener); ok && !cleanUp {
			ul.SetUnlinkOnClose(false)
		}
		wp.ln.Close() // removes the socket file
		close(wp.quit)
		for range wp.acceptErr {
		}
	}
	if wp.d.OwnDir && cleanUp {
		os.Remove(filepath.Dir(wp.d.SocketPath)) // only if empty
	}
	if !wp.abandon {
		// Sessions end once their handlers return; a handler that ignores
		// its cancelled context must not keep the worker alive.
		ctx, cancel := context.WithTimeout(context.Background(), cancelGrace)
		waitCtx(ctx, &wp.wg)
		cancel()
	}
}

// drain shuts the server down gracefully, within the drain timeout. A
// drain cut short by the timeout is still a graceful stop: the handlers
// were asked, then cancelled.
func (s *Server) drain() error {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.drain)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		s.cfg.log.info("drain timeout passed with handlers still running; they were cancelled", "timeout", s.cfg.drain)
	}
	return nil
}

func acceptLoop(ln net.Listener, conns chan<- net.Conn, errs chan<- error, quit <-chan struct{}) {
	defer close(errs)
	defer close(conns)
	for {
		conn, err := ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				errs <- err
			}
			return
		}
		select {
		case conns <- conn:
		case <-quit:
			conn.Close()
			return
		}
	}
}
