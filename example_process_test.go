package worker_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"sync"
	"time"

	"github.com/isolated-workers/worker"
)

// One binary is both the host and its worker: Main, at the top of main,
// serves and exits in the process that Spawn started, and returns at once
// in the host. (This test binary's TestMain does the same.)
func ExampleMain() {
	srv := worker.NewServer(nil)
	worker.Handle(srv, Ping, func(ctx context.Context, p PingReq) (PingRes, error) {
		return PingRes{Message: "pong: " + p.Message}, nil
	})
	worker.Main(srv) // in the worker: serves, then exits; here, in the host: returns

	ctx := context.Background()
	w, err := worker.Spawn(ctx, exampleWorkerCmd(), nil) // os.Executable(), run again
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close()
	res, err := worker.Call(ctx, w, Ping, PingReq{Message: "hello"})
	fmt.Println(res.Message, err)
	// Output: pong: hello <nil>
}

// A detached worker outlives the host that started it; another host (here
// the same process, for brevity) attaches to it with its Token.
func ExampleAttach() {
	ctx := context.Background()
	cmd := exampleWorkerCmd()
	cmd.Env = append(cmd.Env, "IW_TEST_ROLE=worker-keepalive") // the worker keeps listening without a host
	first, err := worker.Spawn(ctx, cmd, &worker.Options{Detached: true})
	if err != nil {
		log.Fatal(err)
	}
	defer first.Close() // reaps the process, which is this host's child
	token := first.Token()
	if err := first.Disconnect(); err != nil {
		log.Fatal(err)
	}

	second, err := worker.Attach(ctx, token, nil)
	if err != nil {
		log.Fatal(err)
	}
	res, err := worker.Call(ctx, second, Ping, PingReq{Message: "again"})
	fmt.Println(res.Message, err)
	second.Close() // asks the worker to exit
	// Output: pong: again <nil>
}

// Shutdown lets the calls in flight finish, then stops the worker; Close
// would fail them with ErrClosed.
func ExampleWorker_Shutdown() {
	ctx := context.Background()
	sent := make(chan struct{})
	w, err := worker.Spawn(ctx, exampleWorkerCmd(), &worker.Options{
		Middleware: []worker.Middleware{func(ctx context.Context, m *worker.Message) error {
			if !m.Incoming && m.Type == Sleep.Name() {
				close(sent) // the call is on its way
			}
			return nil
		}},
	})
	if err != nil {
		log.Fatal(err)
	}
	result := make(chan error, 1)
	go func() {
		_, err := worker.Call(ctx, w, Sleep, SleepReq{Ms: 50})
		result <- err
	}()
	<-sent

	stopCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	fmt.Println("shutdown:", w.Shutdown(stopCtx))
	fmt.Println("the call in flight:", <-result)
	_, err = worker.Call(ctx, w, Ping, PingReq{})
	fmt.Println("a call after:", err)
	// Output:
	// shutdown: <nil>
	// the call in flight: <nil>
	// a call after: worker: closed
}

// A crash policy replaces a worker that died. Here a call of any type is
// sent again to the fresh worker (up to 2 attempts in all), except the
// exit message, which crashes every worker it reaches and so fails at once.
func ExampleCrashPolicy() {
	ctx := context.Background()
	restarted := make(chan int, 1)
	w, err := worker.Spawn(ctx, exampleWorkerCmd(), &worker.Options{
		OnCrash: worker.CrashPolicy{Attempts: 2, AttemptsByType: map[string]int{Exit.Name(): 1}},
		OnEvent: func(e worker.Event) {
			if e.Kind == worker.EventRestarted {
				restarted <- e.Err.(*worker.CrashError).ExitCode
			}
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close()

	_, err = worker.Call(ctx, w, Exit, 3)
	var crash *worker.CrashError
	if errors.As(err, &crash) {
		fmt.Printf("crashed: exit code %d, attempt %d of %d\n", crash.ExitCode, crash.Attempt, crash.MaxAttempts)
	}
	fmt.Println("restarted after exit code", <-restarted)
	res, err := worker.Call(ctx, w, Ping, PingReq{Message: "still here"})
	fmt.Println(res.Message, err)
	// Output:
	// crashed: exit code 3, attempt 1 of 1
	// restarted after exit code 3
	// pong: still here <nil>
}

// A pool runs calls on several workers behind one Caller; here two, each
// running one call at a time, so that two slow calls run side by side.
func ExampleNewPool() {
	ctx := context.Background()
	p, err := worker.NewPool(ctx, exampleWorkerCmd, &worker.PoolOptions{Min: 2, Max: 2, MaxInFlight: 1})
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()

	var wg sync.WaitGroup
	pids := make([]int, 2)
	for i := range pids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			worker.Call(ctx, p, Sleep, SleepReq{Ms: 200})
			pids[i], _ = worker.Call(ctx, p, GetPid, worker.Void{})
		}()
	}
	wg.Wait()
	sum, err := worker.Call(ctx, p, Add, AddReq{A: 2, B: 3})
	fmt.Println(sum.Sum, err)
	s := p.Stats()
	fmt.Println("members:", s.Idle+s.Busy, "completed:", s.Completed)
	// Output:
	// 5 <nil>
	// members: 2 completed: 5
}

// counting is a Caller of one's own: it wraps another and counts the calls
// by message type.
type counting struct {
	next worker.Caller
	mu   sync.Mutex
	n    map[string]int
}

func (c *counting) Invoke(ctx context.Context, typ string, payload, out any) error {
	c.mu.Lock()
	c.n[typ]++
	c.mu.Unlock()
	return c.next.Invoke(ctx, typ, payload, out)
}

// Any Caller can be wrapped to count, trace, route or retry calls; Call
// works on the wrapper as on what it wraps.
func ExampleCaller() {
	ctx := context.Background()
	w, err := worker.Spawn(ctx, exampleWorkerCmd(), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close()

	c := &counting{next: w, n: map[string]int{}}
	for i := range 3 {
		worker.Call(ctx, c, Add, AddReq{A: i, B: i})
	}
	res, err := worker.Call(ctx, c, Ping, PingReq{Message: "hi"})
	fmt.Println(res.Message, err, c.n)
	// Output:
	// pong: hi <nil> map[add:3 ping:1]
}
