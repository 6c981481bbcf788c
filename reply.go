package worker

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"time"
)

// run runs r's handler and replies.
func (ss *session) run(r *request) {
	h, ser, start := r.h, ss.codec.ser, monotonic()
	defer func() {
		r.cancel(context.Canceled)
		<-ss.slots
		ss.reqs.wg.Done()
	}()
	if r.owned && ss.codec.direct == directBinary {
		ser = ownedBinary{} // the payload's memory is the request's own
	}
	var payload []byte
	if r.payload != nil {
		payload = *r.payload
	}
	if len(ss.s.cfg.mw) > 0 {
		m := Message{Type: h.name, Tx: r.tx, Payload: payload, Deadline: r.deadline, Incoming: true, ser: ser}
		if err := runMiddleware(r, ss.s.cfg.mw, &m); err != nil {
			ss.release(r)
			ss.untrack(r)
			ss.replyError(r, r.tx, h.errType, middlewareError(err))
			return
		}
		payload = m.Payload
	}
	res, err := safeRun(r, h, ser, payload)
	h.observe(monotonic() - start)
	if r.out != nil {
		err = ss.sealStream(r, err)
	}
	ss.release(r)
	ss.untrack(r)
	if err != nil {
		ss.replyError(r, r.tx, h.errType, contextError(r, err))
		return
	}
	ss.reply(r, res)
}

// sealStream writes the items of r's stream not yet written, before the
// reply; a stream that lost items fails with the reason.
func (ss *session) sealStream(r *request, err error) error {
	frames, lost := r.out.seal()
	if len(frames) > 0 {
		ss.write(frames, nil, time.Time{}, true) // copied or written when it returns
	}
	if frames != nil {
		putBuf(&frames)
	}
	if lost != nil && err == nil {
		return lost
	}
	return err
}

func safeRun(ctx context.Context, h *handler, ser Serializer, payload []byte) (res any, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = &RemoteError{Name: "Panic", Message: fmt.Sprintf("panic in handler %q: %v", h.name, p),
				Code: codePanic, Stack: string(debug.Stack())}
		}
	}()
	return h.run(ctx, ser, payload)
}

// reply sends r's result. An encoding failure becomes an error reply, so
// the caller always hears back.
func (ss *session) reply(r *request, res any) {
	h := r.h
	if !h.void && len(ss.s.cfg.mw) == 0 && ss.codec.direct != directNone {
		ss.replyDirect(r, res)
		return
	}
	var payload []byte
	pbuf := getBuf()
	defer putBuf(pbuf)
	if !h.void {
		p, err := ss.codec.ser.AppendPayload((*pbuf)[:0], res)
		if err != nil {
			ss.replyError(r, r.tx, h.errType, encodeError(err))
			return
		}
		*pbuf, payload = p, p
	}
	ss.send(r, r.tx, h.result, h.errType, payload)
}

// replyDirect sends r's result encoded straight into the frame.
func (ss *session) replyDirect(r *request, res any) {
	fbuf := getBuf()
	defer putBuf(fbuf)
	frame, tail, encErr, err := ss.codec.frameValue((*fbuf)[:0], r.h.result, r.tx, res, 0)
	*fbuf = frame
	switch {
	case encErr != nil:
		ss.replyError(r, r.tx, r.h.errType, encodeError(encErr))
	case err != nil:
		ss.replyError(r, r.tx, r.h.errType, tooLargeError(err))
	default:
		ss.write(frame, tail, time.Time{}, r.more)
	}
}

func encodeError(err error) error {
	return &RemoteError{Name: "EncodeError", Message: fmt.Sprintf("encoding the result: %v", err), Code: codeBadPayload}
}

func tooLargeError(err error) error {
	return &RemoteError{Name: "Error", Message: err.Error(), Code: codeTooLarge}
}

// replyError sends the error reply errType to the request tx.
func (ss *session) replyError(ctx context.Context, tx, errType string, err error) {
	ep := toErrorPayload(err)
	p, _ := ss.codec.ser.AppendPayload(nil, &ep)
	ss.send(ctx, tx, errType, "", p)
}

// send runs the outgoing middleware and writes one reply of type typ. For
// a result, errType is the type of the error reply that replaces it should
// it fail; it is empty when the reply is an error reply itself.
func (ss *session) send(ctx context.Context, tx, typ, errType string, payload []byte) {
	fbuf := getBuf()
	defer putBuf(fbuf)
	var frame []byte
	var err error
	if len(ss.s.cfg.mw) == 0 {
		frame, err = ss.codec.frame((*fbuf)[:0], typ, tx, payload, 0)
	} else {
		m := Message{Type: typ, Tx: tx, Payload: payload, ser: ss.codec.ser}
		if err := runMiddleware(ctx, ss.s.cfg.mw, &m); err != nil {
			if errType != "" {
				ss.replyError(ctx, tx, errType, middlewareError(err))
				return
			}
			ss.s.cfg.log.warn("outgoing middleware failed on an error reply; sending it unchanged", "tx", tx, "err", err)
		}
		frame, err = ss.codec.frameMessage((*fbuf)[:0], &m)
	}
	if err == nil && !ss.peer {
		ss.codec.warnNonASCII(frame, ss.s.cfg.log)
	}
	*fbuf = frame
	if errors.Is(err, ErrTooLarge) && errType != "" {
		ss.replyError(ctx, tx, errType, tooLargeError(err))
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
	if _, _, err := ss.wq.Write(nil, frame, tail, deadline, alone, false); err != nil {
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
	ep := errorPayload{Message: err.Error(), Name: "ProtocolError"}
	p, _ := ss.codec.ser.AppendPayload(nil, &ep)
	if frame, ferr := ss.codec.frame(nil, typeProtocolError, "", p, 0); ferr == nil {
		ss.write(frame, nil, time.Now().Add(time.Second), false)
	}
}
