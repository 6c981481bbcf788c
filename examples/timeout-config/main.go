// Command timeout-config shows how calls are bounded in time: a default
// timeout for every call (Options.Timeout), a longer one for a message type
// that needs it (Options.Timeouts), and the caller's own context deadline
// or cancellation. In every case the handler's context on the worker ends
// too, so the worker stops working for a caller that left.
//
//	go run ./examples/timeout-config
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"os/exec"
	"time"

	"github.com/isolated-workers/worker"
)

func main() {
	worker.Main(newServer()) // in the worker: serves, then exits

	ctx := context.Background()
	exe, err := os.Executable()
	if err != nil {
		log.Fatal(err)
	}
	w, err := worker.Spawn(ctx, exec.Command(exe), &worker.Options{
		Timeout:  200 * time.Millisecond,                                   // every call...
		Timeouts: map[string]time.Duration{Report.Name(): 2 * time.Second}, // ...but reports
	})
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close()
	fmt.Println("Options.Timeout = 200ms, Options.Timeouts[\"report\"] = 2s")

	// 1. Quick work finishes within the default timeout.
	res, err := worker.Call(ctx, w, Work, WorkRequest{ID: "quick", Ms: 10})
	fmt.Printf("work(10ms):    result=%+v err=%v\n", res, err)

	// 2. Slow work hits the default timeout. The error matches
	// context.DeadlineExceeded, and the handler's context has ended.
	start := time.Now()
	_, err = worker.Call(ctx, w, Work, WorkRequest{ID: "slow", Ms: 5000})
	fmt.Printf("work(5s):      err=%v\n", err)
	fmt.Printf("               after ~%v, errors.Is(err, context.DeadlineExceeded)=%v\n",
		roughly(time.Since(start)), errors.Is(err, context.DeadlineExceeded))
	report(ctx, w)

	// 3. The per-type timeout lets a report take 400ms.
	res, err = worker.Call(ctx, w, Report, WorkRequest{ID: "report", Ms: 400})
	fmt.Printf("report(400ms): result=%+v err=%v\n", res, err)

	// 4. The caller's deadline is earlier than the timeout: it wins.
	dctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	start = time.Now()
	_, err = worker.Call(dctx, w, Report, WorkRequest{ID: "deadline", Ms: 5000})
	cancel()
	fmt.Printf("report(5s) with a 50ms context: err=%v\n", err)
	fmt.Printf("               after ~%v, errors.Is(err, context.DeadlineExceeded)=%v\n",
		roughly(time.Since(start)), errors.Is(err, context.DeadlineExceeded))
	report(ctx, w)

	// 5. The caller cancels a call in progress: the worker is told, and the
	// handler's context is cancelled.
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := worker.Call(cctx, w, Report, WorkRequest{ID: "cancelled", Ms: 5000})
		done <- err
	}()
	if _, err := worker.Call(ctx, w, AwaitStarted, "cancelled"); err != nil {
		log.Fatal(err)
	}
	fmt.Println("report(5s) has started; cancelling its context")
	cancel()
	err = <-done
	fmt.Printf("report(5s), cancelled: err=%v, errors.Is(err, context.Canceled)=%v\n",
		err, errors.Is(err, context.Canceled))
	report(ctx, w)

	w.Close()
	fmt.Println("worker closed")
}

// report asks the worker what the last interrupted handler saw.
func report(ctx context.Context, w *worker.Worker) {
	obs, err := worker.Call(ctx, w, LastCancellation, worker.Void{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("               the handler of %q saw ctx.Err()=%q (it had a deadline: %v)\n",
		obs.ID, obs.CtxErr, obs.HadDeadline)
}

// roughly rounds a duration for the trace: the exact value varies.
func roughly(d time.Duration) time.Duration { return d.Round(50 * time.Millisecond) }

// newServer is the worker side.
func newServer() *worker.Server {
	started := make(chan string, 16)          // IDs of work that began
	interrupted := make(chan Observation, 16) // what interrupted handlers saw

	work := func(ctx context.Context, req WorkRequest) (WorkResult, error) {
		select {
		case started <- req.ID:
		default:
		}
		t := time.NewTimer(time.Duration(req.Ms) * time.Millisecond)
		defer t.Stop()
		select {
		case <-t.C: // the simulated work is done
			return WorkResult{ID: req.ID}, nil
		case <-ctx.Done():
			_, hasDeadline := ctx.Deadline()
			interrupted <- Observation{ID: req.ID, CtxErr: ctx.Err().Error(), HadDeadline: hasDeadline}
			return WorkResult{}, ctx.Err()
		}
	}

	s := worker.NewServer(nil)
	worker.Handle(s, Work, work)
	worker.Handle(s, Report, work)
	worker.Handle(s, AwaitStarted, func(ctx context.Context, id string) (worker.Void, error) {
		for {
			select {
			case got := <-started:
				if got == id {
					return worker.Void{}, nil
				}
			case <-ctx.Done():
				return worker.Void{}, ctx.Err()
			}
		}
	})
	worker.Handle(s, LastCancellation, func(ctx context.Context, _ worker.Void) (Observation, error) {
		select {
		case o := <-interrupted:
			return o, nil
		case <-ctx.Done():
			return Observation{}, ctx.Err()
		}
	})
	return s
}
