package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/isolated-workers/worker/internal/wire"
)

// ErrNotWorker is returned by Serve in a process that was not started as
// a worker: the startup environment variables are missing.
var ErrNotWorker = errors.New("worker: this process was not started as a worker (" + wire.EnvStartupData + " is not set)")

// Serve runs this process as the worker that a host started: it reads the
// startup data from the environment, listens on the address it names, and
// serves s to the host that connects. It returns nil after a graceful stop:
// the host asked, or disconnected (unless s is KeepAlive), or SIGTERM or
// SIGINT arrived, or ctx ended; in each case in-flight handlers are drained
// for up to the drain timeout first. It also stops, promptly, when the host
// process dies, unless the worker was detached. It removes its socket file
// on the way out.
//
// It returns ErrNotWorker when the startup data is missing, and an error
// wrapping ErrSerializerMismatch when the host uses another serializer.
func Serve(ctx context.Context, s *Server) error { return s.serve(ctx, false) }

// serve is Serve; exiting says that the process exits as soon as it
// returns (Main), so that what only matters to a process that goes on can
// be skipped.
func (s *Server) serve(ctx context.Context, exiting bool) error {
	d, ok, err := wire.ParseStartup(os.Getenv)
	if !ok {
		return ErrNotWorker
	}
	if err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	if !s.cfg.serChosen && d.Serializer == (Binary{}).Name() {
		s.cfg.ser = Binary{} // no choice made here: follow the host's
	}
	if d.Serializer != "" && d.Serializer != s.cfg.ser.Name() {
		// Not a reason to exit before the host connects: the handshake
		// refuses the host with ErrSerializerMismatch, so that the host
		// learns why, and then the worker exits with this error.
		s.mismatch = fmt.Errorf("%w: the host uses %s, this worker uses %s; configure the same serializer on both sides",
			ErrSerializerMismatch, d.Serializer, s.cfg.ser.Name())
	}
	// The secret is not for the worker's own children.
	for _, k := range []string{wire.EnvStartupData, wire.EnvSocketPath, wire.EnvServerConnectTimeout, wire.EnvSerializer} {
		os.Unsetenv(k)
	}
	s.secret, s.id = d.Secret, d.ID
	// Registering for signals starts threads, and encoding/json analyses a
	// type on its first use: both are done while this goroutine listens
	// and the host connects. The handshake waits for the registration, so
	// that a host that has connected knows SIGTERM to be handled.
	sigs := make(chan os.Signal, 1)
	notified := make(chan struct{})
	go func() {
		signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
		close(notified)
		warmJSON()
	}()
	ln, err := listen(d.SocketPath)
	if err != nil {
		<-notified
		signal.Stop(sigs)
		return fmt.Errorf("worker: listening on %s: %w", d.SocketPath, err)
	}
	if d.ReadyFD > 0 {
		if f := os.NewFile(uintptr(d.ReadyFD), "ready"); f != nil {
			f.Write([]byte{1})
			f.Close()
		}
	}
	if !exiting {
		// A process about to exit does not need this: it would only wait
		// for a signal being delivered (SIGTERM, from a closing host) to
		// settle.
		defer func() {
			<-notified
			signal.Stop(sigs)
		}()
	}
	s.sigReady = notified
	return s.serveListener(ctx, ln, d, sigs, exiting)
}

var warmed sync.Once

// warmJSON has encoding/json analyse the types of the handshake ahead of
// their first use.
func warmJSON() {
	warmed.Do(func() {
		var h helloRequest
		json.Unmarshal([]byte(`{}`), &h)
		json.Marshal(&helloReply{})
		json.Marshal(&ErrorPayload{})
	})
}

// Main turns this process into a worker if a host started it as one:
// it serves s (see Serve) and exits, with status 0 after a graceful stop
// and 1, after printing the error to stderr, otherwise. In a process that
// was not started as a worker, Main returns at once, so that one binary can
// be both the host and its worker:
//
//	func main() {
//		worker.Main(newServer()) // returns only in the host
//		...
//	}
func Main(s *Server) {
	if _, ok, _ := wire.ParseStartup(os.Getenv); !ok {
		return
	}
	if err := s.serve(context.Background(), true); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// serveListener accepts hosts on ln until it is time to stop.
func (s *Server) serveListener(ctx context.Context, ln net.Listener, d wire.StartupData, sigs <-chan os.Signal, exiting bool) error {
	ctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)

	parent := os.Getppid()
	hostGone := make(chan struct{})
	var goneOnce sync.Once
	gone := func() { goneOnce.Do(func() { close(hostGone) }) }
	if !d.Detached {
		watchHost(d, gone)
	}

	conns := make(chan net.Conn)
	acceptErr := make(chan error, 1)
	quit := make(chan struct{})
	go acceptLoop(ln, conns, acceptErr, quit)

	connectTimeout := s.cfg.hostConnect
	if connectTimeout == 0 {
		connectTimeout = time.Duration(d.ServerConnectTimeout) * time.Millisecond
	}
	var firstHost <-chan time.Time
	if connectTimeout > 0 {
		t := time.NewTimer(connectTimeout)
		defer t.Stop()
		firstHost = t.C
	}

	var wg sync.WaitGroup
	sessionEnded := make(chan struct{}, 1)
	active := 0
	abandon := false // the host is dead: do not wait for handlers
	defer func() {
		cleanUp := !hostCleansUp.Load() // else the host is doing it meanwhile
		if _, unix := ln.(*net.UnixListener); unix && exiting {
			// The process exits next, closing the listener: closing it
			// here would wait for acceptLoop to see it closed. Only the
			// socket file needs removing.
			if cleanUp {
				os.Remove(d.SocketPath)
			}
		} else {
			if ul, ok := ln.(*net.UnixListener); ok && !cleanUp {
				ul.SetUnlinkOnClose(false)
			}
			ln.Close() // removes the socket file
			close(quit)
			for range acceptErr {
			}
		}
		if d.OwnDir && cleanUp {
			os.Remove(filepath.Dir(d.SocketPath)) // only if empty
		}
		if !abandon {
			// Sessions end once their handlers return; a handler that
			// ignores its cancelled context must not keep the worker alive.
			ctx, cancel := context.WithTimeout(context.Background(), cancelGrace)
			waitCtx(ctx, &wg)
			cancel()
		}
	}()
	for {
		select {
		case conn, ok := <-conns:
			if !ok {
				return nil
			}
			firstHost = nil
			if err := checkPeer(conn); err != nil {
				s.cfg.log.warn("refused a connection", "err", err)
				conn.Close()
				continue
			}
			active++
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := s.ServeConn(ctx, conn); err != nil && ctx.Err() == nil {
					s.cfg.log.info("host connection ended", "err", err)
				}
				sessionEnded <- struct{}{}
			}()
		case <-sessionEnded:
			active--
			if s.mismatch != nil {
				return s.mismatch
			}
			if active == 0 && !s.cfg.keepAlive && s.hadHost() {
				return s.drain()
			}
		case <-firstHost:
			s.cfg.log.warn("no host connected in time; exiting", "timeout", connectTimeout)
			return nil
		case err := <-acceptErr:
			return fmt.Errorf("worker: accepting connections: %w", err)
		case <-s.drained:
			return s.drain()
		case sig := <-sigs:
			if !d.Detached && os.Getppid() != parent {
				abandon = true
				return nil // the parent-death signal: nobody is left to drain for
			}
			s.cfg.log.info("stopping on signal", "signal", sig.String())
			return s.drain()
		case <-hostGone:
			s.cfg.log.info("the host died; exiting")
			stop(errors.New("the host died"))
			abandon = true
			return nil
		case <-ctx.Done():
			return s.drain()
		}
	}
}

// hadHost reports whether any host has been served: until then, an ended
// session (a refused or failed connection) does not stop a worker.
func (s *Server) hadHost() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.served
}

func (s *Server) drain() error {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.drain)
	defer cancel()
	s.Shutdown(ctx)
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
