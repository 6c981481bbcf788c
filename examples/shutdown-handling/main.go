// Command shutdown-handling shows what happens to a call when its worker
// process dies in the middle of it: by default the call fails with a
// *worker.CrashError that tells how the process ended; with a crash policy
// that allows retries, a fresh worker is started and the call is sent
// again.
//
//	go run ./examples/shutdown-handling
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/isolated-workers/worker"
)

func main() {
	worker.Main(newServer()) // in the worker: serves, then exits

	ctx := context.Background()
	exe, err := os.Executable()
	if err != nil {
		log.Fatal(err)
	}

	// 1. The default policy: the call fails, the worker is not replaced.
	fmt.Println("== default crash policy")
	dir := tempDir()
	defer os.RemoveAll(dir)
	w, err := worker.Spawn(ctx, exec.Command(exe), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close()
	fmt.Printf("spawned worker (pid %d)\n", w.Pid())
	_, err = worker.Call(ctx, w, Process, Job{MarkerDir: dir, Input: "hello"})
	var crash *worker.CrashError
	if !errors.As(err, &crash) {
		log.Fatalf("expected a *worker.CrashError, got %T: %v", err, err)
	}
	fmt.Println("call failed:", err)
	fmt.Println("  errors.Is(err, worker.ErrCrashed):", errors.Is(err, worker.ErrCrashed))
	fmt.Printf("  pid=%d exit code=%d attempt %d of %d\n", crash.Pid, crash.ExitCode, crash.Attempt, crash.MaxAttempts)
	fmt.Printf("  the line of its stderr that says why: %q\n", crash.Reason)
	fmt.Println("  worker active:", w.IsActive())
	_, err = worker.Call(ctx, w, Process, Job{MarkerDir: dir, Input: "again"})
	fmt.Println("  a later call fails too:", errors.Is(err, worker.ErrCrashed))
	w.Close()

	// 2. Up to 3 attempts: the call survives the crash.
	fmt.Println("== CrashPolicy{Attempts: 3}")
	dir = tempDir()
	defer os.RemoveAll(dir)
	restarts := make(chan string, 3)
	w, err = worker.Spawn(ctx, exec.Command(exe), &worker.Options{
		OnCrash: worker.CrashPolicy{Attempts: 3},
		OnEvent: func(e worker.Event) {
			if e.Kind == worker.EventRestarted {
				crash := e.Err.(*worker.CrashError)
				restarts <- fmt.Sprintf("restarted: pid %d (exit code %d) replaced by pid %d",
					crash.Pid, crash.ExitCode, e.Pid)
			}
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close()
	first := w.Pid()
	fmt.Printf("spawned worker (pid %d)\n", first)
	out, err := worker.Call(ctx, w, Process, Job{MarkerDir: dir, Input: "hello"})
	if err != nil {
		log.Fatalf("the call failed despite the retries: %v", err)
	}
	fmt.Println(<-restarts) // OnEvent runs on a goroutine of its own
	fmt.Printf("call succeeded: result=%q, handled by pid %d\n", out.Result, out.Pid)
	fmt.Printf("  w.Pid() changed from %d to %d\n", first, w.Pid())
	w.Close()
	fmt.Println("worker closed")
}

func tempDir() string {
	dir, err := os.MkdirTemp("", "shutdown-handling-")
	if err != nil {
		log.Fatal(err)
	}
	return dir
}

// newServer is the worker side.
func newServer() *worker.Server {
	s := worker.NewServer(nil)
	worker.Handle(s, Process, func(ctx context.Context, job Job) (Output, error) {
		marker := filepath.Join(job.MarkerDir, "crashed")
		if _, err := os.Stat(marker); errors.Is(err, os.ErrNotExist) {
			if err := os.WriteFile(marker, nil, 0o600); err != nil {
				return Output{}, err
			}
			fmt.Fprintf(os.Stderr, "worker %d: out of memory (simulated), exiting\n", os.Getpid())
			os.Exit(3) // dies mid-call: no reply is ever sent
		}
		return Output{Result: strings.ToUpper(job.Input), Pid: os.Getpid()}, nil
	})
	return s
}
