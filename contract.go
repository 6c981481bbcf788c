package worker

import (
	"context"
	"fmt"
	"strings"
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
