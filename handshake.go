package worker

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"sync/atomic"
	"time"

	"github.com/isolated-workers/worker/internal/wire"
)

// The library's own message types. A host that spawned its worker sends
// none of them until the worker has greeted it (a TypeScript worker never
// does, and so never sees one); on a bare connection (NewClient), a
// TypeScript worker answers the hello with "Unknown message type", which is
// how the host learns that the peer speaks only the base protocol.
const (
	typeGreeting = reservedPrefix + "greeting" // worker -> host, first, when the startup data asks: "I speak the extensions"
	typeHello    = reservedPrefix + "hello"    // handshake, always one JSON line each way
	typeCancel   = reservedPrefix + "cancel"   // host -> worker: cancel the handler of a tx; no reply
	typeShutdown = reservedPrefix + "shutdown" // host -> worker: drain and exit; replied to
	// host -> worker: a liveness probe, answered at once by the reader with
	// typePing+"Result", whatever the handlers are doing.
	typePing = reservedPrefix + "ping"
	// host -> worker: the stacks of the goroutines that run the handler of
	// a message type; replied to.
	typeGoroutines = reservedPrefix + "goroutines"
	// Streams: the host gives credit (before the request, then as it
	// consumes), the worker sends items; both carry the stream's tx.
	typeCredit = reservedPrefix + "credit" // host -> worker: {"items":N,"bytes":B}
	typeItems  = reservedPrefix + "items"  // worker -> host: a batch of items, an array
	// worker -> host: a handler's progress, with its request's tx.
	typeProgress = reservedPrefix + "progress"
)

// helloPrefix starts every handshake request: a worker recognises the
// handshake by these bytes whatever its serializer, since no length-prefixed
// frame under 2 GiB starts with '{'.
const helloPrefix = `{"type":"` + typeHello + `"`

const protocolVersion = 1

// Capabilities a Go worker announces in its hello reply.
const (
	capCancel   = "cancel"
	capDeadline = "deadline"
	capShutdown = "shutdown"
	capProbe    = "probe"  // typePing and typeGoroutines
	capStream   = "stream" // streams (typeItems, typeCredit), typeProgress, calls to the host
)

// Codes of handshake failures.
const (
	codeUnauthorized = "E_UNAUTHORIZED"
	codeMismatch     = "E_SERIALIZER_MISMATCH"
)

type helloRequest struct {
	Protocol     int      `json:"protocol"`
	Serializer   string   `json:"serializer"`
	Secret       string   `json:"secret,omitempty"`
	ID           string   `json:"id,omitempty"` // the worker identity the host expects; empty: any
	Capabilities []string `json:"capabilities"`
}

type helloReply struct {
	Protocol     int      `json:"protocol"`
	Serializer   string   `json:"serializer"`
	ID           string   `json:"id,omitempty"`
	Pid          int      `json:"pid"`
	KeepAlive    bool     `json:"keepAlive"`
	Capabilities []string `json:"capabilities"`
}

// greetingLine is what a worker that the startup data asks to greet writes
// first on every connection: one JSON line, whatever the serializer, like
// the rest of the handshake.
var greetingLine = append(wire.AppendJSON(nil, typeGreeting, "", []byte(`{"protocol":1}`), 0), '\n')

// greetWait bounds how long a host waits for a spawned worker to greet it
// before it takes the worker for a base-protocol peer (a TypeScript worker),
// unless the worker has said on its ready pipe that it is one of ours.
const greetWait = 50 * time.Millisecond

// greeting is how a host learns whether the worker it spawned speaks the
// extensions, without sending it anything first.
type greeting struct {
	wait time.Duration // how long to wait for the greeting of a worker not known to be ours
	// expect tells what to expect of the worker, from what it has said on
	// its ready pipe so far: a greeting (greets), or the hello reply of an
	// older worker of ours, which does not greet (ours and not greets).
	expect func() (greets, ours bool)
}

// peerInfo is what the handshake taught the host about its worker.
type peerInfo struct {
	extended  bool // answered the handshake; false for a base-protocol peer
	id        string
	pid       int
	keepAlive bool
	cancel    bool
	deadline  bool
	shutdown  bool
	probe     bool
	stream    bool
}

// handshake runs the host's side of the handshake on conn and returns what
// it learned, plus any bytes read past the reply. With g, for a worker this
// host spawned, it first waits for the worker's greeting, and sends nothing
// at all to a worker that does not greet: a base-protocol peer, whatever
// its serializer and middleware, never sees a message of ours, nor the
// secret.
func handshake(ctx context.Context, conn net.Conn, ser Serializer, secret, id string, max int, g *greeting) (peerInfo, []byte, error) {
	if d, ok := ctx.Deadline(); ok {
		conn.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	rd := wire.NewReader(conn, newline, max)
	p, rest, err := peerInfo{keepAlive: true}, []byte(nil), error(nil)
	extended := true
	if g != nil {
		extended, err = awaitGreeting(ctx, conn, rd, g)
	}
	if extended && err == nil {
		p, rest, err = exchangeHello(ctx, conn, rd, ser, secret, id)
	}
	if !stop() && err == nil {
		// ctx ended as the handshake finished: its deadline may land on
		// the connection at any moment now, so the connection is unusable.
		err = handshakeErr(ctx, context.Cause(ctx))
	}
	conn.SetDeadline(time.Time{})
	return p, rest, err
}

// awaitGreeting reads the greeting of a spawned worker. It reports false,
// having read nothing, when the worker did not greet within g.wait and has
// not said that it is ours: a base-protocol peer. A worker that is ours is
// waited for as long as ctx allows.
func awaitGreeting(ctx context.Context, conn net.Conn, rd *wire.Reader, g *greeting) (bool, error) {
	if greets, ours := g.expect(); ours && !greets {
		return true, nil // an older worker of ours: it waits for the hello
	}
	deadline, _ := ctx.Deadline()
	conn.SetReadDeadline(time.Now().Add(g.wait))
	for {
		frame, err := rd.Next()
		if err == nil {
			var e wire.Envelope
			if err := wire.ParseJSON(frame, &e); err != nil || string(e.Type) != typeGreeting {
				return false, fmt.Errorf("%w: the worker spoke first, but not a greeting: %.200q", ErrProtocol, frame)
			}
			conn.SetReadDeadline(deadline)
			if ctx.Err() != nil {
				conn.SetReadDeadline(time.Unix(1, 0)) // ctx ended as the deadline was reset
			}
			return true, nil
		}
		if !wire.IsTimeout(err) || ctx.Err() != nil {
			return false, handshakeErr(ctx, err)
		}
		if greets, _ := g.expect(); !greets && len(rd.Buffered()) == 0 {
			return false, nil // silent: a base-protocol peer
		}
		conn.SetReadDeadline(deadline) // ours, or part of a greeting has come: it is on its way
		if ctx.Err() != nil {
			conn.SetReadDeadline(time.Unix(1, 0))
		}
	}
}

// exchangeHello sends the hello and reads the reply from rd; handshake
// bounds it. A greeting that comes first (from a worker that greets every
// connection, when this host did not wait for it) is skipped.
func exchangeHello(ctx context.Context, conn net.Conn, rd *wire.Reader, ser Serializer, secret, id string) (peerInfo, []byte, error) {
	tx := newUUID()
	payload, _ := json.Marshal(helloRequest{Protocol: protocolVersion, Serializer: ser.Name(),
		Secret: secret, ID: id, Capabilities: []string{capCancel, capDeadline, capShutdown, capProbe, capStream}})
	line := append(wire.AppendJSON(nil, typeHello, tx, payload, 0), '\n')
	// Written while the reply is read: a worker may be writing its
	// greeting meanwhile, and a pipe without a buffer (Windows) would
	// hold both writers forever. On failure, newClient closes conn, which
	// ends the write.
	written := make(chan error, 1)
	go func() { _, err := conn.Write(line); written <- err }()
	var e wire.Envelope
	for {
		frame, err := rd.Next()
		if err != nil {
			return peerInfo{}, nil, handshakeErr(ctx, err)
		}
		if err := wire.ParseJSON(frame, &e); err == nil && string(e.Type) == typeGreeting {
			continue
		}
		if err != nil || string(e.Tx) != tx {
			return peerInfo{}, nil, fmt.Errorf("%w: unexpected handshake reply %.200q", ErrProtocol, frame)
		}
		break
	}
	if err := <-written; err != nil { // done: the worker has read the hello
		return peerInfo{}, nil, handshakeErr(ctx, err)
	}
	rest := append([]byte(nil), rd.Buffered()...)
	return helloOutcome(&e, rest)
}

// helloOutcome reads the worker's reply to the hello.
func helloOutcome(e *wire.Envelope, rest []byte) (peerInfo, []byte, error) {
	switch string(e.Type) {
	case typeHello + "Result":
		var r helloReply
		if err := json.Unmarshal(e.Payload, &r); err != nil {
			return peerInfo{}, nil, fmt.Errorf("%w: bad handshake reply: %v", ErrProtocol, err)
		}
		p := peerInfo{extended: true, id: r.ID, pid: r.Pid, keepAlive: r.KeepAlive}
		for _, c := range r.Capabilities {
			switch c {
			case capCancel:
				p.cancel = true
			case capDeadline:
				p.deadline = true
			case capShutdown:
				p.shutdown = true
			case capProbe:
				p.probe = true
			case capStream:
				p.stream = true
			}
		}
		return p, rest, nil
	case typeHello + "Error":
		var ep errorPayload
		_ = json.Unmarshal(e.Payload, &ep)
		re := &RemoteError{Type: typeHello, Name: ep.Name, Message: ep.Message, Code: ep.Code}
		switch {
		case errors.Is(re, ErrUnknownMessage):
			// A base-protocol peer (the TypeScript library): it keeps
			// listening after a disconnect, so it is keep-alive.
			return peerInfo{keepAlive: true}, rest, nil
		case ep.Code == codeUnauthorized:
			return peerInfo{}, nil, fmt.Errorf("%w: %s", ErrUnauthorized, ep.Message)
		case ep.Code == codeMismatch:
			return peerInfo{}, nil, fmt.Errorf("%w: %s", ErrSerializerMismatch, ep.Message)
		}
		return peerInfo{}, nil, fmt.Errorf("worker: handshake refused: %w", re)
	}
	return peerInfo{}, nil, fmt.Errorf("%w: unexpected handshake reply type %q", ErrProtocol, e.Type)
}

func handshakeErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("worker: handshake: %w", context.Cause(ctx))
	}
	return fmt.Errorf("worker: handshake: %w", err)
}

// verifyHello checks a host's hello on the worker side; it returns the
// error code and message to refuse it with, or "" to accept.
func verifyHello(h *helloRequest, ser Serializer, secret, id string) (code, msg string) {
	switch {
	case secret != "" && subtle.ConstantTimeCompare([]byte(h.Secret), []byte(secret)) != 1:
		return codeUnauthorized, "the host did not present this worker's secret"
	case h.ID != "" && h.ID != id:
		return codeUnauthorized, fmt.Sprintf("this is worker %q, not %q", id, h.ID)
	case h.Serializer != ser.Name():
		return codeMismatch, fmt.Sprintf("host uses %s, worker uses %s; configure the same serializer on both sides", h.Serializer, ser.Name())
	}
	return "", ""
}

// typeProtocolError is sent by a worker to an extended host, with an empty
// tx, right before it closes a connection whose stream it cannot trust.
const typeProtocolError = reservedPrefix + "protocolError"

// helloTimeout bounds the handshake of a worker that requires its host's
// secret.
const helloTimeout = 10 * time.Second

// procState is what Serve hands each session of a worker process: what
// the handshake checks (the secret and identity from the startup data, a
// serializer mismatch to report) and when it may answer. A bare
// connection (ServeConn) has none.
type procState struct {
	secret, id string
	greet      bool            // the host waits for this worker to speak first (greetingLine)
	mismatch   error           // the host announced another serializer
	sigReady   <-chan struct{} // closed once SIGTERM is handled: the hello reply waits for it
	served     atomic.Bool     // a host completed a connection
}

// greet handles the optional handshake on the worker's side. It returns
// the bytes already read that belong to the request stream.
func (ss *session) greet() ([]byte, error) {
	ps := ss.proc
	if ps == nil {
		ps = &procState{} // a bare connection: nothing to check
	}
	if ps.secret != "" {
		// Only a host with the secret may stay: a connection that does not
		// authenticate in time is dropped, so that it cannot keep a worker
		// alive after its real host has gone.
		ss.conn.SetReadDeadline(time.Now().Add(helloTimeout))
		defer ss.conn.SetReadDeadline(time.Time{})
	}
	if ps.greet {
		if _, err := ss.conn.Write(greetingLine); err != nil {
			return nil, fmt.Errorf("worker: greeting the host: %w", err)
		}
	}
	head, isHello, err := peekHello(ss.conn)
	switch {
	case err != nil:
		return nil, err
	case isHello:
		return ss.answerHello(head, ps)
	case ps.mismatch != nil:
		return nil, ps.mismatch
	case ps.secret != "":
		ss.s.cfg.log.warn("refused a connection that did not present the secret")
		return nil, fmt.Errorf("%w: the host did not authenticate", ErrUnauthorized)
	}
	return head, nil
}

// answerHello reads the rest of the host's hello, which starts with head,
// and answers it.
func (ss *session) answerHello(head []byte, ps *procState) ([]byte, error) {
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
	if code, msg := verifyHello(&h, ss.s.cfg.ser, ps.secret, ps.id); code != "" {
		ss.s.cfg.log.warn("refused a host", "reason", msg)
		p, _ := json.Marshal(errorPayload{Message: msg, Name: "HandshakeError", Code: code})
		ss.conn.Write(append(wire.AppendJSON(nil, typeHello+"Error", string(e.Tx), p, 0), '\n'))
		if code == codeUnauthorized {
			return nil, fmt.Errorf("%w: %s", ErrUnauthorized, msg)
		}
		return nil, fmt.Errorf("%w: %s", ErrSerializerMismatch, msg)
	}
	if ps.sigReady != nil {
		<-ps.sigReady
	}
	p, _ := json.Marshal(helloReply{Protocol: protocolVersion, Serializer: ss.s.cfg.ser.Name(), ID: ps.id,
		Pid: os.Getpid(), KeepAlive: ss.s.cfg.keepAlive, Capabilities: []string{capCancel, capDeadline, capShutdown, capProbe, capStream}})
	if _, err := ss.conn.Write(append(wire.AppendJSON(nil, typeHello+"Result", string(e.Tx), p, 0), '\n')); err != nil {
		return nil, fmt.Errorf("worker: answering the handshake: %w", err)
	}
	ss.peer = true
	ss.streams = slices.Contains(h.Capabilities, capStream)
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
