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
	"sync/atomic"
	"time"

	"github.com/isolated-workers/worker/internal/wire"
)

// The library's own message types. A TypeScript worker answers them with
// "Unknown message type", which is how a host learns that the peer speaks
// only the base protocol.
const (
	typeHello    = reservedPrefix + "hello"    // handshake, always one JSON line each way
	typeCancel   = reservedPrefix + "cancel"   // host -> worker: cancel the handler of a tx; no reply
	typeShutdown = reservedPrefix + "shutdown" // host -> worker: drain and exit; replied to
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

// peerInfo is what the handshake taught the host about its worker.
type peerInfo struct {
	extended  bool // answered the handshake; false for a base-protocol peer
	id        string
	pid       int
	keepAlive bool
	cancel    bool
	deadline  bool
	shutdown  bool
}

// handshake runs the host's side of the handshake on conn and returns what
// it learned, plus any bytes read past the reply.
func handshake(ctx context.Context, conn net.Conn, ser Serializer, secret, id string, max int) (peerInfo, []byte, error) {
	if d, ok := ctx.Deadline(); ok {
		conn.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	p, rest, err := exchangeHello(ctx, conn, ser, secret, id, max)
	if !stop() && err == nil {
		// ctx ended as the handshake finished: its deadline may land on
		// the connection at any moment now, so the connection is unusable.
		err = handshakeErr(ctx, context.Cause(ctx))
	}
	conn.SetDeadline(time.Time{})
	return p, rest, err
}

// exchangeHello sends the hello and reads the reply; handshake bounds it.
func exchangeHello(ctx context.Context, conn net.Conn, ser Serializer, secret, id string, max int) (peerInfo, []byte, error) {
	tx := newUUID()
	payload, _ := json.Marshal(helloRequest{Protocol: protocolVersion, Serializer: ser.Name(),
		Secret: secret, ID: id, Capabilities: []string{capCancel, capDeadline, capShutdown}})
	line := append(wire.AppendJSON(nil, typeHello, tx, payload, 0), '\n')
	if _, err := conn.Write(line); err != nil {
		return peerInfo{}, nil, handshakeErr(ctx, err)
	}
	rd := wire.NewReader(conn, newline, max)
	frame, err := rd.Next()
	if err != nil {
		return peerInfo{}, nil, handshakeErr(ctx, err)
	}
	var e wire.Envelope
	if err := wire.ParseJSON(frame, &e); err != nil || string(e.Tx) != tx {
		return peerInfo{}, nil, fmt.Errorf("%w: unexpected handshake reply %.200q", ErrProtocol, frame)
	}
	rest := append([]byte(nil), rd.Buffered()...)
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
		Pid: os.Getpid(), KeepAlive: ss.s.cfg.keepAlive, Capabilities: []string{capCancel, capDeadline, capShutdown}})
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
