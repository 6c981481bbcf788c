package worker

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/isolated-workers/worker/internal/wire"
)

// Client is the host's end of one connection to a worker: it sends
// requests, multiplexed on the connection and paired with their replies by
// transaction id. It works over any net.Conn whose other end is served by a
// Server (or by a TypeScript worker). A Client is safe for concurrent use.
//
// A Client does not own a process; Spawn returns a *Worker, which does.
type Client struct {
	cfg   *hostConfig
	codec *codec
	conn  net.Conn
	rd    *wire.Reader
	peer  peerInfo
	wq    wire.WriteQueue // the frames being written
	lost  func(*Client, error) error

	// The calls waiting for a reply, by tx, in shards: many callers and
	// the reader come and go at once.
	pending  [pendingShards]pendingShard
	inflight atomic.Int32 // calls in pending

	gaveUp recentTxs     // calls given up (ctx ended) whose reply may still come
	stuck  *stuckWatch   // nil: nobody to tell of a stuck worker
	reads  atomic.Uint64 // frames read, for the liveness probe
	served servedCalls   // calls from the worker being run

	mu    sync.Mutex
	err   error       // why the connection ended; nil while it is up
	ended atomic.Bool // err is set

	readDone chan struct{}
}

// call is one request waiting for its reply.
type call struct {
	ctx    context.Context
	typ    string
	stream *streamSink // a stream's items go there; nil for a plain call
	// progressed says that progress was reported: the call returns once
	// its observer has had the reports.
	progressed bool
	out        any        // where a result is decoded; nil to drop it
	done       chan error // receives the outcome exactly once
}

var calls = sync.Pool{New: func() any { return &call{done: make(chan error, 1)} }}

// NewClient runs the handshake on conn (unless opts.BaseProtocol is set)
// and returns a Client that owns conn. The handshake is bounded by ctx; a
// peer that speaks only the base protocol, such as a TypeScript worker, is
// detected and served without the extensions.
func NewClient(ctx context.Context, conn net.Conn, opts *Options) (*Client, error) {
	return newClient(ctx, conn, opts.resolve(), clientSetup{})
}

// clientSetup is what a Worker adds to a Client of its own.
type clientSetup struct {
	secret, id string // the worker's credentials, for the handshake
	// lost, if not nil, turns the error that ended the connection into
	// the one its pending calls get (a *CrashError with the exit status).
	lost  func(c *Client, cause error) error
	greet *greeting // a spawned worker's (see handshake)
	// stuck, if not nil, is told once that the worker is stuck (see
	// Options.StuckTimeout).
	stuck func(*Client, stuck)
}

// newClient makes a Client.
func newClient(ctx context.Context, conn net.Conn, cfg *hostConfig, set clientSetup) (*Client, error) {
	c := &Client{cfg: cfg, codec: newCodec(cfg.ser, cfg.max), conn: conn, lost: set.lost,
		readDone: make(chan struct{})}
	for i := range c.pending {
		c.pending[i].m = make(map[string]*call)
	}
	c.wq.Conn = conn
	// Broken runs on a writer's goroutine: the loss (which may wait a moment
	// for the process's exit status) is handled on another, and the writer
	// waits for it within its context (see write).
	c.wq.Broken = func(err error) { go c.fail(c.lostErr(fmt.Errorf("worker: writing to the worker: %w", err))) }
	c.wq.FinishWithin = cfg.stuck
	if cfg.stuck <= 0 {
		c.wq.FinishWithin = defaultStuckTimeout
	}
	var rest []byte
	if !cfg.base {
		var err error
		if c.peer, rest, err = handshake(ctx, conn, cfg.ser, set.secret, set.id, cfg.max, set.greet); err != nil {
			conn.Close()
			return nil, err
		}
	} else {
		c.peer.keepAlive = true
	}
	c.rd = wire.NewReader(conn, c.codec.term, cfg.max)
	c.rd.Prime(rest)
	if c.peer.cancel && c.peer.probe && set.stuck != nil {
		c.stuck = newStuckWatch(cfg.stuck, func(s stuck) { set.stuck(c, s) })
	}
	go c.readLoop()
	if c.stuck != nil {
		go c.probe()
	}
	return c, nil
}

// Close fails the calls in flight with ErrClosed and closes the connection.
// It does not stop the worker. It is idempotent.
func (c *Client) Close() error {
	c.fail(ErrClosed)
	<-c.readDone
	return nil
}

// Done returns a channel that is closed when the connection has ended.
func (c *Client) Done() <-chan struct{} { return c.readDone }

// Err returns why the connection ended, or nil while it is up.
func (c *Client) Err() error {
	if !c.ended.Load() {
		return nil // the common case, without the lock
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Invoke implements Caller: it sends the call on this connection.
func (c *Client) Invoke(ctx context.Context, typ string, payload, out any) error {
	var tx string
	return c.send(ctx, typ, payload, out, &tx)
}

// send makes one call. *tx is generated when empty and kept, so that a
// retry sends the same transaction id.
func (c *Client) send(ctx context.Context, typ string, payload, out any, tx *string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	deadline, timeout := c.deadline(ctx, typ)
	fbuf := getBuf()
	defer putBuf(fbuf)
	frame, tail, id, sk, err := c.prepare(ctx, (*fbuf)[:0], typ, payload, out, deadline, tx)
	*fbuf = frame
	if err != nil {
		return err
	}

	cl := calls.Get().(*call)
	cl.ctx, cl.typ, cl.out, cl.stream = ctx, typ, out, sk
	if sk != nil {
		cl.out = sk.result
	}
	inflight, err := c.register(id, cl)
	if err != nil {
		c.release(cl)
		return err
	}
	ticket, err := c.write(ctx, frame, tail, deadline, inflight == 1, true)
	if err != nil {
		if c.forget(id) {
			c.release(cl)
			if _, ok := err.(finishing); ok {
				c.givenUp(id, typ) // it will arrive, late
			}
			return err
		}
		return c.wait(cl) // the connection failed and answered the call
	}

	var expired <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		expired = t.C
	} else if ctx.Done() == nil {
		return c.wait(cl) // nothing else to wait for; cheaper than a select
	}
	select {
	case err := <-cl.done:
		c.release(cl)
		return err
	case <-ctx.Done():
		return c.abandon(cl, id, ticket, context.Cause(ctx))
	case <-expired:
		return c.abandon(cl, id, ticket, fmt.Errorf("worker: %s: timed out after %v: %w", typ, timeout, context.DeadlineExceeded))
	}
}

// prepare appends to dst the frames that start a call (see encode, and
// streamOf for a stream), and returns them with the call's tx on the wire
// and its stream sink, if it is one.
func (c *Client) prepare(ctx context.Context, dst []byte, typ string, payload, out any, deadline time.Time, tx *string) (frame, tail []byte, id string, sk *streamSink, err error) {
	if dst, sk, err = c.streamOf(dst, out, typ, tx); err != nil {
		return dst, nil, "", nil, err
	}
	frame, tail, keep, id, err := c.encode(ctx, dst, typ, payload, deadline, *tx)
	if keep != "" {
		*tx = keep
	}
	if err == nil && sk != nil && id != *tx {
		err = fmt.Errorf("worker: %s: middleware changed a stream's transaction id", typ)
	}
	return frame, tail, id, sk, err
}

// streamOf returns dst, with the frame of a stream's first credit appended
// when out is a stream's sink (returned too; see openStream).
func (c *Client) streamOf(dst []byte, out any, typ string, tx *string) ([]byte, *streamSink, error) {
	sk, ok := out.(*streamSink)
	if !ok {
		return dst, nil, nil
	}
	dst, err := c.openStream(dst, sk, typ, tx)
	return dst, sk, err
}

// extension handles a message of the stream extension that is not a
// reply to a call of ours, and reports whether e was one.
func (c *Client) extension(e *wire.Envelope) bool {
	if len(e.Type) > len(reservedPrefix) && e.Type[0] == '_' && c.control(e) {
		return true
	}
	if isRev(e.Tx) {
		c.serve(e)
		return true
	}
	return false
}

// encode appends the frame of a request to dst. Its tx is tx or, when
// empty, a new one, returned as keep (for a retry to send it again);
// sent is the tx on the wire, which middleware may have changed.
//
// The frame is frame followed by tail (see codec.frameValue).
func (c *Client) encode(ctx context.Context, dst []byte, typ string, payload any, deadline time.Time, tx string) (frame, tail []byte, keep, sent string, err error) {
	if !c.peer.deadline {
		deadline = time.Time{}
	}
	if len(c.cfg.mw) == 0 && c.codec.direct != directNone && (tx != "" || c.cfg.tx == nil) {
		// The payload is encoded straight into the frame.
		if tx == "" {
			tx = newUUID()
		}
		frame, tail, encErr, err := c.codec.frameValue(dst, typ, tx, payload, unixMilli(deadline))
		if encErr != nil {
			return frame, nil, "", "", fmt.Errorf("worker: %s: encoding payload: %w", typ, encErr)
		}
		return frame, tail, tx, tx, err
	}
	pbuf := getBuf()
	defer putBuf(pbuf)
	p, err := c.cfg.ser.AppendPayload((*pbuf)[:0], payload)
	if err != nil {
		return dst, nil, "", "", fmt.Errorf("worker: %s: encoding payload: %w", typ, err)
	}
	*pbuf = p
	m := Message{Type: typ, Tx: tx, Payload: p, Deadline: deadline, ser: c.cfg.ser}
	if m.Tx == "" {
		if c.cfg.tx != nil {
			m.Tx = c.cfg.tx(&m)
			if err := checkTx(m.Tx); err != nil {
				return nil, nil, "", "", err
			}
		} else {
			m.Tx = newUUID()
		}
	}
	keep = m.Tx
	if err := runMiddleware(ctx, c.cfg.mw, &m); err != nil {
		return dst, nil, keep, "", err
	}
	frame, err = c.codec.frameMessage(dst, &m)
	if err == nil && !c.peer.extended {
		c.codec.warnNonASCII(frame, c.cfg.log)
	}
	return frame, nil, keep, m.Tx, err
}

// deadline returns the call's effective deadline and, when Options.Timeout
// makes it earlier than ctx's, the duration of that timeout.
func (c *Client) deadline(ctx context.Context, typ string) (time.Time, time.Duration) {
	d, _ := ctx.Deadline()
	timeout := c.cfg.timeout
	if t, ok := c.cfg.timeouts[typ]; ok {
		timeout = t
	}
	if timeout <= 0 {
		return d, 0
	}
	if t := time.Now().Add(timeout); d.IsZero() || t.Before(d) {
		return t, timeout
	}
	return d, 0
}

// abandon gives up on a call whose context ended: a request still queued
// is taken back; otherwise a late reply is dropped quietly, and a worker
// that can is told to cancel the handler.
func (c *Client) abandon(cl *call, tx string, ticket uint64, cause error) error {
	if !c.forget(tx) {
		return c.wait(cl) // the reply won the race; it is being delivered
	}
	typ := cl.typ
	c.release(cl)
	if ticket != 0 && c.wq.Remove(ticket) {
		return cause // never sent
	}
	c.givenUp(tx, typ)
	return cause
}

// givenUp notes a call given up after its request was sent: its reply
// may still come (not a surprise then), a worker that can is told to
// cancel its handler, and that handler must then return in time.
func (c *Client) givenUp(tx, typ string) {
	c.gaveUp.add(tx)
	if c.peer.cancel {
		go c.sendCancel(tx)
	}
	c.stuck.watch(tx, typ)
}

func (c *Client) wait(cl *call) error {
	err := <-cl.done
	c.release(cl)
	return err
}

func (c *Client) release(cl *call) {
	if cl.progressed && cl.ctx.Err() == nil {
		observerOf(cl.ctx).flush()
	}
	cl.ctx, cl.out, cl.stream, cl.progressed = nil, nil, nil, false
	calls.Put(cl)
}

const pendingShards = 16

type pendingShard struct {
	mu sync.Mutex
	m  map[string]*call
	_  [48]byte // a cache line each
}

var pendingSeed = maphash.MakeSeed()

// register adds a call to the pending set and returns the number of calls
// in flight, this one included.
func (c *Client) register(tx string, cl *call) (int, error) {
	s := &c.pending[maphash.String(pendingSeed, tx)%pendingShards]
	s.mu.Lock()
	// fail sets ended before it empties the shards: a call added here
	// before that is answered by fail, and one after that fails here.
	if c.ended.Load() {
		s.mu.Unlock()
		return 0, c.Err()
	}
	if _, dup := s.m[tx]; dup {
		s.mu.Unlock()
		return 0, fmt.Errorf("worker: transaction id %q is already in flight", tx)
	}
	s.m[tx] = cl
	s.mu.Unlock()
	return int(c.inflight.Add(1)), nil
}

// forget removes a call from the pending set; it reports false if the call
// was not there, in which case its outcome is on the way to cl.done.
func (c *Client) forget(tx string) bool {
	s := &c.pending[maphash.String(pendingSeed, tx)%pendingShards]
	s.mu.Lock()
	_, ok := s.m[tx]
	delete(s.m, tx)
	s.mu.Unlock()
	if ok {
		c.inflight.Add(-1)
	}
	return ok
}

// take removes and returns the call of tx.
func (c *Client) take(tx []byte) *call {
	s := &c.pending[maphash.Bytes(pendingSeed, tx)%pendingShards]
	s.mu.Lock()
	cl := s.m[string(tx)]
	if cl != nil {
		delete(s.m, string(tx))
	}
	s.mu.Unlock()
	if cl != nil {
		c.inflight.Add(-1)
	}
	return cl
}

// write writes one whole frame, or queues it behind the frames being
// written (see wqueue). Waiting for the right to write respects ctx; the
// write itself is bounded by the call's deadline. A write cut in the middle
// of a frame breaks the stream, so it fails the connection.
//
// alone says that no other call is in flight: the frame is then written at
// once if it can be. A frame that is queued rather than written can be
// taken back with its ticket (when removable is set and the ticket is not
// 0).
func (c *Client) write(ctx context.Context, frame, tail []byte, deadline time.Time, alone, removable bool) (ticket uint64, err error) {
	ticket, broken, err := c.wq.Write(ctx.Done(), frame, tail, deadline, alone, removable)
	switch {
	case err == nil:
		return ticket, nil
	case err == wire.ErrWaitCanceled || ctx.Err() != nil:
		return 0, writeErr(context.Cause(ctx), err)
	case err == wire.ErrFinishing || !broken && wire.IsTimeout(err):
		// The call's deadline passed while the worker was not reading.
		return 0, writeErr(fmt.Errorf("worker: writing to the worker: %w", context.DeadlineExceeded), err)
	case broken:
		// The connection is failing (wq.broken was called, maybe by another
		// writer still waiting for the worker's exit status): the call gets
		// what the calls in flight get, a *CrashError for a dead worker,
		// unless its context ends first.
		select {
		case <-c.readDone:
			return 0, c.Err()
		case <-ctx.Done():
			return 0, context.Cause(ctx)
		}
	}
	return 0, fmt.Errorf("worker: writing to the worker: %w", err)
}

// writeErr is the error of a write that its context or deadline cut short:
// cause, and whether the request will still arrive whole (ErrFinishing).
func writeErr(cause, err error) error {
	if err == wire.ErrFinishing {
		return finishing{cause}
	}
	return cause
}

// finishing is the error of a call cut short while its request was being
// written: the rest is written in the background, so the worker will get
// it whole, late.
type finishing struct{ error }

func (e finishing) Unwrap() error { return e.error }

// sendCancel tells the worker to cancel the handler of tx.
func (c *Client) sendCancel(tx string) { c.notify(typeCancel, &cancelPayload{Tx: tx}) }

// notify writes a control message that gets no reply awaited, giving up
// after a second if the worker does not read.
func (c *Client) notify(typ string, payload any) {
	p, _ := c.cfg.ser.AppendPayload(nil, payload)
	frame, err := c.codec.frame(nil, typ, newUUID(), p, 0)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, _ = c.write(ctx, frame, nil, time.Now().Add(time.Second), true, false)
	}
}

type cancelPayload struct {
	Tx string `json:"tx" cbor:"tx"`
}

// lostErr turns the error that broke the connection into what the calls
// get, unless the connection was already ended on purpose.
func (c *Client) lostErr(err error) error {
	if c.lost == nil || c.Err() != nil || errors.Is(err, ErrProtocol) {
		return err // a peer that breaks the protocol did not crash: no retry
	}
	return c.lost(c, err)
}

// fail ends the connection: every pending call gets err, later calls too.
func (c *Client) fail(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	c.ended.Store(true)
	c.mu.Unlock()
	c.conn.Close()
	c.stuck.end()
	c.served.cancelAll() // nobody can receive their answers
	for i := range c.pending {
		s := &c.pending[i]
		s.mu.Lock()
		pending := s.m
		s.m = make(map[string]*call)
		s.mu.Unlock()
		for _, cl := range pending {
			c.inflight.Add(-1)
			cl.done <- err
		}
	}
}

func (c *Client) readLoop() {
	defer close(c.readDone)
	var e wire.Envelope
	for {
		if c.rd.Owned() {
			e = wire.Envelope{} // lets go of the last frame, which was big
		}
		frame, err := c.rd.Next()
		c.reads.Add(1)
		if err != nil {
			if errors.Is(err, wire.ErrTooLarge) {
				err = fmt.Errorf("%w: %w", ErrProtocol, err)
			}
			c.fail(c.lostErr(fmt.Errorf("worker: connection lost: %w", err)))
			return
		}
		if err := c.codec.parse(frame, &e); err != nil {
			c.fail(c.lostErr(err))
			return
		}
		if c.peer.stream && c.extension(&e) {
			continue
		}
		cl := c.take(e.Tx)
		if cl == nil && string(e.Type) == typeProtocolError {
			var ep errorPayload
			_ = c.cfg.ser.DecodePayload(e.Payload, &ep)
			c.fail(fmt.Errorf("%w: the worker closed the connection: %s", ErrProtocol, ep.Message))
			return
		}
		if cl == nil {
			if string(e.Type) == typePing+"Result" {
				continue // the probe's answer: it was read, that is all
			}
			c.stuck.answered(e.Tx) // whether or not gaveUp still remembers it
			if c.gaveUp.has(e.Tx) {
				c.cfg.log.debug("dropping the late reply of a call that was given up", "type", string(e.Type), "tx", string(e.Tx))
			} else {
				c.cfg.log.warn("dropping a reply to an unknown transaction", "type", string(e.Type), "tx", string(e.Tx))
			}
			continue
		}
		owned := c.rd.Owned()
		err = c.deliver(cl, &e, owned)
		if owned {
			e = wire.Envelope{} // before the caller wakes: nothing keeps the big frame
		}
		cl.done <- err
		if len(c.rd.Buffered()) == 0 {
			// Let the callers just answered run before this goroutine
			// reads again (most likely to find nothing yet): a caller that
			// waits for this one to block loses a read's time.
			runtime.Gosched()
		}
	}
}

// deliver decodes a reply into its call and returns the call's outcome.
func (c *Client) deliver(cl *call, e *wire.Envelope, owned bool) error {
	isErr, ok := replyKind(e.Type, cl.typ)
	if len(c.cfg.mw) > 0 {
		m := c.codec.message(e, true)
		if err := runMiddleware(cl.ctx, c.cfg.mw, m); err != nil {
			return err
		}
		isErr, ok = replyKind([]byte(m.Type), cl.typ)
		e = &wire.Envelope{Type: []byte(m.Type), Tx: []byte(m.Tx), Payload: m.Payload}
	}
	switch {
	case !ok:
		return fmt.Errorf("%w: reply of type %q to a %q request", ErrProtocol, e.Type, cl.typ)
	case isErr:
		var ep errorPayload
		if e.Payload == nil {
			ep.Message = "(the error reply has no payload)"
		} else if err := c.cfg.ser.DecodePayload(e.Payload, &ep); err != nil {
			return fmt.Errorf("%w: undecodable error reply to %q: %v", ErrProtocol, cl.typ, err)
		}
		return &RemoteError{Type: cl.typ, Name: ep.Name, Message: ep.Message, Code: ep.Code, Stack: ep.Stack}
	case cl.out != nil && e.Payload != nil:
		ser := c.cfg.ser
		if owned && len(c.cfg.mw) == 0 && c.codec.direct == directBinary {
			ser = ownedBinary{} // the frame's memory is the result's to keep
		}
		if err := ser.DecodePayload(e.Payload, cl.out); err != nil {
			return fmt.Errorf("worker: %s: decoding the result: %w", cl.typ, err)
		}
	}
	return nil
}

// replyKind classifies a reply to a request of type req: the protocol pairs
// them by tx, and the reply's type must be req+"Result" or req+"Error". ok
// is false for any other type.
func replyKind(typ []byte, req string) (isErr, ok bool) {
	if len(typ) <= len(req) || string(typ[:len(req)]) != req {
		return false, false
	}
	switch string(typ[len(req):]) {
	case "Result":
		return false, true
	case "Error":
		return true, true
	}
	return false, false
}

// recentTxs remembers the last transaction ids added, up to a bound.
type recentTxs struct {
	mu   sync.Mutex
	ring [256]string
	next int
	set  map[string]struct{}
}

func (r *recentTxs) add(tx string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.set == nil {
		r.set = make(map[string]struct{}, len(r.ring))
	}
	delete(r.set, r.ring[r.next])
	r.ring[r.next] = tx
	r.set[tx] = struct{}{}
	r.next = (r.next + 1) % len(r.ring)
}

func (r *recentTxs) has(tx []byte) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.set[string(tx)]
	return ok
}
