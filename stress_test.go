package worker_test

// Load on real worker processes, under -race: many concurrent calls on one
// connection, and the worker killed in the middle of them.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/isolated-workers/worker"
)

// Every call of 64 goroutines gets exactly its own answer, and the worker
// handled each exactly once.
func TestStressManyCallsOneWorker(t *testing.T) {
	goroutines, calls := 64, 2000
	if testing.Short() {
		calls = 100
	}
	w := spawn(t, "hostile", nil)
	ctx := testCtx(t)
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range calls {
				// A result unique to this call: a mix-up between calls
				// (or a reply delivered twice) shows.
				req := AddReq{A: g << 20, B: i}
				res, err := worker.Call(ctx, w, HSStressAdd, req)
				if err != nil {
					errs <- fmt.Errorf("goroutine %d, call %d: %w", g, i, err)
					return
				}
				if res.Sum != req.A+req.B {
					errs <- fmt.Errorf("goroutine %d, call %d: got the result %d, want %d", g, i, res.Sum, req.A+req.B)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	n, err := worker.Call(ctx, w, HSStressCount, worker.Void{})
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(goroutines * calls); n != want {
		t.Fatalf("the worker handled %d calls; %d were made, each answered once", n, want)
	}
	t.Logf("%d calls in %v", goroutines*calls, time.Since(start).Round(time.Millisecond))
}

// SIGKILL in the middle of a load: every call returns, promptly, and each
// failure is a crash (errors.Is(err, worker.ErrCrashed)) that names the
// signal.
func TestStressKillUnderLoad(t *testing.T) {
	const goroutines = 64
	killAfter := int64(5000)
	if testing.Short() {
		killAfter = 500
	}
	w := spawn(t, "hostile", nil)
	pid := w.Pid()
	// A generous bound: the calls must end long before it.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	var done atomic.Int64
	kill := make(chan struct{})
	var killOnce sync.Once
	var wg sync.WaitGroup
	errs := make([]error, goroutines)
	ended := make([]time.Time, goroutines)
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				req := AddReq{A: g << 20, B: i}
				res, err := worker.Call(ctx, w, HSStressAdd, req)
				if err != nil {
					errs[g], ended[g] = err, time.Now()
					return
				}
				if res.Sum != req.A+req.B {
					errs[g] = fmt.Errorf("got the result %d, want %d", res.Sum, req.A+req.B)
					return
				}
				if done.Add(1) == killAfter {
					killOnce.Do(func() { close(kill) })
				}
			}
		}()
	}
	<-kill
	killed := time.Now()
	if p, err := os.FindProcess(pid); err != nil {
		t.Fatal(err)
	} else if err := p.Kill(); err != nil { // SIGKILL on Unix
		t.Fatal(err)
	}
	wg.Wait()
	if ctx.Err() != nil {
		t.Fatalf("calls were still running when the 60s bound ended")
	}
	signaled := 0
	for g, err := range errs {
		if !errors.Is(err, worker.ErrCrashed) {
			t.Errorf("goroutine %d ended with %v; want an error matching worker.ErrCrashed", g, err)
			continue
		}
		if d := ended[g].Sub(killed); d > 10*time.Second {
			t.Errorf("goroutine %d's call returned %v after the kill", g, d)
		}
		var ce *worker.CrashError
		if errors.As(err, &ce) && ce.Signal == "SIGKILL" && ce.Pid == pid {
			signaled++
		}
	}
	if signaled == 0 && runtime.GOOS != "windows" {
		t.Errorf("no crash error names the signal; first: %v", errs[0])
	}
	t.Logf("%d calls before the kill; %d of %d failures name the signal", done.Load(), signaled, goroutines)
	start := time.Now()
	w.Close()
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Close took %v after the crash", d)
	}
}
