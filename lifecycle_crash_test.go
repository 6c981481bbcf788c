//go:build unix || windows

package worker_test

// Lifecycle: crashes. Calls in flight fail with the crash, exit code or
// signal and stderr included; a crash policy retries on a fresh worker.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/isolated-workers/worker"
)

func TestLifecycleCrashFailsCallsInFlight(t *testing.T) {
	t.Parallel()
	// exit: the worker exits by itself, in a call; kill: it is killed from
	// outside (SIGKILL; TerminateProcess on Windows).
	for _, how := range []string{"exit", "kill"} {
		t.Run(how, func(t *testing.T) {
			w := lcSpawn(t, "lc-worker", nil)
			pid := w.Pid()
			p := lcWatch(t, pid)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()

			n := lcCallsInFlight
			type outcome struct {
				err error
				at  time.Time
			}
			results := make(chan outcome, n)
			for range n {
				go func() {
					_, err := worker.Call(ctx, w, Sleep, SleepReq{Ms: 60_000})
					results <- outcome{err, time.Now()}
				}()
			}
			// All n handlers are running in the worker.
			awaitStarted(t, ctx, w, Sleep.Name(), n)
			marker := "lc: about to die (" + how + ")"
			var crashed time.Time
			var code int
			var sig string
			if how == "exit" {
				code = 7
				crashed = time.Now()
				_, err := worker.Call(ctx, w, LCCrash, LCCrashReq{Stderr: marker, Code: code})
				if ce := asCrash(t, err); ce.Type != LCCrash.Name() || ce.ExitCode != code || ce.Pid != pid {
					t.Fatalf("the crashing call: got %+v", ce)
				}
			} else {
				if _, err := worker.Call(ctx, w, LCCrash, LCCrashReq{Stderr: marker, Code: -1}); err != nil {
					t.Fatal(err)
				}
				crashed = time.Now()
				code, sig = lcKill(t, p)
			}
			for i := range n {
				r := recvWithin(t, results, 20*time.Second, fmt.Sprintf("call %d to fail", i))
				if d := r.at.Sub(crashed); d > 5*time.Second {
					t.Errorf("call %d failed %v after the crash", i, d)
				}
				ce := asCrash(t, r.err)
				if ce.Type != Sleep.Name() || ce.Attempt != 1 || ce.MaxAttempts != 1 || ce.Pid != pid {
					t.Fatalf("call %d: got %+v", i, ce)
				}
				if ce.ExitCode != code || ce.Signal != sig || !strings.Contains(ce.Stderr, marker) {
					t.Fatalf("call %d: got exit code %d, signal %q, stderr %q; want %d, %q, %q",
						i, ce.ExitCode, ce.Signal, ce.Stderr, code, sig, marker)
				}
			}
			// The worker is dead: Done is closed, Err says why, and later
			// calls fail at once, not sent, with the same crash and when
			// it happened.
			select {
			case <-w.Done():
			default:
				t.Fatal("Done is not closed after the crash")
			}
			var died *worker.CrashError
			if !errors.As(w.Err(), &died) || died.Pid != pid || died.Time.Before(crashed) {
				t.Fatalf("Err: %v; want the crash of %d after %v", w.Err(), pid, crashed)
			}
			_, err := worker.Call(ctx, w, Ping, PingReq{})
			if ce := asCrash(t, err); ce.Type != Ping.Name() || ce.Attempt != 0 || ce.Pid != pid ||
				ce.ExitCode != code || ce.Signal != sig || !ce.Time.Equal(died.Time) ||
				!strings.Contains(err.Error(), `call "ping" not sent: the worker had died`) {
				t.Fatalf("a later call: got %+v: %v", ce, err)
			}
			if w.IsActive() || !p.goneWithin(0) {
				t.Fatalf("after the crash: IsActive %v, process running %v", w.IsActive(), p.running())
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestLifecycleCrashUnderLoad kills the worker while calls are being
// written: those calls too must fail with the crash, exit code included
// (on Windows a write to a pipe whose server died fails at once).
//
// The worker is killed from outside rather than made to exit: under Wine
// 8.0, a worker calling os.Exit (ExitProcess) amid this much pipe I/O
// sometimes never finishes exiting (one thread left, which winedbg cannot
// attach to), and then nothing ends the calls.
func TestLifecycleCrashUnderLoad(t *testing.T) {
	t.Parallel()
	w := lcSpawn(t, "lc-worker", nil)
	pid := w.Pid()
	p := lcWatch(t, pid)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const goroutines = 64
	errs := make(chan error, goroutines)
	var calling sync.WaitGroup
	calling.Add(goroutines)
	for range goroutines {
		go func() {
			var err error
			for n := 0; err == nil; n++ {
				if n == 20 {
					calling.Done()
				}
				_, err = worker.Call(ctx, w, Add, AddReq{A: n, B: 1})
			}
			errs <- err
		}()
	}
	calling.Wait() // every goroutine has made 20 calls, and goes on
	crashed := time.Now()
	code, sig := lcKill(t, p)
	for i := range goroutines {
		err := recvWithin(t, errs, 20*time.Second, fmt.Sprintf("goroutine %d to fail", i))
		if d := time.Since(crashed); d > 5*time.Second {
			t.Errorf("goroutine %d's call failed %v after the crash", i, d)
		}
		var ce *worker.CrashError
		if !errors.As(err, &ce) || ce.Pid != pid || ce.ExitCode != code || ce.Signal != sig || ce.Type != Add.Name() {
			t.Errorf("goroutine %d: got %v (%T); want a *worker.CrashError with exit code %d, signal %q", i, err, err, code, sig)
		}
	}
}

func TestLifecycleCrashRetryRestarts(t *testing.T) {
	t.Parallel()
	type restart struct {
		crash  *worker.CrashError
		newPid int
	}
	restarts := make(chan restart, 8)
	w := lcSpawn(t, "lc-worker", &worker.Options{OnCrash: worker.CrashPolicy{Attempts: 2},
		OnEvent: func(e worker.Event) {
			if e.Kind == worker.EventRestarted {
				restarts <- restart{e.Err.(*worker.CrashError), e.Pid}
			}
		}})
	ctx := testCtx(t)
	old := w.Pid()
	op := lcWatch(t, old)

	// The first attempt crashes the first process; the retry runs on a
	// fresh one.
	got, err := worker.Call(ctx, w, LCCrashIfPid, old)
	now := w.Pid()
	if err != nil || got != now || now == old || now == 0 {
		t.Fatalf("got %d, %v; want the retry to succeed on a new process (Pid %d, was %d)", got, err, now, old)
	}
	if !op.goneWithin(5 * time.Second) {
		t.Fatalf("the crashed process %d is still there", old)
	}
	// The first attempt ran: its crash is the one reported.
	r := recvWithin(t, restarts, 10*time.Second, "EventRestarted")
	if r.newPid != now || r.crash.Pid != old || r.crash.ExitCode != 5 || !strings.Contains(r.crash.Stderr, lcCrashMarker) {
		t.Fatalf("EventRestarted got newPid %d (want %d), crash %+v", r.newPid, now, r.crash)
	}
	if got, err := worker.Call(ctx, w, GetPid, worker.Void{}); err != nil || got != now {
		t.Fatalf("the new worker answers %d, %v; want %d", got, err, now)
	}
	np := lcWatch(t, now)

	// Both attempts crash: the call fails with the second crash, and the
	// worker is replaced once more.
	_, err = worker.Call(ctx, w, Exit, 9)
	if ce := asCrash(t, err); ce.Type != Exit.Name() || ce.Attempt != 2 || ce.MaxAttempts != 2 || ce.ExitCode != 9 ||
		!strings.Contains(err.Error(), "in flight when 2 workers died") {
		t.Fatalf("exit: got %+v: %v", ce, err)
	}
	if !np.goneWithin(5 * time.Second) {
		t.Fatalf("the crashed process %d is still there", now)
	}
	for i := range 2 {
		recvWithin(t, restarts, 10*time.Second, fmt.Sprintf("EventRestarted after exit, %d of 2", i+1))
	}
	last, err := worker.Call(ctx, w, GetPid, worker.Void{})
	if err != nil || last != w.Pid() || last == now || last == old {
		t.Fatalf("after the crashes: pid %d, %v (Pid %d; earlier %d, %d)", last, err, w.Pid(), old, now)
	}
	select {
	case r := <-restarts:
		t.Fatalf("an extra restart: %+v", r)
	default:
	}
}

func TestLifecycleCrashAttemptsByType(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	// crashOnce makes a call that crashes the worker once (after a call
	// that replaces a crashed worker, and tells the pid of the one that
	// runs), and checks that its retry succeeded on a fresh worker.
	crashOnce := func(t *testing.T, w *worker.Worker) {
		t.Helper()
		old, err := worker.Call(ctx, w, GetPid, worker.Void{})
		if err != nil {
			t.Fatal(err)
		}
		if got, err := worker.Call(ctx, w, LCCrashIfPid, old); err != nil || got != w.Pid() || got == old {
			t.Fatalf("lcCrashIfPid: got %d, %v; want a retry on a fresh worker (Pid %d, was %d)", got, err, w.Pid(), old)
		}
	}
	t.Run("override", func(t *testing.T) {
		var mu sync.Mutex
		restarts := 0
		w := lcSpawn(t, "lc-worker", &worker.Options{OnCrash: worker.CrashPolicy{Attempts: 3,
			AttemptsByType: map[string]int{Exit.Name(): 1, LCCrash.Name(): 2}},
			OnEvent: func(e worker.Event) {
				if e.Kind == worker.EventRestarted {
					mu.Lock()
					restarts++
					mu.Unlock()
				}
			}})

		_, err := worker.Call(ctx, w, Exit, 9) // overridden down to 1
		if ce := asCrash(t, err); ce.Type != Exit.Name() || ce.Attempt != 1 || ce.MaxAttempts != 1 || ce.ExitCode != 9 {
			t.Fatalf("exit: got %+v", ce)
		}
		_, err = worker.Call(ctx, w, LCCrash, LCCrashReq{Stderr: "lc: typed crash", Code: 4}) // overridden to 2
		ce := asCrash(t, err)
		if ce.Type != LCCrash.Name() || ce.Attempt != 2 || ce.MaxAttempts != 2 || ce.ExitCode != 4 ||
			!strings.Contains(ce.Stderr, "lc: typed crash") {
			t.Fatalf("lcCrash: got %+v", ce)
		}
		// The default, 3 attempts, still applies to other types.
		crashOnce(t, w)
		if _, err := worker.Call(ctx, w, Ping, PingReq{}); err != nil {
			t.Fatalf("after the crashes: %v", err)
		}
		// 1 (exit) + 2 (lcCrash) + 1 (lcCrashIfPid) crashes, each replaced.
		eventually(t, 5*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return restarts == 4 }, "4 restarts")
	})
	t.Run("only-by-type", func(t *testing.T) {
		// Attempts is left at 1: the per-type entry alone enables restarts.
		w := lcSpawn(t, "lc-worker", &worker.Options{OnCrash: worker.CrashPolicy{
			AttemptsByType: map[string]int{LCCrashIfPid.Name(): 2}}})
		crashOnce(t, w)
		_, err := worker.Call(ctx, w, Exit, 6)
		if ce := asCrash(t, err); ce.Attempt != 1 || ce.MaxAttempts != 1 || ce.ExitCode != 6 {
			t.Fatalf("exit: got %+v", ce)
		}
		if _, err := worker.Call(ctx, w, Ping, PingReq{}); err != nil {
			t.Fatalf("after the crash: %v", err)
		}
	})
}
