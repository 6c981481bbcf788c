// Command worker-lifecycle walks a worker through its life: a startup
// timeout, the state queries (Pid, IsActive, IsConnected), a keep-alive
// worker that the host disconnects from and reconnects to, and a graceful
// Shutdown that lets a call in flight finish.
//
//	go run ./examples/worker-lifecycle
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/isolated-workers/worker"
)

// envMode selects how the worker process behaves; the host sets it.
const envMode = "EXAMPLE_MODE"

func main() {
	if os.Getenv(envMode) == "stuck" {
		stuck()
	}
	worker.Main(newServer(os.Getenv(envMode) == "keepalive")) // in the worker: serves, then exits

	ctx := context.Background()

	// 1. A worker that never becomes ready fails Spawn after the startup
	// timeout, and is killed.
	fmt.Println("== StartupTimeout")
	start := time.Now()
	_, err := worker.Spawn(ctx, command("stuck"), &worker.Options{StartupTimeout: 300 * time.Millisecond})
	fmt.Printf("Spawn failed after ~%v: %v\n", time.Since(start).Round(100*time.Millisecond), err)
	fmt.Println("  errors.Is(err, context.DeadlineExceeded):", errors.Is(err, context.DeadlineExceeded))

	// 2. The state of an ordinary worker, before and after Close. It exits
	// when its host disconnects, so it cannot be disconnected from.
	fmt.Println("== an ordinary worker")
	w, err := worker.Spawn(ctx, command(""), nil)
	if err != nil {
		log.Fatal(err)
	}
	pid := w.Pid()
	fmt.Printf("spawned: pid=%d IsActive=%v IsConnected=%v\n", pid, w.IsActive(), w.IsConnected())
	fmt.Println("Disconnect:", w.Disconnect())
	w.Close()
	fmt.Printf("closed:  pid=%d IsActive=%v IsConnected=%v\n", pid, w.IsActive(), w.IsConnected())

	// 3. A keep-alive worker keeps running, with its state, while the host
	// is disconnected.
	fmt.Println("== a keep-alive worker (ServerOptions.KeepAlive)")
	w, err = worker.Spawn(ctx, command("keepalive"), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close()
	pid = w.Pid()
	fmt.Printf("spawned: pid=%d IsActive=%v IsConnected=%v\n", pid, w.IsActive(), w.IsConnected())
	count(ctx, w)
	count(ctx, w)
	if err := w.Disconnect(); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("disconnected: IsActive=%v IsConnected=%v\n", w.IsActive(), w.IsConnected())
	_, err = worker.Call(ctx, w, Count, worker.Void{})
	fmt.Printf("  a call now fails: %v (errors.Is ErrNotConnected: %v)\n", err, errors.Is(err, worker.ErrNotConnected))
	if err := w.Reconnect(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("reconnected: pid=%d (same process: %v) IsConnected=%v\n", w.Pid(), w.Pid() == pid, w.IsConnected())
	count(ctx, w) // the counter survived

	// 4. Shutdown stops taking calls, waits for the ones in flight, asks
	// the worker to drain and exit, and reaps it.
	fmt.Println("== Shutdown with a call in flight")
	done := make(chan string, 1)
	go func() {
		res, err := worker.Call(ctx, w, Work, 300)
		if err != nil {
			res = "error: " + err.Error()
		}
		done <- res
	}()
	if _, err := worker.Call(ctx, w, AwaitWork, worker.Void{}); err != nil {
		log.Fatal(err)
	}
	fmt.Println("work(300ms) is in flight; calling Shutdown")
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err = w.Shutdown(sctx)
	fmt.Println("Shutdown returned:", err)
	select {
	case res := <-done:
		fmt.Println("  the call in flight had completed:", res)
	default:
		fmt.Println("  the call in flight had NOT completed")
	}
	_, err = worker.Call(ctx, w, Count, worker.Void{})
	fmt.Printf("  a call now fails: %v (errors.Is ErrClosed: %v)\n", err, errors.Is(err, worker.ErrClosed))
	fmt.Printf("after Shutdown: IsActive=%v IsConnected=%v\n", w.IsActive(), w.IsConnected())
}

// command returns the command that runs this binary as a worker in mode.
func command(mode string) *exec.Cmd {
	exe, err := os.Executable()
	if err != nil {
		log.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), envMode+"="+mode)
	return cmd
}

func count(ctx context.Context, w *worker.Worker) {
	n, err := worker.Call(ctx, w, Count, worker.Void{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("  count ->", n)
}

// stuck plays a worker whose initialization never finishes: it never
// serves, and exits only when told to.
func stuck() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	<-sig
	os.Exit(1)
}

// newServer is the worker side.
func newServer(keepAlive bool) *worker.Server {
	s := worker.NewServer(&worker.ServerOptions{KeepAlive: keepAlive})
	var n atomic.Int64 // handlers run concurrently, each in its own goroutine
	worker.Handle(s, Count, func(ctx context.Context, _ worker.Void) (int, error) {
		return int(n.Add(1)), nil
	})
	working := make(chan struct{}, 1)
	worker.Handle(s, Work, func(ctx context.Context, ms int) (string, error) {
		working <- struct{}{}
		t := time.NewTimer(time.Duration(ms) * time.Millisecond)
		defer t.Stop()
		select {
		case <-t.C:
			return fmt.Sprintf("worked for %dms", ms), nil
		case <-ctx.Done():
			return "", ctx.Err()
		}
	})
	worker.Handle(s, AwaitWork, func(ctx context.Context, _ worker.Void) (worker.Void, error) {
		select {
		case <-working:
			return worker.Void{}, nil
		case <-ctx.Done():
			return worker.Void{}, ctx.Err()
		}
	})
	return s
}
