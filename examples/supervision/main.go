// Command supervision keeps a crashy, hanging worker serving: the library
// restarts it after each crash, kills it when a handler hangs past its
// cancellation, and prints a one-line report for each, with the line
// that says why and, for the hang, the goroutine that was stuck.
//
//	go run ./examples/supervision
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"time"

	"github.com/isolated-workers/worker"
)

// The contract.
var (
	// Square squares n; it crashes the worker on 13 (a bug in native code,
	// say) and hangs, ignoring its context, on 42.
	Square = worker.Define[int, int]("square")
)

func main() {
	worker.Main(newServer()) // in the worker: serves, then exits

	exe, err := os.Executable()
	if err != nil {
		log.Fatal(err)
	}
	events := make(chan worker.Event, 16)
	w, err := worker.Spawn(context.Background(), exec.Command(exe), &worker.Options{
		OnCrash:      worker.CrashPolicy{Restart: true}, // a fresh worker for the next call
		StuckTimeout: 500 * time.Millisecond,            // a hang is told from slowness this soon
		OnEvent:      func(e worker.Event) { events <- e },
	})
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close()

	for _, n := range []int{3, 13, 4, 42, 5} {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		sq, err := worker.Call(ctx, w, Square, n)
		cancel()
		switch {
		case err == nil:
			fmt.Printf("square(%d) = %d\n", n, sq)
		case errors.Is(err, context.DeadlineExceeded):
			fmt.Printf("square(%d): timed out (the handler ignores its context)\n", n)
		default:
			fmt.Printf("square(%d): %v\n", n, trimPid(err.Error()))
		}
		if err != nil {
			report(events)
		}
	}
}

// report prints the events of one crash, up to the restart.
func report(events <-chan worker.Event) {
	for e := range events {
		switch e.Kind {
		case worker.EventStuck:
			var crash *worker.CrashError
			errors.As(e.Err, &crash)
			fmt.Printf("  stuck; the goroutine that hung:\n%s\n", indent(firstFrames(crash.Goroutines, 2)))
		case worker.EventCrashed:
			var crash *worker.CrashError
			errors.As(e.Err, &crash)
			if crash.Reason != "" {
				fmt.Printf("  crashed: %s\n", crash.Reason) // the line of its stderr that says why
			} else {
				fmt.Printf("  crashed: %v\n", crash.Err)
			}
		case worker.EventRestarted:
			fmt.Println("  restarted: a fresh worker serves the next calls")
			return
		}
	}
}

func newServer() *worker.Server {
	s := worker.NewServer(nil)
	worker.Handle(s, Square, square)
	return s
}

// spins is what the hung handler counts; it is never read, but the
// handler does not know that.
var spins atomic.Int64

func square(ctx context.Context, n int) (int, error) {
	switch n {
	case 13:
		var m map[string]int
		go func() { m["unlucky"] = n }() // a nil map write, outside any handler: the process dies
		select {}
	case 42:
		for i := 0; ; i++ { // ignores ctx: only killing the worker stops it
			spins.Store(int64(i))
		}
	}
	return n * n, nil
}

// firstFrames keeps the goroutine header and its first n frames.
func firstFrames(stack string, n int) string {
	lines := strings.Split(stack, "\n")
	return strings.Join(lines[:min(len(lines), 1+2*n)], "\n")
}

func indent(s string) string { return "    " + strings.ReplaceAll(s, "\n", "\n    ") }

// trimPid keeps the output the same from run to run.
func trimPid(s string) string {
	f := strings.Fields(s)
	for i := range f {
		if i > 0 && f[i-1] == "process" {
			f[i] = "N"
		}
	}
	return strings.Join(f, " ")
}
