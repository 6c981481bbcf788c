package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"
)

// Defaults of the options. A zero field means "use the default".
const (
	DefaultStartupTimeout     = 10 * time.Second
	DefaultHostConnectTimeout = 30 * time.Second
	DefaultGracePeriod        = 3 * time.Second
	DefaultDrainTimeout       = 10 * time.Second
	DefaultMaxMessageSize     = 64 << 20
)

// Options configures the host side: Spawn, Attach and NewClient. A nil
// *Options is valid and means all defaults; so does every zero field.
type Options struct {
	// Serializer encodes messages; nil means JSON{}, the TypeScript
	// library's format.
	Serializer Serializer
	// Middleware runs, in order, on every message sent or received.
	Middleware []Middleware
	// NewTx returns the transaction id of an outgoing request; nil means a
	// random UUID v4, as the TypeScript peer expects. Ids must be unique
	// among the calls in flight on a connection.
	NewTx func(m *Message) string
	// Logger receives the library's log records; nil means silent. A
	// logger that panics or fails never breaks a call.
	Logger *slog.Logger
	// LogLevel drops records below it before they reach Logger; nil means
	// slog.LevelInfo.
	LogLevel slog.Leveler

	// Timeout bounds every call, on top of the caller's context; zero
	// means no bound besides the context. Timeouts overrides it per message
	// type. A call that times out returns an error that matches
	// context.DeadlineExceeded, and the worker's handler is cancelled.
	Timeout  time.Duration
	Timeouts map[string]time.Duration

	// StartupTimeout bounds Spawn from the start of the process until the
	// worker answers; zero means DefaultStartupTimeout. A worker that exits
	// before that fails Spawn at once.
	StartupTimeout time.Duration
	// HostConnectTimeout is handed to the worker: it exits if no host
	// connects within it (the TypeScript serverConnectTimeout). Zero means
	// DefaultHostConnectTimeout, negative disables it.
	HostConnectTimeout time.Duration
	// Connect is the retry policy for connecting to the worker's socket.
	Connect Retry
	// GracePeriod is how long Close waits for the worker to exit after
	// asking it to, before killing it; zero means DefaultGracePeriod.
	GracePeriod time.Duration
	// OnCrash decides what happens to calls in flight when the worker dies.
	OnCrash CrashPolicy
	// Detached starts the worker in its own session, outside the host's
	// process group and job: it outlives the host and can be attached to
	// later (see Attach). Close still stops it; Disconnect leaves it running.
	Detached bool
	// SocketPath overrides the address the worker listens on. By default a
	// fresh path in a directory that only the current user can enter.
	SocketPath string
	// MaxMessageSize bounds a message in either direction, in bytes; zero
	// means DefaultMaxMessageSize. A larger request fails its call with
	// ErrTooLarge before anything is sent.
	MaxMessageSize int
	// BaseProtocol skips the handshake and every extension of the protocol
	// (cancellation, deadlines, authentication), for peers that cannot parse
	// a JSON line before their serializer's frames.
	BaseProtocol bool
}

// CrashPolicy is what happens to the calls in flight when a worker dies.
// The zero value rejects them with a *CrashError.
type CrashPolicy struct {
	// Attempts is how many times in all a call is sent before it fails with
	// a *CrashError: 1 (or 0) rejects at once; N > 1 spawns a fresh worker
	// and sends the call again, up to N times in all.
	Attempts int
	// AttemptsByType overrides Attempts per message type.
	AttemptsByType map[string]int
	// OnRestart, if set, is called after a crashed worker was replaced, with
	// the crash and the new process's pid. It runs on its own goroutine.
	OnRestart func(crash *CrashError, newPid int)
}

func (p CrashPolicy) attempts(typ string) int {
	n := p.Attempts
	if v, ok := p.AttemptsByType[typ]; ok {
		n = v
	}
	return max(n, 1)
}

func (p CrashPolicy) restarts() bool {
	if p.Attempts > 1 {
		return true
	}
	for _, n := range p.AttemptsByType {
		if n > 1 {
			return true
		}
	}
	return false
}

// Retry is a policy for connecting: how often to try and how long to wait
// in between. The zero value tries until the context or startup timeout
// ends, waiting 5ms, doubling up to 500ms, with up to 5ms of jitter.
type Retry struct {
	// Attempts bounds the number of connection attempts; zero means no
	// bound besides the context.
	Attempts int
	// Delay is the wait after the first failed attempt, doubled after each
	// further one; zero means 5ms.
	Delay time.Duration
	// DelayFunc, if set, replaces the doubling: it returns the wait after
	// failed attempt number attempt (counting from 1). A negative result is
	// an error that ends the retries.
	DelayFunc func(attempt int) time.Duration
	// MaxDelay caps the wait; zero means 500ms.
	MaxDelay time.Duration
	// Jitter is the bound of a random extra wait; zero means Delay, and a
	// negative value means none.
	Jitter time.Duration
}

// delay returns the wait after failed attempt n (from 1).
func (r Retry) delay(n int) (time.Duration, error) {
	base := r.Delay
	if base <= 0 {
		base = 5 * time.Millisecond
	}
	maxd := r.MaxDelay
	if maxd <= 0 {
		maxd = 500 * time.Millisecond
	}
	var d time.Duration
	if r.DelayFunc != nil {
		d = r.DelayFunc(n)
		if d < 0 {
			return 0, fmt.Errorf("worker: Retry.DelayFunc(%d) returned a negative delay %v", n, d)
		}
	} else {
		d = base << min(n-1, 30)
	}
	d = min(d, maxd)
	jitter := r.Jitter
	if jitter == 0 {
		jitter = base
	}
	if jitter > 0 {
		d += rand.N(jitter)
	}
	return d, nil
}

// retry calls try until it succeeds, fails with a permanent error, the
// attempts run out, or ctx ends. wake, if not nil, cuts a wait short.
func (r Retry) retry(ctx context.Context, wake <-chan struct{}, try func() (permanent bool, err error)) error {
	for n := 1; ; n++ {
		permanent, err := try()
		if err == nil || permanent {
			return err
		}
		if r.Attempts > 0 && n >= r.Attempts {
			return fmt.Errorf("worker: failed to connect after %d attempts: %w", n, err)
		}
		d, derr := r.delay(n)
		if derr != nil {
			return errors.Join(derr, err)
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (last attempt: %v)", context.Cause(ctx), err)
		case <-t.C:
		case <-wake:
			t.Stop()
			wake = nil // a closed channel wakes once
		}
	}
}

// ServerOptions configures the worker side. A nil *ServerOptions is valid
// and means all defaults; so does every zero field.
type ServerOptions struct {
	// Serializer must match the host's; nil means JSON{}.
	Serializer Serializer
	// Middleware runs, in order, on every message received or sent.
	Middleware []Middleware
	// Logger receives the library's log records; nil means silent.
	Logger *slog.Logger
	// LogLevel drops records below it; nil means slog.LevelInfo.
	LogLevel slog.Leveler
	// KeepAlive keeps the worker listening when its host disconnects, so
	// that a host can connect again; the default is to exit (the seed's
	// disconnectBehavior "shutdown").
	KeepAlive bool
	// HostConnectTimeout overrides the one the host handed over: the worker
	// exits if no host connects within it. Negative disables it.
	HostConnectTimeout time.Duration
	// DrainTimeout is how long a shutdown waits for handlers in flight
	// before cancelling their contexts; zero means DefaultDrainTimeout.
	DrainTimeout time.Duration
	// MaxMessageSize bounds a message in either direction, in bytes; zero
	// means DefaultMaxMessageSize.
	MaxMessageSize int
}

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}
