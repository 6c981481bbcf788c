package worker_test

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/isolated-workers/worker"
)

// The stream contract of the test workers (registered by
// registerStreamHandlers, from registerHandlers).
var (
	// STCount streams 0..n-1 and returns their sum.
	STCount = worker.DefineStream[int, int, int]("stCount")
	// STFail streams n items, then fails.
	STFail = worker.DefineStream[int, int, worker.Void]("stFail")
	// STExit streams n items, then the worker exits with code 3.
	STExit = worker.DefineStream[int, int, worker.Void]("stExit")
	// STSent returns how many items stCount has sent in this worker.
	STSent = worker.Define[worker.Void, int64]("stSent")
	// STProgress reports progress 1/n..n/n, then returns n; with n < 0 it
	// reports once and exits the worker with code 4 if its pid is -n.
	STProgress = worker.Define[int, int]("stProgress")
	// STAskHost asks the host (HostGet) and returns its answer.
	STAskHost = worker.Define[string, string]("stAskHost")
	// HostGet is served by the host: the worker's calls to it.
	HostGet = worker.Define[string, string]("hostGet")
	// STLockstep streams 0..n-1, and after each item asks the host
	// (HostSeen) to confirm that its range has it.
	STLockstep = worker.DefineStream[int, int, worker.Void]("stLockstep")
	// HostSeen is served by the host: it returns once the range has item n.
	HostSeen = worker.Define[int, worker.Void]("hostSeen")
	// STBytes streams one []byte item of each size given, item i filled
	// with byte(i+j) at j.
	STBytes = worker.DefineStream[[]int, []byte, worker.Void]("stBytes")
)

// stBytesItem is item i of STBytes.
func stBytesItem(i, size int) []byte {
	b := make([]byte, size)
	for j := range b {
		b[j] = byte(i + j)
	}
	return b
}

var stSent atomic.Int64

func registerStreamHandlers(s *worker.Server) {
	worker.HandleStream(s, STCount, func(ctx context.Context, n int, send func(int) error) (int, error) {
		sum := 0
		for i := range n {
			if err := send(i); err != nil {
				lastCanceled <- ctx.Err().Error()
				return 0, err
			}
			stSent.Add(1)
			sum += i
		}
		return sum, nil
	})
	worker.HandleStream(s, STFail, func(ctx context.Context, n int, send func(int) error) (worker.Void, error) {
		for i := range n {
			if err := send(i); err != nil {
				return worker.Void{}, err
			}
		}
		return worker.Void{}, worker.NewError("E_STREAM", fmt.Sprintf("failed after %d items", n))
	})
	worker.HandleStream(s, STExit, func(ctx context.Context, n int, send func(int) error) (worker.Void, error) {
		for i := range n {
			send(i)
		}
		fmt.Fprintln(os.Stderr, "st: exiting mid-stream")
		os.Exit(3)
		return worker.Void{}, nil
	})
	worker.Handle(s, STSent, func(ctx context.Context, _ worker.Void) (int64, error) { return stSent.Load(), nil })
	worker.Handle(s, STProgress, func(ctx context.Context, n int) (int, error) {
		if n < 0 {
			worker.Report(ctx, worker.Progress{Done: 1, Total: 2, Message: "halfway"})
			if os.Getpid() == -n {
				os.Exit(4)
			}
			return n, nil
		}
		for i := 1; i <= n; i++ {
			worker.Report(ctx, worker.Progress{Done: int64(i), Total: int64(n), Message: "step"})
		}
		return n, nil
	})
	worker.Handle(s, STAskHost, func(ctx context.Context, q string) (string, error) {
		return worker.Call(ctx, worker.Host(ctx), HostGet, q)
	})
	worker.HandleStream(s, STBytes, func(ctx context.Context, sizes []int, send func([]byte) error) (worker.Void, error) {
		for i, n := range sizes {
			b := stBytesItem(i, n)
			if err := send(b); err != nil {
				return worker.Void{}, err
			}
			clear(b) // the item is the host's once sent: the sender may reuse its memory
		}
		return worker.Void{}, nil
	})
	worker.HandleStream(s, STLockstep, func(ctx context.Context, n int, send func(int) error) (worker.Void, error) {
		for i := range n {
			if err := send(i); err != nil {
				return worker.Void{}, err
			}
			if _, err := worker.Call(ctx, worker.Host(ctx), HostSeen, i); err != nil {
				return worker.Void{}, err
			}
		}
		return worker.Void{}, nil
	})
}

// collect ranges over a stream and returns its items and final error.
func collect[I, R any](seq iter.Seq2[I, error], _ func() (R, error)) ([]I, error) {
	var out []I
	for it, err := range seq {
		if err != nil {
			return out, err
		}
		out = append(out, it)
	}
	return out, nil
}

// Items arrive in order, then the final result, on both serializers.
func TestStreamItemsAndResult(t *testing.T) {
	t.Parallel()
	for _, role := range []string{"worker", "worker-binary"} {
		t.Run(role, func(t *testing.T) {
			t.Parallel()
			var opts *worker.Options
			if role == "worker-binary" {
				opts = &worker.Options{Serializer: worker.Binary}
			}
			w := spawn(t, role, opts)
			items, result := worker.Stream(testCtx(t), w, STCount, 200)
			got, err := collect(items, result)
			if err != nil || len(got) != 200 {
				t.Fatalf("got %d items, %v", len(got), err)
			}
			for i, v := range got {
				if v != i {
					t.Fatalf("item %d is %d", i, v)
				}
			}
			if sum, err := result(); err != nil || sum != 199*200/2 {
				t.Fatalf("result: %d, %v", sum, err)
			}
		})
	}
}

// Leaving the range early cancels the handler; the result says so.
func TestStreamBreakCancelsHandler(t *testing.T) {
	t.Parallel()
	w := spawn(t, "worker", &worker.Options{StreamWindow: 2})
	// No deadline: only the break can end the stream.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	items, result := worker.Stream(ctx, w, STCount, 1_000_000)
	ranged := make(chan error, 1)
	go func() {
		n := 0
		for _, err := range items {
			if err != nil {
				ranged <- err
				return
			}
			if n++; n == 3 {
				break
			}
		}
		_, err := result()
		ranged <- err
	}()
	if err := recvWithin(t, ranged, 10*time.Second, "the range to end after its break"); !errors.Is(err, context.Canceled) {
		t.Fatalf("result after break: %v", err)
	}
	handlerCanceled(t, w)
}

// The worker never runs more than the window ahead of the consumer.
func TestStreamFlowControl(t *testing.T) {
	t.Parallel()
	const window = 4
	w := spawn(t, "worker", &worker.Options{StreamWindow: window})
	items, result := worker.Stream(testCtx(t), w, STCount, 60)
	taken := 0
	for _, err := range items {
		if err != nil {
			t.Fatal(err)
		}
		taken++
		if taken%10 == 0 {
			sent, err := worker.Call(testCtx(t), w, STSent, worker.Void{})
			if err != nil {
				t.Fatal(err)
			}
			// The worker may have sent the window, and be about to count
			// one more.
			if sent > int64(taken+window) {
				t.Fatalf("the worker sent %d items while the host had taken %d, with a window of %d", sent, taken, window)
			}
		}
	}
	if _, err := result(); err != nil || taken != 60 {
		t.Fatalf("%d items, %v", taken, err)
	}
}

// A handler's error, the caller's deadline and the worker's death end the
// stream with the error as the last pair.
func TestStreamEnds(t *testing.T) {
	t.Parallel()
	w := spawn(t, "worker", nil)
	got, err := collect(worker.Stream(testCtx(t), w, STFail, 3))
	if len(got) != 3 || !errors.Is(err, worker.NewError("E_STREAM", "")) {
		t.Fatalf("a failing handler: %d items, %v", len(got), err)
	}
	ctx, cancel := context.WithTimeout(testCtx(t), 200*time.Millisecond)
	defer cancel()
	items, _ := worker.Stream(ctx, w, STCount, 1<<30)
	n := 0
	for _, err := range items {
		if err != nil {
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("the deadline: %v", err)
			}
			break
		}
		n++
	}
	handlerCanceled(t, w)
	got, err = collect(worker.Stream(testCtx(t), w, STExit, 5))
	// Items still queued in the worker when it dies die with it.
	if ce := asCrash(t, err); ce.ExitCode != 3 || len(got) > 5 {
		t.Fatalf("the worker died: %d items, %+v", len(got), ce)
	}
}

// A stream handler called as a plain message answers with an error.
func TestStreamCalledPlainly(t *testing.T) {
	t.Parallel()
	w := spawn(t, "worker", nil)
	_, err := worker.Call(testCtx(t), w, worker.Define[int, int](STCount.Name()), 3)
	var re *worker.RemoteError
	if !errors.As(err, &re) || re.Code != "E_NOT_STREAM" {
		t.Fatalf("got %v", err)
	}
}

// Progress reports reach the caller's observer, in order, the last one
// last; a call sent again after a crash says so.
func TestProgress(t *testing.T) {
	t.Parallel()
	w := spawn(t, "worker", &worker.Options{OnCrash: worker.CrashPolicy{Attempts: 2}})
	var mu sync.Mutex
	var seen []worker.Progress
	// A slow observer (a terminal, say): the reports pile up behind it.
	ctx := worker.WithProgress(testCtx(t), func(p worker.Progress) {
		time.Sleep(5 * time.Millisecond)
		mu.Lock()
		seen = append(seen, p)
		mu.Unlock()
	})
	if n, err := worker.Call(ctx, w, STProgress, 5); err != nil || n != 5 {
		t.Fatalf("got %d, %v", n, err)
	}
	last := func() worker.Progress { mu.Lock(); defer mu.Unlock(); return seen[len(seen)-1] }
	// The call returns once the observer has had its reports.
	if p := last(); p.Done != 5 || p.Total != 5 || p.Attempt != 1 || p.Message != "step" {
		t.Fatalf("last report: %+v", p)
	}
	mu.Lock()
	for i := 1; i < len(seen); i++ {
		if seen[i].Done <= seen[i-1].Done {
			t.Fatalf("reports out of order: %+v", seen)
		}
	}
	seen = nil
	mu.Unlock()

	pid := w.Pid()
	if n, err := worker.Call(ctx, w, STProgress, -pid); err != nil || n != -pid {
		t.Fatalf("the call sent again: %d, %v", n, err)
	}
	// Reports are a state: a slow observer gets the latest. The call sent
	// again is attempt 2, and says so; no report of attempt 1 follows.
	eventually(t, 5*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return len(seen) > 0 && seen[len(seen)-1].Done == 1 },
		"attempt 2's report")
	mu.Lock()
	defer mu.Unlock()
	if p := seen[len(seen)-1]; p.Attempt != 2 || p.Message != "halfway" {
		t.Fatalf("reports: %+v; want attempt 2's last", seen)
	}
	for i := 1; i < len(seen); i++ {
		if seen[i].Attempt < seen[i-1].Attempt {
			t.Fatalf("a report of an earlier attempt came later: %+v", seen)
		}
	}
}

// A worker's handler calls the host, which serves it with its own
// handlers; errors, unknown messages and cancellation travel as for calls
// to the worker.
func TestHostCalls(t *testing.T) {
	t.Parallel()
	hs := worker.NewServer(nil)
	blocked, canceled := make(chan struct{}, 1), make(chan error, 1)
	worker.Handle(hs, HostGet, func(ctx context.Context, q string) (string, error) {
		switch q {
		case "fail":
			return "", worker.NewError("E_HOST", "the host says no")
		case "block":
			blocked <- struct{}{}
			<-ctx.Done()
			canceled <- ctx.Err()
			return "", ctx.Err()
		}
		return "host has " + q, nil
	})
	w := spawn(t, "worker", &worker.Options{Handlers: hs})
	if got, err := worker.Call(testCtx(t), w, STAskHost, "data"); err != nil || got != "host has data" {
		t.Fatalf("got %q, %v", got, err)
	}
	// The host's error reaches the worker's handler, which returns it, and
	// so back to the host's caller: its code once, and matching.
	if _, err := worker.Call(testCtx(t), w, STAskHost, "fail"); !errors.Is(err, worker.NewError("E_HOST", "")) ||
		strings.Count(err.Error(), "[E_HOST]") != 1 {
		t.Fatalf("a host error: %v", err)
	}
	// Cancelled (no deadline): the worker's handler's context ends, its
	// call to the host is cancelled, and so is the host's handler.
	ctx, cancel := context.WithCancel(testCtx(t))
	errc := make(chan error, 1)
	go func() {
		_, err := worker.Call(ctx, w, STAskHost, "block")
		errc <- err
	}()
	recvWithin(t, blocked, 10*time.Second, "the host handler to run")
	cancel()
	if err := recvWithin(t, errc, 5*time.Second, "the cancelled call"); !errors.Is(err, context.Canceled) {
		t.Fatalf("a cancelled call: %v", err)
	}
	if err := recvWithin(t, canceled, 5*time.Second, "the host handler's cancellation"); !errors.Is(err, context.Canceled) {
		t.Fatalf("the host handler's context: %v", err)
	}
	plain := spawn(t, "worker", nil) // no Handlers
	if _, err := worker.Call(testCtx(t), plain, STAskHost, "data"); !errors.Is(err, worker.ErrUnknownMessage) {
		t.Fatalf("a host without the handler: %v", err)
	}
}

// A stream on a pool runs on one member, and comes whole.
func TestStreamOnPool(t *testing.T) {
	t.Parallel()
	p, _ := newPool(t, &worker.PoolOptions{Min: 2, Max: 2})
	got, err := collect(worker.Stream(testCtx(t), p, STCount, 50))
	if err != nil || len(got) != 50 {
		t.Fatalf("%d items, %v", len(got), err)
	}
}

// A stream whose consumer stops taking items holds up nothing else: calls
// on the same connection go on while its window is full.
func TestStreamSlowConsumerStallsNothing(t *testing.T) {
	t.Parallel()
	w := spawn(t, "worker", &worker.Options{StreamWindow: 2})
	items, _ := worker.Stream(testCtx(t), w, STCount, 1_000_000)
	for _, err := range items {
		if err != nil {
			t.Fatal(err)
		}
		// The range is stopped here, the worker's window fills up; other
		// calls still get their answers.
		eventually(t, 10*time.Second, func() bool {
			n, err := worker.Call(testCtx(t), w, STSent, worker.Void{})
			return err == nil && n >= 2
		}, "the worker to fill the window")
		for i := range 20 {
			ctx, cancel := context.WithTimeout(testCtx(t), 5*time.Second)
			res, err := worker.Call(ctx, w, Add, AddReq{A: i, B: 1})
			cancel()
			if err != nil || res.Sum != i+1 {
				t.Fatalf("call %d beside a stalled stream: %+v, %v", i, res, err)
			}
		}
		break
	}
}

// Regressions found in review, in-process over net.Pipe.

var (
	rvOne    = worker.DefineStream[int, string, worker.Void]("rvOne")
	rvSizes  = worker.DefineStream[[]int, string, worker.Void]("rvSizes")
	rvFan    = worker.DefineStream[int, int, worker.Void]("rvFan")
	rvAsk    = worker.Define[string, string]("rvAsk")
	rvHostBl = worker.Define[string, string]("rvHostBlock")
)

// pipePair serves a server of reg's handlers in-process to a Client.
func pipePair(t *testing.T, opts *worker.Options, reg func(*worker.Server)) *worker.Client {
	t.Helper()
	srv := worker.NewServer(nil)
	reg(srv)
	h, w := net.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() { srv.ServeConn(ctx, w); close(served) }()
	c, err := worker.NewClient(context.Background(), h, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); cancel(); <-served })
	return c
}

// Credit the host returns after a stream has ended costs the worker
// nothing: many short streams in a row all work.
func TestStreamLateCreditIsDropped(t *testing.T) {
	t.Parallel()
	c := pipePair(t, &worker.Options{StreamWindow: 2}, func(s *worker.Server) {
		worker.HandleStream(s, rvOne, func(ctx context.Context, _ int, send func(string) error) (worker.Void, error) {
			return worker.Void{}, send("x")
		})
	})
	for i := range 1200 {
		if got, err := collect(worker.Stream(testCtx(t), c, rvOne, 0)); err != nil || len(got) != 1 {
			t.Fatalf("stream %d: %v, %v", i, got, err)
		}
	}
}

// A small item, then one larger than the byte credit left: the range has
// taken everything, so the credit comes back and the stream goes on.
func TestStreamByteWindowNeverDeadlocks(t *testing.T) {
	t.Parallel()
	c := pipePair(t, &worker.Options{StreamWindowBytes: 1000}, func(s *worker.Server) {
		worker.HandleStream(s, rvSizes, func(ctx context.Context, sizes []int, send func(string) error) (worker.Void, error) {
			for _, n := range sizes {
				if err := send(strings.Repeat("a", n)); err != nil {
					return worker.Void{}, err
				}
			}
			return worker.Void{}, nil
		})
	})
	ctx, cancel := context.WithTimeout(testCtx(t), 10*time.Second)
	defer cancel()
	if got, err := collect(worker.Stream(ctx, c, rvSizes, []int{98, 950, 10, 990})); err != nil || len(got) != 4 {
		t.Fatalf("%d items, %v", len(got), err)
	}
}

// send from many goroutines at once: every grant wakes the senders it has
// room for.
func TestStreamConcurrentSends(t *testing.T) {
	t.Parallel()
	c := pipePair(t, &worker.Options{StreamWindow: 4}, func(s *worker.Server) {
		worker.HandleStream(s, rvFan, func(ctx context.Context, n int, send func(int) error) (worker.Void, error) {
			var wg sync.WaitGroup
			errs := make(chan error, n)
			for i := range n {
				wg.Add(1)
				go func() { defer wg.Done(); errs <- send(i) }()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					return worker.Void{}, err
				}
			}
			return worker.Void{}, nil
		})
	})
	ctx, cancel := context.WithTimeout(testCtx(t), 10*time.Second)
	defer cancel()
	items, _ := worker.Stream(ctx, c, rvFan, 64)
	n := 0
	for _, err := range items {
		if err != nil {
			t.Fatalf("after %d items: %v", n, err)
		}
		n++
		time.Sleep(5 * time.Millisecond) // a consumer behind its producers: the window fills
	}
	if n != 64 {
		t.Fatalf("%d items, want 64", n)
	}
}

// The host's handler of a call from the worker is cancelled when the
// connection ends: nobody can receive its answer.
func TestHostCallsEndWithTheConnection(t *testing.T) {
	t.Parallel()
	hostSrv := worker.NewServer(nil)
	started, ended := make(chan struct{}), make(chan struct{})
	worker.Handle(hostSrv, rvHostBl, func(ctx context.Context, _ string) (string, error) {
		close(started)
		<-ctx.Done()
		close(ended)
		return "", ctx.Err()
	})
	c := pipePair(t, &worker.Options{Handlers: hostSrv}, func(s *worker.Server) {
		worker.Handle(s, rvAsk, func(ctx context.Context, q string) (string, error) {
			return worker.Call(ctx, worker.Host(ctx), rvHostBl, q)
		})
	})
	called := make(chan error, 1)
	go func() { _, err := worker.Call(context.Background(), c, rvAsk, "q"); called <- err }()
	recvWithin(t, started, 10*time.Second, "the host's handler to run")
	c.Close()
	recvWithin(t, ended, 5*time.Second, "the host's handler to be cancelled")
	<-called
}
