package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"
)

// The defaults of the options.
const (
	defaultStartupTimeout     = 10 * time.Second
	defaultHostConnectTimeout = 30 * time.Second
	defaultGracePeriod        = 3 * time.Second
	defaultDrainTimeout       = 10 * time.Second
	defaultMaxMessageSize     = 64 << 20
	defaultStuckTimeout       = 10 * time.Second
)

// Options configures the host side. A nil *Options is valid and means all
// defaults; so does every zero field. NewClient reads only the fields of
// the connection (the first group); Spawn and Attach read them all.
type Options struct {
	// The connection: read by NewClient, Spawn and Attach.

	// Serializer encodes messages; nil means JSON, the TypeScript
	// library's format.
	Serializer Serializer
	// Middleware runs, in order, on every message sent or received.
	Middleware []Middleware
	// NewTx returns the transaction id of an outgoing request; nil means a
	// random UUID v4, as the TypeScript peer expects. Ids must be unique
	// among the calls in flight on a connection.
	NewTx func(m *Message) string
	// Logger receives the library's log records; nil means silent. A
	// logger that panics or fails never breaks a call. A spawned worker
	// whose cmd.Stderr is nil (and that is not Detached) has its standard
	// error logged here too, a record per line with the worker's pid: a Go
	// worker's own log records (see ServerOptions.Logger) as those records,
	// at their level and with their attributes; any other line as a
	// "worker stderr" record with the line, at info, or at the level that
	// the line names when slog's default logger or text handler wrote it.
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
	// MaxMessageSize bounds a message in either direction, in bytes; zero
	// means 64 MiB. A larger request fails its call with ErrTooLarge before
	// anything is sent.
	MaxMessageSize int
	// StreamWindow and StreamWindowBytes bound how far a worker's stream
	// may run ahead of the range over it (see Stream): the items and
	// bytes received and not yet taken. Zero means 16384 items and 1 MiB:
	// the bytes bound the memory, and the items are many so that small
	// items keep flowing while credit travels back (a stream of ints runs
	// at about 10 million items a second).
	StreamWindow, StreamWindowBytes int
	// Handlers serves the calls that workers make to this host (see Host):
	// register them with Handle on a Server made for the purpose, which is
	// never served itself. Nil answers every such call with an error that
	// matches ErrUnknownMessage.
	Handlers *Server
	// BaseProtocol skips the handshake and every extension of the protocol
	// (cancellation, deadlines, authentication), for peers that cannot parse
	// a JSON line before their serializer's frames.
	BaseProtocol bool

	// The process: read by Spawn and Attach (Attach only the connect
	// fields); NewClient has no process and ignores them.

	// StartupTimeout bounds Spawn from the start of the process until the
	// worker answers; zero means 10s. A worker that exits before that
	// fails Spawn at once.
	StartupTimeout time.Duration
	// HostConnectTimeout is handed to the worker: it exits if no host
	// connects within it (the TypeScript serverConnectTimeout). Zero means
	// 30s, negative disables it.
	HostConnectTimeout time.Duration
	// ConnectAttempts bounds the attempts to connect to the worker's
	// socket (Spawn, Attach, Reconnect); zero means no bound besides the
	// context and, for Spawn, the startup timeout.
	ConnectAttempts int
	// ConnectDelay returns the wait after failed connection attempt number
	// attempt (counting from 1); nil means 5ms, doubling up to 500ms, plus
	// up to 5ms of jitter. A negative wait ends the attempts with an error.
	ConnectDelay func(attempt int) time.Duration
	// GracePeriod is how long Close waits for the worker to exit after
	// asking it to, before killing it; zero means 3s.
	GracePeriod time.Duration
	// OnCrash decides what follows the death of the worker: whether a
	// fresh one is started, and which calls are sent to it.
	OnCrash CrashPolicy
	// StuckTimeout is how long a worker may go on running the handler of a
	// call that was cancelled or timed out, or leave the host's liveness
	// probes unanswered while calls wait, before it is declared stuck: its
	// goroutines are captured into the *CrashError (see Goroutines), then
	// it is killed and handled as a crash (see OnCrash). Zero means 10s;
	// negative turns the watch off. A handler that returns when its context
	// ends is never stuck, however long it runs. Only workers built with
	// this library are watched: a TypeScript worker cannot honour a
	// cancellation. It also bounds how long the rest of a request that its
	// deadline cut short may take to be written (NewClient reads it for
	// that).
	StuckTimeout time.Duration
	// Reconnect has the host connect again by itself, with ConnectAttempts
	// and ConnectDelay, when its connection to a keep-alive worker breaks
	// while the worker lives (Disconnect does not count): calls in flight
	// fail with an error that matches ErrNotConnected, and calls made
	// meanwhile wait for the new connection (or their context).
	Reconnect bool
	// OnEvent, if set, is told of the worker's lifecycle (see Event): it
	// is called on a goroutine of the Worker's, one event after the other
	// in the order they happened; a slow OnEvent delays only later events.
	OnEvent func(Event)
	// Detached starts the worker in its own session, outside the host's
	// process group and job: it outlives the host and can be attached to
	// later (see Attach). Close still stops it; Disconnect leaves it running.
	Detached bool
	// SocketPath overrides the address the worker listens on. By default a
	// fresh path in a directory that only the current user can enter.
	SocketPath string
}

// CrashPolicy is what follows the death of a worker process (it exited,
// was killed, or was declared stuck; see Options.StuckTimeout). The zero
// value fails the calls in flight with the *CrashError and leaves the
// Worker dead: later calls fail at once with a *CrashError that says when
// it died, and Done is closed.
type CrashPolicy struct {
	// Restart starts a fresh worker process after a crash, for the calls
	// made after it; the calls in flight fail with the *CrashError unless
	// Attempts lets them be sent again. A worker that crashes before it
	// has answered anything is restarted after a pause that doubles with
	// each such crash in a row, from 50ms up to 5s, so that a worker that
	// cannot start or serve does not spin.
	Restart bool
	// Attempts is how many worker processes in all a call may be sent to:
	// 1 (or 0) never sends a call again; N > 1 (which implies Restart)
	// sends the calls in flight again, with the same transaction id, to
	// the fresh worker, up to N times in all. A call that was in flight
	// when N workers died fails with a *CrashError that says so (it may be
	// what kills them: it is not sent to another).
	Attempts int
	// AttemptsByType overrides Attempts per message type.
	AttemptsByType map[string]int
}

func (p CrashPolicy) attempts(typ string) int {
	n := p.Attempts
	if v, ok := p.AttemptsByType[typ]; ok {
		n = v
	}
	return max(n, 1)
}

func (p CrashPolicy) restarts() bool {
	if p.Restart || p.Attempts > 1 {
		return true
	}
	for _, n := range p.AttemptsByType {
		if n > 1 {
			return true
		}
	}
	return false
}

// ServerOptions configures the worker side. A nil *ServerOptions is valid
// and means all defaults; so does every zero field.
type ServerOptions struct {
	// Serializer must match the host's; nil means that the worker follows
	// the host's built-in one (JSON or Binary) when started by a host, and
	// JSON otherwise.
	Serializer Serializer
	// Middleware runs, in order, on every message received or sent.
	Middleware []Middleware
	// Logger receives the library's log records. Nil means, in a worker
	// process that a Go host started (Spawn), one JSON line per record on
	// standard error (slog's JSON handler): that host logs them through its
	// own Options.Logger as the records they are (and they are part of the
	// stderr that its crash reports quote). Nil means silent otherwise: a
	// worker of a TypeScript host, ServeConn.
	Logger *slog.Logger
	// LogLevel drops records below it; nil means slog.LevelInfo.
	LogLevel slog.Leveler
	// KeepAlive keeps the worker listening when its host disconnects, so
	// that a host can connect again; the default is to exit (the
	// TypeScript library's disconnectBehavior "shutdown").
	KeepAlive bool
	// HostConnectTimeout overrides the one the host handed over: the worker
	// exits if no host connects within it. Negative disables it.
	HostConnectTimeout time.Duration
	// DrainTimeout is how long a shutdown waits for handlers in flight
	// before cancelling their contexts; zero means 10s.
	DrainTimeout time.Duration
	// MaxMessageSize bounds a message in either direction, in bytes; zero
	// means 64 MiB.
	MaxMessageSize int
}

// hostConfig is Options with the defaults applied.
type hostConfig struct {
	ser         Serializer
	mw          []Middleware
	tx          func(*Message) string // nil: newUUID
	log         *logger
	timeout     time.Duration
	timeouts    map[string]time.Duration
	max         int
	base        bool
	startup     time.Duration
	hostConnect time.Duration
	connect     connectPolicy
	grace       time.Duration
	crash       CrashPolicy
	detached    bool
	socketPath  string
	window      int
	windowBytes int
	handlers    *Server
	stuck       time.Duration // <= 0: not watched
	reconnect   bool
	onEvent     func(Event)
}

func (o *Options) resolve() *hostConfig {
	if o == nil {
		o = &Options{}
	}
	return &hostConfig{
		ser: orDefault[Serializer](o.Serializer, jsonSerializer{}), mw: o.Middleware, tx: o.NewTx,
		log: newLogger(o.Logger, o.LogLevel), timeout: o.Timeout, timeouts: o.Timeouts,
		max: orDefault(o.MaxMessageSize, defaultMaxMessageSize), base: o.BaseProtocol,
		startup:     orDefault(o.StartupTimeout, defaultStartupTimeout),
		hostConnect: orDefault(o.HostConnectTimeout, defaultHostConnectTimeout),
		connect:     connectPolicy{attempts: o.ConnectAttempts, delay: o.ConnectDelay},
		grace:       orDefault(o.GracePeriod, defaultGracePeriod), crash: o.OnCrash,
		detached: o.Detached, socketPath: o.SocketPath,
		stuck: orDefault(o.StuckTimeout, defaultStuckTimeout), reconnect: o.Reconnect, onEvent: o.OnEvent,
		window: orDefault(o.StreamWindow, defaultStreamWindow), windowBytes: orDefault(o.StreamWindowBytes, defaultStreamWindowBytes),
		handlers: o.Handlers,
	}
}

// serverConfig is ServerOptions with the defaults applied.
type serverConfig struct {
	ser         Serializer
	serChosen   bool // Serializer was set; otherwise Serve adopts the host's built-in one
	mw          []Middleware
	log         *logger
	logChosen   bool // Logger was set; otherwise Serve logs to stderr for a Go host
	keepAlive   bool
	hostConnect time.Duration
	drain       time.Duration
	max         int
}

func (o *ServerOptions) resolve() serverConfig {
	if o == nil {
		o = &ServerOptions{}
	}
	return serverConfig{
		ser: orDefault[Serializer](o.Serializer, jsonSerializer{}), serChosen: o.Serializer != nil, mw: o.Middleware,
		log: newLogger(o.Logger, o.LogLevel), logChosen: o.Logger != nil, keepAlive: o.KeepAlive,
		hostConnect: o.HostConnectTimeout, drain: orDefault(o.DrainTimeout, defaultDrainTimeout),
		max: orDefault(o.MaxMessageSize, defaultMaxMessageSize),
	}
}

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// connectPolicy is how often to try to connect and how long to wait in
// between (Options.ConnectAttempts and ConnectDelay).
type connectPolicy struct {
	attempts int
	delay    func(attempt int) time.Duration
}

// The default connect delay.
const (
	connectDelay    = 5 * time.Millisecond
	connectMaxDelay = 500 * time.Millisecond
)

// wait returns the wait after failed attempt n (from 1).
func (r connectPolicy) wait(n int) (time.Duration, error) {
	if r.delay == nil {
		return min(connectDelay<<min(n-1, 30), connectMaxDelay) + rand.N(connectDelay), nil
	}
	d := r.delay(n)
	if d < 0 {
		return 0, fmt.Errorf("worker: Options.ConnectDelay(%d) returned a negative delay %v", n, d)
	}
	return d, nil
}

// retry calls try until it succeeds, fails with a permanent error, the
// attempts run out, or ctx ends. wake, if not nil, cuts a wait short.
func (r connectPolicy) retry(ctx context.Context, wake <-chan struct{}, try func() (permanent bool, err error)) error {
	for n := 1; ; n++ {
		permanent, err := try()
		if err == nil || permanent {
			return err
		}
		if r.attempts > 0 && n >= r.attempts {
			return fmt.Errorf("worker: failed to connect after %d attempts: %w", n, err)
		}
		d, derr := r.wait(n)
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
