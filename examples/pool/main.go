// Command pool serves HTTP on localhost and offloads its CPU work to a pool
// of worker processes: a handler that crashes or hangs takes down one
// worker, never the server. It then runs a short, bounded load against
// itself and prints the pool's statistics.
//
//	go run ./examples/pool
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/isolated-workers/worker"
)

// Primes counts the primes below N, the slow way: CPU work.
var Primes = worker.Define[int, int]("primes")

func main() {
	worker.Main(newServer()) // in a worker: serves, then exits

	exe, err := os.Executable()
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	pool, err := worker.NewPool(ctx, func() *exec.Cmd { return exec.Command(exe) }, &worker.PoolOptions{
		Min: 1, Max: runtime.NumCPU(), // grows under load, shrinks when idle
		MaxInFlight: 1,   // CPU work: one call per worker (per core)
		MaxQueue:    64,  // past that, shed load: 503
		MaxCalls:    200, // recycle workers now and then
		Worker:      &worker.Options{OnCrash: worker.CrashPolicy{Attempts: 2}},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: handler(pool)}
	go srv.Serve(ln)
	fmt.Println("serving on", ln.Addr())

	load(ln.Addr().String(), 16, 400) // 16 clients, 400 requests in all
	s := pool.Stats()
	fmt.Printf("members: %d idle, %d busy, %d starting, %d retiring; completed %d, failed %d, crashes %d, recycles %d\n",
		s.Idle, s.Busy, s.Starting, s.Retiring, s.Completed, s.Failed, s.Crashes, s.Recycles)
	fmt.Printf("wait p50 %v p99 %v; run p50 %v p99 %v\n", s.Wait.P50, s.Wait.P99, s.Run.P50, s.Run.P99)

	shutdown, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	srv.Shutdown(shutdown)
	if err := pool.Shutdown(shutdown); err != nil {
		log.Fatal(err)
	}
	fmt.Println("pool shut down")
}

// handler answers /primes?n=N from the pool.
func handler(pool *worker.Pool) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/primes", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.Atoi(r.URL.Query().Get("n"))
		if err != nil || n < 0 || n > 1_000_000 {
			http.Error(w, "n: a number from 0 to 1000000", http.StatusBadRequest)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		count, err := worker.Call(ctx, pool, Primes, n)
		switch {
		case errors.Is(err, worker.ErrPoolFull):
			http.Error(w, "busy, try again", http.StatusServiceUnavailable)
		case err != nil:
			http.Error(w, err.Error(), http.StatusInternalServerError)
		default:
			json.NewEncoder(w).Encode(map[string]int{"n": n, "primes": count})
		}
	})
	return mux
}

// load sends requests from clients goroutines, total in all, and prints
// how they went.
func load(addr string, clients, total int) {
	var mu sync.Mutex
	codes := map[int]int{}
	var wg sync.WaitGroup
	start := time.Now()
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := c; i < total; i += clients {
				resp, err := http.Get(fmt.Sprintf("http://%s/primes?n=%d", addr, 20_000+i*50))
				code := 0
				if err == nil {
					code = resp.StatusCode
					resp.Body.Close()
				}
				mu.Lock()
				codes[code]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	fmt.Printf("%d requests in %v: %d ok, %d shed (503), %d failed\n", total, time.Since(start).Round(time.Millisecond),
		codes[http.StatusOK], codes[http.StatusServiceUnavailable], total-codes[http.StatusOK]-codes[http.StatusServiceUnavailable])
}

func newServer() *worker.Server {
	s := worker.NewServer(nil)
	worker.Handle(s, Primes, func(ctx context.Context, n int) (int, error) {
		count := 0
		for i := 2; i < n; i++ {
			if i%1000 == 0 && ctx.Err() != nil {
				return 0, ctx.Err()
			}
			prime := true
			for d := 2; d*d <= i; d++ {
				if i%d == 0 {
					prime = false
					break
				}
			}
			if prime {
				count++
			}
		}
		return count, nil
	})
	return s
}
