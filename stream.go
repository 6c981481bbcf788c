package worker

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"iter"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/isolated-workers/worker/internal/jsonfast"
	"github.com/isolated-workers/worker/internal/wire"
)

// Streams, progress and calls from the worker to the host: extensions of
// the protocol that a Go peer negotiates (capability "stream"); see
// docs/protocol.md for their frames.

// ErrUnsupported is returned by a stream, and by a call to the host, when
// the peer does not speak these extensions (a TypeScript peer, or a
// connection without the handshake): nothing was sent, and ordinary calls
// keep working.
var ErrUnsupported = errors.New("worker: the peer does not support streams or calls to the host (a TypeScript peer, or BaseProtocol)")

// StreamType describes a streaming message: a request of type P answered
// by a sequence of items of type I, then by a final result of type R (Void
// for none). Declare it like a MessageType, with DefineStream.
type StreamType[P, I, R any] struct {
	name string
}

// DefineStream declares a streaming message named name; it panics as
// Define does.
func DefineStream[P, I, R any](name string) StreamType[P, I, R] {
	return StreamType[P, I, R]{name: Define[P, R](name).name}
}

// Name returns the message's name on the wire.
func (m StreamType[P, I, R]) Name() string { return m.name }

// Stream calls m and returns its items as an iterator, and a function that
// returns the final result once the iteration is over. The call is made
// when the range starts and ends with it: leaving the range early (break)
// or ctx ending cancels the handler, and the iterator never outlives the
// range: there is nothing to close. An error (the handler's, a crash, ctx)
// comes as the last pair, with a zero item, and from result too.
//
// Flow control: the worker sends no more than Options.StreamWindow items
// (and StreamWindowBytes bytes) ahead of the range, so a slow consumer
// slows the handler down (its send blocks) and the memory of a stream is
// bounded; other calls on the connection are not held up. A stream is
// not sent again after a crash once an item has arrived (the crash ends
// it), and on a Pool it stays on the member that serves it.
//
//	items, result := worker.Stream(ctx, w, Count, 100)
//	for n, err := range items {
//		if err != nil {
//			return err
//		}
//		fmt.Println(n)
//	}
//	total, err := result()
func Stream[P, I, R any](ctx context.Context, c Caller, m StreamType[P, I, R], payload P) (items iter.Seq2[I, error], result func() (R, error)) {
	var res R
	final := errors.New("worker: the stream's result was asked for before the range over its items")
	sk := &streamSink{result: &res, wake: make(chan struct{}, 1)}
	if _, void := any(res).(Void); void {
		sk.result = nil
	}
	items = func(yield func(I, error) bool) {
		slot := new(I) // decoded into, zeroed first: no allocation per item
		var plan *itemPlan
		final = runStream(ctx, c, m.name, &payload, sk, func(b []byte, c *codec, owned bool) bool {
			var zero I
			*slot = zero
			if plan == nil {
				plan = planFor[I](c)
			}
			if plan.decode(b, unsafe.Pointer(slot)) {
				return yield(*slot, nil)
			}
			ser := c.ser
			if owned {
				ser = ownedBinary{} // a byte string may be the batch's memory: it is mostly this item
			}
			if err := ser.DecodePayload(b, slot); err != nil {
				sk.failed = fmt.Errorf("worker: %s: decoding an item: %w", m.name, err)
				return false
			}
			return yield(*slot, nil)
		})
		if final != nil && !sk.left {
			var zero I
			yield(zero, final)
		}
	}
	return items, func() (R, error) {
		if final != nil {
			var zero R
			return zero, final
		}
		return res, nil
	}
}

// runStream makes the call behind a Stream and feeds its items to each
// until each returns false; it returns the stream's outcome.
func runStream(ctx context.Context, c Caller, typ string, payload any, sk *streamSink, each func([]byte, *codec, bool) bool) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.Invoke(ctx, typ, payload, sk) }()
	var err error
	var batches []batch
	finished := false
	for {
		batches = sk.next(batches[:0], done, &err, &finished)
		if len(batches) == 0 {
			return err
		}
		ok := true
		for _, b := range batches {
			if ok = sk.walk(b, each); !ok {
				break
			}
		}
		clear(batches)
		if !ok {
			cancel()
			if !finished {
				<-done
			}
			if sk.failed != nil {
				return sk.failed
			}
			sk.left = true
			return fmt.Errorf("worker: %s: the range over the stream was left before its end: %w", typ, context.Canceled)
		}
	}
}

// streamSink receives a stream's items on the host: the Client pushes
// the batches as they arrive (never more than the window), the range
// takes them.
type streamSink struct {
	result any // where the final result is decoded; nil for Void
	wake   chan struct{}
	failed error // an item could not be decoded, or a batch was malformed
	left   bool  // the range was left early
	recv   int   // items taken by the range (the range's)

	mu       sync.Mutex
	codec    *codec                 // the connection's, set by bind
	queue    []batch                // batches, as they arrived
	queued   int                    // bytes in queue
	got      int                    // batches received, on any connection
	used     [2]int                 // items and bytes taken since the last credit
	returned int                    // items credited back to the worker
	window   [2]int                 // the window, in items and bytes
	credit   func(items, bytes int) // returns credit to the worker
	over     func(err error)        // fails the stream: the worker broke the window
}

// bind attaches the sink to a connection: its codec decodes the items,
// credit returns room to the worker.
func (sk *streamSink) bind(c *codec, window [2]int, credit func(int, int), over func(error)) {
	sk.mu.Lock()
	defer sk.mu.Unlock()
	sk.codec, sk.window, sk.credit, sk.over = c, window, credit, over
	sk.used = [2]int{}
}

// push queues a batch that arrived: a copy, unless the reader read it
// into memory of its own (owned). A worker
// keeps within the window, so the batches queued before this one hold no
// more than the window's bytes in items, and a separator and two
// brackets at most per item; a worker that sends more is cut off.
func (sk *streamSink) push(payload []byte, owned bool) {
	sk.mu.Lock()
	over := sk.queued > 2*sk.window[1]+3*min(sk.window[0], sk.window[1]+1)
	bt := batch{items: payload, credited: sk.returned} // a big frame read into memory of its own: the sink's
	if !owned {
		bt.buf = getBuf()
		*bt.buf = append((*bt.buf)[:0], payload...) // the reader's buffer is reused
		bt.items = *bt.buf
	}
	b := bt.items
	sk.queue = append(sk.queue, bt)
	sk.queued += len(b)
	sk.got++
	fail := sk.over
	sk.mu.Unlock()
	if over && fail != nil {
		fail(fmt.Errorf("%w: the worker sent stream items beyond a window of %d bytes", ErrProtocol, sk.window[1]))
	}
	select {
	case sk.wake <- struct{}{}:
	default:
	}
}

// batch is a batch of items as it arrived: an array of items in the
// serializer's encoding, and the items the host had credited back when it
// came (its items are within the window given so far).
type batch struct {
	items    []byte
	credited int
	buf      *[]byte // items' memory, from the pool of buffers; nil if the frame's own
}

// next appends the batches received to batches, taking them all at once,
// waiting for one if there is none; it returns none once the call is over
// (its outcome in *err, *finished set) and no batch is left: every item
// arrives before the final reply.
func (sk *streamSink) next(batches []batch, done <-chan error, err *error, finished *bool) []batch {
	for {
		sk.mu.Lock()
		if len(sk.queue) > 0 {
			batches = append(batches, sk.queue...)
			clear(sk.queue)
			sk.queue, sk.queued = sk.queue[:0], 0
			sk.mu.Unlock()
			return batches
		}
		sk.mu.Unlock()
		if *finished {
			return batches
		}
		select {
		case <-sk.wake:
		case *err = <-done:
			*finished = true
			sk.mu.Lock()
			sk.credit = nil // the worker is done with this stream: no more credit
			sk.mu.Unlock()
		}
	}
}

// walk feeds the items of the batch bt to each, with the connection's
// codec and whether an item may keep the batch's memory, and returns
// credit as the range takes them; it reports false when each did, or when
// the batch is malformed or breaks the window (sk.failed says which): the
// worker had credit for no more than the window and the credit returned
// before the batch came (credited).
func (sk *streamSink) walk(bt batch, each func([]byte, *codec, bool) bool) bool {
	b, credited := bt.items, bt.credited
	sk.mu.Lock()
	c, win := sk.codec, sk.window
	sk.mu.Unlock()
	n, size, ok, kept := 0, 0, true, false
	err := c.eachElem(b, func(item []byte) bool {
		if sk.recv++; sk.recv-credited > win[0] {
			sk.failed = fmt.Errorf("%w: the worker sent stream items beyond a window of %d", ErrProtocol, win[0])
			sk.over(sk.failed)
			ok = false
			return false
		}
		owned := c.direct == directBinary && 2*len(item) >= len(b)
		kept = kept || owned
		if ok = each(item, c, owned); !ok {
			return false
		}
		if n, size = n+1, size+len(item); 2*n >= win[0] || 2*size >= win[1] {
			sk.consumed(n, size)
			n, size = 0, 0
		}
		return true
	})
	sk.consumed(n, size)
	if err != nil && ok {
		sk.failed = fmt.Errorf("%w: a malformed batch of stream items: %v", ErrProtocol, err)
		return false
	}
	// The batch's memory goes back to the pool unless an item may keep
	// it: the built-in serializers copy what they decode, but for a byte
	// string that is most of its batch.
	if bt.buf != nil && !kept && c.direct != directNone {
		putBuf(bt.buf)
	}
	return ok
}

// consumed notes n items of size bytes in all taken by the range, and
// returns credit to the worker once half the window has been taken.
func (sk *streamSink) consumed(n, size int) {
	if n == 0 {
		return
	}
	sk.mu.Lock()
	sk.used[0] += n
	sk.used[1] += size
	var items, bytes int
	if 2*sk.used[0] >= sk.window[0] || 2*sk.used[1] >= sk.window[1] {
		items, bytes = sk.used[0], sk.used[1]
		sk.used = [2]int{}
		sk.returned += items
	}
	credit := sk.credit
	sk.mu.Unlock()
	if items > 0 && credit != nil {
		credit(items, bytes)
	}
}

// resendable reports whether a call whose outcome goes to out may be sent
// again after a crash: not a stream whose items have begun to arrive.
func resendable(out any) bool {
	sk, ok := out.(*streamSink)
	if !ok {
		return true
	}
	sk.mu.Lock()
	defer sk.mu.Unlock()
	return sk.got == 0
}

// creditPayload is the payload of typeCredit.
type creditPayload struct {
	Items int `json:"items" cbor:"items"`
	Bytes int `json:"bytes" cbor:"bytes"`
}

// The default stream window (see Options.StreamWindow).
const (
	defaultStreamWindow      = 16384
	defaultStreamWindowBytes = 1 << 20
)

// HandleStream registers h as the handler of the streaming message m on s.
// h sends items with send (safe for concurrent use), which returns once
// the item is queued for the host (items still queued when the process
// dies are lost with it), and blocks while the host's window is full
// (flow control) and returns an error once the stream has ended (the host
// left the range, or its context ended: ctx is cancelled then too, and h
// should return); h's result is the stream's final result. Errors and
// panics reach the host as for Handle. A host that calls m with Call
// rather than Stream gets an error at once.
func HandleStream[P, I, R any](s *Server, m StreamType[P, I, R], h func(ctx context.Context, payload P, send func(I) error) (R, error)) {
	_, void := any(*new(R)).(Void)
	s.register(m.name, void, true, funcName(h), func(ctx context.Context, ser Serializer, payload []byte) (any, error) {
		r, _ := ctx.Value(requestKey{}).(*request)
		if r == nil || r.out == nil {
			return nil, &RemoteError{Name: "Error", Code: codeNotStream,
				Message: fmt.Sprintf("%q is a stream: call it with worker.Stream", m.name)}
		}
		var p P
		if payload != nil {
			if err := ser.DecodePayload(payload, &p); err != nil {
				return nil, &RemoteError{Name: "PayloadError", Code: codeBadPayload,
					Message: fmt.Sprintf("invalid payload for %q: %v", m.name, err)}
			}
		}
		slot := new(I) // the item being sent, under the stream's lock: no allocation per item
		r.out.plan = planFor[I](r.ss.codec)
		r.Done() // arms the deadline's timer, which sendItem relies on
		send := func(item I) error { return sendItem(r, r.out, slot, item) }
		if _, bytes := any(*slot).([]byte); bytes && r.ss.codec.direct == directBinary {
			send = func(item I) error {
				if b := *(*[]byte)(unsafe.Pointer(&item)); len(b) > wire.CoalesceMax {
					return r.out.sendBytes(r, b) // written as it is (I is []byte)
				}
				return sendItem(r, r.out, slot, item)
			}
		}
		res, err := h(ctx, p, send)
		if err != nil || void {
			return nil, err
		}
		return &res, nil
	})
}

// outStream is the sending side of a stream, in the worker: the credit
// its host has given it, and the items sent but not yet written. Items
// are appended, encoded, to an open batch (an array in the serializer's
// encoding: see wire.EachJSON and wire.EachCBOR); the session's write
// queue pulls the batch as one frame when it is about to write (it is a
// wire.Source). So a handler faster than the connection sends few frames
// of many items, and one slower than it has each item written at once.
type outStream struct {
	ss *session
	tx string

	mu      sync.Mutex
	items   int           // the credit left, in items
	bytes   int           //   and in bytes (negative after an overdraft)
	window  int           // the byte window: the first grant
	wake    chan struct{} // receives when credit comes
	plan    *itemPlan     // the items' fast path, set before the handler runs
	open    []byte        // the open batch: its array's start and elements
	n       int           // items in open
	spare   []byte        // the buffer of the batch pulled before, for the next (set by Pull)
	waiting int           // senders waiting for credit
	closed  []byte        // batches closed because they grew big, framed
	woken   bool          // the write queue will pull
	want    atomic.Bool   // the write queue found the lock held: wake it again
	sealed  bool          // the handler returned: no more items
	err     error         // a batch could not be framed
}

// itemPlan is the fast path of a stream's item type under a connection's
// serializer, found once per stream (see jsonfast.Plan and cborScalar).
type itemPlan struct {
	json jsonfast.Plan
	cbor cborScalar
}

func planFor[I any](c *codec) *itemPlan {
	switch c.direct {
	case directJSON:
		return &itemPlan{json: jsonfast.PlanFor(reflect.TypeFor[*I]())}
	case directBinary:
		return &itemPlan{cbor: cborScalarFor(reflect.TypeFor[I]())}
	}
	return &itemPlan{}
}

// append appends the encoding of the item at p, or reports false.
func (pl *itemPlan) append(dst []byte, p unsafe.Pointer) ([]byte, bool) {
	if out, ok := pl.json.Append(dst, p); ok {
		return out, true
	}
	return pl.cbor.append(dst, p)
}

// decode decodes data into the item at p, or reports false.
func (pl *itemPlan) decode(data []byte, p unsafe.Pointer) bool {
	return pl.json.Decode(data, p) || pl.cbor.decode(data, p)
}

// batchMax is the size at which a batch is closed and the next item
// starts another: frames stay well within any size limit and within what
// the write queue keeps of its buffers, and the first items of a big
// burst are not held back by the last.
const batchMax = 16 << 10

func newOutStream(ss *session, tx string) *outStream {
	// Buffers from the pool that seal gives back: a stream does not grow
	// its batches' memory from nothing.
	return &outStream{ss: ss, tx: tx, wake: make(chan struct{}, 1), open: (*getBuf())[:0], spare: (*getBuf())[:0]}
}

// grant adds credit.
func (o *outStream) grant(items, bytes int) {
	o.mu.Lock()
	if o.window == 0 {
		o.window = bytes
	}
	o.items += items
	o.bytes += bytes
	o.unlock()
	o.signal()
}

// unlock releases o.mu, and wakes the write queue again if it came for
// the items while the lock was held (see Pull).
func (o *outStream) unlock() {
	o.mu.Unlock()
	if o.want.Load() && o.want.CompareAndSwap(true, false) {
		o.ss.wq.Wake(o)
	}
}

func (o *outStream) signal() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// sendItem adds item to o's open batch once the host has room for it,
// waiting within r; slot holds the item while it is encoded. An item
// larger than the byte credit left goes when at least half the window is
// there: the host returns credit once half the window is taken, so a big
// item never waits for credit that will not come, and a stream holds at
// most the window plus one item.
func sendItem[I any](r *request, o *outStream, slot *I, item I) error {
	return o.withCredit(r, func() (sent, wake bool, err error) {
		var zero I
		*slot = item
		sent, wake, err = o.add(slot, unsafe.Pointer(slot))
		*slot = zero
		return sent, wake, err
	})
}

// withCredit runs add under o's lock until it has sent its item (or
// failed), waiting for credit, within r, each time it finds none: add
// reports whether it sent, and whether the write queue must be woken.
func (o *outStream) withCredit(r *request, add func() (sent, wake bool, err error)) error {
	for waited := false; ; {
		if r.ended.Load() { // Err without a clock read: the deadline's timer is armed
			return fmt.Errorf("worker: the stream has ended: %w", context.Cause(r))
		}
		o.mu.Lock()
		if waited {
			o.waiting--
		}
		sent, wake, err := add()
		more := o.waiting > 0 && o.items > 0 && o.bytes > 0
		if waited = !sent && err == nil; waited {
			o.waiting++
		}
		o.unlock()
		if more {
			o.signal() // another sender waits: one grant, one wake
		}
		if wake {
			o.ss.wq.Wake(o)
		}
		if !waited {
			return err
		}
		select {
		case <-o.wake:
		case <-r.Done():
		}
	}
}

// take takes the credit of an item of size bytes if there is room for
// it; see sendItem for when an item may overdraw. It needs o.mu.
func (o *outStream) take(size int) bool {
	if o.items <= 0 || o.bytes < size && 2*o.bytes < o.window {
		return false
	}
	o.items--
	o.bytes -= size
	return true
}

var errHandlerReturned = errors.New("worker: the stream has ended: its handler returned")

// sendBytes sends a big []byte item under Binary as a batch of its own
// whose frame ends with the item's bytes as they are, written without a
// copy (see codec.frameValue): the items before it go first.
func (o *outStream) sendBytes(r *request, b []byte) error {
	head := wire.AppendCBORHead(wire.AppendBinaryHead(wire.AppendPrefix(nil), typeItems, o.tx, 0), 4, 1)
	head = wire.AppendCBORHead(head, 2, uint64(len(b)))
	body := len(head) - wire.LengthPrefixSize + len(b)
	if body > o.ss.codec.max {
		return fmt.Errorf("%w: a stream item of %d bytes does not fit in a message (the limit is %d)", ErrTooLarge, len(b), o.ss.codec.max)
	}
	binary.BigEndian.PutUint32(head, uint32(body))
	size := len(b) + cborHeadSize(len(b)) // what the host counts
	var before []byte                     // the items sent before this one
	err := o.withCredit(r, func() (sent, wake bool, err error) {
		switch {
		case o.sealed:
			return false, false, errHandlerReturned
		case !o.take(size):
			return false, false, nil
		}
		before, o.closed = o.frame(o.closed), nil
		return true, false, nil
	})
	if err != nil {
		return err
	}
	if len(before) > 0 {
		o.ss.write(before, nil, time.Time{}, true)
	}
	if _, broken, err := o.ss.wq.Write(r.Done(), head, b, time.Time{}, false, false); err != nil {
		if broken {
			o.ss.conn.Close()
		}
		return fmt.Errorf("worker: the stream has ended: %w", err)
	}
	return nil
}

func cborHeadSize(n int) int { return len(wire.AppendCBORHead(make([]byte, 0, 9), 2, uint64(n))) }

// add encodes item, which is p, into the open batch if there is credit
// for it; ok reports that it did. It needs o.mu.
func (o *outStream) add(item any, p unsafe.Pointer) (ok, wake bool, err error) {
	if o.sealed {
		return false, false, errHandlerReturned
	}
	start := len(o.open)
	o.open = o.ss.codec.appendElem(o.open, o.n)
	at := len(o.open)
	var done bool
	if o.open, done = o.plan.append(o.open, p); !done {
		o.open, err = o.ss.codec.ser.AppendPayload(o.open, item)
	}
	size := len(o.open) - at
	switch {
	case err != nil:
		err = fmt.Errorf("worker: encoding a stream item: %w", err)
	case size > o.ss.codec.max-len(o.tx)-64:
		err = fmt.Errorf("%w: a stream item of %d bytes does not fit in a message (the limit is %d)", ErrTooLarge, size, o.ss.codec.max)
	case o.take(size):
		o.n++
		o.ss.codec.endElem(o.open, at)
		if len(o.open) >= batchMax {
			o.closed = o.frame(o.closed)
		}
		wake, o.woken = !o.woken, true
		return true, wake, nil
	}
	o.open = o.open[:start] // not sent: taken back
	return false, false, err
}

// frame appends the frame of the open batch, if it has items, to dst,
// and empties it. It needs o.mu.
func (o *outStream) frame(dst []byte) []byte {
	dst, err := o.frameOf(dst, o.open, o.n)
	if err != nil && o.err == nil {
		o.err = err
	}
	o.open, o.n = o.open[:0], 0
	return dst
}

// frameOf appends the frame of the batch open, of n items, to dst.
func (o *outStream) frameOf(dst, open []byte, n int) ([]byte, error) {
	if n == 0 {
		return dst, nil
	}
	payload, err := o.ss.codec.closeBatch(open)
	if err == nil {
		dst, err = o.ss.codec.frame(dst, typeItems, o.tx, payload, 0)
	}
	if err != nil {
		return dst, fmt.Errorf("worker: framing a batch of %d stream items: %w", n, err)
	}
	return dst, nil
}

// Pull implements wire.Source: the write queue takes the items sent so
// far. The open batch is framed outside the lock, while senders add to
// the spare buffer; its own buffer is the next spare.
func (o *outStream) Pull(dst []byte) []byte {
	if !o.mu.TryLock() {
		// Rather than wait for a sender, the queue asks the lock's holder
		// to wake it again once it lets go (see unlock): a writer that
		// waits here holds up every stream on the connection, and the
		// sender that meets its lock then, the stream.
		o.want.Store(true)
		if !o.mu.TryLock() {
			return dst
		}
	}
	o.want.Store(false)
	o.woken = false
	dst = append(dst, o.closed...)
	o.closed = o.closed[:0]
	open, n := o.open, o.n
	if n > 0 {
		o.open, o.n, o.spare = o.spare[:0], 0, nil
	}
	o.unlock()
	if n == 0 {
		return dst
	}
	dst, err := o.frameOf(dst, open, n)
	if err != nil {
		o.mu.Lock()
	} else if !o.mu.TryLock() {
		return dst // a sender holds the lock: the buffer is not reused
	}
	if err != nil && o.err == nil {
		o.err = err
	}
	if o.sealed {
		putBuf(&open)
	} else {
		o.spare = open[:0]
	}
	o.unlock()
	return dst
}

// seal ends the stream once its handler has returned: it returns the
// frames of the items not yet pulled, to be written before the reply,
// and the error that lost some, if any. Later sends fail.
func (o *outStream) seal() ([]byte, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.sealed = true
	frames := o.frame(o.closed)
	for _, b := range [][]byte{o.open, o.spare} {
		if b != nil {
			putBuf(&b) // nobody appends any more; a pull under way has its own
		}
	}
	o.closed, o.open, o.spare = nil, nil, nil
	return frames, o.err
}

// Progress is a report of a call's progress (see Report and WithProgress).
type Progress struct {
	// Done and Total count the work done and to do, in units of the
	// handler's choice; Total 0 means unknown.
	Done, Total int64
	// Message says what is being done, if anything.
	Message string
	// Attempt is set by the host: 1 for the call as first sent, N when it
	// was sent again after N-1 crashes (see CrashPolicy.Attempts). The
	// report that a call is being sent again has Done and Total 0.
	Attempt int
}

// Report reports the progress of the call whose handler's context is ctx
// to the caller, if it observes it (WithProgress). It does not wait, and
// does nothing outside a handler or when the host cannot receive it.
func Report(ctx context.Context, p Progress) {
	r, _ := ctx.Value(requestKey{}).(*request)
	if r == nil || r.ss == nil || !r.ss.streams || r.Err() != nil {
		return
	}
	p.Attempt = 0
	b, err := r.ss.codec.ser.AppendPayload(nil, &progressPayload{Done: p.Done, Total: p.Total, Message: p.Message})
	if err != nil {
		return
	}
	if frame, err := r.ss.codec.frame(nil, typeProgress, r.tx, b, 0); err == nil {
		r.ss.write(frame, nil, time.Time{}, true)
	}
}

type progressPayload struct {
	Done    int64  `json:"done" cbor:"done"`
	Total   int64  `json:"total" cbor:"total"`
	Message string `json:"message,omitempty" cbor:"message,omitempty"`
}

// requestKey finds a handler's request from its context, however wrapped.
type requestKey struct{}

// WithProgress returns a context whose calls report their progress to f:
// the worker's Report calls, in order, and, when a call is sent again
// after a crash, a report that says so (Attempt). f runs on a goroutine
// of its own; when it is slower than the reports, it gets the latest one
// (progress is a state, not a log). A call returns once f has had the
// reports that arrived before its reply. Use one such context per call:
// the attempt count is the context's.
func WithProgress(ctx context.Context, f func(Progress)) context.Context {
	return context.WithValue(ctx, progressKey{}, &progressObserver{f: f, attempt: 1})
}

type progressKey struct{}

// progressObserver delivers a call's progress to its WithProgress func.
type progressObserver struct {
	f       func(Progress)
	mu      sync.Mutex
	attempt int
	latest  Progress
	pending bool
	running bool
	idle    chan struct{} // closed when run returns
}

func observerOf(ctx context.Context) *progressObserver {
	o, _ := ctx.Value(progressKey{}).(*progressObserver)
	return o
}

// report delivers p, stamped with the attempt.
func (o *progressObserver) report(p Progress) {
	o.mu.Lock()
	defer o.mu.Unlock()
	p.Attempt = o.attempt
	o.latest, o.pending = p, true
	if !o.running {
		o.running, o.idle = true, make(chan struct{})
		go o.run(o.idle)
	}
}

// flush returns once the reports made so far have been delivered.
func (o *progressObserver) flush() {
	if o == nil {
		return
	}
	o.mu.Lock()
	running, idle := o.running, o.idle
	o.mu.Unlock()
	if running {
		<-idle
	}
}

// resent tells the observer that the call is sent again, as attempt n.
func (o *progressObserver) resent(n int) {
	if o == nil {
		return
	}
	o.mu.Lock()
	o.attempt = n
	o.mu.Unlock()
	o.report(Progress{Message: fmt.Sprintf("sent again after the worker crashed (attempt %d)", n)})
}

func (o *progressObserver) run(idle chan struct{}) {
	defer close(idle)
	for {
		o.mu.Lock()
		if !o.pending {
			o.running = false
			o.mu.Unlock()
			return
		}
		p := o.latest
		o.pending = false
		o.mu.Unlock()
		o.f(p)
	}
}

// Host returns, in a handler, a Caller for calls to the host that sent
// the handler's request, over the same connection: the host serves them
// with the handlers of its Options.Handlers, with the same contracts,
// errors, deadlines and cancellation. Its calls fail with ErrUnsupported
// when the host cannot take them (a TypeScript host), and with
// ErrNotConnected once the connection has ended. Outside a handler, it
// returns a Caller whose calls fail.
func Host(ctx context.Context) Caller {
	r, _ := ctx.Value(requestKey{}).(*request)
	if r == nil || r.ss == nil {
		return hostCaller{}
	}
	return hostCaller{ss: r.ss}
}

// revPrefix starts the transaction ids of calls from the worker to the
// host, so that neither side takes them for its own (a host's ids may not
// start with the reserved prefix).
const revPrefix = reservedPrefix + "r"

type hostCaller struct{ ss *session }

// Invoke implements Caller.
func (h hostCaller) Invoke(ctx context.Context, typ string, payload, out any) error {
	ss := h.ss
	switch _, stream := out.(*streamSink); {
	case ss == nil:
		return errors.New("worker: Host: the context is not a handler's")
	case !ss.streams:
		return ErrUnsupported
	case stream:
		return fmt.Errorf("%w: a handler cannot open a stream to its host; call it for each part instead", ErrUnsupported)
	}
	p, err := ss.codec.ser.AppendPayload(nil, payload)
	if err != nil {
		return fmt.Errorf("worker: %s: encoding payload: %w", typ, err)
	}
	tx := revPrefix + strconv.FormatUint(ss.revNext.Add(1), 36)
	d, _ := ctx.Deadline()
	frame, err := ss.codec.frame(nil, typ, tx, p, unixMilli(d))
	if err != nil {
		return fmt.Errorf("worker: %s: %w", typ, err)
	}
	ch := ss.rev.add(tx)
	if ch == nil {
		return fmt.Errorf("%w: the connection to the host has ended", ErrNotConnected)
	}
	ss.write(frame, nil, time.Time{}, false)
	select {
	case rep := <-ch:
		return ss.decodeRev(typ, rep, out)
	case <-ctx.Done():
		if ss.rev.remove(tx) {
			cp, _ := ss.codec.ser.AppendPayload(nil, &cancelPayload{Tx: tx})
			if f, err := ss.codec.frame(nil, typeCancel, revPrefix+"c"+tx, cp, 0); err == nil {
				ss.write(f, nil, time.Time{}, false)
			}
		}
		return context.Cause(ctx)
	}
}

// revReply is the host's reply to a call from the worker.
type revReply struct {
	typ     string
	payload []byte
	err     error // the connection ended
}

// revCalls are a session's calls to the host, by tx.
type revCalls struct {
	mu    sync.Mutex
	calls map[string]chan revReply
	ended error
}

func (rc *revCalls) add(tx string) chan revReply {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.ended != nil {
		return nil
	}
	if rc.calls == nil {
		rc.calls = make(map[string]chan revReply)
	}
	ch := make(chan revReply, 1)
	rc.calls[tx] = ch
	return ch
}

func (rc *revCalls) remove(tx string) bool {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	_, ok := rc.calls[tx]
	delete(rc.calls, tx)
	return ok
}

// deliver hands a reply to its call; it reports false for an unknown tx.
func (rc *revCalls) deliver(tx string, rep revReply) bool {
	rc.mu.Lock()
	ch := rc.calls[tx]
	delete(rc.calls, tx)
	rc.mu.Unlock()
	if ch != nil {
		ch <- rep
	}
	return ch != nil
}

// end fails every call in flight: the connection is gone.
func (rc *revCalls) end() {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.ended = fmt.Errorf("%w: the connection to the host has ended", ErrNotConnected)
	for tx, ch := range rc.calls {
		ch <- revReply{err: rc.ended}
		delete(rc.calls, tx)
	}
}

// decodeRev turns the host's reply to a call of type typ into its outcome.
func (ss *session) decodeRev(typ string, rep revReply, out any) error {
	if rep.err != nil {
		return rep.err
	}
	isErr, ok := replyKind([]byte(rep.typ), typ)
	switch {
	case !ok:
		return fmt.Errorf("%w: reply of type %q to a %q call to the host", ErrProtocol, rep.typ, typ)
	case isErr:
		var ep errorPayload
		if rep.payload != nil {
			if err := ss.codec.ser.DecodePayload(rep.payload, &ep); err != nil {
				return fmt.Errorf("%w: undecodable error reply to %q: %v", ErrProtocol, typ, err)
			}
		}
		return &RemoteError{Type: typ, Name: ep.Name, Message: ep.Message, Code: ep.Code, Stack: ep.Stack}
	case out != nil && rep.payload != nil:
		if err := ss.codec.ser.DecodePayload(rep.payload, out); err != nil {
			return fmt.Errorf("worker: %s: decoding the host's result: %w", typ, err)
		}
	}
	return nil
}

// isRev reports whether tx is a call from the worker to the host.
func isRev(tx []byte) bool { return strings.HasPrefix(string(tx), revPrefix) }

// openStream prepares a stream call on c: it binds sk to the connection
// and appends to dst the frame of the first credit, which goes before the
// request (the worker then knows the call for a stream). *tx is set.
func (c *Client) openStream(dst []byte, sk *streamSink, typ string, tx *string) ([]byte, error) {
	if !c.peer.stream {
		return dst, fmt.Errorf("%w: %s is a stream", ErrUnsupported, typ)
	}
	if *tx == "" {
		t, err := c.newTx(typ)
		if err != nil {
			return dst, err
		}
		*tx = t
	}
	id, win := *tx, [2]int{c.cfg.window, c.cfg.windowBytes}
	sk.bind(c.codec, win, func(items, bytes int) { c.sendCredit(id, items, bytes) }, c.fail)
	p, _ := c.cfg.ser.AppendPayload(nil, &creditPayload{Items: win[0], Bytes: win[1]})
	return c.codec.frame(dst, typeCredit, id, p, 0)
}

// newTx returns a transaction id for a new call of type typ.
func (c *Client) newTx(typ string) (string, error) {
	if c.cfg.tx == nil {
		return newUUID(), nil
	}
	tx := c.cfg.tx(&Message{Type: typ, ser: c.cfg.ser})
	if err := checkTx(tx); err != nil {
		return "", err
	}
	return tx, nil
}

// checkTx checks a transaction id from Options.NewTx.
func checkTx(tx string) error {
	switch {
	case !utf8.ValidString(tx) || tx == "":
		// The JSON wire would carry another tx, and the reply could never
		// be matched.
		return fmt.Errorf("worker: Options.NewTx returned %q: a transaction id must be non-empty valid UTF-8", tx)
	case strings.HasPrefix(tx, reservedPrefix):
		return fmt.Errorf("worker: Options.NewTx returned %q: ids starting with %q are reserved", tx, reservedPrefix)
	}
	return nil
}

// sendCredit gives the worker room for more items of the stream tx.
func (c *Client) sendCredit(tx string, items, bytes int) {
	p, _ := c.cfg.ser.AppendPayload(nil, &creditPayload{Items: items, Bytes: bytes})
	if frame, err := c.codec.frame(nil, typeCredit, tx, p, 0); err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, _ = c.write(ctx, frame, nil, time.Now().Add(time.Second), false, false)
	}
}

// control handles the extension messages that concern a call in flight
// without ending it (stream items, progress, a cancelled call to the
// host), and reports whether e was one.
func (c *Client) control(e *wire.Envelope) bool {
	switch string(e.Type) {
	case typeItems:
		if sk, _ := c.peek(e.Tx); sk != nil {
			sk.push(e.Payload, c.rd.Owned())
		}
	case typeProgress:
		if ctx := c.progressed(e.Tx); ctx != nil {
			if o := observerOf(ctx); o != nil {
				var p progressPayload
				if e.Payload != nil && c.cfg.ser.DecodePayload(e.Payload, &p) == nil {
					o.report(Progress{Done: p.Done, Total: p.Total, Message: p.Message})
				}
			}
		}
	case typeCancel:
		var p cancelPayload
		if e.Payload != nil && c.cfg.ser.DecodePayload(e.Payload, &p) == nil {
			c.served.cancel(p.Tx)
		}
	default:
		return false
	}
	return true
}

// peek returns the stream sink and context of the call of tx, if it is in
// flight, leaving it there. (The call itself is reused once it ends: only
// what it points to may be used after the shard's lock.)
func (c *Client) peek(tx []byte) (*streamSink, context.Context) {
	s := &c.pending[maphash.Bytes(pendingSeed, tx)%pendingShards]
	s.mu.Lock()
	defer s.mu.Unlock()
	if cl := s.m[string(tx)]; cl != nil {
		return cl.stream, cl.ctx
	}
	return nil, nil
}

// progressed marks the call of tx as one whose progress was reported,
// and returns its context; nil if it is not in flight.
func (c *Client) progressed(tx []byte) context.Context {
	s := &c.pending[maphash.Bytes(pendingSeed, tx)%pendingShards]
	s.mu.Lock()
	defer s.mu.Unlock()
	if cl := s.m[string(tx)]; cl != nil {
		cl.progressed = true
		return cl.ctx
	}
	return nil
}

// servedCalls are the calls from the worker that the host is running.
type servedCalls struct {
	mu      sync.Mutex
	cancels map[string]context.CancelFunc
}

func (sc *servedCalls) add(tx string, cancel context.CancelFunc) bool {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.cancels == nil {
		sc.cancels = make(map[string]context.CancelFunc)
	}
	if _, dup := sc.cancels[tx]; dup {
		return false
	}
	sc.cancels[tx] = cancel
	return true
}

// cancelAll cancels every call being run: the connection has ended.
func (sc *servedCalls) cancelAll() {
	sc.mu.Lock()
	fs := sc.cancels
	sc.cancels = nil
	sc.mu.Unlock()
	for _, f := range fs {
		f()
	}
}

func (sc *servedCalls) cancel(tx string) {
	sc.mu.Lock()
	f := sc.cancels[tx]
	delete(sc.cancels, tx)
	sc.mu.Unlock()
	if f != nil {
		f()
	}
}

// serve runs a call from the worker with the host's handler, and answers
// it on the connection.
func (c *Client) serve(e *wire.Envelope) {
	typ, tx := string(e.Type), string(e.Tx)
	var h *handler
	if c.cfg.handlers != nil {
		h = (*c.cfg.handlers.handlers.Load())[typ]
	}
	if h == nil || h.stream {
		go c.answer(tx, "", typ+"Error", nil, &RemoteError{Name: "Error", Message: unknownPrefix + typ, Code: codeUnknownMessage})
		return
	}
	var payload []byte
	if e.Payload != nil {
		payload = append([]byte(nil), e.Payload...)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if e.Deadline > 0 {
		ctx, cancel = context.WithDeadline(context.Background(), time.UnixMilli(e.Deadline))
	}
	if !c.served.add(tx, cancel) {
		cancel()
		return
	}
	go func() {
		defer c.served.cancel(tx)
		res, err := safeRun(ctx, h, c.cfg.ser, payload)
		if err != nil {
			err = contextError(ctx, err)
		}
		c.answer(tx, h.result, h.errType, res, err)
	}()
}

// answer writes the reply to a call from the worker: res as a reply of
// type typ, or err as one of type errType.
func (c *Client) answer(tx, typ, errType string, res any, err error) {
	var p []byte
	if err == nil && res != nil {
		if p, err = c.cfg.ser.AppendPayload(nil, res); err != nil {
			err = encodeError(err)
		}
	}
	if err != nil {
		typ = errType
		ep := toErrorPayload(err)
		p, _ = c.cfg.ser.AppendPayload(nil, &ep)
	}
	frame, ferr := c.codec.frame(nil, typ, tx, p, 0)
	if ferr != nil {
		c.cfg.log.warn("cannot encode the reply to a call from the worker", "type", typ, "err", ferr)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, _ = c.write(ctx, frame, nil, time.Time{}, false, false)
}
