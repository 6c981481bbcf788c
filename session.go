package worker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/isolated-workers/worker/internal/wire"
)

// session is one connection being served.
type session struct {
	s     *Server
	conn  net.Conn
	codec *codec
	rd    *wire.Reader
	ctx   context.Context
	slots chan struct{}
	reqs  tracker         // the requests being handled
	wq    wire.WriteQueue // the replies being written
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
	work   chan *request
	idle   atomic.Int32
	ended  chan error
	leases leases
	env    wire.Envelope // the reader's
	peer   bool          // the host completed the handshake and knows the extensions
	proc   *procState    // the worker process's, or nil
	// streams says that the host takes streams, progress and calls to it.
	streams bool
	rev     revCalls      // calls to the host in flight
	revNext atomic.Uint64 // numbers the calls to the host
	// early is the credit of the stream whose request is the next frame:
	// a host writes the two together. Any other frame drops it, so a
	// credit that comes after its stream ended costs nothing. (Reader's.)
	early   *outStream
	earlyTx string
}

// tracker is the requests of a session that are being handled, by tx.
type tracker struct {
	mu     sync.Mutex
	active map[string]*request
	closed bool           // the connection is gone: no more requests
	wg     sync.WaitGroup // one per active request, until its handler returns
}

func newSession(s *Server, ctx context.Context, conn net.Conn, ps *procState) *session {
	ss := &session{s: s, conn: conn, codec: newCodec(s.cfg.ser, s.cfg.max), proc: ps,
		reqs: tracker{active: make(map[string]*request)}, slots: make(chan struct{}, maxInFlight), ctx: ctx,
		work: make(chan *request), ended: make(chan error, 1)}
	ss.wq = wire.WriteQueue{Conn: conn, Broken: func(error) { conn.Close() }, TimeoutsBreak: true}
	ss.leases.timer = time.AfterFunc(time.Hour, ss.watchLeases)
	ss.leases.timer.Stop()
	return ss
}

// serve reads requests until the connection ends.
func (ss *session) serve() error {
	first, err := ss.greet()
	if err != nil {
		return err
	}
	if ss.proc != nil {
		ss.proc.served.Store(true)
	}
	ss.rd = wire.NewReader(ss.conn, ss.codec.term, ss.s.cfg.max)
	ss.rd.Prime(first)
	go ss.handle(nil)
	return <-ss.ended
}

// dispatch handles one parsed message, and returns the request whose
// handler is to run, if any: it then holds the in-flight slot.
func (ss *session) dispatch(e *wire.Envelope) *request {
	early, earlyTx := ss.early, ss.earlyTx
	ss.early, ss.earlyTx = nil, ""
	if ss.streams && isRev(e.Tx) {
		ss.revReply(e)
		return nil
	}
	h := (*ss.s.handlers.Load())[string(e.Type)]
	if h != nil {
		return ss.start(h, e, early, earlyTx)
	}
	tx := string(e.Tx)
	if len(e.Type) == 0 {
		ss.replyError(ss.ctx, tx, "Error", &RemoteError{Name: "ProtocolError", Message: "message without a type", Code: codeBadPayload})
		return nil
	}
	switch string(e.Type) {
	case typeCancel:
		ss.cancelTx(e)
		return nil
	case typeCredit:
		ss.creditTx(e)
		return nil
	case typeShutdown:
		go ss.shutdownRequested(tx)
		return nil
	case typePing:
		ss.send(ss.ctx, tx, typePing+"Result", typePing+"Error", nil)
		return nil
	case typeGoroutines:
		ss.goroutinesAsked(tx, e.Payload)
		return nil
	}
	ss.replyError(ss.ctx, tx, string(e.Type)+"Error", &RemoteError{Name: "Error",
		Message: unknownPrefix + string(e.Type), Code: codeUnknownMessage})
	return nil
}

// start registers a request for its handler h, and returns it; nil when it
// was refused (and answered).
func (ss *session) start(h *handler, e *wire.Envelope, early *outStream, earlyTx string) *request {
	r := &request{parent: ss.ctx, h: h, ss: ss}
	r.setTx(e.Tx)
	tx := r.tx
	if h.stream && early != nil && earlyTx == tx {
		r.out = early
	}
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
		ss.replyError(ss.ctx, tx, h.errType, err)
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
		return &RemoteError{Name: "Error", Message: "the worker is shutting down", Code: codeShuttingDown}
	}
	return ss.reqs.add(r)
}

// add registers r, refusing duplicates and requests after close.
func (t *tracker) add(r *request) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return &RemoteError{Name: "Error", Message: "the connection is closing", Code: codeShuttingDown}
	}
	if _, dup := t.active[r.tx]; dup {
		return &RemoteError{Name: "Error", Message: fmt.Sprintf("transaction id %q is already in flight", r.tx), Code: codeDuplicateTx}
	}
	t.active[r.tx] = r
	t.wg.Add(1)
	r.startDeadline()
	return nil
}

// untrack frees r's tx before its reply is sent: a host may reuse a tx as
// soon as it has heard back.
func (ss *session) untrack(r *request) {
	ss.reqs.mu.Lock()
	delete(ss.reqs.active, r.tx)
	ss.reqs.mu.Unlock()
}

func (ss *session) release(r *request) {
	if r.payload != nil && !r.owned {
		putBuf(r.payload)
	}
	r.payload = nil
}

func (ss *session) cancelTx(e *wire.Envelope) {
	var p cancelPayload
	if e.Payload == nil || ss.codec.ser.DecodePayload(e.Payload, &p) != nil {
		return
	}
	ss.reqs.mu.Lock()
	r := ss.reqs.active[p.Tx]
	ss.reqs.mu.Unlock()
	if r != nil {
		r.cancel(context.Canceled)
	}
}

// shutdownRequested drains the whole server at the host's request, then
// answers and lets the process exit.
func (ss *session) shutdownRequested(tx string) {
	ctx, cancel := context.WithTimeout(context.Background(), ss.s.cfg.drain)
	defer cancel()
	ss.s.startDrain()
	for _, other := range ss.s.snapshot() {
		if !waitCtx(ctx, &other.reqs.wg) {
			other.reqs.cancelAll(context.Canceled)
		}
	}
	ss.send(ss.ctx, tx, typeShutdown+"Result", typeShutdown+"Error", nil)
	ss.s.Shutdown(ctx)
}

// creditTx adds the credit of a typeCredit message to its stream: to the
// request if it runs, else for the request that follows.
func (ss *session) creditTx(e *wire.Envelope) {
	var p creditPayload
	if e.Payload == nil || ss.codec.ser.DecodePayload(e.Payload, &p) != nil || p.Items < 0 || p.Bytes < 0 {
		return
	}
	ss.reqs.mu.Lock()
	r := ss.reqs.active[string(e.Tx)]
	ss.reqs.mu.Unlock()
	switch {
	case r != nil && r.out != nil:
		r.out.grant(p.Items, p.Bytes)
	case r == nil:
		c := newOutStream(ss, string(e.Tx))
		c.grant(p.Items, p.Bytes)
		ss.early, ss.earlyTx = c, string(e.Tx)
	}
}

// revReply hands the host's reply to a call from this worker to the call.
func (ss *session) revReply(e *wire.Envelope) {
	var p []byte
	if e.Payload != nil {
		p = append([]byte(nil), e.Payload...)
	}
	if !ss.rev.deliver(string(e.Tx), revReply{typ: string(e.Type), payload: p}) {
		ss.s.cfg.log.debug("dropping the host's reply to a call given up", "type", string(e.Type), "tx", string(e.Tx))
	}
}

// goroutinesRequested answers the host's request for the goroutines that
// run a handler (see dumpGoroutines).
// goroutinesAsked answers a typeGoroutines request, on a goroutine of its
// own (a dump takes a while). It is tracked as a request, so that the
// end of the connection waits for its answer, except during a drain,
// which must not see a new one.
func (ss *session) goroutinesAsked(tx string, payload []byte) {
	var req goroutinesRequest
	if payload != nil {
		_ = ss.codec.ser.DecodePayload(payload, &req) // now: the reader reuses its memory
	}
	ss.s.mu.Lock()
	tracked := !ss.s.draining
	if tracked {
		ss.reqs.wg.Add(1)
	}
	ss.s.mu.Unlock()
	go func() {
		ss.goroutinesRequested(tx, req.Type)
		if tracked {
			ss.reqs.wg.Done()
		}
	}()
}

func (ss *session) goroutinesRequested(tx, typ string) {
	fn := ""
	if h := (*ss.s.handlers.Load())[typ]; h != nil {
		fn = h.fn
	}
	p, _ := ss.codec.ser.AppendPayload(nil, &goroutinesReply{Goroutines: dumpGoroutines(fn)})
	ss.send(ss.ctx, tx, typeGoroutines+"Result", typeGoroutines+"Error", p)
}

// cancelAll cancels the handlers of every active request.
func (t *tracker) cancelAll(err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, r := range t.active {
		r.cancel(err)
	}
}

// errHalfClosed ends the reading of a connection that the host has
// half-closed: it sends no more requests, but reads the replies.
var errHalfClosed = errors.New("the host half-closed the connection")

// finish lets the handlers of a host that half-closed the connection run
// to their replies, before end. If the host closes the connection
// entirely meanwhile, or dies, or the connection is closed here (ServeConn's
// ctx, Shutdown), it returns at once: end then cancels the handlers still
// running, as for any host that hangs up.
func (ss *session) finish() {
	done := make(chan struct{})
	go func() {
		ss.reqs.wg.Wait()
		close(done)
	}()
	hangup := make(chan struct{})
	go func() {
		awaitHangup(ss.conn)
		close(hangup)
	}()
	select {
	case <-done:
		ss.conn.SetReadDeadline(time.Unix(1, 0)) // ends awaitHangup
		<-hangup
	case <-hangup:
	}
}

// end is called once the connection is gone: handlers still running are
// cancelled (nobody can receive their replies) and awaited.
func (ss *session) end(err error) {
	ss.reqs.mu.Lock()
	ss.reqs.closed = true
	ss.reqs.mu.Unlock()
	ss.reqs.cancelAll(err)
	ss.rev.end()
	ss.reqs.wg.Wait()
	// No lease is held (ended came from a reader) and none will be: a
	// watch already running finds none and stops for good, without a give.
	ss.leases.timer.Stop()
	close(ss.work) // the reader, its only sender but for the watch, is done
	ss.wq.Idle()
	ss.conn.Close()
}
