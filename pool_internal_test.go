package worker

import (
	"context"
	"fmt"
	"hash/maphash"
	"runtime"
	"testing"
	"time"
)

// A keyed call waits for its full member a; a dies and is removed, and
// the key now routes to b, which is idle: the call goes there at once,
// though b releases nothing (found in review).
func TestPoolKeyedWaiterMovesWhenItsMemberGoes(t *testing.T) {
	p := &Pool{cfg: poolConfig{min: 1, max: 2, inFlight: 1, maxQueue: 10}, seed: maphash.MakeSeed(),
		room: make(chan struct{}), changed: make(chan struct{}), nextStart: time.Now().Add(time.Hour)}
	p.stopCtx, p.stop = context.WithCancel(context.Background())
	defer p.stop()
	a, b := &member{id: 1}, &member{id: 2}
	p.members, p.nextID = []*member{a, b}, 2
	key := ""
	for i := 0; ; i++ {
		if key = fmt.Sprint(i); p.route(key) == a {
			break
		}
	}
	a.inflight = 1
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got := make(chan error, 1)
	go func() { _, err := p.acquire(ctx, key, true); got <- err }()
	for queued := false; !queued; runtime.Gosched() {
		p.mu.Lock()
		queued = p.queue.Len() == 1
		p.mu.Unlock()
	}
	p.release(a, &CrashError{}) // a's call got the crash: a leaves the routing
	if err := <-got; err != nil || b.inflight != 1 {
		t.Fatalf("the keyed call, now routed to the idle member b: %v (b.inflight=%d)", err, b.inflight)
	}
}
