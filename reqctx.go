package worker

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// request is one request being handled, and also its handler's context:
// one allocation for both. The context's Done channel is made only if the
// handler asks for it, and its deadline is the caller's; the timer that
// closes Done at the deadline is only armed then too (Err checks the
// clock).
type request struct {
	parent   context.Context
	deadline time.Time
	timer    *time.Timer

	mu    sync.Mutex
	done  chan struct{}
	err   error
	ended atomic.Bool // err is set: Err's fast path

	tx      string
	h       *handler
	ss      *session   // for streams, progress and calls to the host
	out     *outStream // a stream's, nil for an ordinary request
	payload *[]byte    // a copy of the payload, nil when the request had none
	owned   bool       // payload is the frame's own memory, not a pooled copy
	more    bool       // more requests were buffered behind it (see batched)

	txBuf [36]byte // holds tx when it fits (a UUID does): see setTx
}

// setTx sets r.tx to a copy of tx. One that fits is kept in r itself, so
// that it costs no allocation of its own: the string then points into r,
// whose txBuf is never written again.
func (r *request) setTx(tx []byte) {
	if len(tx) == 0 || len(tx) > len(r.txBuf) {
		r.tx = string(tx)
		return
	}
	n := copy(r.txBuf[:], tx)
	r.tx = unsafe.String(&r.txBuf[0], n)
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

func (r *request) Deadline() (time.Time, bool) { return r.deadline, !r.deadline.IsZero() }

func (r *request) Done() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done == nil {
		if r.err == nil && !r.deadline.IsZero() {
			if d := time.Until(r.deadline); d > 0 {
				r.timer = time.AfterFunc(d, func() { r.cancel(context.DeadlineExceeded) })
			} else {
				r.cancelLocked(context.DeadlineExceeded)
			}
		}
		if r.err != nil {
			return closedChan
		}
		r.done = make(chan struct{})
	}
	return r.done
}

func (r *request) Err() error {
	if r.deadline.IsZero() && !r.ended.Load() {
		return nil // a stream's handler asks once per item
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err == nil && !r.deadline.IsZero() && !time.Now().Before(r.deadline) {
		r.cancelLocked(context.DeadlineExceeded)
	}
	return r.err
}

func (r *request) Value(key any) any {
	if key == (requestKey{}) {
		return r
	}
	return r.parent.Value(key)
}

// cancel ends the context with err (context.Canceled or
// context.DeadlineExceeded); later calls do nothing.
func (r *request) cancel(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cancelLocked(err)
}

func (r *request) cancelLocked(err error) {
	if r.err != nil {
		return
	}
	r.err = err
	r.ended.Store(true)
	if r.done != nil {
		close(r.done)
	}
	if r.timer != nil {
		r.timer.Stop()
	}
}

// startDeadline ends the context at once if the deadline has passed; it
// must be called before the handler runs. A later deadline is armed when
// the handler asks for Done.
func (r *request) startDeadline() {
	if !r.deadline.IsZero() && time.Until(r.deadline) <= 0 {
		r.cancel(context.DeadlineExceeded)
	}
}

func (r *request) String() string { return "worker.request(" + r.tx + ")" }
