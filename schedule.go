package worker

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/isolated-workers/worker/internal/wire"
)

// How a session schedules its requests: one goroutine at a time reads
// (the reader role); requests of quick handler types are run by the reader
// itself under a lease, the others by goroutines kept idle for the
// purpose. See the session type.

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

// inline reports whether requests of h's type are quick enough to be run
// by the reader.
func (h *handler) inline() bool { return h.quick.Load() >= quickInline }

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
		if ss.rd.Owned() {
			*e = wire.Envelope{} // lets go of the last frame, which was big
		}
		ss.slots <- struct{}{}
		frame, err := ss.rd.Next()
		if err != nil {
			<-ss.slots
			if errors.Is(err, io.EOF) && halfClosed(ss.conn) {
				ss.ended <- errHalfClosed // see session.finish
				return nil, 0
			}
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
			return r, ss.leases.take(r.h)
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

// leases are the reader's leases of one session: the right to run a quick
// request itself, bounded by a watch that ends a lease held too long.
// Leases are numbered; the holder and the watch both end a lease by its
// number, so exactly one of them does.
type leases struct {
	held     atomic.Uint64           // the number of the lease held (no reader reads meanwhile); 0: none
	seq      atomic.Uint64           // leases taken so far
	seen     atomic.Uint64           // seq at the watch's previous look
	handler  atomic.Pointer[handler] // the handler of the lease held
	watching atomic.Bool             // timer is armed
	timer    *time.Timer             // runs the watch
}

// take starts a lease for a request of h's type, makes sure that the
// watch runs, and returns the lease's number.
func (l *leases) take(h *handler) uint64 {
	n := l.seq.Add(1)
	l.handler.Store(h)
	l.held.Store(n)
	if !l.watching.Load() && l.watching.CompareAndSwap(false, true) {
		l.timer.Reset(leaseTime)
	}
	return n
}

// end ends lease n for its holder; it reports false if the watch ended it
// first.
func (l *leases) end(n uint64) bool { return l.held.CompareAndSwap(n, 0) }

// look is the watch's look at the leases: it ends and returns the handler
// of a lease held since before its previous look (expired), and tells
// whether the watch must run again (a lease was taken since, or is held).
func (l *leases) look() (expired *handler, again bool) {
	held := l.held.Load()
	seq := l.seq.Load()
	prev := l.seen.Swap(seq)
	switch {
	case held != 0 && held <= prev && l.held.CompareAndSwap(held, 0):
		return l.handler.Load(), true
	case seq == prev && held == 0:
		l.watching.Store(false)
		// A lease taken meanwhile may have seen watching still set.
		return nil, l.held.Load() != 0 && l.watching.CompareAndSwap(false, true)
	}
	return nil, true
}

// runLeased runs r in the reader goroutine under lease n, which read took.
// It reports whether this goroutine is still the reader: it is unless the
// watch ended the lease first, and gave the role to another goroutine.
// Running r here rather than passing the role on first saves waking a
// goroutine on another thread just to wait for the next request, which is
// much of the cost of a small call.
func (ss *session) runLeased(r *request, n uint64) bool {
	ss.run(r)
	return ss.leases.end(n)
}

// watchLeases runs every leaseTime while leases are being taken. A lease
// held since before its previous look has lasted too long (its request's
// handler blocks, or its reply does): it ends it, passes the reader role
// on, so that the requests behind it and any cancellation of it are read,
// and stops running the type's requests in the reader (its score drops to
// 0), so that a handler that has begun to block holds up the connection
// once, not once per request. When no lease was taken since its previous
// look it stops, so an idle session costs nothing; leases.take starts it
// again.
func (ss *session) watchLeases() {
	expired, again := ss.leases.look()
	if expired != nil {
		expired.quick.Store(0)
		ss.give(nil)
	}
	if again {
		ss.leases.timer.Reset(leaseTime)
	}
}
