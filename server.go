package worker

import (
	"context"
	"fmt"
	"net"
	"reflect"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// maxInFlight bounds the handlers running for one connection. Past it the
// worker stops reading, so a host that floods it is slowed down by the
// socket instead of growing the worker's memory.
const maxInFlight = 1024

// Server is the worker's side: a set of handlers, served on connections
// from hosts. Register handlers with Handle before serving. Serve and Main
// run a Server as a worker process; ServeConn serves any net.Conn.
type Server struct {
	cfg      serverConfig
	handlers atomic.Pointer[map[string]*handler]
	regMu    sync.Mutex

	mu       sync.Mutex
	sessions map[*session]struct{}
	draining bool
	drained  chan struct{} // closed when a shutdown has begun
}

type handler struct {
	name, result, errType string
	fn                    string // the name of the function registered, as stacks print it
	stream                bool   // a HandleStream handler: its requests come with credit
	void                  bool
	run                   func(ctx context.Context, ser Serializer, payload []byte) (any, error)
	// quick scores how reliably a request of this type is handled (decoded
	// and run, middleware included) within quickTime: it rises by one with
	// each such request (up to quickMax) and halves with each slower one.
	// From quickInline on, the reader runs the type's requests itself,
	// under a lease (see session.runLeased). A lease that the watch has to
	// end makes it 0.
	quick atomic.Int32
}

// NewServer returns a Server with no handlers. A nil opts means defaults.
func NewServer(opts *ServerOptions) *Server {
	s := &Server{cfg: opts.resolve(), sessions: make(map[*session]struct{}), drained: make(chan struct{})}
	s.handlers.Store(&map[string]*handler{})
	return s
}

// Handle registers h as the handler of m on s, replacing any earlier one.
// Register handlers before serving. The worker runs handlers concurrently
// (see the package documentation's Performance section for how very quick
// ones are scheduled). ctx is cancelled when the caller cancels, when the
// caller's deadline passes, or when the worker shuts down past its drain
// timeout. h's error reaches the caller as a *RemoteError (with its code,
// see NewError); a panic in h is recovered and reaches the caller as a
// *RemoteError that matches ErrPanic, with the stack.
func Handle[P, R any](s *Server, m MessageType[P, R], h func(ctx context.Context, payload P) (R, error)) {
	_, void := any(*new(R)).(Void)
	s.register(m.name, void, false, funcName(h), func(ctx context.Context, ser Serializer, payload []byte) (any, error) {
		// One allocation for both: they escape through the Serializer.
		b := new(struct {
			p P
			r R
		})
		if payload != nil {
			if err := ser.DecodePayload(payload, &b.p); err != nil {
				return nil, &RemoteError{Name: "PayloadError", Code: codeBadPayload,
					Message: fmt.Sprintf("invalid payload for %q: %v", m.name, err)}
			}
		}
		r, err := h(ctx, b.p)
		if err != nil || void {
			return nil, err
		}
		b.r = r
		return &b.r, nil
	})
}

// funcName returns the name of function f as stacks print it.
func funcName(f any) string {
	if fn := runtime.FuncForPC(reflect.ValueOf(f).Pointer()); fn != nil {
		return fn.Name()
	}
	return ""
}

func (s *Server) register(name string, void, stream bool, fn string, run func(context.Context, Serializer, []byte) (any, error)) {
	s.regMu.Lock()
	defer s.regMu.Unlock()
	old := *s.handlers.Load()
	m := make(map[string]*handler, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	m[name] = &handler{name: name, result: name + "Result", errType: name + "Error", fn: fn, void: void, stream: stream, run: run}
	s.handlers.Store(&m)
}

// ServeConn serves requests arriving on conn until the peer closes it, ctx
// ends, or the server shuts down; then it cancels the handlers still
// running, waits for them to return, closes conn and returns. It returns
// nil when the peer closed the connection or the server shut down. A peer
// that half-closes a Unix socket (CloseWrite) has no more requests, but
// still reads: the requests it sent run to their replies first, unless it
// then closes the connection entirely.
//
// To serve a contract in-process, with no child process, give one end of
// a net.Pipe to ServeConn and the other to NewClient.
func (s *Server) ServeConn(ctx context.Context, conn net.Conn) error {
	return s.serveConn(ctx, conn, nil)
}

// serveConn is ServeConn; ps is the worker process's state when the
// connection came to the listener of Serve, nil otherwise.
func (s *Server) serveConn(ctx context.Context, conn net.Conn, ps *procState) error {
	ss := newSession(s, ctx, conn, ps)
	if !s.add(ss) {
		conn.Close()
		return nil
	}
	defer s.remove(ss)
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	err := ss.serve()
	if err == errHalfClosed {
		ss.finish()
		err = nil
	}
	ss.end(context.Canceled)
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	return err
}

func (s *Server) add(ss *session) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining {
		return false
	}
	s.sessions[ss] = struct{}{}
	return true
}

func (s *Server) remove(ss *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.sessions, ss)
}

// startDrain marks the server as shutting down: requests that arrive from
// now on are refused. It reports whether this call started it.
func (s *Server) startDrain() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining {
		return false
	}
	s.draining = true
	close(s.drained)
	return true
}

// Shutdown stops the server gracefully: requests that arrive from now on
// get an error reply that matches ErrShuttingDown, handlers in flight may
// finish until ctx ends, after which their contexts are cancelled. Then it
// closes every connection and returns, with ctx's error if it had to
// cancel.
func (s *Server) Shutdown(ctx context.Context) error {
	s.startDrain()
	sessions := s.snapshot()
	if len(sessions) == 0 {
		return nil // the common end of a worker: its host hung up first
	}
	idle := make(chan struct{})
	go func() {
		for _, ss := range sessions {
			ss.reqs.wg.Wait()
			ss.wq.Idle() // replies queued by handlers that have returned
		}
		close(idle)
	}()
	var err error
	select {
	case <-idle:
	case <-ctx.Done():
		err = context.Cause(ctx)
		s.cancelHandlers(sessions, idle)
	}
	for _, ss := range sessions {
		ss.conn.Close()
	}
	return err
}

// cancelHandlers cancels the handlers of sessions, which a shutdown has
// stopped waiting for, and gives them a moment (until idle closes) to
// honour it.
func (s *Server) cancelHandlers(sessions []*session, idle <-chan struct{}) {
	for _, ss := range sessions {
		ss.reqs.cancelAll(context.Canceled)
		// A host that does not read must not hold the handlers' last
		// replies, and so the shutdown, forever.
		ss.conn.SetWriteDeadline(time.Now().Add(time.Second))
	}
	// One that ignores it must not hold the shutdown forever either.
	t := time.NewTimer(cancelGrace)
	defer t.Stop()
	select {
	case <-idle:
	case <-t.C:
		s.cfg.log.warn("shutting down with handlers that ignored their cancelled context")
	}
}

// cancelGrace is how long Shutdown waits for cancelled handlers to return.
const cancelGrace = time.Second

func (s *Server) snapshot() []*session {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*session, 0, len(s.sessions))
	for ss := range s.sessions {
		out = append(out, ss)
	}
	return out
}

// waitCtx waits for wg until ctx ends; it reports whether wg finished.
func waitCtx(ctx context.Context, wg *sync.WaitGroup) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-ctx.Done():
		return false
	}
}

// monotonic reads the monotonic clock only: half the cost of time.Now,
// which reads the wall clock too, on a path taken by every request.
func monotonic() time.Duration { return time.Since(clockEpoch) }

var clockEpoch = time.Now()
