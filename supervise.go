package worker

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"time"
)

// Event is a change in the life of a Worker, reported to Options.OnEvent.
type Event struct {
	Kind EventKind
	// Pid is the worker process concerned; for EventRestarted, the new one.
	Pid int
	// Err is why: the *CrashError of EventStuck and EventCrashed, what
	// ended the connection for EventDisconnected; nil otherwise.
	Err error
	// Time is when the host saw it happen.
	Time time.Time
}

// EventKind says what an Event reports.
type EventKind int

const (
	// EventConnected: the host connected to the worker (in Spawn or
	// Attach, in Reconnect, by itself after a broken connection with
	// Options.Reconnect, or to a fresh process after a crash).
	EventConnected EventKind = iota + 1
	// EventDisconnected: the connection ended while the worker process
	// lives (Disconnect, or a broken connection to a keep-alive worker).
	EventDisconnected
	// EventStuck: the worker was declared stuck (see Options.StuckTimeout);
	// its goroutines are in Err's Goroutines. It is killed next, and
	// EventCrashed follows.
	EventStuck
	// EventCrashed: the worker process died, or the connection to it was
	// lost, without the host asking for it.
	EventCrashed
	// EventRestarted: a fresh process replaced the crashed one (see
	// CrashPolicy.Restart); its EventConnected came just before.
	EventRestarted
)

// String returns the kind's name: "connected", "disconnected", "stuck",
// "crashed" or "restarted".
func (k EventKind) String() string {
	switch k {
	case EventConnected:
		return "connected"
	case EventDisconnected:
		return "disconnected"
	case EventStuck:
		return "stuck"
	case EventCrashed:
		return "crashed"
	case EventRestarted:
		return "restarted"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// events delivers a Worker's events to Options.OnEvent in order, on a
// goroutine that runs while there are some, so that the library never
// waits for the callback.
type events struct {
	f       func(Event)
	mu      sync.Mutex
	queue   []Event
	running bool
}

func (q *events) emit(k EventKind, pid int, err error) {
	if q.f == nil {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.queue = append(q.queue, Event{Kind: k, Pid: pid, Err: err, Time: time.Now()})
	if !q.running {
		q.running = true
		go q.run()
	}
}

func (q *events) run() {
	for {
		q.mu.Lock()
		if len(q.queue) == 0 {
			q.running = false
			q.mu.Unlock()
			return
		}
		e := q.queue[0]
		q.queue = q.queue[1:]
		q.mu.Unlock()
		q.f(e)
	}
}

// stuckWatch tells a worker that does not answer from one that is slow:
// the handler of a call given up (cancelled, timed out) that has not
// returned within limit, or a connection silent for limit while calls
// wait, despite the probes, makes the worker stuck.
type stuckWatch struct {
	limit  time.Duration
	report func(stuck) // called once, on a goroutine of its own
	once   sync.Once

	mu    sync.Mutex
	given map[string]*time.Timer // calls given up, until their reply comes
	ended bool
}

// stuck says why a worker was declared stuck.
type stuck struct {
	typ, tx string        // the call whose handler did not return; empty when silent
	limit   time.Duration // how long it was given
	waiting int           // calls waiting when the worker fell silent
}

func (s stuck) String() string {
	if s.tx != "" {
		return fmt.Sprintf("the handler of call %q (tx %s) was still running %v after the call was cancelled or timed out; a handler must return when its context ends", s.typ, s.tx, s.limit)
	}
	return fmt.Sprintf("the worker answered nothing, not even a liveness probe, for %v while %d calls waited", s.limit, s.waiting)
}

func newStuckWatch(limit time.Duration, report func(stuck)) *stuckWatch {
	if limit <= 0 || report == nil {
		return nil
	}
	return &stuckWatch{limit: limit, report: report, given: make(map[string]*time.Timer)}
}

func (w *stuckWatch) fire(s stuck) {
	w.once.Do(func() { go w.report(s) })
}

// watch starts the clock of a call given up: its handler must return (its
// reply come) within the limit.
func (w *stuckWatch) watch(tx, typ string) {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ended {
		return
	}
	if t := w.given[tx]; t != nil {
		t.Stop()
	}
	w.given[tx] = time.AfterFunc(w.limit, func() {
		w.mu.Lock()
		_, still := w.given[tx]
		w.mu.Unlock()
		if still {
			w.fire(stuck{typ: typ, tx: tx, limit: w.limit})
		}
	})
}

// answered stops the clock of a call given up: its late reply came.
func (w *stuckWatch) answered(tx []byte) {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if t := w.given[string(tx)]; t != nil {
		t.Stop()
		delete(w.given, string(tx))
	}
}

// end stops every clock: the connection ended.
func (w *stuckWatch) end() {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.ended = true
	for tx, t := range w.given {
		t.Stop()
		delete(w.given, tx)
	}
}

// probe sends the worker a liveness probe whenever calls wait and nothing
// has come from it for a quarter of the limit, and declares it stuck when
// nothing has come for the whole limit. It returns when the connection
// ends.
func (c *Client) probe() {
	every := c.stuck.limit / 4
	t := time.NewTicker(every)
	defer t.Stop()
	var last uint64
	var quiet time.Duration
	for {
		select {
		case <-c.readDone:
			return
		case <-t.C:
		}
		n, waiting := c.reads.Load(), int(c.inflight.Load())
		if n != last || waiting == 0 {
			last, quiet = n, 0
			continue
		}
		if quiet += every; quiet >= c.stuck.limit {
			c.stuck.fire(stuck{limit: c.stuck.limit, waiting: waiting})
			return
		}
		c.notify(typePing, nil)
	}
}

// goroutines asks the worker for the goroutines that run the handler of
// typ (all of them when it cannot tell), within d.
func (c *Client) goroutines(typ string, d time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var out goroutinesReply
	tx := ""
	err := c.send(ctx, typeGoroutines, &goroutinesRequest{Type: typ}, &out, &tx)
	return out.Goroutines, err
}

type goroutinesRequest struct {
	Type string `json:"type,omitempty" cbor:"type,omitempty"`
}

type goroutinesReply struct {
	Goroutines string `json:"goroutines" cbor:"goroutines"`
}

// maxDump bounds the goroutine dump a worker sends.
const maxDump = 1 << 20

// dumpGoroutines returns the stacks of the goroutines whose stack has fn
// in it (the function a handler was registered with), or of all of them
// when fn is empty or none has, bounded by maxDump.
func dumpGoroutines(fn string) string {
	buf := make([]byte, 64<<10)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) || len(buf) >= maxDump {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	if fn != "" {
		var b strings.Builder
		for g := range bytes.SplitSeq(buf, []byte("\n\n")) {
			if bytes.Contains(g, []byte("\n"+fn+"(")) {
				if b.Len() > 0 {
					b.WriteString("\n\n")
				}
				b.Write(g)
			}
		}
		if b.Len() > 0 {
			return b.String()
		}
	}
	return string(buf)
}
