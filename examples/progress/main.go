// Command progress shows a worker's progress on the host as a progress bar,
// in the two ways the library offers:
//
//  1. a stream (worker.Stream): the worker sends each item's result as it
//     completes, and the host's range over the items drives the bar;
//  2. an ordinary call whose handler reports its progress (worker.Report),
//     observed on the host with worker.WithProgress.
//
// It then crashes the worker past halfway through a call made under
// CrashPolicy{Attempts: 2}: the call is sent again to a fresh worker, and
// the observer is told so (Attempt 2) instead of seeing the bar silently
// go back to zero.
//
// On a terminal the bar redraws itself in place; when stdout is not a
// terminal (a pipe, CI) it prints a line every 25% instead.
//
//	go run ./examples/progress
package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/isolated-workers/worker"
)

// The contract.
var (
	// Squares processes items 0..n-1 and streams each result; the final
	// result is their sum.
	Squares = worker.DefineStream[int, int, int]("squares")
	// Process processes the items of a Job and returns their sum,
	// reporting its progress as it goes.
	Process = worker.Define[Job, int]("process")
)

// Job is the payload of Process.
type Job struct {
	Items int `json:"items"`
	// CrashInPid makes the handler exit at 60% when it runs in the process
	// of that pid: a stand-in for a bug that kills the first worker only.
	// (A pid, not a flag in the payload, since a call sent again after a
	// crash carries the very same payload.)
	CrashInPid int `json:"crashInPid,omitempty"`
}

const items = 100

func main() {
	worker.Main(newServer()) // in the worker: serves, then exits

	exe, err := os.Executable()
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	w, err := worker.Spawn(ctx, exec.Command(exe), &worker.Options{
		// A call in flight when the worker dies is sent to a fresh worker,
		// two processes in all.
		OnCrash: worker.CrashPolicy{Attempts: 2},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close()
	tty := isTerminal(os.Stdout)

	// 1. A stream: every item is a result, so the range itself is the
	// progress, and nothing is skipped.
	fmt.Println("stream: the range drives the bar")
	bar := newBar(tty)
	results, result := worker.Stream(ctx, w, Squares, items)
	done := 0
	for _, err := range results {
		if err != nil {
			log.Fatal(err)
		}
		done++
		bar.update(worker.Progress{Done: int64(done), Total: items, Attempt: 1})
	}
	sum, err := result()
	if err != nil {
		log.Fatal(err)
	}
	bar.finish()
	fmt.Printf("stream: sum of squares = %d\n\n", sum)

	// 2. An ordinary call with progress reports: only the result travels
	// as data; the observer gets the latest report when it falls behind.
	fmt.Println("call: worker.Report drives the bar")
	sum = call(ctx, w, Job{Items: items}, tty)
	fmt.Printf("call: sum of squares = %d\n\n", sum)

	// 3. The same call, crashing the first worker at 60%.
	fmt.Println("call, the first worker crashes at 60% (CrashPolicy{Attempts: 2})")
	sum = call(ctx, w, Job{Items: items, CrashInPid: w.Pid()}, tty)
	fmt.Printf("call: sum of squares = %d, served by a fresh worker\n", sum)
}

// call makes a Process call whose progress draws a bar.
func call(ctx context.Context, w *worker.Worker, job Job, tty bool) int {
	bar := newBar(tty)
	sum, err := worker.Call(worker.WithProgress(ctx, bar.update), w, Process, job)
	if err != nil {
		log.Fatal(err)
	}
	// The observer runs on a goroutine of its own and may not have seen
	// the last report yet when Call returns: finish draws the end and
	// ignores whatever comes later.
	bar.finish()
	return sum
}

func newServer() *worker.Server {
	s := worker.NewServer(nil)
	worker.HandleStream(s, Squares, func(ctx context.Context, n int, send func(int) error) (int, error) {
		sum := 0
		for i := range n {
			sq, err := work(ctx, i)
			if err != nil {
				return 0, err
			}
			if err := send(sq); err != nil {
				return 0, err // the host left the range
			}
			sum += sq
		}
		return sum, nil
	})
	worker.Handle(s, Process, func(ctx context.Context, job Job) (int, error) {
		sum := 0
		for i := range job.Items {
			if i == job.Items*3/5 && os.Getpid() == job.CrashInPid {
				os.Exit(3) // the crash: no reply, no error, the process is gone
			}
			sq, err := work(ctx, i)
			if err != nil {
				return 0, err
			}
			sum += sq
			// Report does not wait: reporting every item costs little.
			worker.Report(ctx, worker.Progress{Done: int64(i + 1), Total: int64(job.Items), Message: "squaring"})
		}
		return sum, nil
	})
	return s
}

// work processes item i: 10 to 14 ms of pretend work, cut short if the
// call is cancelled.
func work(ctx context.Context, i int) (int, error) {
	select {
	case <-time.After(time.Duration(10+i%5) * time.Millisecond):
		return i * i, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// bar draws progress: in place on a terminal, a line per quarter elsewhere.
// Its methods are safe to call from the observer's goroutine.
type bar struct {
	tty      bool
	mu       sync.Mutex
	last     worker.Progress
	quarters int64 // the quarters printed so far (not a terminal)
	finished bool
}

func newBar(tty bool) *bar { return &bar{tty: tty} }

func (b *bar) update(p worker.Progress) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.finished {
		return
	}
	if p.Attempt > 1 && p.Attempt != b.last.Attempt {
		// The call was sent again: say so, rather than letting the bar jump
		// back to 0 as if nothing had happened.
		if b.tty {
			fmt.Println()
		}
		fmt.Printf("  %s\n", p.Message)
		b.quarters = 0
	}
	b.last = p
	if p.Total == 0 {
		return
	}
	if b.tty {
		fmt.Printf("\r  %s", b.line(p))
		return
	}
	for q := 4 * p.Done / p.Total; b.quarters < q; {
		b.quarters++
		fmt.Printf("  %3d%% (attempt %d)\n", 25*b.quarters, p.Attempt)
	}
}

// finish draws the bar complete; later reports are ignored.
func (b *bar) finish() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.finished = true
	p := b.last
	p.Done = p.Total
	if b.tty {
		fmt.Printf("\r  %s\n", b.line(p))
		return
	}
	for b.quarters < 4 {
		b.quarters++
		fmt.Printf("  %3d%% (attempt %d)\n", 25*b.quarters, p.Attempt)
	}
}

func (b *bar) line(p worker.Progress) string {
	const width = 40
	filled := int(width * p.Done / p.Total)
	return fmt.Sprintf("[%s%s] %3d/%d (attempt %d)", strings.Repeat("#", filled), strings.Repeat(".", width-filled),
		p.Done, p.Total, p.Attempt)
}

// isTerminal reports whether f is a terminal (a character device) rather
// than a pipe or a file, without a dependency.
func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
