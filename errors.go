package worker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/isolated-workers/worker/internal/wire"
)

var (
	// ErrClosed is returned by calls on a Client or Worker that was closed,
	// and by calls that were pending when it was closed.
	ErrClosed = errors.New("worker: closed")

	// ErrCrashed matches (with errors.Is) every *CrashError: the worker
	// process died or its connection was lost without being asked to.
	ErrCrashed = errors.New("worker: crashed")

	// ErrStuck matches the *CrashError of a worker that was declared stuck
	// and killed (see Options.StuckTimeout): its Goroutines field holds
	// the stacks of the handler that did not return.
	ErrStuck = errors.New("worker: stuck")

	// ErrPoolFull is returned by a call to a Pool whose queue is full (see
	// PoolOptions.MaxQueue and WaitWhenFull): nothing was sent; try again
	// later, or let calls wait.
	ErrPoolFull = errors.New("worker: the pool's queue is full")

	// ErrCallTimeLimit matches the *CrashError of a call that ran past
	// PoolOptions.CallTimeLimit, and of the other calls of the member that
	// was killed for it.
	ErrCallTimeLimit = errors.New("worker: call time limit exceeded")

	// ErrSerializerMismatch is returned when the host and the worker were
	// configured with different serializers.
	ErrSerializerMismatch = errors.New("worker: serializer mismatch")

	// ErrNotKeepAlive is returned by Disconnect and Reconnect on a worker
	// whose disconnect behaviour is shutdown: it would exit when the
	// connection closes.
	ErrNotKeepAlive = errors.New("worker: the worker exits when its host disconnects (it is not keep-alive)")

	// ErrNotConnected is returned by calls made while the host is
	// disconnected from a keep-alive worker.
	ErrNotConnected = errors.New("worker: not connected")

	// ErrProtocol matches errors caused by a peer that broke the protocol.
	// A frame that cannot be parsed or is too large closes the connection,
	// since the stream can no longer be trusted, and fails every call in
	// flight; a single reply of the wrong type, or an undecodable error
	// reply, fails only its own call. A crash policy does not retry these.
	ErrProtocol = errors.New("worker: protocol error")

	// ErrUnauthorized is returned when the worker refused the host's
	// credentials (wrong secret, other user, other worker identity).
	ErrUnauthorized = errors.New("worker: unauthorized")

	// ErrNotWorker is returned by Server.Serve in a process that was not
	// started as a worker: the startup environment variables are missing.
	ErrNotWorker = errors.New("worker: this process was not started as a worker (" + wire.EnvStartupData + " is not set)")

	// The errors below carry a code on the wire (see NewError): a
	// *RemoteError from a worker matches them with errors.Is.

	// ErrUnknownMessage matches the error reply to a message type the worker
	// has no handler for (a TypeScript worker's too).
	ErrUnknownMessage = NewError(codeUnknownMessage, "worker: unknown message type")

	// ErrTooLarge is returned by a call whose request exceeds the maximum
	// message size: nothing was sent and the connection stays usable. It
	// also matches the error reply of a worker whose result was too large.
	ErrTooLarge = NewError(codeTooLarge, "worker: message too large")

	// ErrBadPayload matches the error reply to a request whose payload the
	// worker could not decode into the handler's type, or whose result it
	// could not encode.
	ErrBadPayload = NewError(codeBadPayload, "worker: bad payload")

	// ErrPanic matches the error reply of a handler or middleware that
	// panicked; the *RemoteError carries the stack.
	ErrPanic = NewError(codePanic, "worker: handler panicked")

	// ErrMiddleware matches the error reply to a request that a worker's
	// middleware refused.
	ErrMiddleware = NewError(codeMiddleware, "worker: middleware failed")

	// ErrShuttingDown matches the error reply to a request that reached a
	// worker that was shutting down.
	ErrShuttingDown = NewError(codeShuttingDown, "worker: the worker is shutting down")
)

// Codes that the library itself puts on error replies.
const (
	codeUnknownMessage = "E_UNKNOWN_MESSAGE"
	codeBadPayload     = "E_BAD_PAYLOAD"
	codePanic          = "E_PANIC"
	codeMiddleware     = "E_MIDDLEWARE"
	codeShuttingDown   = "E_SHUTTING_DOWN"
	codeDuplicateTx    = "E_DUPLICATE_TX"
	codeTooLarge       = "E_TOO_LARGE"
	codeNotStream      = "E_NOT_STREAM"        // a stream handler called without worker.Stream
	codeCanceled       = "E_CANCELED"          // the handler returned its context's error after a cancellation
	codeDeadline       = "E_DEADLINE_EXCEEDED" // the handler returned its context's error after the deadline
)

// unknownPrefix is the message of the TypeScript worker's unknown-type reply.
const unknownPrefix = "Unknown message type: "

// NewError returns an error with a stable code, for a contract's sentinel
// errors. Declare them in the package that holds the contract; when a
// handler returns one (or an error that wraps one), the caller's
// *RemoteError matches it with errors.Is, since both carry the same code:
//
//	var ErrNotFound = worker.NewError("E_NOT_FOUND", "not found")
//
//	// worker:  return Reply{}, fmt.Errorf("user %q: %w", id, ErrNotFound)
//	// host:    errors.Is(err, ErrNotFound) == true
//
// Any error type with a method ErrorCode() string takes part the same way;
// the error returned here has one.
func NewError(code, message string) error { return &codeError{code: code, msg: message} }

type codeError struct{ code, msg string }

func (e *codeError) Error() string     { return e.msg }
func (e *codeError) ErrorCode() string { return e.code }

// RemoteError is a handler's error as the caller receives it. It keeps the
// message, name, code and stack that the worker sent.
type RemoteError struct {
	// Type is the message type of the failed call (empty on the worker side).
	Type    string
	Name    string
	Message string
	Code    string
	Stack   string
}

// Error returns the message type, name, message and code.
func (e *RemoteError) Error() string {
	var b strings.Builder
	b.WriteString("worker: ")
	if e.Type != "" {
		b.WriteString(e.Type)
		b.WriteString(": ")
	}
	if e.Name != "" && e.Name != "Error" {
		b.WriteString(e.Name)
		b.WriteString(": ")
	}
	b.WriteString(e.Message)
	if e.Code != "" {
		fmt.Fprintf(&b, " [%s]", e.Code)
	}
	return b.String()
}

// ErrorCode returns e.Code, so that a RemoteError forwarded by a handler
// keeps its code.
func (e *RemoteError) ErrorCode() string { return e.Code }

// Is reports whether target is an error with the same code (see NewError),
// or ErrUnknownMessage for an unknown-type reply.
func (e *RemoteError) Is(target error) bool {
	switch target {
	case ErrUnknownMessage:
		return e.Code == codeUnknownMessage || strings.HasPrefix(e.Message, unknownPrefix)
	case context.Canceled:
		return e.Code == codeCanceled
	case context.DeadlineExceeded:
		return e.Code == codeDeadline
	}
	if c, ok := target.(interface{ ErrorCode() string }); ok && e.Code != "" {
		return c.ErrorCode() == e.Code
	}
	return false
}

func (e *RemoteError) payload() errorPayload {
	return errorPayload{Message: e.Message, Name: e.Name, Stack: e.Stack, Code: e.Code}
}

// toErrorPayload turns a handler's error into what travels on the wire.
func toErrorPayload(err error) errorPayload {
	var re *RemoteError
	if errors.As(err, &re) && error(re) == err {
		return re.payload()
	}
	p := errorPayload{Message: err.Error(), Name: "Error"}
	var c interface{ ErrorCode() string }
	if errors.As(err, &c) {
		p.Code = c.ErrorCode()
		// The code travels as the code: the text of a wrapped error (a
		// RemoteError, say) must not carry it too, or the other side
		// shows it twice.
		p.Message = strings.Replace(p.Message, " ["+p.Code+"]", "", 1)
	}
	if re != nil {
		p.Name, p.Stack = re.Name, re.Stack
		if p.Code == "" {
			p.Code = re.Code
		}
	}
	return p
}

// errExitedAtStartup is the cause of a *CrashError of a worker that exited
// before it answered: its Error says so.
var errExitedAtStartup = errors.New("the worker exited during startup")

// CrashError reports a worker process that died, or a connection that was
// lost, while the host did not ask for it. It matches ErrCrashed.
type CrashError struct {
	// Type is the message type of the failed call; empty for a failed spawn.
	Type string
	// Attempt is the attempt that failed, counting from 1; MaxAttempts is
	// the number the restart policy allowed for this message type.
	Attempt, MaxAttempts int
	// Pid is the process that died, 0 if unknown.
	Pid int
	// ExitCode is the process's exit code, or -1 when it was killed by a
	// signal, is still running, or is unknown.
	ExitCode int
	// Signal names the signal that killed the process, if one did.
	Signal string
	// Reason is the line of the worker's standard error that tells why it
	// died: the first line of the whole stream that reports a fatal error
	// the way the Go runtime does ("panic: ", "fatal error: ",
	// "runtime/cgo: ", a signal in C code such as "SIGSEGV: "), or else its
	// last line that is not blank. It is one line, cut at 2 KiB; empty when
	// the worker wrote nothing there, or was not spawned by this host
	// (Attach) or was detached.
	Reason string
	// Stderr is the tail of what the worker wrote to its standard error:
	// its last 4 KiB, which after a Go runtime's death is usually the end
	// of a goroutine dump (Reason keeps the line that matters). Error does
	// not include it.
	Stderr string
	// Err is what the host observed: the process exit, a lost connection,
	// or, matching ErrStuck, why the worker was declared stuck.
	Err error
	// Goroutines holds, for a worker declared stuck, the stacks of the
	// goroutines that ran the handler that did not return (all of them
	// when they could not be told apart).
	Goroutines string
	// Time is when the host saw the worker die.
	Time time.Time
}

// Error describes, on one line, the call, how the worker died and the
// Reason.
func (e *CrashError) Error() string {
	var b strings.Builder
	b.WriteString("worker: ")
	switch {
	case e.Type == "":
	case e.Attempt == 0:
		fmt.Fprintf(&b, "call %q not sent: the worker had died %v earlier (at %s): ", e.Type,
			time.Since(e.Time).Round(time.Millisecond), e.Time.Format("15:04:05.000"))
	case e.Attempt > 1 && e.Attempt == e.MaxAttempts:
		fmt.Fprintf(&b, "call %q failed: it was in flight when %d workers died, and is not sent to another (it may be what kills them): ", e.Type, e.Attempt)
	default:
		fmt.Fprintf(&b, "call %q failed (attempt %d of %d): ", e.Type, e.Attempt, e.MaxAttempts)
	}
	switch {
	case errors.Is(e.Err, ErrStuck), errors.Is(e.Err, ErrCallTimeLimit):
		fmt.Fprintf(&b, "worker process %d was killed: %v", e.Pid, e.Err)
	case e.Signal != "":
		fmt.Fprintf(&b, "worker process %d was killed by %s", e.Pid, e.Signal)
	case e.ExitCode >= 0:
		fmt.Fprintf(&b, "worker process %d exited with code %d", e.Pid, e.ExitCode)
		if errors.Is(e.Err, errExitedAtStartup) {
			fmt.Fprintf(&b, ": %v", e.Err)
		}
	default:
		fmt.Fprintf(&b, "lost the worker")
		if e.Err != nil {
			fmt.Fprintf(&b, ": %v", e.Err)
		}
	}
	if r := strings.TrimSpace(e.Reason); r != "" {
		fmt.Fprintf(&b, "; stderr: %s", r)
	}
	return oneLine(b.String())
}

// oneLine returns s on one line: the lines of a multi-line message (of
// errors.Join, say) are joined by "; ", other control characters (tabs
// aside) become spaces.
func oneLine(s string) string {
	if !strings.ContainsFunc(s, notInLine) {
		return s
	}
	lines := strings.FieldsFunc(s, func(r rune) bool { return r == '\n' || r == '\r' || r == '\u2028' || r == '\u2029' })
	for i := range lines {
		lines[i] = strings.TrimSpace(lines[i])
	}
	lines = slices.DeleteFunc(lines, func(l string) bool { return l == "" })
	return strings.Map(func(r rune) rune {
		if notInLine(r) {
			return ' '
		}
		return r
	}, strings.Join(lines, "; "))
}

// notInLine reports a character that a one-line message must not hold.
func notInLine(r rune) bool {
	return r != '\t' && (unicode.IsControl(r) || r == '\u2028' || r == '\u2029')
}

// Unwrap returns e.Err.
func (e *CrashError) Unwrap() error { return e.Err }

// Is reports whether target is ErrCrashed.
func (e *CrashError) Is(target error) bool { return target == ErrCrashed }

// contextError codes a handler's error that is its context's: the caller
// can then match it with errors.Is(err, context.DeadlineExceeded) even when
// the reply beats the caller's own timer.
func contextError(ctx context.Context, err error) error {
	cerr := ctx.Err()
	if cerr == nil || !errors.Is(err, cerr) {
		return err
	}
	code := codeCanceled
	if cerr == context.DeadlineExceeded {
		code = codeDeadline
	}
	return &RemoteError{Name: "Error", Message: err.Error(), Code: code}
}

// middlewareError is the error reply for a failed middleware; a panic
// keeps its code (codePanic) and stack.
func middlewareError(err error) error {
	var re *RemoteError
	if errors.As(err, &re) && re.Code == codePanic {
		return &RemoteError{Name: re.Name, Message: err.Error(), Code: codePanic, Stack: re.Stack}
	}
	return &RemoteError{Name: "MiddlewareError", Message: err.Error(), Code: codeMiddleware}
}

// errorPayload is the payload of an error reply (the protocol's
// SerializedError). Stack and Code are optional.
type errorPayload struct {
	Message string `json:"message" cbor:"message"`
	Name    string `json:"name" cbor:"name"`
	Stack   string `json:"stack,omitempty" cbor:"stack,omitempty"`
	Code    string `json:"code,omitempty" cbor:"code,omitempty"`
}
