package worker

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"os/exec"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/isolated-workers/worker/internal/hist"
)

// Pool is a set of supervised workers behind one Caller: Call on a Pool
// runs on the least-loaded member, waiting in a bounded queue when all
// are busy. It keeps between Min and Max members, started from one
// command template: it grows under pressure, shrinks when idle, retires
// (recycles) members after a number of calls, an age or a memory size
// without killing a call, and replaces members that die. A member's
// crash fails or retries (per the crash policy, on another member) only
// that member's calls; the pool as a whole never breaks. All its methods
// are safe for concurrent use.
//
// Lifecycle: NewPool starts Min members and returns once they serve.
// Close stops every member at once; Shutdown lets the calls in flight and
// in the queue finish first. Nothing is left running after either.
type Pool struct {
	newCmd func() *exec.Cmd
	cfg    poolConfig
	wopts  Options // the members' options
	crash  CrashPolicy
	seed   maphash.Seed
	stats  poolCounters

	mu        sync.Mutex
	members   []*member // serving or retiring; starting ones are counted only
	starting  int
	queue     list.List     // *waiter, in order
	room      chan struct{} // closed (and replaced) when the queue shrinks
	changed   chan struct{} // closed (and replaced) when a call or member ends
	closing   bool
	nextID    uint64
	startErr  error     // why the last start failed, while starts fail
	fails     int       // starts failed in a row
	nextStart time.Time // no start before, after failures

	stopCtx context.Context // cancelled by Close: ends starts in progress
	stop    context.CancelFunc
	wg      sync.WaitGroup // goroutines of starts, stops and watches
	ended   chan struct{}  // closed when Close has finished
	once    sync.Once
}

// PoolOptions configures a Pool. A nil *PoolOptions is valid and means all
// defaults; so does every zero field.
type PoolOptions struct {
	// Worker configures each member, as for Spawn. Its OnCrash.Attempts
	// (and AttemptsByType) say how many members in all a call may be sent
	// to when members die under it; its Restart is not used: the pool
	// replaces dead members itself. OnEvent hears every member's events.
	Worker *Options
	// Min is how many members are kept serving, started by NewPool; zero
	// means 1. Max bounds them; zero means runtime.NumCPU() (at least Min).
	Min, Max int
	// MaxInFlight bounds the calls a member runs at once; zero means 64.
	// A Go worker runs its requests concurrently, and many in flight per
	// connection let their frames share system calls (a call that waits
	// in the pool's queue costs more than one waiting in a worker), while
	// least-loaded dispatch still spreads the work over the members. Set
	// 1 for single-threaded workers (a Node worker) or for CPU-bound
	// handlers that should each have a core.
	MaxInFlight int
	// IdleTimeout is how long a member may go without a call before it is
	// stopped, down to Min; zero means 30s. See Pool for the sizing rule.
	IdleTimeout time.Duration
	// MaxQueue bounds the calls waiting for a member; zero means 1024, a
	// negative value no queue at all. A call that finds it full fails at
	// once with ErrPoolFull, or, with WaitWhenFull, waits for room (or
	// its context).
	MaxQueue     int
	WaitWhenFull bool
	// MaxCalls, MaxAge and MaxMemory retire a member after that many calls,
	// after that long, or once its resident memory (RSS, in bytes, read
	// about every second) passes the limit: it gets no new call, finishes
	// those it has, then shuts down, and a fresh member takes its place.
	// Zero means no limit.
	MaxCalls  int
	MaxAge    time.Duration
	MaxMemory int64
	// CallTimeLimit is a hard limit on a call's time on a member: past
	// it, the member running the call is killed, whatever its handler
	// does, and the call fails with a *CrashError that matches
	// ErrCallTimeLimit (it is not sent again). The member's other calls
	// fail or are sent again as for any crash. Zero means no limit. A
	// context's deadline, by contrast, only cancels the handler. A
	// stream's time includes its consumer's: a slow range counts.
	CallTimeLimit time.Duration
}

type poolConfig struct {
	min, max, inFlight, maxQueue, maxCalls int
	idle, maxAge, limit                    time.Duration
	maxMemory                              int64
	waitWhenFull                           bool
}

func (o *PoolOptions) resolve() poolConfig {
	if o == nil {
		o = &PoolOptions{}
	}
	c := poolConfig{min: orDefault(o.Min, 1), max: o.Max, inFlight: orDefault(o.MaxInFlight, 64),
		maxQueue: orDefault(o.MaxQueue, 1024), maxCalls: o.MaxCalls, idle: orDefault(o.IdleTimeout, 30*time.Second),
		maxAge: o.MaxAge, limit: o.CallTimeLimit, maxMemory: o.MaxMemory, waitWhenFull: o.WaitWhenFull}
	if c.max <= 0 {
		c.max = runtime.NumCPU()
	}
	c.min, c.max = max(c.min, 0), max(c.max, c.min, 1)
	c.maxQueue = max(c.maxQueue, 0)
	return c
}

// member is one worker of a pool.
type member struct {
	id       uint64
	w        *Worker
	inflight int
	calls    int
	born     time.Time
	idle     time.Time // since when it has run no call
	retiring bool      // gets no new call; stops once idle
	gone     bool      // dead or stopped: out of the pool
}

// waiter is a call waiting in the queue for a member.
type waiter struct {
	key   string
	keyed bool
	got   chan grant // receives the member granted (or an error), once
	elem  *list.Element
}

type grant struct {
	m   *member
	err error
}

// NewPool starts a pool of workers made by newCmd (called for each new
// member; it must return a fresh, unstarted *exec.Cmd, as for Spawn), and
// returns once its Min members serve. If one cannot start, NewPool stops
// the others and returns the error.
func NewPool(ctx context.Context, newCmd func() *exec.Cmd, opts *PoolOptions) (*Pool, error) {
	p := &Pool{newCmd: newCmd, cfg: opts.resolve(), seed: maphash.MakeSeed(),
		room: make(chan struct{}), changed: make(chan struct{}), ended: make(chan struct{})}
	if opts != nil && opts.Worker != nil {
		p.wopts = *opts.Worker
	}
	p.crash = p.wopts.OnCrash
	p.wopts.OnCrash = CrashPolicy{} // one attempt per member; the pool replaces the dead
	p.stopCtx, p.stop = context.WithCancel(context.Background())
	errs := make(chan error, p.cfg.min)
	for range p.cfg.min {
		go func() {
			m, err := p.spawn(ctx)
			if err == nil {
				p.mu.Lock()
				p.admit(m)
				p.mu.Unlock()
			}
			errs <- err
		}()
	}
	var err error
	for range p.cfg.min {
		err = errors.Join(err, <-errs)
	}
	if err != nil {
		p.Close()
		return nil, fmt.Errorf("worker: NewPool: %w", err)
	}
	p.wg.Add(1)
	go p.housekeep()
	return p, nil
}

// spawn starts one member.
func (p *Pool) spawn(ctx context.Context) (*member, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer context.AfterFunc(p.stopCtx, cancel)()
	defer cancel()
	w, err := Spawn(ctx, p.newCmd(), &p.wopts)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	return &member{w: w, born: now, idle: now}, nil
}

// admit adds a started member to the pool and gives it waiting calls;
// p.mu must be held.
func (p *Pool) admit(m *member) {
	if p.closing && p.queue.Len() == 0 {
		p.wg.Add(1)
		go func() { defer p.wg.Done(); m.w.Close() }()
		return
	}
	p.nextID++
	m.id = p.nextID
	p.members = append(p.members, m)
	p.wg.Add(1)
	go p.watch(m)
	p.dispatch(m)
}

// watch removes m from the pool once its worker is finished (dead, or
// stopped), and replaces it if the pool needs it.
func (p *Pool) watch(m *member) {
	defer p.wg.Done()
	<-m.w.Done()
	var crash *CrashError
	if errors.As(m.w.Err(), &crash) {
		p.stats.crashes.Add(1)
	}
	m.w.Close() // a dead worker still holds its socket's directory
	p.mu.Lock()
	defer p.mu.Unlock()
	m.gone = true
	for i, x := range p.members {
		if x == m {
			p.members = append(p.members[:i], p.members[i+1:]...)
			break
		}
	}
	p.broadcast()
	p.replenish()
	p.redispatch()
}

// Invoke implements Caller: the call runs on a member (see Pool).
func (p *Pool) Invoke(ctx context.Context, typ string, payload, out any) error {
	key, keyed := routingKey(ctx)
	attempts := p.crash.attempts(typ)
	tx := ""
	for attempt, unsent := 1, 0; ; {
		t0 := time.Now()
		m, err := p.acquire(ctx, key, keyed)
		if err != nil {
			p.stats.failed.Add(1)
			return err
		}
		t1 := time.Now()
		p.stats.wait.Observe(t1.Sub(t0))
		sent, limited, err := p.run(ctx, m, typ, payload, out, &tx)
		p.stats.run.Observe(time.Since(t1))
		p.release(m, err)
		var crash *CrashError
		errors.As(err, &crash)
		switch {
		case err == nil:
			p.stats.completed.Add(1)
			return nil
		case !sent && unsent < 8 && (crash != nil || errors.Is(err, ErrClosed)) && !p.isClosing():
			// The member died, or was closed as dead, before the call
			// could be sent: another one takes it, as the same attempt.
			unsent++
			continue
		case crash == nil:
		case attempt < attempts && ctx.Err() == nil && !limited && resendable(out):
			attempt++
			observerOf(ctx).resent(attempt)
			continue
		default:
			e := *crash
			e.Type, e.Attempt, e.MaxAttempts = typ, attempt, attempts
			err = &e
		}
		p.stats.failed.Add(1)
		return err
	}
}

// run makes one attempt of a call on m, under the pool's call time limit:
// limited reports that the limit was hit (and m killed for it).
func (p *Pool) run(ctx context.Context, m *member, typ string, payload, out any, tx *string) (sent, limited bool, err error) {
	if p.cfg.limit <= 0 {
		sent, err = m.w.call(ctx, typ, payload, out, tx)
		return sent, false, err
	}
	var mu sync.Mutex
	returned, killing := false, false
	t := time.AfterFunc(p.cfg.limit, func() {
		mu.Lock()
		killing = !returned // a call that has just returned is not killed
		mu.Unlock()
		if killing {
			m.w.kill(typ, fmt.Errorf("%w: call %q ran longer than the pool's limit of %v", ErrCallTimeLimit, typ, p.cfg.limit))
		}
	})
	sent, err = m.w.call(ctx, typ, payload, out, tx)
	t.Stop()
	mu.Lock()
	returned, limited = true, killing && err != nil
	mu.Unlock()
	return sent, limited, err
}

// WithKey returns a context that routes the calls made with it on a Pool
// by key: calls with the same key go to the same member while it serves
// (rendezvous hashing: when members come and go, only the keys of those
// move), so that a member's caches stay warm for its keys. A keyed call
// waits for its member when that member is full.
func WithKey(ctx context.Context, key string) context.Context {
	return context.WithValue(ctx, routingKeyCtx{}, key)
}

type routingKeyCtx struct{}

func routingKey(ctx context.Context) (string, bool) {
	k, ok := ctx.Value(routingKeyCtx{}).(string)
	return k, ok
}

// acquire returns a member with room for one more call, waiting in the
// queue if there is none.
func (p *Pool) acquire(ctx context.Context, key string, keyed bool) (*member, error) {
	p.mu.Lock()
	for {
		if p.closing {
			p.mu.Unlock()
			return nil, ErrClosed
		}
		if m := p.pick(key, keyed); m != nil {
			p.take(m)
			p.mu.Unlock()
			return m, nil
		}
		if err := p.cannotStart(); err != nil {
			p.mu.Unlock()
			return nil, err
		}
		if p.queue.Len() < p.cfg.maxQueue {
			break
		}
		if !p.cfg.waitWhenFull {
			p.mu.Unlock()
			return nil, fmt.Errorf("%w: %d calls are waiting for %d members", ErrPoolFull, p.queue.Len(), len(p.members))
		}
		room := p.room
		p.mu.Unlock()
		select {
		case <-room:
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
		p.mu.Lock()
	}
	wt := &waiter{key: key, keyed: keyed, got: make(chan grant, 1)}
	wt.elem = p.queue.PushBack(wt)
	p.grow()
	p.mu.Unlock()
	return p.await(ctx, wt)
}

// await waits for a queued call's member.
func (p *Pool) await(ctx context.Context, wt *waiter) (*member, error) {
	select {
	case g := <-wt.got:
		return g.m, g.err
	case <-ctx.Done():
	}
	p.mu.Lock()
	if wt.elem != nil {
		p.dequeue(wt)
		p.mu.Unlock()
		return nil, context.Cause(ctx)
	}
	p.mu.Unlock()
	if g := <-wt.got; g.m != nil {
		p.release(g.m, nil) // granted as ctx ended: give it back
	}
	return nil, context.Cause(ctx)
}

// pick returns the member for a call, if one has room; p.mu must be held.
func (p *Pool) pick(key string, keyed bool) *member {
	if keyed {
		if m := p.route(key); m != nil && m.inflight < p.cfg.inFlight {
			return m
		}
		return nil
	}
	var best *member
	for _, m := range p.members {
		if !m.retiring && !m.gone && m.inflight < p.cfg.inFlight && (best == nil || m.inflight < best.inflight) {
			best = m
		}
	}
	return best
}

// route returns the member of key: the serving member with the highest
// hash of (key, member); p.mu must be held.
func (p *Pool) route(key string) *member {
	var best *member
	var top uint64
	for _, m := range p.members {
		if m.retiring || m.gone {
			continue
		}
		var h maphash.Hash
		h.SetSeed(p.seed)
		h.WriteString(key)
		h.Write([]byte{byte(m.id), byte(m.id >> 8), byte(m.id >> 16), byte(m.id >> 24)})
		if s := h.Sum64(); best == nil || s > top {
			best, top = m, s
		}
	}
	return best
}

// take gives m one more call; p.mu must be held.
func (p *Pool) take(m *member) {
	m.inflight++
	m.calls++
	if p.cfg.maxCalls > 0 && m.calls >= p.cfg.maxCalls {
		p.retire(m, true)
	}
}

// release ends a call on m, and gives m's room to a waiting call.
func (p *Pool) release(m *member, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	m.inflight--
	if m.inflight == 0 {
		m.idle = time.Now()
	}
	var crash *CrashError
	if (errors.As(err, &crash) || errors.Is(err, ErrClosed) && !p.closing) && !m.gone {
		m.gone = true // dead (or closed as dead): watch removes it
		p.replenish()
		p.redispatch() // keyed calls waiting for m now route elsewhere
	}
	switch {
	case m.retiring && m.inflight == 0 && !m.gone:
		p.stopMember(m)
	case !m.retiring && !m.gone:
		p.dispatch(m)
	}
	p.broadcast()
}

// dispatch hands m's room to the calls waiting that may run on it, in
// order; p.mu must be held.
func (p *Pool) dispatch(m *member) {
	for e := p.queue.Front(); e != nil && m.inflight < p.cfg.inFlight && !m.retiring; {
		wt, next := e.Value.(*waiter), e.Next()
		if !wt.keyed || p.route(wt.key) == m {
			p.dequeue(wt)
			p.take(m)
			wt.got <- grant{m: m}
		}
		e = next
	}
}

// redispatch offers the queue to every serving member: when a member
// leaves the routing, the keys it had go to others, whose calls may wait
// for no release of theirs; p.mu must be held.
func (p *Pool) redispatch() {
	for _, m := range p.members {
		if p.queue.Len() == 0 {
			return
		}
		if !m.retiring && !m.gone {
			p.dispatch(m)
		}
	}
}

// dequeue takes wt out of the queue; p.mu must be held.
func (p *Pool) dequeue(wt *waiter) {
	p.queue.Remove(wt.elem)
	wt.elem = nil
	close(p.room)
	p.room = make(chan struct{})
}

// broadcast wakes Shutdown; p.mu must be held.
func (p *Pool) broadcast() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// serving counts the members that take calls; p.mu must be held.
func (p *Pool) serving() int {
	n := 0
	for _, m := range p.members {
		if !m.retiring && !m.gone {
			n++
		}
	}
	return n
}

// grow starts a member when calls wait and the members starting cannot
// take them all; p.mu must be held. The pool grows at once under
// pressure, and shrinks only after IdleTimeout without a call (see
// housekeep): a burst never stops members that the next one needs.
func (p *Pool) grow() {
	if p.serving()+p.starting < p.cfg.max && p.starting*p.cfg.inFlight < p.queue.Len() {
		p.start()
	}
}

// replenish starts members up to Min, or one for the calls waiting;
// p.mu must be held.
func (p *Pool) replenish() {
	if p.closing {
		// Shutdown: the calls queued still need a member, if none is left.
		if p.queue.Len() > 0 && p.serving()+p.starting == 0 {
			p.start()
		}
		return
	}
	for p.serving()+p.starting < p.cfg.min {
		if !p.start() {
			return
		}
	}
	if p.queue.Len() > 0 {
		p.grow()
	}
}

// start starts a member in the background, unless starts are failing and
// the pause after the last failure has not passed; p.mu must be held.
func (p *Pool) start() bool {
	if p.closing && p.queue.Len() == 0 || p.stopCtx.Err() != nil || time.Now().Before(p.nextStart) {
		return false
	}
	p.starting++
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		m, err := p.spawn(p.stopCtx)
		p.mu.Lock()
		defer p.mu.Unlock()
		p.starting--
		if err != nil {
			p.startFailed(err)
			return
		}
		p.fails, p.startErr = 0, nil
		p.admit(m)
	}()
	return true
}

// startFailed records a failed start: after a pause (50ms doubling up to
// 5s) the next start may be tried; calls waiting while no member serves
// fail with the error, so that none waits for a pool that cannot start;
// p.mu must be held.
func (p *Pool) startFailed(err error) {
	p.fails++
	p.startErr = err
	p.nextStart = time.Now().Add(min(50*time.Millisecond<<min(p.fails-1, 10), 5*time.Second))
	if p.serving() > 0 || p.starting > 0 {
		return
	}
	for p.queue.Len() > 0 {
		wt := p.queue.Front().Value.(*waiter)
		p.dequeue(wt)
		wt.got <- grant{err: p.cannotStart()}
	}
}

// cannotStart returns the error of a call that no member can take because
// starts fail; p.mu must be held.
func (p *Pool) cannotStart() error {
	if p.startErr == nil || p.serving() > 0 || p.starting > 0 {
		return nil
	}
	if !time.Now().Before(p.nextStart) {
		p.start()
		return nil
	}
	return fmt.Errorf("worker: the pool cannot start a worker (%d attempts in a row failed; the next in %v): %w",
		p.fails, time.Until(p.nextStart).Round(time.Millisecond), p.startErr)
}

// retire stops routing calls to m; it stops once its calls are done, and
// a fresh member replaces it if the pool needs one; recycle says that m
// was recycled (rather than idle); p.mu must be held.
func (p *Pool) retire(m *member, recycle bool) {
	if m.retiring || m.gone {
		return
	}
	m.retiring = true
	if recycle {
		p.stats.recycles.Add(1)
	}
	defer p.redispatch()
	if m.inflight == 0 {
		p.stopMember(m)
	}
	p.replenish()
}

// stopMember shuts m down in the background; p.mu must be held.
func (p *Pool) stopMember(m *member) {
	m.gone = true
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), p.wopts.GracePeriod+defaultGracePeriod)
		defer cancel()
		m.w.Shutdown(ctx)
	}()
}

// poolCounters are the running totals behind PoolStats.
type poolCounters struct {
	completed, failed, crashes, recycles atomic.Uint64
	wait, run                            hist.Histogram
}

// PoolStats is a snapshot of a Pool (see Pool.Stats).
type PoolStats struct {
	// Members counts the members in each state: Starting (being spawned),
	// Idle and Busy (serving, without and with calls), Retiring (finishing
	// their calls before they stop).
	Starting, Idle, Busy, Retiring int
	// Queued counts the calls waiting for a member.
	Queued int
	// Completed and Failed count the calls that returned, without and with
	// an error (a call sent again after a crash counts once); Crashes the
	// members that died; Recycles the members retired by MaxCalls, MaxAge
	// or MaxMemory.
	Completed, Failed, Crashes, Recycles uint64
	// Wait is how long calls waited for a member, Run how long they ran on
	// one (each attempt): percentiles since the pool started.
	Wait, Run Percentiles
}

// Percentiles of durations, each at most 25% above the true value.
type Percentiles struct {
	P50, P90, P99, Max time.Duration
}

// Stats returns a snapshot of the pool; it is cheap enough to read on
// every request (a few microseconds).
func (p *Pool) Stats() PoolStats {
	var s PoolStats
	p.mu.Lock()
	s.Starting, s.Queued = p.starting, p.queue.Len()
	for _, m := range p.members {
		switch {
		case m.retiring || m.gone:
			s.Retiring++
		case m.inflight > 0:
			s.Busy++
		default:
			s.Idle++
		}
	}
	p.mu.Unlock()
	s.Completed, s.Failed = p.stats.completed.Load(), p.stats.failed.Load()
	s.Crashes, s.Recycles = p.stats.crashes.Load(), p.stats.recycles.Load()
	s.Wait, s.Run = percentiles(p.stats.wait.Read()), percentiles(p.stats.run.Read())
	return s
}

func percentiles(h hist.Percentiles) Percentiles {
	return Percentiles{P50: h.P50, P90: h.P90, P99: h.P99, Max: h.Max}
}

// housekeep stops idle members down to Min, and retires members past
// MaxAge or MaxMemory, about every second (or IdleTimeout/2, if shorter).
func (p *Pool) housekeep() {
	defer p.wg.Done()
	t := time.NewTicker(min(time.Second, p.cfg.idle/2))
	defer t.Stop()
	for {
		select {
		case <-p.stopCtx.Done():
			return
		case <-t.C:
		}
		var rss map[*member]int64
		if p.cfg.maxMemory > 0 {
			rss = p.readMemory()
		}
		p.mu.Lock()
		now := time.Now()
		for _, m := range append([]*member(nil), p.members...) {
			switch {
			case m.retiring || m.gone:
			case p.cfg.maxAge > 0 && now.Sub(m.born) >= p.cfg.maxAge, rss[m] > p.cfg.maxMemory:
				p.retire(m, true)
			case m.inflight == 0 && now.Sub(m.idle) >= p.cfg.idle && p.serving() > p.cfg.min:
				p.retire(m, false)
			}
		}
		p.mu.Unlock()
	}
}

// readMemory reads the resident memory of every serving member.
func (p *Pool) readMemory() map[*member]int64 {
	p.mu.Lock()
	ms := append([]*member(nil), p.members...)
	p.mu.Unlock()
	out := make(map[*member]int64, len(ms))
	for _, m := range ms {
		if n, err := m.w.rss(); err == nil {
			out[m] = n
		}
	}
	return out
}

// Close stops the pool at once: calls in flight and queued fail with
// ErrClosed (queued ones) or as their member's Close makes them, every
// member is closed (see Worker.Close), and Close returns once none is
// left. It is idempotent.
func (p *Pool) Close() error {
	p.once.Do(func() {
		p.mu.Lock()
		p.closing = true
		for p.queue.Len() > 0 {
			wt := p.queue.Front().Value.(*waiter)
			p.dequeue(wt)
			wt.got <- grant{err: ErrClosed}
		}
		ms := append([]*member(nil), p.members...)
		p.broadcast()
		p.mu.Unlock()
		p.stop()
		var wg sync.WaitGroup
		for _, m := range ms {
			wg.Add(1)
			go func() { defer wg.Done(); m.w.Close() }()
		}
		wg.Wait()
		p.wg.Wait()
		close(p.ended)
	})
	<-p.ended
	return nil
}

// Shutdown stops the pool gracefully: new calls fail with ErrClosed, the
// calls in flight and in the queue run to their end until ctx ends, then
// every member is shut down (see Worker.Shutdown) and Close finishes the
// job. It returns ctx's error if it had to cut the drain short.
func (p *Pool) Shutdown(ctx context.Context) error {
	p.mu.Lock()
	p.closing = true
	var err error
	for p.queue.Len() > 0 || p.busy() {
		changed := p.changed
		p.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			err = context.Cause(ctx)
		}
		p.mu.Lock()
		if err != nil {
			break
		}
	}
	ms := append([]*member(nil), p.members...)
	p.mu.Unlock()
	var wg sync.WaitGroup
	for _, m := range ms {
		wg.Add(1)
		go func() { defer wg.Done(); m.w.Shutdown(ctx) }()
	}
	wg.Wait()
	p.Close()
	return err
}

// isClosing reports whether Close or Shutdown has begun.
func (p *Pool) isClosing() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closing
}

// busy reports whether a member runs a call; p.mu must be held.
func (p *Pool) busy() bool {
	for _, m := range p.members {
		if m.inflight > 0 {
			return true
		}
	}
	return false
}
