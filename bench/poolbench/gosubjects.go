package main

// The Go subjects: the in-process floors, one worker.Worker, and
// worker.Pool in its configurations. Every member is this binary (see
// main: worker.Main at the top), with the handlers of memberServer.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"time"

	"github.com/isolated-workers/worker"
	"github.com/isolated-workers/worker/bench/internal/benchfmt"
)

// The messages. PingReq/PingRes are the trivial task (the same small
// object as the peers echo: {"message":"hello"}); Spin is the CPU task.
type PingReq struct {
	Message string `json:"message"`
}

type PingRes struct {
	Message string `json:"message"`
}

type SpinReq struct {
	Iters int `json:"iters"`
}

type SpinRes struct {
	X uint64 `json:"x"`
}

var (
	pingMsg = worker.Define[PingReq, PingRes]("ping")
	spinMsg = worker.Define[SpinReq, SpinRes]("spin")
)

const pingMessage = "hello"

// echo is the trivial task, in process and in the members.
func echo(p PingReq) PingRes { return PingRes(p) }

// spin is the CPU task: iters rounds of xorshift64, deterministic, not
// foldable by the compiler (the result goes back to the caller, who checks
// it). The same function runs in process and in the members.
func spin(iters int) uint64 {
	x := uint64(88172645463325252)
	for range iters {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
	}
	return x
}

func memberServer() *worker.Server {
	srv := worker.NewServer(nil)
	worker.Handle(srv, pingMsg, func(_ context.Context, p PingReq) (PingRes, error) {
		return echo(p), nil
	})
	worker.Handle(srv, spinMsg, func(_ context.Context, p SpinReq) (SpinRes, error) {
		return SpinRes{X: spin(p.Iters)}, nil
	})
	return srv
}

// memberCmd starts this binary (the `go run` binary or the test binary)
// as a member: worker.Main at the top of main (TestMain) serves.
func memberCmd() *exec.Cmd {
	exe, err := os.Executable()
	if err != nil {
		panic(err)
	}
	return exec.Command(exe)
}

var errBadReply = errors.New("bad reply")

func checkPing(r PingRes) error {
	if r.Message != pingMessage {
		return fmt.Errorf("%w: %q", errBadReply, r.Message)
	}
	return nil
}

// calibrateSpin returns the iterations of spin that take about target on
// this machine, in process, on one goroutine: the median of 15 timings of
// a first estimate, scaled. Every result is used (checked: xorshift never
// reaches 0): a spin whose result is dropped compiles to a faster loop.
func calibrateSpin(target time.Duration) int {
	iters := 1 << 16
	for { // a first estimate, long enough to time
		t := time.Now()
		if spin(iters) == 0 {
			panic("spin reached 0")
		}
		if el := time.Since(t); el >= target/4 {
			iters = int(float64(iters) * float64(target) / float64(el))
			break
		}
		iters *= 2
	}
	var ts []float64
	for range 15 {
		t := time.Now()
		if spin(iters) == 0 {
			panic("spin reached 0")
		}
		ts = append(ts, float64(time.Since(t)))
	}
	return max(1, int(float64(iters)*float64(target)/benchfmt.Median(ts)))
}

// inprocPool is the dispatch floor: callers hand the task to a pool of
// goroutines over a channel and wait for the reply on their own channel.
// No serialization: the cost is scheduling only.
func inprocPool(ctx context.Context, cfg Config, _ *roundEnv) (Sample, error) {
	type task struct {
		req  PingReq
		res  PingRes
		done chan struct{}
	}
	tasks := make(chan *task)
	var wg sync.WaitGroup
	for range cfg.Callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for t := range tasks {
				t.res = echo(t.req)
				t.done <- struct{}{}
			}
		}()
	}
	defer func() {
		close(tasks)
		wg.Wait()
	}()
	mine := make([]task, cfg.Callers) // one per caller, reused
	for i := range mine {
		mine[i].done = make(chan struct{}, 1)
	}
	call := func(_ context.Context, i int) error {
		t := &mine[i]
		t.req = PingReq{Message: pingMessage}
		tasks <- t
		<-t.done
		return checkPing(t.res)
	}
	return measure(ctx, cfg, cfg.Callers, false, call)
}

// inprocSpin is the CPU floor: CPUCallers goroutines call spin directly.
func inprocSpin(ctx context.Context, cfg Config, env *roundEnv) (Sample, error) {
	call := func(context.Context, int) error {
		if x := spin(env.spinIters); x != env.spinWant {
			return fmt.Errorf("%w: spin %d", errBadReply, x)
		}
		return nil
	}
	return measure(ctx, cfg, cfg.CPUCallers, true, call)
}

// singleWorker is one worker.Worker (no pool), Callers goroutines calling
// it. Its spawn (Spawn until the first reply) is recorded as the cost of
// starting one member, for the recycling table.
func singleWorker(ctx context.Context, cfg Config, _ *roundEnv) (Sample, error) {
	t := time.Now()
	w, err := worker.Spawn(ctx, memberCmd(), nil)
	if err != nil {
		return Sample{}, err
	}
	defer w.Close()
	res, err := worker.Call(ctx, w, pingMsg, PingReq{Message: pingMessage})
	if err == nil {
		err = checkPing(res)
	}
	if err != nil {
		return Sample{}, err
	}
	spawn := time.Since(t)
	call := func(ctx context.Context, _ int) error {
		res, err := worker.Call(ctx, w, pingMsg, PingReq{Message: pingMessage})
		if err != nil {
			return err
		}
		return checkPing(res)
	}
	s, err := measure(ctx, cfg, cfg.Callers, false, call)
	s.Spawn = spawn
	if err != nil {
		return s, err
	}
	return s, w.Close()
}

// poolSubject is worker.Pool with n members (Min = Max = n, all started
// before measuring), maxInFlight calls per member (0: the default),
// recycling after maxCalls calls (0: never). cpu selects the CPU task and
// CPUCallers callers, else the trivial task and Callers callers.
func poolSubject(n, maxInFlight, maxCalls int, cpu bool) runFunc {
	return func(ctx context.Context, cfg Config, env *roundEnv) (Sample, error) {
		p, err := worker.NewPool(ctx, memberCmd, &worker.PoolOptions{
			Min: n, Max: n, MaxInFlight: maxInFlight, MaxCalls: maxCalls,
		})
		if err != nil {
			return Sample{}, err
		}
		defer p.Close()
		callers, call := cfg.Callers, func(ctx context.Context, _ int) error {
			res, err := worker.Call(ctx, p, pingMsg, PingReq{Message: pingMessage})
			if err != nil {
				return err
			}
			return checkPing(res)
		}
		if cpu {
			callers, call = cfg.CPUCallers, func(ctx context.Context, _ int) error {
				res, err := worker.Call(ctx, p, spinMsg, SpinReq{Iters: env.spinIters})
				if err != nil {
					return err
				}
				if res.X != env.spinWant {
					return fmt.Errorf("%w: spin %d", errBadReply, res.X)
				}
				return nil
			}
		}
		var before worker.PoolStats
		s, err := measureWith(ctx, cfg, callers, cpu, call, func() { before = p.Stats() })
		if err != nil {
			return s, err
		}
		after := p.Stats()
		s.Recycles = int(after.Recycles - before.Recycles)
		if d := after.Failed - before.Failed; d != 0 {
			return s, fmt.Errorf("%d calls failed (stats)", d)
		}
		return s, p.Close()
	}
}
