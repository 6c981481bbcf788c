package worker_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/isolated-workers/worker"
)

// newPool starts a pool of sv workers and closes it at the end of the
// test, checking that no member it ever had is left running.
func newPool(t testing.TB, opts *worker.PoolOptions) (*worker.Pool, *pidLog) {
	t.Helper()
	pids := &pidLog{}
	if opts.Worker == nil {
		opts.Worker = &worker.Options{}
	}
	user := opts.Worker.OnEvent
	opts.Worker.OnEvent = func(e worker.Event) {
		if e.Kind == worker.EventConnected {
			pids.add(e.Pid)
		}
		if user != nil {
			user(e)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := worker.NewPool(ctx, func() *exec.Cmd { return roleCmd(t, "sv-worker") }, opts)
	if err != nil {
		t.Fatalf("NewPool: %v", err)
	}
	t.Cleanup(func() {
		p.Close()
		for _, pid := range pids.all() {
			if !pidGoneWithin(pid, 5*time.Second) {
				t.Errorf("member %d still runs after Close", pid)
			}
		}
	})
	return p, pids
}

type pidLog struct {
	mu   sync.Mutex
	pids []int
}

func (l *pidLog) add(pid int) { l.mu.Lock(); l.pids = append(l.pids, pid); l.mu.Unlock() }
func (l *pidLog) all() []int  { l.mu.Lock(); defer l.mu.Unlock(); return append([]int(nil), l.pids...) }

// nap calls SVNap in the background and returns the channel of its pid
// (or error).
func nap(ctx context.Context, c worker.Caller, ms int) <-chan napResult {
	ch := make(chan napResult, 1)
	go func() {
		pid, err := worker.Call(ctx, c, SVNap, ms)
		ch <- napResult{pid, err}
	}()
	return ch
}

type napResult struct {
	pid int
	err error
}

func members(p *worker.Pool) int {
	s := p.Stats()
	return s.Starting + s.Idle + s.Busy + s.Retiring
}

// A pool is a Caller: Call works on it, and Stats counts.
func TestPoolCallAndStats(t *testing.T) {
	t.Parallel()
	p, _ := newPool(t, &worker.PoolOptions{Min: 2, Max: 2})
	if s := p.Stats(); s.Idle != 2 || s.Busy+s.Starting+s.Retiring+s.Queued != 0 {
		t.Fatalf("a fresh pool of 2: %+v", s)
	}
	for i := range 10 {
		if res, err := worker.Call(testCtx(t), p, Add, AddReq{A: i, B: 1}); err != nil || res.Sum != i+1 {
			t.Fatalf("call %d: %+v, %v", i, res, err)
		}
	}
	if s := p.Stats(); s.Completed != 10 || s.Failed != 0 || s.Run.P50 <= 0 || s.Run.Max < s.Run.P50 {
		t.Fatalf("after 10 calls: %+v", s)
	}
}

// With one call per member, concurrent calls run on different members, a
// call that finds none free waits in the queue, and runs when one is.
func TestPoolLeastLoadedAndQueue(t *testing.T) {
	t.Parallel()
	p, _ := newPool(t, &worker.PoolOptions{Min: 2, Max: 2, MaxInFlight: 1})
	a, b := nap(testCtx(t), p, 400), nap(testCtx(t), p, 400)
	eventually(t, 10*time.Second, func() bool { return p.Stats().Busy == 2 }, "both members busy")
	c := nap(testCtx(t), p, 0)
	eventually(t, 10*time.Second, func() bool { return p.Stats().Queued == 1 }, "the third call queued")
	ra, rb, rc := <-a, <-b, <-c
	if ra.err != nil || rb.err != nil || rc.err != nil || ra.pid == rb.pid {
		t.Fatalf("got %+v %+v %+v; want two members, then the queued call", ra, rb, rc)
	}
}

// The pool grows under pressure up to Max, and shrinks back to Min once
// members have been idle for IdleTimeout; the members it stops are gone.
func TestPoolGrowsAndShrinks(t *testing.T) {
	t.Parallel()
	const idle = 300 * time.Millisecond
	p, pids := newPool(t, &worker.PoolOptions{Min: 1, Max: 3, MaxInFlight: 1, IdleTimeout: idle})
	var chs []<-chan napResult
	for range 3 {
		chs = append(chs, nap(testCtx(t), p, 1500))
	}
	eventually(t, 20*time.Second, func() bool { return p.Stats().Busy == 3 }, "three busy members")
	seen := map[int]bool{}
	for _, ch := range chs {
		r := <-ch
		if r.err != nil {
			t.Fatal(r.err)
		}
		seen[r.pid] = true
	}
	if len(seen) != 3 {
		t.Fatalf("the calls ran on %d members, want 3", len(seen))
	}
	eventually(t, 20*time.Second, func() bool { s := p.Stats(); return s.Idle == 1 && members(p) == 1 }, "shrinking to Min")
	if s := p.Stats(); s.Recycles != 0 {
		t.Fatalf("an idle member counted as recycled: %+v", s)
	}
	gone := 0
	for _, pid := range pids.all() {
		if pidGoneWithin(pid, 5*time.Second) {
			gone++
		}
	}
	if gone != 2 {
		t.Fatalf("%d of the 3 members are gone after the shrink, want 2", gone)
	}
}

// A full queue fails a call at once with ErrPoolFull, or, with
// WaitWhenFull, makes it wait; a waiting or queued call whose context ends
// leaves at once.
func TestPoolBackPressure(t *testing.T) {
	t.Parallel()
	for _, wait := range []bool{false, true} {
		t.Run(fmt.Sprintf("wait=%v", wait), func(t *testing.T) {
			t.Parallel()
			p, _ := newPool(t, &worker.PoolOptions{Min: 1, Max: 1, MaxInFlight: 1, MaxQueue: 1, WaitWhenFull: wait})
			running := nap(testCtx(t), p, 60_000)
			eventually(t, 10*time.Second, func() bool { return p.Stats().Busy == 1 }, "the member busy")
			qctx, qcancel := context.WithCancel(testCtx(t))
			queued := nap(qctx, p, 0)
			eventually(t, 10*time.Second, func() bool { return p.Stats().Queued == 1 }, "a queued call")
			ctx, cancel := context.WithTimeout(testCtx(t), 100*time.Millisecond)
			defer cancel()
			_, err := worker.Call(ctx, p, SVNap, 0)
			if !wait && !errors.Is(err, worker.ErrPoolFull) || wait && !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("a call on a full queue: %v", err)
			}
			qcancel()
			if r := recvWithin(t, queued, 5*time.Second, "the queued call to leave"); !errors.Is(r.err, context.Canceled) {
				t.Fatalf("the cancelled queued call: %+v", r)
			}
			if s := p.Stats(); s.Queued != 0 {
				t.Fatalf("after the queued call left: %+v", s)
			}
			p.Close()
			<-running
		})
	}
}

// Calls with the same key go to the same member.
func TestPoolKeyRouting(t *testing.T) {
	t.Parallel()
	p, _ := newPool(t, &worker.PoolOptions{Min: 3, Max: 3})
	home := map[string]int{}
	used := map[int]bool{}
	for i := range 60 {
		key := fmt.Sprintf("user-%d", i%12)
		pid, err := worker.Call(worker.WithKey(testCtx(t), key), p, GetPid, worker.Void{})
		if err != nil {
			t.Fatal(err)
		}
		if h, ok := home[key]; ok && h != pid {
			t.Fatalf("key %s went to %d, then to %d", key, h, pid)
		}
		home[key], used[pid] = pid, true
	}
	if len(used) < 2 {
		t.Fatalf("12 keys all went to %d member(s)", len(used))
	}
}

// MaxCalls retires a member after that many calls without killing any:
// every call succeeds, no member serves more, and the retired ones exit.
func TestPoolRecyclesByCalls(t *testing.T) {
	t.Parallel()
	p, pids := newPool(t, &worker.PoolOptions{Min: 1, Max: 2, MaxCalls: 3, MaxInFlight: 2})
	served := map[int]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 2 {
				pid, err := worker.Call(testCtx(t), p, SVNap, 20)
				if err != nil {
					t.Errorf("a call during recycling: %v", err)
					return
				}
				mu.Lock()
				served[pid]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	for pid, n := range served {
		if n > 3 {
			t.Fatalf("member %d served %d calls, MaxCalls is 3", pid, n)
		}
	}
	if s := p.Stats(); s.Recycles < 3 || s.Failed != 0 || s.Crashes != 0 {
		t.Fatalf("after 12 calls: %+v", s)
	}
	eventually(t, 10*time.Second, func() bool {
		gone := 0
		for _, pid := range pids.all() {
			if pidGoneWithin(pid, 0) {
				gone++
			}
		}
		return gone >= 3
	}, "the retired members to exit")
}

// MaxMemory retires a member whose resident memory passes it; the call
// that grew it completes.
func TestPoolRecyclesByMemory(t *testing.T) {
	t.Parallel()
	p, _ := newPool(t, &worker.PoolOptions{Min: 1, Max: 1, MaxMemory: 150 << 20})
	pid, err := worker.Call(testCtx(t), p, SVHold, 200)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, func() bool { return p.Stats().Recycles == 1 }, "the member to be recycled")
	if got, err := worker.Call(testCtx(t), p, GetPid, worker.Void{}); err != nil || got == pid {
		t.Fatalf("after the recycling: %d, %v (the big member was %d)", got, err, pid)
	}
	if !pidGoneWithin(pid, 10*time.Second) {
		t.Fatalf("the recycled member %d still runs", pid)
	}
}

// CallTimeLimit kills the member running a call that ignores it, and only
// that member; the call fails with ErrCallTimeLimit and is not sent again.
func TestPoolCallTimeLimit(t *testing.T) {
	t.Parallel()
	p, _ := newPool(t, &worker.PoolOptions{Min: 2, Max: 2, MaxInFlight: 1, CallTimeLimit: 500 * time.Millisecond,
		Worker: &worker.Options{OnCrash: worker.CrashPolicy{Attempts: 3}}})
	other := nap(testCtx(t), p, 300)
	_, err := worker.Call(testCtx(t), p, SVSpin, worker.Void{})
	ce := asCrash(t, err)
	if !errors.Is(err, worker.ErrCallTimeLimit) || ce.Attempt != 1 {
		t.Fatalf("the call past the limit: %+v: %v", ce, err)
	}
	if r := <-other; r.err != nil {
		t.Fatalf("the other member's call: %v", r.err)
	}
	if !pidGoneWithin(ce.Pid, 5*time.Second) {
		t.Fatalf("the member %d was not killed", ce.Pid)
	}
	eventually(t, 20*time.Second, func() bool { s := p.Stats(); return s.Idle == 2 && s.Crashes == 1 }, "the member replaced")
}

// A crash takes only its member's calls; a call that crashes every member
// it reaches fails after Attempts members, and the pool stays whole.
func TestPoolCrashIsolation(t *testing.T) {
	t.Parallel()
	p, _ := newPool(t, &worker.PoolOptions{Min: 2, Max: 2, MaxInFlight: 1,
		Worker: &worker.Options{OnCrash: worker.CrashPolicy{Attempts: 2}}})
	busy := nap(testCtx(t), p, 300)
	_, err := worker.Call(testCtx(t), p, Exit, 3)
	if ce := asCrash(t, err); ce.Attempt != 2 || ce.MaxAttempts != 2 || ce.ExitCode != 3 {
		t.Fatalf("the poison call: %+v", ce)
	}
	if r := <-busy; r.err != nil {
		t.Fatalf("a call on another member: %v", r.err)
	}
	eventually(t, 20*time.Second, func() bool { s := p.Stats(); return s.Idle == 2 && s.Crashes == 2 }, "the pool back to 2")
	if res, err := worker.Call(testCtx(t), p, Add, AddReq{A: 1, B: 1}); err != nil || res.Sum != 2 {
		t.Fatalf("after the crashes: %+v, %v", res, err)
	}
}

// Shutdown lets calls in flight and queued finish, refuses new ones, and
// leaves nothing running.
func TestPoolShutdown(t *testing.T) {
	t.Parallel()
	p, _ := newPool(t, &worker.PoolOptions{Min: 1, Max: 1, MaxInFlight: 1})
	running := nap(testCtx(t), p, 300)
	eventually(t, 10*time.Second, func() bool { return p.Stats().Busy == 1 }, "the member busy")
	queued := nap(testCtx(t), p, 0)
	eventually(t, 10*time.Second, func() bool { return p.Stats().Queued == 1 }, "a queued call")
	done := make(chan error, 1)
	go func() { done <- p.Shutdown(testCtx(t)) }()
	eventually(t, 10*time.Second, func() bool {
		_, err := worker.Call(testCtx(t), p, GetPid, worker.Void{})
		return errors.Is(err, worker.ErrClosed)
	}, "new calls refused")
	if r1, r2 := <-running, <-queued; r1.err != nil || r2.err != nil {
		t.Fatalf("drained calls: %+v %+v", r1, r2)
	}
	if err := recvWithin(t, done, 10*time.Second, "Shutdown"); err != nil {
		t.Fatal(err)
	}
}

// A pool whose workers cannot start fails NewPool with the crash.
func TestPoolStartFailure(t *testing.T) {
	t.Parallel()
	_, err := worker.NewPool(testCtx(t), func() *exec.Cmd { return roleCmd(t, "exit-at-startup") }, &worker.PoolOptions{Min: 2})
	if ce := asCrash(t, err); ce.ExitCode != 3 {
		t.Fatalf("got %+v", ce)
	}
}

// chaosDuration is how long the chaos tests run: d, a second with -short,
// or IW_CHAOS_SECONDS (the 10 s: IW_CHAOS_SECONDS=10).
func chaosDuration(d time.Duration) time.Duration {
	if n, err := strconv.Atoi(os.Getenv("IW_CHAOS_SECONDS")); err == nil && n > 0 {
		return time.Duration(n) * time.Second
	}
	if testing.Short() {
		return time.Second
	}
	return d
}

// Chaos: 64 callers while a random member is SIGKILLed every 200ms: every
// call gets its own answer or, past the crash policy, a *CrashError;
// none is lost; the pool is back to its size afterwards.
func TestPoolChaos(t *testing.T) {
	t.Parallel()
	const callers = 64
	chaos := chaosDuration(3 * time.Second)
	p, pids := newPool(t, &worker.PoolOptions{Min: 3, Max: 3, Worker: &worker.Options{OnCrash: worker.CrashPolicy{Attempts: 3}}})
	stop := make(chan struct{})
	var kills atomic.Int64
	wait := chaosCallers(t, p, callers, stop)
	end := time.After(chaos)
	tick := time.NewTicker(200 * time.Millisecond)
	for running := true; running; {
		select {
		case <-tick.C:
			var alive []int
			for _, pid := range pids.all() {
				if !pidGoneWithin(pid, 0) {
					alive = append(alive, pid)
				}
			}
			if len(alive) > 0 && lcKillPid(alive[rand.IntN(len(alive))]) {
				kills.Add(1)
			}
		case <-end:
			running = false
		}
	}
	tick.Stop()
	close(stop)
	answered, crashed := wait()
	t.Logf("%d kills: %d calls answered, %d failed after 3 crashes; %+v", kills.Load(), answered, crashed, p.Stats())
	if kills.Load() < 3 || answered == 0 {
		t.Fatalf("%d kills, %d answers: no chaos to speak of", kills.Load(), answered)
	}
	eventually(t, 30*time.Second, func() bool { s := p.Stats(); return s.Idle == 3 && members(p) == 3 }, "the pool back to 3")
}

// Shutdown with calls queued while the only member retires (MaxCalls): a
// member is started for them, and Shutdown returns once they are done.
func TestPoolShutdownServesTheQueue(t *testing.T) {
	t.Parallel()
	p, _ := newPool(t, &worker.PoolOptions{Min: 1, Max: 1, MaxInFlight: 1, MaxCalls: 2})
	running := nap(testCtx(t), p, 300)
	eventually(t, 10*time.Second, func() bool { return p.Stats().Busy == 1 }, "the member busy")
	queued := []<-chan napResult{nap(testCtx(t), p, 10), nap(testCtx(t), p, 10)}
	eventually(t, 10*time.Second, func() bool { return p.Stats().Queued == 2 }, "two queued calls")
	ctx, cancel := context.WithTimeout(testCtx(t), 20*time.Second)
	defer cancel()
	if err := p.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	for _, ch := range append(queued, running) {
		if r := <-ch; r.err != nil {
			t.Fatalf("a call drained by Shutdown: %v", r.err)
		}
	}
}
