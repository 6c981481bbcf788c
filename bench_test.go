package worker_test

// In-library benchmarks. The peer comparison with real child processes and
// other libraries lives in the bench module (cd bench && go run .).
//
//	go test -run '^$' -bench . -benchmem
//
// Allocation counts of the in-process benchmarks include both sides (host
// and worker run in this process); those of BenchmarkProcess are the host's.

import (
	"bytes"
	"context"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/isolated-workers/worker"
)

var (
	benchPing = worker.Define[PingReq, PingRes]("benchPing")
	benchEcho = worker.Define[[]byte, []byte]("benchEcho")
)

func benchServer(ser worker.Serializer) *worker.Server {
	s := worker.NewServer(&worker.ServerOptions{Serializer: ser})
	worker.Handle(s, benchPing, func(_ context.Context, p PingReq) (PingRes, error) {
		return PingRes(p), nil
	})
	worker.Handle(s, benchEcho, func(_ context.Context, p []byte) ([]byte, error) { return p, nil })
	return s
}

var bigPayload = func() []byte {
	r := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, 1<<20)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}()

// connPair returns the two ends of a connection of the given kind: "pipe"
// (net.Pipe) or "unix" (a Unix socket in a fresh directory).
func connPair(tb testing.TB, kind string) (host, wk net.Conn) {
	tb.Helper()
	if kind == "pipe" {
		host, wk = net.Pipe()
		return host, wk
	}
	dir, err := os.MkdirTemp("", "b")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	ln, err := net.Listen("unix", filepath.Join(dir, "s"))
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	host, err = net.Dial("unix", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	if wk = <-accepted; wk == nil {
		tb.Fatal("accept failed")
	}
	return host, wk
}

// inProcess serves a bench server on one end of a connection and returns
// a client on the other; both are stopped at the end of the benchmark.
func inProcess(tb testing.TB, kind string, ser worker.Serializer) *worker.Client {
	tb.Helper()
	host, wk := connPair(tb, kind)
	s := benchServer(ser)
	served := make(chan error, 1)
	go func() { served <- s.ServeConn(context.Background(), wk) }()
	c, err := worker.NewClient(context.Background(), host, &worker.Options{Serializer: ser})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		c.Close()
		if err := <-served; err != nil {
			tb.Errorf("ServeConn: %v", err)
		}
	})
	return c
}

var serializers = []struct {
	name string
	ser  worker.Serializer
	role string // the worker role (roles_test.go)
}{{"json", worker.JSON, "worker"}, {"binary", worker.Binary, "worker-binary"}}

// benchCalls runs the three workloads on a caller.
func benchCalls(b *testing.B, c worker.Caller, ping worker.MessageType[PingReq, PingRes], echo worker.MessageType[[]byte, []byte], want string) {
	ctx := context.Background()
	req := PingReq{Message: "hello"}
	b.Run("seq", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			res, err := worker.Call(ctx, c, ping, req)
			if err != nil || res.Message != want {
				b.Fatal(res, err)
			}
		}
	})
	b.Run("par64", func(b *testing.B) {
		b.ReportAllocs()
		var wg sync.WaitGroup
		work := make(chan struct{}, 1024)
		var once sync.Once
		for range 64 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range work {
					res, err := worker.Call(ctx, c, ping, req)
					if err != nil || res.Message != want {
						once.Do(func() { b.Error(res, err) })
					}
				}
			}()
		}
		b.ResetTimer()
		for range b.N {
			work <- struct{}{}
		}
		close(work)
		wg.Wait()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	})
	b.Run("1MiB", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(2 << 20)
		for b.Loop() {
			out, err := worker.Call(ctx, c, echo, bigPayload)
			if err != nil || len(out) != len(bigPayload) {
				b.Fatal(len(out), err)
			}
		}
		out, _ := worker.Call(ctx, c, echo, bigPayload)
		if !bytes.Equal(out, bigPayload) {
			b.Fatal("the echo differs")
		}
	})
}

// BenchmarkInProcess: a Server and a Client in this process, over net.Pipe
// or a Unix socket.
func BenchmarkInProcess(b *testing.B) {
	for _, kind := range []string{"pipe", "unix"} {
		for _, s := range serializers {
			b.Run(kind+"/"+s.name, func(b *testing.B) {
				c := inProcess(b, kind, s.ser)
				benchCalls(b, c, benchPing, benchEcho, "hello")
			})
		}
	}
}

// BenchmarkProcess: a real worker process (this test binary re-executed).
func BenchmarkProcess(b *testing.B) {
	for _, s := range serializers {
		b.Run(s.name, func(b *testing.B) {
			w := spawn(b, s.role, &worker.Options{Serializer: s.ser})
			benchCalls(b, w, Ping, Echo, "pong: hello")
		})
	}
}

// BenchmarkSpawnClose: spawn a worker, make one call, close it.
func BenchmarkSpawnClose(b *testing.B) {
	b.ReportAllocs()
	ctx := context.Background()
	for b.Loop() {
		w, err := worker.Spawn(ctx, roleCmd(b, "worker"), nil)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := worker.Call(ctx, w, Ping, PingReq{Message: "hi"}); err != nil {
			b.Fatal(err)
		}
		w.Close()
	}
}

// A small call, client and server together in this process, allocates at
// most 10 times (the payload, the result and what they hold included).
func TestAllocsPerCall(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector changes allocation counts")
	}
	for _, s := range serializers {
		t.Run(s.name, func(t *testing.T) {
			c := inProcess(t, "pipe", s.ser)
			ctx := context.Background()
			req := PingReq{Message: "hello"}
			call := func() {
				if res, err := worker.Call(ctx, c, benchPing, req); err != nil || res.Message != "hello" {
					t.Fatal(res, err)
				}
			}
			for range 100 {
				call() // fill the pools and caches
			}
			if n := testing.AllocsPerRun(1000, call); n > 10 {
				t.Errorf("%.1f allocations per call; want at most 10", n)
			} else {
				t.Logf("%.1f allocations per call", n)
			}
		})
	}
}

// BenchmarkStream: streams of 100,000 small items from a real worker
// process (the figures against the floor and the peers are streambench's,
// in bench/).
func BenchmarkStream(b *testing.B) {
	ctx := context.Background()
	for _, s := range serializers {
		b.Run(s.name, func(b *testing.B) {
			w := spawn(b, s.role, &worker.Options{Serializer: s.ser})
			const n = 100_000
			for b.Loop() {
				items, result := worker.Stream(ctx, w, STCount, n)
				got := 0
				for _, err := range items {
					if err != nil {
						b.Fatal(err)
					}
					got++
				}
				if sum, err := result(); err != nil || got != n || sum != n*(n-1)/2 {
					b.Fatal(got, sum, err)
				}
			}
			b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "items/s")
		})
	}
}
