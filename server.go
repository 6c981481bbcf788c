package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/isolated-workers/worker/internal/wire"
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

	// Set by Serve from the startup data; empty when serving a bare conn.
	secret, id string
	mismatch   error // the host announced another serializer
	// sigReady, when not nil, is closed once Serve handles SIGTERM: the
	// handshake waits for it.
	sigReady <-chan struct{}

	mu       sync.Mutex
	served   bool // a host completed a connection
	sessions map[*session]struct{}
	draining bool
	drained  chan struct{} // closed when a shutdown has begun
}

type handler struct {
	name, result, errType string
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

const (
	quickInline = 4
	quickMax    = 16
	// quickTime is about what handing a request to another goroutine
	// costs: a request handled that fast is better run by the reader,
	// which then reads on, than by another goroutine, even when more
	// requests are waiting (they are then handled one after the other, so
	// it must be short: a longer one is worth running in parallel).
	quickTime = 10 * time.Microsecond
)

// observe scores one request of h's type that took d to handle.
func (h *handler) observe(d time.Duration) {
	q := h.quick.Load()
	switch {
	case d < quickTime && q < quickMax:
		h.quick.Store(q + 1)
	case d >= quickTime && q > 0:
		h.quick.Store(q / 2)
	}
}

// monotonic reads the monotonic clock only: half the cost of time.Now,
// which reads the wall clock too, on a path taken by every request.
func monotonic() time.Duration { return time.Since(clockEpoch) }

var clockEpoch = time.Now()

// inline reports whether requests of h's type are quick enough to be run
// by the reader.
func (h *handler) inline() bool { return h.quick.Load() >= quickInline }

type serverConfig struct {
	ser         Serializer
	serChosen   bool // Serializer was set; otherwise Serve adopts the host's built-in one
	mw          []Middleware
	log         *logger
	keepAlive   bool
	hostConnect time.Duration
	drain       time.Duration
	max         int
}

// NewServer returns a Server with no handlers. A nil opts means defaults.
func NewServer(opts *ServerOptions) *Server {
	if opts == nil {
		opts = &ServerOptions{}
	}
	s := &Server{
		cfg: serverConfig{
			ser: orDefault[Serializer](opts.Serializer, JSON{}), serChosen: opts.Serializer != nil, mw: opts.Middleware,
			log: newLogger(opts.Logger, opts.LogLevel), keepAlive: opts.KeepAlive,
			hostConnect: opts.HostConnectTimeout, drain: orDefault(opts.DrainTimeout, DefaultDrainTimeout),
			max: orDefault(opts.MaxMessageSize, DefaultMaxMessageSize),
		},
		sessions: make(map[*session]struct{}),
		drained:  make(chan struct{}),
	}
	s.handlers.Store(&map[string]*handler{})
	return s
}

func (s *Server) register(name string, void bool, run func(context.Context, Serializer, []byte) (any, error)) {
	s.regMu.Lock()
	defer s.regMu.Unlock()
	old := *s.handlers.Load()
	m := make(map[string]*handler, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	m[name] = &handler{name: name, result: name + "Result", errType: name + "Error", void: void, run: run}
	s.handlers.Store(&m)
}

// ServeConn serves requests arriving on conn until the peer closes it, ctx
// ends, or the server shuts down; then it cancels the handlers still
// running, waits for them to return, closes conn and returns. It returns
// nil when the peer closed the connection or the server shut down.
func (s *Server) ServeConn(ctx context.Context, conn net.Conn) error {
	ss := &session{s: s, conn: conn, codec: newCodec(s.cfg.ser, s.cfg.max),
		active: make(map[string]*request), slots: make(chan struct{}, maxInFlight), ctx: ctx,
		work: make(chan *request), ended: make(chan error, 1)}
	ss.wq = wqueue{conn: conn, broken: func(error) { conn.Close() }, timeoutsBreak: true}
	ss.leaseWatch = time.AfterFunc(time.Hour, ss.watchLeases)
	ss.leaseWatch.Stop()
	if !s.add(ss) {
		conn.Close()
		return nil
	}
	defer s.remove(ss)
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	err := ss.serve()
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

// Shutdown stops the server gracefully: requests that arrive from now on
// get an error reply (code E_SHUTTING_DOWN), handlers in flight may finish
// until ctx ends, after which their contexts are cancelled. Then it closes
// every connection and returns, with ctx's error if it had to cancel.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if !s.draining {
		s.draining = true
		close(s.drained)
	}
	sessions := make([]*session, 0, len(s.sessions))
	for ss := range s.sessions {
		sessions = append(sessions, ss)
	}
	s.mu.Unlock()
	if len(sessions) == 0 {
		return nil // the common end of a worker: its host hung up first
	}

	idle := make(chan struct{})
	go func() {
		for _, ss := range sessions {
			ss.wg.Wait()
			ss.wq.idle() // replies queued by handlers that have returned
		}
		close(idle)
	}()
	var err error
	select {
	case <-idle:
	case <-ctx.Done():
		err = context.Cause(ctx)
		for _, ss := range sessions {
			ss.cancelAll(context.Canceled)
			// A host that does not read must not hold the handlers' last
			// replies, and so the shutdown, forever.
			ss.conn.SetWriteDeadline(time.Now().Add(time.Second))
		}
		// Handlers get a moment to honour the cancellation; one that
		// ignores it must not hold the shutdown forever either.
		t := time.NewTimer(cancelGrace)
		select {
		case <-idle:
		case <-t.C:
			s.cfg.log.warn("shutting down with handlers that ignored their cancelled context")
		}
		t.Stop()
	}
	for _, ss := range sessions {
		ss.conn.Close()
	}
	return err
}

// helloTimeout bounds the handshake of a worker that requires its host's
// secret.
const helloTimeout = 10 * time.Second

// cancelGrace is how long Shutdown waits for cancelled handlers to return.
const cancelGrace = time.Second

// session is one connection being served.
type session struct {
	s     *Server
	conn  net.Conn
	codec *codec
	rd    *wire.Reader
	ctx   context.Context
	slots chan struct{}
	wg    sync.WaitGroup
	wq    wqueue // the replies being written
	// One goroutine at a time reads requests (the reader role). A request
	// of a quick type (see handler.quick) it runs itself and then reads on,
	// under a lease (see runLeased and watchLeases), so that small calls
	// cost no goroutine switch at all. Of the others, while more requests
	// are already buffered, it hands each one to an idle goroutine through
	// work and reads on; the last one it runs itself, after passing the
	// role on (a nil request on work), so that a lone request does not wait
	// for a goroutine switch either. (A burst of quick requests is thus
	// handled one after another on one core: for requests that short,
	// faster than spreading them over goroutines.) Goroutines outlive
	// their request, up to maxIdle of them waiting: a fresh goroutine would
	// grow its stack again (decoding is deep). work is closed when the
	// session has ended, and ended receives why the reading stopped.
	work       chan *request
	idle       atomic.Int32
	ended      chan error
	lease      atomic.Uint64           // the number of the lease held (no reader reads meanwhile); 0: none
	leaseSeq   atomic.Uint64           // leases taken so far
	leaseSeen  atomic.Uint64           // leaseSeq at the watch's previous look
	leased     atomic.Pointer[handler] // the handler of the lease held
	watching   atomic.Bool             // leaseWatch is armed
	leaseWatch *time.Timer
	env        wire.Envelope // the reader's
	peer       bool          // the host completed the handshake and knows the extensions

	mu     sync.Mutex
	active map[string]*request
	closed bool
}

// serve reads requests until the connection ends.
func (ss *session) serve() error {
	first, err := ss.greet()
	if err != nil {
		return err
	}
	ss.s.mu.Lock()
	ss.s.served = true
	ss.s.mu.Unlock()
	ss.rd = wire.NewReader(ss.conn, ss.codec.term, ss.s.cfg.max)
	ss.rd.Prime(first)
	go ss.handle(nil)
	return <-ss.ended
}

// handle runs r, or takes the reader role if r is nil, and then waits,
// idle, for more; see session.work.
func (ss *session) handle(r *request) {
	for {
		if r == nil {
			var lease uint64
			if r, lease = ss.read(); r == nil {
				return // the connection ended
			}
			if lease != 0 {
				if ss.runLeased(r, lease) {
					r = nil
					continue // still the reader
				}
			} else {
				ss.run(r)
			}
		} else {
			ss.run(r)
		}
		if ss.idle.Add(1) > maxIdle {
			ss.idle.Add(-1)
			return
		}
		var ok bool
		r, ok = <-ss.work
		ss.idle.Add(-1)
		if !ok {
			return
		}
	}
}

// give hands r, or the reader role if r is nil, to another goroutine.
func (ss *session) give(r *request) {
	select {
	case ss.work <- r:
	default:
		go ss.handle(r)
	}
}

// read reads, in the reader role, until a request is to be handled by
// this goroutine, and returns it, its in-flight slot taken: a request of a
// quick type, with the number of the lease that keeps the role for this
// goroutine; or the last request already received, after passing the role
// on. Requests of other types while more are buffered go to other
// goroutines. When the connection ends, it sends why to ss.ended and
// returns nil.
func (ss *session) read() (*request, uint64) {
	e := &ss.env
	for {
		ss.slots <- struct{}{}
		frame, err := ss.rd.Next()
		if err != nil {
			<-ss.slots
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, io.ErrClosedPipe) ||
				errors.Is(err, syscall.ECONNRESET) { // a Unix host closed with replies unread
				ss.ended <- nil
				return nil, 0
			}
			if errors.Is(err, wire.ErrTooLarge) {
				err = fmt.Errorf("%w: %w", ErrProtocol, err)
			}
			ss.protocolError(err)
			ss.ended <- fmt.Errorf("worker: reading from the host: %w", err)
			return nil, 0
		}
		if err := ss.codec.parse(frame, e); err != nil {
			<-ss.slots
			ss.protocolError(err)
			ss.ended <- err
			return nil, 0
		}
		if len(e.Tx) == 0 {
			// No host could match a reply to it: the stream is not a host's.
			<-ss.slots
			err := fmt.Errorf("%w: a %q message without a transaction id", ErrProtocol, e.Type)
			ss.protocolError(err)
			ss.ended <- err
			return nil, 0
		}
		r := ss.dispatch(e)
		switch {
		case r == nil:
			<-ss.slots
		case r.h.inline():
			r.more = len(ss.rd.Buffered()) > 0
			return r, ss.takeLease(r.h)
		case len(ss.rd.Buffered()) > 0:
			ss.give(r) // more is here already: read on
		default:
			ss.give(nil)
			return r, 0
		}
	}
}

// leaseTime bounds how long a reader runs a quick request before another
// goroutine takes the reader role: the watch ends a lease that was already
// held at its previous look, so between one and two leaseTimes (plus the
// runtime's timer slack) after it was taken.
const leaseTime = time.Millisecond

// takeLease starts a lease for the reader, which is about to run a request
// of h's type, makes sure that the watch runs, and returns the lease's
// number.
func (ss *session) takeLease(h *handler) uint64 {
	n := ss.leaseSeq.Add(1)
	ss.leased.Store(h)
	ss.lease.Store(n)
	if !ss.watching.Load() && ss.watching.CompareAndSwap(false, true) {
		ss.leaseWatch.Reset(leaseTime)
	}
	return n
}

// runLeased runs r in the reader goroutine under lease n, which read took.
// It reports whether this goroutine is still the reader: it is unless the
// watch ended the lease first, and gave the role to another goroutine.
// Running r here rather than passing the role on first saves waking a
// goroutine on another thread just to wait for the next request, which is
// much of the cost of a small call.
func (ss *session) runLeased(r *request, n uint64) bool {
	ss.run(r)
	return ss.lease.CompareAndSwap(n, 0)
}

// watchLeases runs every leaseTime while leases are being taken. A lease
// held since before its previous look has lasted too long (its request's
// handler blocks, or its reply does): it ends it, passes the reader role
// on, so that the requests behind it and any cancellation of it are read,
// and stops running the type's requests in the reader (its score drops to
// 0), so that a handler that has begun to block holds up the connection
// once, not once per request. The lease's holder and the watch both end a
// lease by its number: exactly one of them does. When no lease was taken
// since its previous look it stops, so an idle session costs nothing;
// takeLease starts it again.
func (ss *session) watchLeases() {
	held := ss.lease.Load()
	seq := ss.leaseSeq.Load()
	prev := ss.leaseSeen.Swap(seq)
	switch {
	case held != 0 && held <= prev && ss.lease.CompareAndSwap(held, 0):
		ss.leased.Load().quick.Store(0)
		ss.give(nil)
	case seq == prev && held == 0:
		ss.watching.Store(false)
		// A lease taken meanwhile may have seen watching still set.
		if ss.lease.Load() == 0 || !ss.watching.CompareAndSwap(false, true) {
			return
		}
	}
	ss.leaseWatch.Reset(leaseTime)
}

// greet handles the optional handshake. It returns the bytes already read
// that belong to the request stream.
func (ss *session) greet() ([]byte, error) {
	if ss.s.secret != "" {
		// Only a host with the secret may stay: a connection that does not
		// authenticate in time is dropped, so that it cannot keep a worker
		// alive after its real host has gone.
		ss.conn.SetReadDeadline(time.Now().Add(helloTimeout))
		defer ss.conn.SetReadDeadline(time.Time{})
	}
	head, isHello, err := peekHello(ss.conn)
	if err != nil {
		return nil, err
	}
	if !isHello {
		if ss.s.mismatch != nil {
			return nil, ss.s.mismatch
		}
		if ss.s.secret != "" {
			ss.s.cfg.log.warn("refused a connection that did not present the secret")
			return nil, fmt.Errorf("%w: the host did not authenticate", ErrUnauthorized)
		}
		return head, nil
	}
	jr := wire.NewReader(ss.conn, newline, 64<<10)
	jr.Prime(head)
	line, err := jr.Next()
	if err != nil {
		return nil, fmt.Errorf("worker: reading the handshake: %w", err)
	}
	var e wire.Envelope
	var h helloRequest
	if err := wire.ParseJSON(line, &e); err != nil {
		return nil, fmt.Errorf("%w: bad handshake: %v", ErrProtocol, err)
	}
	if err := json.Unmarshal(e.Payload, &h); err != nil {
		return nil, fmt.Errorf("%w: bad handshake payload: %v", ErrProtocol, err)
	}
	if code, msg := verifyHello(&h, ss.s.cfg.ser, ss.s.secret, ss.s.id); code != "" {
		ss.s.cfg.log.warn("refused a host", "reason", msg)
		p, _ := json.Marshal(ErrorPayload{Message: msg, Name: "HandshakeError", Code: code})
		ss.conn.Write(append(wire.AppendJSON(nil, typeHello+"Error", string(e.Tx), p, 0), '\n'))
		if code == codeUnauthorized {
			return nil, fmt.Errorf("%w: %s", ErrUnauthorized, msg)
		}
		return nil, fmt.Errorf("%w: %s", ErrSerializerMismatch, msg)
	}
	if ss.s.sigReady != nil {
		<-ss.s.sigReady
	}
	p, _ := json.Marshal(helloReply{Protocol: protocolVersion, Serializer: ss.s.cfg.ser.Name(), ID: ss.s.id,
		Pid: pid, KeepAlive: ss.s.cfg.keepAlive, Capabilities: []string{capCancel, capDeadline, capShutdown}})
	if _, err := ss.conn.Write(append(wire.AppendJSON(nil, typeHello+"Result", string(e.Tx), p, 0), '\n')); err != nil {
		return nil, fmt.Errorf("worker: answering the handshake: %w", err)
	}
	ss.peer = true
	return append([]byte(nil), jr.Buffered()...), nil
}

// peekHello reads just enough of the stream to tell whether it starts with
// the handshake, whatever the serializer.
func peekHello(r io.Reader) (head []byte, isHello bool, err error) {
	buf := make([]byte, len(helloPrefix))
	n := 0
	for n < len(buf) {
		k, err := r.Read(buf[n:])
		n += k
		if string(buf[:n]) != helloPrefix[:n] {
			return buf[:n], false, nil
		}
		if err != nil {
			if errors.Is(err, io.EOF) && n == 0 {
				return nil, false, nil
			}
			return nil, false, err
		}
	}
	return buf, true, nil
}

// dispatch handles one parsed message, and returns the request whose
// handler is to run, if any: it then holds the in-flight slot.
func (ss *session) dispatch(e *wire.Envelope) *request {
	h := (*ss.s.handlers.Load())[string(e.Type)]
	if h != nil {
		return ss.start(h, e)
	}
	tx := string(e.Tx)
	if len(e.Type) == 0 {
		ss.replyError(nil, tx, "Error", &RemoteError{Name: "ProtocolError", Message: "message without a type", Code: CodeBadPayload})
		return nil
	}
	switch string(e.Type) {
	case typeCancel:
		ss.cancelTx(e)
		return nil
	case typeShutdown:
		go ss.shutdownRequested(tx)
		return nil
	}
	ss.replyError(nil, tx, string(e.Type)+"Error", &RemoteError{Name: "Error",
		Message: unknownPrefix + string(e.Type), Code: CodeUnknownMessage})
	return nil
}

// start registers a request for its handler h, and returns it; nil when it
// was refused (and answered).
func (ss *session) start(h *handler, e *wire.Envelope) *request {
	r := &request{parent: ss.ctx, h: h}
	r.setTx(e.Tx)
	tx := r.tx
	if ss.peer {
		r.deadline = fromUnixMilli(e.Deadline)
	}
	switch {
	case e.Payload != nil && ss.rd.Owned():
		// A big frame read into memory of its own: no copy.
		p := e.Payload // e is the reader's, reused
		r.payload, r.owned = &p, true
	case e.Payload != nil:
		r.payload = getBuf()
		*r.payload = append((*r.payload)[:0], e.Payload...)
	}
	if err := ss.begin(r); err != nil {
		ss.release(r)
		ss.replyError(nil, tx, h.errType, err)
		return nil
	}
	return r
}

// maxIdle bounds the goroutines of a session kept waiting for work.
const maxIdle = 64

// begin registers r as active, refusing duplicates and requests that
// arrive during a shutdown.
func (ss *session) begin(r *request) error {
	// s.mu is held until wg.Add: a Shutdown that sets draining after the
	// check must see this request in the WaitGroup it waits on.
	ss.s.mu.Lock()
	defer ss.s.mu.Unlock()
	if ss.s.draining {
		return &RemoteError{Name: "Error", Message: "the worker is shutting down", Code: CodeShuttingDown}
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.closed {
		return &RemoteError{Name: "Error", Message: "the connection is closing", Code: CodeShuttingDown}
	}
	if _, dup := ss.active[r.tx]; dup {
		return &RemoteError{Name: "Error", Message: fmt.Sprintf("transaction id %q is already in flight", r.tx), Code: CodeDuplicateTx}
	}
	ss.active[r.tx] = r
	ss.wg.Add(1)
	r.startDeadline()
	return nil
}

func (ss *session) run(r *request) {
	h, ser, start := r.h, ss.codec.ser, monotonic()
	defer func() {
		r.cancel(context.Canceled)
		<-ss.slots
		ss.wg.Done()
	}()
	if r.owned && ss.codec.direct == directBinary {
		ser = ownedBinary{} // the payload's memory is the request's own
	}
	var payload []byte
	if r.payload != nil {
		payload = *r.payload
	}
	if len(ss.s.cfg.mw) > 0 {
		m := Message{Kind: KindRequest, Type: h.name, Tx: r.tx, Payload: payload, Deadline: r.deadline, ser: ser}
		if err := runMiddleware(r, ss.s.cfg.mw, Incoming, &m); err != nil {
			ss.release(r)
			ss.untrack(r)
			ss.replyError(r, r.tx, h.errType, middlewareError(err))
			return
		}
		payload = m.Payload
	}
	res, err := safeRun(r, h, ser, payload)
	h.observe(monotonic() - start)
	ss.release(r)
	ss.untrack(r)
	if err != nil {
		ss.replyError(r, r.tx, h.errType, contextError(r, err))
		return
	}
	ss.reply(r, r.tx, h.result, res, h.void)
}

// untrack frees r's tx before its reply is sent: a host may reuse a tx as
// soon as it has heard back.
func (ss *session) untrack(r *request) {
	ss.mu.Lock()
	delete(ss.active, r.tx)
	ss.mu.Unlock()
}

func (ss *session) release(r *request) {
	if r.payload != nil && !r.owned {
		putBuf(r.payload)
	}
	r.payload = nil
}

func safeRun(ctx context.Context, h *handler, ser Serializer, payload []byte) (res any, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = &RemoteError{Name: "Panic", Message: fmt.Sprintf("panic in handler %q: %v", h.name, p),
				Code: CodePanic, Stack: string(debug.Stack())}
		}
	}()
	return h.run(ctx, ser, payload)
}

// contextError codes a handler's error that is its context's: the caller
// can then match it with errors.Is(err, context.DeadlineExceeded) even when
// the reply beats the caller's own timer.
func contextError(ctx context.Context, err error) error {
	cerr := ctx.Err()
	if cerr == nil || !errors.Is(err, cerr) {
		return err
	}
	code := CodeCanceled
	if cerr == context.DeadlineExceeded {
		code = CodeDeadline
	}
	return &RemoteError{Name: "Error", Message: err.Error(), Code: code}
}

// middlewareError is the error reply for a failed middleware; a panic
// keeps its code (CodePanic) and stack.
func middlewareError(err error) error {
	var re *RemoteError
	if errors.As(err, &re) && re.Code == CodePanic {
		return &RemoteError{Name: re.Name, Message: err.Error(), Code: CodePanic, Stack: re.Stack}
	}
	return &RemoteError{Name: "MiddlewareError", Message: err.Error(), Code: CodeMiddleware}
}

// reply sends a result. An encoding failure becomes an error reply, so the
// caller always hears back.
func (ss *session) reply(ctx context.Context, tx, typ string, res any, void bool) {
	if !void && len(ss.s.cfg.mw) == 0 && ss.codec.direct != directNone {
		// The result is encoded straight into the frame.
		fbuf := getBuf()
		defer putBuf(fbuf)
		frame, tail, encErr, err := ss.codec.frameValue((*fbuf)[:0], typ, tx, res, 0)
		*fbuf = frame
		switch {
		case encErr != nil:
			ss.replyError(ctx, tx, typ[:len(typ)-len("Result")]+"Error", &RemoteError{Name: "EncodeError",
				Message: fmt.Sprintf("encoding the result: %v", encErr), Code: CodeBadPayload})
		case err != nil:
			ss.replyError(ctx, tx, typ[:len(typ)-len("Result")]+"Error", &RemoteError{Name: "Error", Message: err.Error(), Code: CodeTooLarge})
		default:
			ss.write(frame, tail, time.Time{}, batched(ctx))
		}
		return
	}
	var payload []byte
	pbuf := getBuf()
	defer putBuf(pbuf)
	if !void {
		p, err := ss.codec.ser.AppendPayload((*pbuf)[:0], res)
		if err != nil {
			ss.replyError(ctx, tx, typ[:len(typ)-len("Result")]+"Error", &RemoteError{Name: "EncodeError",
				Message: fmt.Sprintf("encoding the result: %v", err), Code: CodeBadPayload})
			return
		}
		*pbuf, payload = p, p
	}
	ss.send(ctx, KindResult, tx, typ, payload)
}

func (ss *session) replyError(ctx context.Context, tx, typ string, err error) {
	if ctx == nil {
		ctx = ss.ctx
	}
	ep := toErrorPayload(err)
	p, _ := ss.codec.ser.AppendPayload(nil, &ep)
	ss.send(ctx, KindError, tx, typ, p)
}

// send runs the outgoing middleware and writes one reply.
func (ss *session) send(ctx context.Context, kind Kind, tx, typ string, payload []byte) {
	fbuf := getBuf()
	defer putBuf(fbuf)
	var frame []byte
	var err error
	if len(ss.s.cfg.mw) == 0 {
		frame, err = ss.codec.frame((*fbuf)[:0], typ, tx, payload, 0)
	} else {
		m := Message{Kind: kind, Type: typ, Tx: tx, Payload: payload, ser: ss.codec.ser}
		if err := runMiddleware(ctx, ss.s.cfg.mw, Outgoing, &m); err != nil {
			if kind == KindError {
				ss.s.cfg.log.warn("outgoing middleware failed on an error reply; sending it unchanged", "tx", tx, "err", err)
			} else {
				ss.replyError(ctx, tx, typ[:len(typ)-len("Result")]+"Error", middlewareError(err))
				return
			}
		}
		frame, err = ss.codec.frameMessage((*fbuf)[:0], &m)
	}
	*fbuf = frame
	if errors.Is(err, ErrTooLarge) && kind == KindResult {
		ss.replyError(ctx, tx, typ[:len(typ)-len("Result")]+"Error", &RemoteError{Name: "Error", Message: err.Error(), Code: CodeTooLarge})
		return
	}
	if err != nil {
		ss.s.cfg.log.warn("cannot encode a reply", "tx", tx, "type", typ, "err", err)
		return
	}
	ss.write(frame, nil, time.Time{}, batched(ctx))
}

// write writes one frame, or queues it behind the replies being written.
// A failed write breaks the stream: the connection is closed and the
// reader ends the session. batch queues the frame even when nothing is
// being written: more requests are already buffered behind its own, and
// their replies will follow.
func (ss *session) write(frame, tail []byte, deadline time.Time, batch bool) {
	// Alone: no other request seems to be in flight. A reader waiting for
	// the next request holds a slot, and each handler one until it
	// returns; a reader running a request under a lease waits for none,
	// so then one other handler may be running too.
	alone := len(ss.slots) <= 2 && !batch
	if _, _, err := ss.wq.write(nil, frame, tail, deadline, alone, false); err != nil {
		ss.conn.Close()
	}
}

// batched reports whether ctx is a request that was read with more
// requests already buffered behind it (see session.write).
func batched(ctx context.Context) bool {
	r, ok := ctx.(*request)
	return ok && r.more
}

// protocolError tells an extended host why the connection is being closed.
func (ss *session) protocolError(err error) {
	ss.s.cfg.log.warn("closing the connection: the host broke the protocol", "err", err)
	if !ss.peer {
		return
	}
	ep := ErrorPayload{Message: err.Error(), Name: "ProtocolError"}
	p, _ := ss.codec.ser.AppendPayload(nil, &ep)
	if frame, ferr := ss.codec.frame(nil, typeProtocolError, "", p, 0); ferr == nil {
		ss.write(frame, nil, time.Now().Add(time.Second), false)
	}
}

func (ss *session) cancelTx(e *wire.Envelope) {
	var p cancelPayload
	if e.Payload == nil || ss.codec.ser.DecodePayload(e.Payload, &p) != nil {
		return
	}
	ss.mu.Lock()
	r := ss.active[p.Tx]
	ss.mu.Unlock()
	if r != nil {
		r.cancel(context.Canceled)
	}
}

// shutdownRequested drains the whole server at the host's request, then
// answers and lets the process exit.
func (ss *session) shutdownRequested(tx string) {
	ctx, cancel := context.WithTimeout(context.Background(), ss.s.cfg.drain)
	defer cancel()
	ss.s.mu.Lock()
	if !ss.s.draining {
		ss.s.draining = true
		close(ss.s.drained)
	}
	ss.s.mu.Unlock()
	for _, other := range ss.s.snapshot() {
		if !waitCtx(ctx, &other.wg) {
			other.cancelAll(context.Canceled)
		}
	}
	ss.send(ss.ctx, KindResult, tx, typeShutdown+"Result", nil)
	ss.s.Shutdown(ctx)
}

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

func (ss *session) cancelAll(err error) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for _, r := range ss.active {
		r.cancel(err)
	}
}

// end is called once the connection is gone: handlers still running are
// cancelled (nobody can receive their replies) and awaited.
func (ss *session) end(err error) {
	ss.mu.Lock()
	ss.closed = true
	ss.mu.Unlock()
	ss.cancelAll(err)
	ss.wg.Wait()
	// No lease is held (ended came from a reader) and none will be: a
	// watch already running finds none and stops for good, without a give.
	ss.leaseWatch.Stop()
	close(ss.work) // the reader, its only sender but for the watch, is done
	ss.wq.idle()
	ss.conn.Close()
}
