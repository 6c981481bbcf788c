package main

import (
	"bytes"
	"context"
	"os"
	"testing"
	"time"

	"github.com/isolated-workers/worker/bench/internal/child"
)

// The test binary is also the helper binary of the children it spawns.
func TestMain(m *testing.M) {
	runChildIfRequested()
	os.Exit(m.Run())
}

// TestSubjects checks that every subject spawns, answers a small call, 64
// concurrent calls and a 1 MiB echo correctly, and closes.
func TestSubjects(t *testing.T) {
	for _, s := range subjects {
		t.Run(s.ID, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			c, err := s.Spawn(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Ping(ctx); err != nil {
				t.Fatal(err)
			}
			if !s.NoConcurrent {
				if _, err := Inflight(ctx, c, 640, 64); err != nil {
					t.Fatal(err)
				}
			}
			if !s.NoBig {
				big := child.Payload(1 << 20)
				out, err := c.Echo(ctx, big)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(out, big) {
					t.Fatalf("1 MiB echo differs (%d bytes back)", len(out))
				}
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestCompare runs the whole comparison once with tiny counts (a smoke
// test of the harness; the real run is `go run .`).
func TestCompare(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	cfg := Config{Rounds: 1, Seq: 50, Inflight: 640, Conc: 64, Big: 2, BigSize: 1 << 20, Spawns: 1}
	var out bytes.Buffer
	if err := Compare(&out, testWriter{t}, subjects, cfg); err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + out.String())
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimSpace(p)))
	return len(p), nil
}

// withClient spawns s, warms it up and hands the client to f.
func withClient(b *testing.B, s Subject, f func(ctx context.Context, c Client)) {
	ctx := context.Background()
	c, err := s.Spawn(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	if err := Warm(ctx, s, c, DefaultConfig); err != nil {
		b.Fatal(err)
	}
	f(ctx, c)
}

// BenchmarkSeq: one small call at a time; ns/op is the round trip.
func BenchmarkSeq(b *testing.B) {
	for _, s := range subjects {
		b.Run(s.ID, func(b *testing.B) {
			withClient(b, s, func(ctx context.Context, c Client) {
				b.ReportAllocs()
				b.ResetTimer()
				for range b.N {
					if err := c.Ping(ctx); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}

// BenchmarkInflight64: b.N small calls, 64 in flight on one client.
func BenchmarkInflight64(b *testing.B) {
	for _, s := range subjects {
		if s.NoConcurrent {
			continue
		}
		b.Run(s.ID, func(b *testing.B) {
			withClient(b, s, func(ctx context.Context, c Client) {
				b.ReportAllocs()
				b.ResetTimer()
				el, err := Inflight(ctx, c, b.N, 64)
				if err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(b.N)/el.Seconds(), "msgs/s")
			})
		})
	}
}

// BenchmarkEcho1MiB: round trip of a 1 MiB []byte echoed back.
func BenchmarkEcho1MiB(b *testing.B) {
	for _, s := range subjects {
		if s.NoBig {
			continue
		}
		b.Run(s.ID, func(b *testing.B) {
			withClient(b, s, func(ctx context.Context, c Client) {
				big := child.Payload(1 << 20)
				b.SetBytes(int64(len(big)))
				b.ReportAllocs()
				b.ResetTimer()
				for range b.N {
					out, err := c.Echo(ctx, big)
					if err != nil {
						b.Fatal(err)
					}
					if len(out) != len(big) {
						b.Fatalf("got %d bytes", len(out))
					}
				}
			})
		})
	}
}

// BenchmarkSpawn: from the start of spawn until the first reply (close
// is excluded from the timing).
func BenchmarkSpawn(b *testing.B) {
	for _, s := range subjects {
		b.Run(s.ID, func(b *testing.B) {
			ctx := context.Background()
			b.ReportAllocs()
			for range b.N {
				c, err := s.Spawn(ctx)
				if err != nil {
					b.Fatal(err)
				}
				if err := c.Ping(ctx); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if err := c.Close(); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}

// BenchmarkClose: from Close until the child is reaped (spawn excluded).
func BenchmarkClose(b *testing.B) {
	for _, s := range subjects {
		b.Run(s.ID, func(b *testing.B) {
			ctx := context.Background()
			b.ReportAllocs()
			for range b.N {
				b.StopTimer()
				c, err := s.Spawn(ctx)
				if err != nil {
					b.Fatal(err)
				}
				if err := c.Ping(ctx); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				if err := c.Close(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
