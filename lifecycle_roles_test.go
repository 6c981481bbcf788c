package worker_test

// The roles of the lifecycle tests (registered in roles_test.go):
//
//	lc-worker[-keepalive]  the test worker plus the LC* handlers below
//	lc-host                a host that spawns an lc worker (role IW_LC_WORKER,
//	                       at address IW_LC_SOCK if set; one that starts a
//	                       grandchild if IW_LC_GRANDCHILD is set), prints
//	                       "<pid> <token> <grandchild pid or 0>", and blocks
//	                       until stdin closes
//	lc-detached-host       a host that spawns a detached keep-alive lc worker,
//	                       prints the same line, disconnects and exits 0
//	block                  blocks for blockFor, then exits 3 (so that one the
//	                       test failed to kill goes away): a worker's
//	                       grandchild, a stand-in host, a worker that never
//	                       listens

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"sync"
	"time"

	"github.com/isolated-workers/worker"
)

const (
	envLCSock       = "IW_LC_SOCK"       // the address a host role gives its worker
	envLCWorker     = "IW_LC_WORKER"     // the role of the lc-host role's worker
	envLCGrandchild = "IW_LC_GRANDCHILD" // set: the host's worker starts a grandchild

	blockFor = 2 * time.Minute
)

// Messages of the lc worker, on top of those of registerHandlers.
type (
	LCAwaitReq struct {
		Type string `json:"type"` // "sleep" or "lcStubborn"
		N    int    `json:"n"`
	}
	LCCrashReq struct {
		Stderr string `json:"stderr"`
		Code   int    `json:"code"`
	}
	LCDieReq struct {
		How    string `json:"how"`    // "panic" or "fatal"
		Parked int    `json:"parked"` // goroutines to start first
	}
)

var (
	// LCAwait returns once N more requests of Type have started running.
	LCAwait = worker.Define[LCAwaitReq, worker.Void]("lcAwait")
	// LCCrash writes Stderr to stderr and exits with Code; with a negative
	// Code it returns instead.
	LCCrash = worker.Define[LCCrashReq, worker.Void]("lcCrash")
	// LCDie kills the worker the way the Go runtime does, after starting
	// Parked goroutines that never return and asking for every goroutine
	// in the dump (GOTRACEBACK=all): "panic" panics with lcDiePanic in a
	// goroutine outside any handler, "fatal" unlocks an unlocked mutex
	// (fatal error: sync: unlock of unlocked mutex). Both exit with code 2.
	LCDie = worker.Define[LCDieReq, worker.Void]("lcDie")
	// LCCrashIfPid exits with code 5, after writing lcCrashMarker to
	// stderr, if its process's pid is the one given; otherwise it returns
	// that pid. Given the worker's pid, it crashes once, and a retry on a
	// fresh worker succeeds.
	LCCrashIfPid = worker.Define[int, int]("lcCrashIfPid")
	// LCGrandchild starts the test binary in the block role, in the
	// worker's process group or job like anything the worker starts, and
	// returns its pid.
	LCGrandchild = worker.Define[worker.Void, int]("lcGrandchild")
	// LCTermSelf sends SIGTERM to its own worker, then sleeps ms (Unix).
	LCTermSelf = worker.Define[int, SleepRes]("lcTermSelf")
	// LCStubborn ignores SIGTERM from now on and never returns, whatever
	// its context says.
	LCStubborn = worker.Define[worker.Void, worker.Void]("lcStubborn")
)

const (
	lcCrashMarker = "lc: crashing on purpose"
	lcDiePanic    = "lc: the decisive panic"
)

func blockRole() {
	time.Sleep(blockFor)
	os.Exit(3)
}

var (
	lcStartedMu sync.Mutex
	lcStartedCh = map[string]chan struct{}{}
)

// lcStarted returns the channel that receives a value each time a request
// of type typ starts running in this worker.
func lcStarted(typ string) chan struct{} {
	lcStartedMu.Lock()
	defer lcStartedMu.Unlock()
	ch := lcStartedCh[typ]
	if ch == nil {
		ch = make(chan struct{}, 1024)
		lcStartedCh[typ] = ch
	}
	return ch
}

func lcWorker(keepAlive bool) { lcWorkerWith(&worker.ServerOptions{KeepAlive: keepAlive}) }

// lcWorkerWith is the lc worker, served with opts.
func lcWorkerWith(opts *worker.ServerOptions) {
	// Incoming middleware runs on the handler's goroutine, right before
	// the handler: a counted sleep is in flight.
	opts.Middleware = []worker.Middleware{func(ctx context.Context, m *worker.Message) error {
		if m.Incoming && m.Type == Sleep.Name() {
			lcStarted(m.Type) <- struct{}{}
		}
		return nil
	}}
	s := worker.NewServer(opts)
	registerHandlers(s)
	lcRegisterBusy(s)
	lcRegisterSignals(s)
	worker.Handle(s, LCAwait, func(ctx context.Context, r LCAwaitReq) (worker.Void, error) {
		ch := lcStarted(r.Type)
		for range r.N {
			select {
			case <-ch:
			case <-ctx.Done():
				return worker.Void{}, ctx.Err()
			}
		}
		return worker.Void{}, nil
	})
	worker.Handle(s, LCCrash, func(ctx context.Context, r LCCrashReq) (worker.Void, error) {
		fmt.Fprintln(os.Stderr, r.Stderr)
		if r.Code >= 0 {
			os.Exit(r.Code)
		}
		return worker.Void{}, nil
	})
	worker.Handle(s, LCDie, lcDie)
	worker.Handle(s, LCCrashIfPid, func(ctx context.Context, pid int) (int, error) {
		if os.Getpid() == pid {
			fmt.Fprintln(os.Stderr, lcCrashMarker)
			os.Exit(5)
		}
		return os.Getpid(), nil
	})
	worker.Handle(s, LCGrandchild, func(ctx context.Context, _ worker.Void) (int, error) {
		cmd, err := roleCommand("block") // no pipes: nothing waits on it
		if err != nil {
			return 0, err
		}
		if err := cmd.Start(); err != nil {
			return 0, err
		}
		go cmd.Wait()
		return cmd.Process.Pid, nil
	})
	worker.Handle(s, LCTermSelf, func(ctx context.Context, ms int) (SleepRes, error) {
		if err := lcTermSelf(); err != nil {
			return SleepRes{}, err
		}
		t := time.NewTimer(time.Duration(ms) * time.Millisecond)
		defer t.Stop()
		select {
		case <-t.C:
			return SleepRes{Slept: true}, nil
		case <-ctx.Done():
			return SleepRes{CtxErr: ctx.Err().Error()}, ctx.Err()
		}
	})
	worker.Handle(s, LCStubborn, func(ctx context.Context, _ worker.Void) (worker.Void, error) {
		lcIgnoreTerm() // undoes Serve's signal.Notify
		lcStarted(LCStubborn.Name()) <- struct{}{}
		<-make(chan struct{})
		return worker.Void{}, nil
	})
	worker.Main(s)
	fmt.Fprintln(os.Stderr, "worker.Main returned in an lc worker")
	os.Exit(2)
}

func lcDie(ctx context.Context, r LCDieReq) (worker.Void, error) {
	debug.SetTraceback("all")
	park := make(chan struct{})
	for range r.Parked {
		go func() { <-park }()
	}
	switch r.How {
	case "panic":
		go func() { panic(lcDiePanic) }()
	case "fatal":
		var mu sync.Mutex
		mu.Unlock()
	}
	<-ctx.Done()
	return worker.Void{}, ctx.Err()
}

// lcHost is a host process: it spawns an lc worker (detached and
// keep-alive when detached).
func lcHost(detached bool) {
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "lc host:", err)
		os.Exit(1)
	}
	role := os.Getenv(envLCWorker)
	if detached {
		role = "lc-worker-keepalive"
	}
	cmd, err := roleCommand(role)
	if err != nil {
		fail(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	w, err := worker.Spawn(ctx, cmd, &worker.Options{Detached: detached, SocketPath: os.Getenv(envLCSock)})
	if err != nil {
		fail(err)
	}
	gpid := 0
	if os.Getenv(envLCGrandchild) != "" {
		if gpid, err = worker.Call(ctx, w, LCGrandchild, worker.Void{}); err != nil {
			fail(err)
		}
	}
	fmt.Printf("%d %s %d\n", w.Pid(), w.Token(), gpid)
	if detached {
		if err := w.Disconnect(); err != nil {
			fail(err)
		}
		os.Exit(0)
	}
	io.Copy(io.Discard, os.Stdin) // until the test closes stdin, or kills us
	w.Close()
	os.Exit(0)
}
