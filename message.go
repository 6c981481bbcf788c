package worker

import (
	"context"
	"fmt"
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
	err := c.invoke(ctx, m.name, &b.p, out)
	return b.r, err
}

// Caller is what Call sends through: a *Client or a *Worker.
type Caller interface {
	invoke(ctx context.Context, typ string, payload, out any) error
}

// Handle registers h as the handler of m on s, replacing any earlier one.
// The worker runs handlers concurrently. (Requests of a type whose handler
// has been returning within about ten microseconds are run one after
// another by the goroutine that reads them, which saves a goroutine switch
// per call; should one of them block, the requests behind it wait about two
// milliseconds at most, once: from then on that type's requests each get a
// goroutine again, until it is quick again.) ctx is cancelled when the caller cancels, when the caller's deadline passes, or
// when the worker shuts down past its drain timeout. A panic in h is
// recovered and returned to the caller as a *RemoteError with the stack.
func Handle[P, R any](s *Server, m MessageType[P, R], h func(ctx context.Context, payload P) (R, error)) {
	_, void := any(*new(R)).(Void)
	s.register(m.name, void, func(ctx context.Context, ser Serializer, payload []byte) (any, error) {
		// One allocation for both: they escape through the Serializer.
		b := new(struct {
			p P
			r R
		})
		if payload != nil {
			if err := ser.DecodePayload(payload, &b.p); err != nil {
				return nil, &RemoteError{Name: "PayloadError", Code: CodeBadPayload,
					Message: fmt.Sprintf("invalid payload for %q: %v", m.name, err)}
			}
		}
		r, err := h(ctx, b.p)
		if err != nil || void {
			return nil, err
		}
		b.r = r
		return &b.r, nil
	})
}

// Direction tells a Middleware which way a message travels.
type Direction int

const (
	// Outgoing messages are about to be written to the connection.
	Outgoing Direction = iota
	// Incoming messages were just read from the connection.
	Incoming
)

// String returns "incoming" or "outgoing".
func (d Direction) String() string {
	if d == Incoming {
		return "incoming"
	}
	return "outgoing"
}

// Kind tells requests, results and error replies apart.
type Kind int

const (
	// KindRequest is a message sent by the host to have a handler run.
	KindRequest Kind = iota
	// KindResult is a successful reply; its Type is the request's plus "Result".
	KindResult
	// KindError is a failed reply; its Type is the request's plus "Error" and
	// its payload an ErrorPayload.
	KindError
)

// String returns "request", "result" or "error".
func (k Kind) String() string {
	return [...]string{"request", "result", "error"}[k]
}

// Message is the untyped view of any message, requests and replies alike,
// as middleware and serializers see it (the seed's AnyMessage).
type Message struct {
	Kind Kind
	// Type is the message type on the wire: "ping", "pingResult", "pingError".
	Type string
	// Tx is the transaction id that pairs a reply with its request.
	Tx string
	// Payload is encoded by the connection's serializer; nil means that the
	// message has no payload (a void result).
	Payload []byte
	// Deadline is the caller's deadline, carried with requests to workers
	// that support it; zero otherwise.
	Deadline time.Time

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
		return JSON{}
	}
	return m.ser
}

// Middleware observes or changes a message on its way in or out. It may
// modify *m in place, including replacing it whole. An error fails the call
// the message belongs to (on a worker: the request gets an error reply) and
// never the connection. Middleware runs in the order given, on the goroutine
// that sends or receives the message, so it must not block for long.
type Middleware func(ctx context.Context, dir Direction, m *Message) error

// ErrorPayload is the payload of an error reply (the protocol's
// SerializedError). Stack and Code are optional.
type ErrorPayload struct {
	Message string `json:"message" cbor:"message"`
	Name    string `json:"name" cbor:"name"`
	Stack   string `json:"stack,omitempty" cbor:"stack,omitempty"`
	Code    string `json:"code,omitempty" cbor:"code,omitempty"`
}
