package wire

import (
	"errors"
	"fmt"
	"net"
	"runtime"
	"slices"
	"sync"
	"time"
)

const (
	// CoalesceMax is the largest frame that a WriteQueue copies into its
	// queue; a larger one is written by its writer, without a copy.
	CoalesceMax = 32 << 10
	queueMax    = 64 << 10
)

// WriteQueue writes the frames of many goroutines to one connection, with
// group commit under load.
//
// A goroutine that finds nobody writing, and expects no other frame soon
// (it is alone), writes its frame itself, at once: a lone caller pays no
// extra hop or copy. Otherwise it copies its (small) frame into the queue
// and returns without waiting; a flusher goroutine, after yielding to the
// goroutines that are about to queue theirs, writes everything queued, as
// many frames per system call as there are, until the queue is empty.
// Under load, one write per frame becomes one write per batch.
//
// A queued frame can be taken back (Remove) as long as no byte of it has
// been written, so that a caller that gives up waiting does not have its
// request sent later; if the flusher is writing it, the write is
// interrupted (through the write deadline) and resumed without it.
//
// Memory is bounded: past queueMax queued bytes, writers wait. A frame
// larger than CoalesceMax is never copied: its writer waits until nobody
// writes and writes it itself; while it waits, nobody else queues, so that
// the queue drains. Waiting is cut short when the writer's done channel
// closes; the frame is then not sent.
type WriteQueue struct {
	Conn net.Conn
	// Broken is called, once, by the goroutine that finds that a write
	// failed in a way that breaks the stream (anything but a timeout before
	// the first byte of a frame); it must close the connection.
	Broken func(error)
	// TimeoutsBreak makes every failed write break the stream, timeouts
	// before the first byte included (a server's replies have no deadline:
	// a timeout there comes from a shutdown giving up on a stuck peer).
	TimeoutsBreak bool
	// FinishWithin, when positive, keeps the stream intact when a direct
	// write is cut by its deadline (or done) after some of the frame went
	// out: the rest is copied and written in the background, within this
	// time, while the writer returns ErrFinishing at once. A peer that
	// does not take the rest in time breaks the stream. Zero breaks the
	// stream at once, as any write cut in the middle of a frame must.
	FinishWithin time.Duration

	mu     sync.Mutex
	writer writer
	// The queue: whole frames in order; ends[i] is the end of frame i in
	// queued, ids[i] its ticket (0: cannot be taken back).
	queued []byte
	ends   []int
	ids    []uint64
	spare  batch // buffers of an earlier batch, for the next queue
	nextID uint64
	// The batch the flusher is writing, and the tickets that were taken
	// back while it was (see Remove).
	flying       []uint64
	interrupting bool
	unwanted     []uint64
	dropped      []uint64

	sources []Source // to be pulled before the next write (see Wake)

	bigWaiting int           // writers of big frames waiting to write
	wake       chan struct{} // closed when waiters may retry; nil if none
	err        error         // the stream broke: every write fails with it
}

type writer uint8

const (
	noWriter writer = iota
	directWriter
	flusher
)

type batch struct {
	b    []byte
	ends []int
	ids  []uint64
}

// ErrWaitCanceled reports that done was closed before the frame could be
// written or queued; nothing of it was sent.
var ErrWaitCanceled = errors.New("gave up waiting to write")

// ErrFinishing reports that the writer's deadline (or done) cut its write
// after part of the frame was written: the rest is being written in the
// background (see FinishWithin), so the frame will arrive whole, late.
var ErrFinishing = errors.New("the deadline passed while the frame was being written; the rest of it is written in the background")

// aLongTimeAgo is a deadline that interrupts a write at once.
var aLongTimeAgo = time.Unix(1, 0)

// Write writes frame whole, followed by tail, or queues it (a frame with a
// tail is big: it is never queued, nor tail copied). A nil error means written or
// queued (a queued frame that later fails to go out breaks the stream,
// which its writer learns from the connection); ticket, when not 0, takes
// a queued frame back (see Remove) if removable is set. Otherwise frame
// was not sent, and err is ErrWaitCanceled when done closed while waiting;
// a timeout (broken false) when deadline passed before any byte of it was
// written, which leaves the stream intact; ErrFinishing when it passed
// after some of it was (the frame will still go out whole, see
// FinishWithin); or the error that broke the stream (broken true; q.Broken
// has been called).
//
// deadline, if not zero, bounds the write of frame when this goroutine
// writes it itself.
func (q *WriteQueue) Write(done <-chan struct{}, frame, tail []byte, deadline time.Time, alone, removable bool) (ticket uint64, broken bool, err error) {
	ticket, queued, err := q.queueOrWait(done, frame, tail, alone, removable)
	if queued || err != nil {
		return ticket, err != nil && err != ErrWaitCanceled, err
	}
	broken, err = q.writeDirect(done, frame, tail, deadline)
	if err == ErrFinishing {
		return 0, false, err // the writer role went to the finishing goroutine
	}
	q.release()
	return 0, broken, err
}

// release gives up the direct writer role: to the flusher if frames were
// queued meanwhile, or to the writers waiting.
func (q *WriteQueue) release() {
	q.mu.Lock()
	if (len(q.queued) > 0 || len(q.sources) > 0) && q.err == nil {
		q.writer = flusher
		go q.flush()
	} else {
		q.writer = noWriter
		q.signal()
	}
	q.mu.Unlock()
}

// queueOrWait queues frame (queued is true) or waits until this goroutine
// may write it itself (queued and err are zero: it is then the direct
// writer). err is ErrWaitCanceled when done closed first, or the error
// that broke the stream.
func (q *WriteQueue) queueOrWait(done <-chan struct{}, frame, tail []byte, alone, removable bool) (ticket uint64, queued bool, err error) {
	big := len(frame)+len(tail) > CoalesceMax
	q.mu.Lock()
	defer q.mu.Unlock()
	for {
		if q.err != nil {
			return 0, false, q.err
		}
		if q.writer == noWriter && (big || alone && q.bigWaiting == 0) {
			q.writer = directWriter
			return 0, false, nil
		}
		if !big && q.bigWaiting == 0 && len(q.queued)+len(frame) <= queueMax {
			return q.enqueue(frame, removable), true, nil
		}
		if !q.waitLocked(done, big) {
			return 0, false, ErrWaitCanceled
		}
	}
}

// enqueue appends frame to the queue and starts the flusher if nobody
// writes. It needs q.mu.
func (q *WriteQueue) enqueue(frame []byte, removable bool) (ticket uint64) {
	if removable {
		q.nextID++
		ticket = q.nextID
	}
	q.queued = append(q.queued, frame...)
	q.ends = append(q.ends, len(q.queued))
	q.ids = append(q.ids, ticket)
	if q.writer == noWriter {
		q.writer = flusher
		go q.flush()
	}
	return ticket
}

// waitLocked waits, with q.mu released meanwhile, for the queue to change;
// it reports false if done closed first. A big frame's writer is counted
// while it waits, so that nobody else queues and the queue drains.
func (q *WriteQueue) waitLocked(done <-chan struct{}, big bool) bool {
	wake := q.waitChan()
	if big {
		q.bigWaiting++
	}
	q.mu.Unlock()
	canceled := false
	select {
	case <-wake:
	case <-done:
		canceled = true
	}
	q.mu.Lock()
	if big {
		q.bigWaiting--
		if canceled && q.bigWaiting == 0 {
			q.signal() // the small writers held back for it may go on
		}
	}
	return !canceled
}

// writeDirect writes frame and tail on the connection, as the direct
// writer, bounded by deadline or, without one, interrupted when done
// closes. It reports whether the failure, if any, broke the stream.
func (q *WriteQueue) writeDirect(done <-chan struct{}, frame, tail []byte, deadline time.Time) (broken bool, err error) {
	if !deadline.IsZero() {
		q.Conn.SetWriteDeadline(deadline)
	}
	var interrupt *writeInterrupt
	if deadline.IsZero() && done != nil {
		interrupt = q.interruptOn(done) // a cancellation without a deadline
	}
	var n int
	if tail == nil {
		n, err = q.Conn.Write(frame)
	} else {
		bufs := net.Buffers{frame, tail} // one writev where the connection has it
		var n64 int64
		n64, err = bufs.WriteTo(q.Conn)
		n = int(n64)
	}
	if interrupt.stop() || !deadline.IsZero() {
		q.Conn.SetWriteDeadline(time.Time{})
	}
	if err != nil && n > 0 && IsTimeout(err) && q.FinishWithin > 0 && !q.TimeoutsBreak {
		go q.finish(rest(frame, tail, n))
		return false, ErrFinishing
	}
	if err != nil && (n > 0 || !IsTimeout(err) || q.TimeoutsBreak) {
		q.fail(err)
		return true, err
	}
	return false, err
}

// rest copies what is left of frame and tail after n bytes: the caller
// reuses their memory once it returns.
func rest(frame, tail []byte, n int) []byte {
	if n < len(frame) {
		return append(append([]byte(nil), frame[n:]...), tail...)
	}
	return append([]byte(nil), tail[n-len(frame):]...)
}

// finish writes the rest of a frame whose writer gave up, as the direct
// writer, within FinishWithin; then it releases the writer role.
func (q *WriteQueue) finish(b []byte) {
	q.Conn.SetWriteDeadline(time.Now().Add(q.FinishWithin))
	_, err := q.Conn.Write(b)
	q.Conn.SetWriteDeadline(time.Time{})
	if err != nil {
		q.fail(fmt.Errorf("the peer did not read the rest of a frame within %v: %w", q.FinishWithin, err))
	}
	q.release()
}

// writeInterrupt cuts a blocked direct write short when its caller's
// context is cancelled: a context without a deadline cannot bound the
// write through the connection's write deadline by itself.
type writeInterrupt struct {
	quit, exited chan struct{}
	fired        bool
}

func (q *WriteQueue) interruptOn(done <-chan struct{}) *writeInterrupt {
	w := &writeInterrupt{quit: make(chan struct{}), exited: make(chan struct{})}
	go func() {
		defer close(w.exited)
		select {
		case <-done:
			w.fired = true
			q.Conn.SetWriteDeadline(time.Unix(1, 0))
		case <-w.quit:
		}
	}()
	return w
}

// stop ends the watch and reports whether it interrupted the write (the
// write deadline must then be cleared).
func (w *writeInterrupt) stop() bool {
	if w == nil {
		return false
	}
	close(w.quit)
	<-w.exited
	return w.fired
}

// flush writes the queue, batch after batch, until it is empty.
func (q *WriteQueue) flush() {
	for {
		// The goroutines made runnable with this one (the callers woken by
		// one read of replies, the handlers of one read of requests) run
		// first and queue their frames: the batch grows.
		runtime.Gosched()
		q.mu.Lock()
		if len(q.queued) == 0 && len(q.sources) == 0 || q.err != nil {
			break
		}
		b := batch{q.queued, q.ends, q.ids}
		q.queued, q.ends, q.ids = q.spare.b[:0], q.spare.ends[:0], q.spare.ids[:0]
		q.spare = batch{}
		q.flying = b.ids
		srcs := q.sources
		q.sources = nil
		q.signal() // room in the queue
		q.mu.Unlock()

		b = pull(b, srcs)
		if len(b.b) == 0 {
			q.mu.Lock()
			q.spare = batch{b.b[:0], b.ends[:0], b.ids[:0]} // nothing to write: keep the buffers
			q.mu.Unlock()
			continue
		}
		n, err := q.Conn.Write(b.b)

		q.mu.Lock()
		q.flying = nil
		interrupted := q.interrupting
		if interrupted {
			q.Conn.SetWriteDeadline(time.Time{})
			q.interrupting = false
		}
		if err != nil && !(interrupted && IsTimeout(err)) {
			q.mu.Unlock()
			q.fail(err)
			q.mu.Lock()
			break
		}
		if n < len(b.b) {
			q.requeue(b, n)
		} else if cap(b.b) <= 4*CoalesceMax {
			q.spare = batch{b.b[:0], b.ends[:0], b.ids[:0]}
		}
		q.signal() // removers waiting for the write to return
		q.mu.Unlock()
	}
	q.writer = noWriter
	q.signal()
	q.mu.Unlock()
}

// pull appends to b the frames of the sources woken (see Wake), in the
// order they were woken; they cannot be taken back.
func pull(b batch, srcs []Source) batch {
	for _, s := range srcs {
		n := len(b.b)
		if b.b = s.Pull(b.b); len(b.b) > n {
			b.ends = append(b.ends, len(b.b))
			b.ids = append(b.ids, 0)
		}
	}
	return b
}

// requeue puts back at the head of the queue what an interrupted write
// left of batch b after its first n bytes, less the frames taken back
// meanwhile. The rest of a frame cut in the middle cannot be taken back.
// It needs q.mu.
func (q *WriteQueue) requeue(b batch, n int) {
	k := 0
	for k < len(b.ends) && b.ends[k] <= n {
		k++
	}
	var nb batch
	start := n
	for i := k; i < len(b.ends); i++ {
		id := b.ids[i]
		if i == k && n > frameStart(b.ends, i) {
			id = 0 // partly written: it goes on
		} else if id != 0 && q.takeUnwanted(id) {
			q.dropped = append(q.dropped, id)
			start = b.ends[i]
			continue
		}
		nb.b = append(nb.b, b.b[start:b.ends[i]]...)
		nb.ends = append(nb.ends, len(nb.b))
		nb.ids = append(nb.ids, id)
		start = b.ends[i]
	}
	off := len(nb.b)
	nb.b = append(nb.b, q.queued...)
	for _, e := range q.ends {
		nb.ends = append(nb.ends, off+e)
	}
	nb.ids = append(nb.ids, q.ids...)
	q.queued, q.ends, q.ids = nb.b, nb.ends, nb.ids
}

func frameStart(ends []int, i int) int {
	if i == 0 {
		return 0
	}
	return ends[i-1]
}

func (q *WriteQueue) takeUnwanted(id uint64) bool {
	if i := slices.Index(q.unwanted, id); i >= 0 {
		q.unwanted = slices.Delete(q.unwanted, i, i+1)
		return true
	}
	return false
}

// A Source makes frames at the last moment: when the queue is about to
// write (see Wake).
type Source interface {
	// Pull appends the source's frames, if it has any, to dst and returns
	// it. It is called without the queue's lock held, by the goroutine
	// that writes.
	Pull(dst []byte) []byte
}

// Wake asks the queue to pull src's frames with its next write, after
// the frames queued by then (those queued after Wake included: a source
// whose frames must precede a frame of its own takes them back first, as
// a stream's end does): src has something to send, and whatever it
// adds before the pull goes in the same frames, so that a producer
// faster than the connection sends few big frames, not many small ones,
// while one slower than it has each frame written at once. A source may
// be woken again before its pull: a pull that finds nothing appends
// nothing.
func (q *WriteQueue) Wake(src Source) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.err != nil {
		return
	}
	q.sources = append(q.sources, src)
	if q.writer == noWriter {
		q.writer = flusher
		go q.flush()
	}
}

// Remove takes back the queued frame of ticket, unless its writing has
// begun. It reports whether it did: the frame will never be sent.
func (q *WriteQueue) Remove(ticket uint64) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	for {
		if i := slices.Index(q.dropped, ticket); i >= 0 {
			q.dropped = slices.Delete(q.dropped, i, i+1)
			return true
		}
		if i := slices.Index(q.ids, ticket); i >= 0 {
			start, end := frameStart(q.ends, i), q.ends[i]
			q.queued = append(q.queued[:start], q.queued[end:]...)
			q.ends = slices.Delete(q.ends, i, i+1)
			q.ids = slices.Delete(q.ids, i, i+1)
			for j := i; j < len(q.ends); j++ {
				q.ends[j] -= end - start
			}
			return true
		}
		if slices.Index(q.flying, ticket) < 0 {
			q.takeUnwanted(ticket)
			return false // written, or the stream broke
		}
		// The flusher is writing it: interrupt the write, which puts back
		// what it did not write, without this frame.
		if !slices.Contains(q.unwanted, ticket) {
			q.unwanted = append(q.unwanted, ticket)
		}
		if !q.interrupting {
			q.interrupting = true
			q.Conn.SetWriteDeadline(aLongTimeAgo)
		}
		wake := q.waitChan()
		q.mu.Unlock()
		<-wake
		q.mu.Lock()
	}
}

// Idle waits until nothing is queued or being written, or the stream broke.
func (q *WriteQueue) Idle() {
	q.mu.Lock()
	for q.err == nil && q.writer != noWriter {
		wake := q.waitChan()
		q.mu.Unlock()
		<-wake
		q.mu.Lock()
	}
	q.mu.Unlock()
}

// fail records that the stream broke and tells the owner, once.
func (q *WriteQueue) fail(err error) {
	q.mu.Lock()
	first := q.err == nil
	if first {
		q.err = err
		q.queued, q.ends, q.ids = nil, nil, nil
		q.unwanted, q.sources = nil, nil
		q.signal()
	}
	q.mu.Unlock()
	if first {
		q.Broken(err)
	}
}

// waitChan returns a channel that signal closes. It needs q.mu.
func (q *WriteQueue) waitChan() chan struct{} {
	if q.wake == nil {
		q.wake = make(chan struct{})
	}
	return q.wake
}

// signal wakes the waiting writers. It needs q.mu.
func (q *WriteQueue) signal() {
	if q.wake != nil {
		close(q.wake)
		q.wake = nil
	}
}

// IsTimeout reports whether err is a timeout of a deadline.
func IsTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
