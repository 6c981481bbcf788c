package worker

import (
	"context"
	"fmt"
	"runtime/debug"
	"strings"
	"time"
)

// reservedPrefix starts the type names of the library's own control
// messages (handshake, cancellation, shutdown). User message types may not
// use it, so the two can never collide.
const reservedPrefix = "__iw."

// MessageType describes one message of a contract: its name on the wire, the
// payload type P the host sends and the result type R the worker answers
// with. Use Void as R for a message that has no result.
//
// Declare a contract once, as package-level variables in a package that
// both the host and the worker import:
//
//	var Ping = worker.Define[PingRequest, PingReply]("ping")
//
// Call and Handle take a MessageType, so the compiler checks the payload and
// result types on both sides.
type MessageType[P, R any] struct {
	name string
}

// Define declares a message type named name. It panics if name is empty or
// starts with the reserved prefix "__iw.": contracts are declared at init
// time, where a panic is the clearest report of a mistake.
func Define[P, R any](name string) MessageType[P, R] {
	switch {
	case name == "":
		panic("worker: Define: empty message name")
	case strings.HasPrefix(name, reservedPrefix):
		panic(fmt.Sprintf("worker: Define(%q): names starting with %q are reserved", name, reservedPrefix))
	}
	return MessageType[P, R]{name: name}
}

// Name returns the message's name on the wire.
func (m MessageType[P, R]) Name() string { return m.name }

// Void is the result type of a message that has no result. Its reply still
// travels (every request gets exactly one reply), without a payload.
type Void struct{}

// Call sends a request of type m with payload to the worker behind c and
// waits for its reply. It is safe to call from many goroutines at once; the
// calls share one connection and complete in whatever order the worker
// finishes them.
//
// Call returns the decoded result, or an error: a *RemoteError when the
// handler failed, a *CrashError when the worker died, ctx.Err() (possibly
// wrapped) when ctx ended first, or ErrClosed after Close. When ctx ends
// first and the worker supports it, the handler's context is cancelled too.
func Call[P, R any](ctx context.Context, c Caller, m MessageType[P, R], payload P) (R, error) {
	// One allocation for both: they escape through the Caller interface.
	b := &struct {
		p P
		r R
	}{p: payload}
	var out any = &b.r
	if _, void := any(b.r).(Void); void {
		out = nil
	}
	err := c.Invoke(ctx, m.name, &b.p, out)
	return b.r, err
}

// Caller is what Call sends through: a *Client, a *Worker, a *Pool, or a
// type of yours that wraps one (to count, trace, route or retry calls).
// Call is the typed way in; a wrapper's Invoke passes its arguments on
// unchanged.
type Caller interface {
	// Invoke sends a request of message type typ and waits for its reply.
	// payload points to the request's value; out points to where the
	// result is decoded, or is nil when the result is not wanted (Void).
	// It returns what Call documents.
	Invoke(ctx context.Context, typ string, payload, out any) error
}

// Message is the untyped view of any message, requests and replies alike,
// as middleware and serializers see it (the TypeScript library's
// AnyMessage).
type Message struct {
	// Type is the message type on the wire: "ping" for a request, and
	// "pingResult" or "pingError" for its reply.
	Type string
	// Tx is the transaction id that pairs a reply with its request.
	Tx string
	// Payload is encoded by the connection's serializer; nil means that the
	// message has no payload (a void result). An error reply's payload is
	// an object with the fields message, name, and optionally stack and
	// code.
	Payload []byte
	// Deadline is the caller's deadline, carried with requests to workers
	// that support it; zero otherwise.
	Deadline time.Time
	// Incoming is set on a message that was just read from the connection,
	// and clear on one about to be written.
	Incoming bool

	ser Serializer
}

// Decode decodes the payload into v with the connection's serializer.
func (m *Message) Decode(v any) error {
	if m.Payload == nil {
		return fmt.Errorf("worker: message %q has no payload", m.Type)
	}
	return m.serializer().DecodePayload(m.Payload, v)
}

// SetPayload replaces the payload with the encoding of v.
func (m *Message) SetPayload(v any) error {
	p, err := m.serializer().AppendPayload(nil, v)
	if err != nil {
		return err
	}
	m.Payload = p
	return nil
}

func (m *Message) serializer() Serializer {
	if m.ser == nil {
		return jsonSerializer{}
	}
	return m.ser
}

// Middleware observes or changes a message on its way in or out (see
// Message.Incoming). It may modify *m in place, including replacing it
// whole. An error fails the call the message belongs to (on a worker: the
// request gets an error reply) and never the connection. Middleware runs
// in the order given, on the goroutine that sends or receives the message,
// so it must not block for long. The library's own control messages are
// not shown to middleware.
type Middleware func(ctx context.Context, m *Message) error

// runMiddleware runs mw on a user message; the library's own control
// messages (handshake, cancel, shutdown) are not shown to middleware, which
// could otherwise break them.
func runMiddleware(ctx context.Context, mw []Middleware, m *Message) (err error) {
	if len(mw) == 0 || strings.HasPrefix(m.Type, reservedPrefix) {
		return nil
	}
	for i, f := range mw {
		if err = safeMiddleware(ctx, f, m); err != nil {
			return fmt.Errorf("worker: %s middleware %d on %q: %w", direction(m.Incoming), i, m.Type, err)
		}
	}
	return nil
}

func safeMiddleware(ctx context.Context, f Middleware, m *Message) (err error) {
	incoming := m.Incoming
	defer func() {
		if r := recover(); r != nil {
			err = &RemoteError{Name: "Panic", Message: fmt.Sprintf("panic in %s middleware: %v", direction(incoming), r),
				Code: codePanic, Stack: string(debug.Stack())}
		}
	}()
	return f(ctx, m)
}

func direction(incoming bool) string {
	if incoming {
		return "incoming"
	}
	return "outgoing"
}
