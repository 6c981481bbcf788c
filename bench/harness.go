package main

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/isolated-workers/worker/bench/internal/child"
)

// Config sets how much work one round does per subject.
type Config struct {
	Rounds   int // measured rounds (plus one unrecorded warm-up round)
	Seq      int // sequential small calls per round (p50 is taken)
	Inflight int // small calls per round, Concurrency at a time
	Conc     int // calls in flight for the throughput metric
	Big      int // 1 MiB echoes per round (median is taken)
	BigSize  int
	Spawns   int // spawn+close cycles per round (median is taken)
}

// DefaultConfig takes about 2-3 minutes for all subjects on 2 cores.
var DefaultConfig = Config{Rounds: 15, Seq: 5000, Inflight: 50000, Conc: 64, Big: 20, BigSize: 1 << 20, Spawns: 15}

func (c Config) warmup() Config {
	return Config{Rounds: 1, Seq: 300, Inflight: 3000, Conc: c.Conc, Big: 3, BigSize: c.BigSize, Spawns: 2}
}

// Result is one subject's numbers for one round. Zero means n/a.
type Result struct {
	SeqP50 time.Duration
	Rate   float64 // calls/s with Conc in flight
	Big    time.Duration
	Spawn  time.Duration
	Close  time.Duration
}

func median(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// SpawnOnce measures one spawn (until the first reply) and one close.
func SpawnOnce(ctx context.Context, s Subject) (spawn, close time.Duration, err error) {
	t0 := time.Now()
	c, err := s.Spawn(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("spawn: %w", err)
	}
	if err := c.Ping(ctx); err != nil {
		c.Close()
		return 0, 0, fmt.Errorf("first call: %w", err)
	}
	t1 := time.Now()
	if err := c.Close(); err != nil {
		return 0, 0, fmt.Errorf("close: %w", err)
	}
	return t1.Sub(t0), time.Since(t1), nil
}

// Inflight runs total Ping calls with conc goroutines sharing the client.
func Inflight(ctx context.Context, c Client, total, conc int) (time.Duration, error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	var firstErr atomic.Value
	start := time.Now()
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(total) {
				if err := c.Ping(ctx); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	if err, _ := firstErr.Load().(error); err != nil {
		return 0, err
	}
	return el, nil
}

// Warm drives a fresh client through every call kind once or a few times
// and checks the replies in full.
func Warm(ctx context.Context, s Subject, c Client, cfg Config) error {
	for range 100 {
		if err := c.Ping(ctx); err != nil {
			return fmt.Errorf("warm ping: %w", err)
		}
	}
	if !s.NoConcurrent {
		if _, err := Inflight(ctx, c, 10*cfg.Conc, cfg.Conc); err != nil {
			return fmt.Errorf("warm in flight: %w", err)
		}
	}
	if !s.NoBig {
		big := child.Payload(cfg.BigSize)
		for range 2 {
			out, err := c.Echo(ctx, big)
			if err != nil {
				return fmt.Errorf("warm echo: %w", err)
			}
			if !bytes.Equal(out, big) {
				return fmt.Errorf("warm echo: reply differs (%d bytes)", len(out))
			}
		}
	}
	return nil
}

// MeasureRound measures every metric of one subject once.
func MeasureRound(s Subject, cfg Config) (Result, error) {
	var r Result
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	var spawns, closes []time.Duration
	for range cfg.Spawns {
		runtime.GC()
		sp, cl, err := SpawnOnce(ctx, s)
		if err != nil {
			return r, err
		}
		spawns = append(spawns, sp)
		closes = append(closes, cl)
	}
	r.Spawn, r.Close = median(spawns), median(closes)

	c, err := s.Spawn(ctx)
	if err != nil {
		return r, fmt.Errorf("spawn: %w", err)
	}
	closed := false
	defer func() {
		if !closed {
			c.Close()
		}
	}()
	if err := Warm(ctx, s, c, cfg); err != nil {
		return r, err
	}

	runtime.GC()
	lat := make([]time.Duration, cfg.Seq)
	for i := range lat {
		t := time.Now()
		if err := c.Ping(ctx); err != nil {
			return r, fmt.Errorf("seq: %w", err)
		}
		lat[i] = time.Since(t)
	}
	r.SeqP50 = median(lat)

	if !s.NoConcurrent {
		runtime.GC()
		el, err := Inflight(ctx, c, cfg.Inflight, cfg.Conc)
		if err != nil {
			return r, fmt.Errorf("in flight: %w", err)
		}
		r.Rate = float64(cfg.Inflight) / el.Seconds()
	}

	if !s.NoBig {
		big := child.Payload(cfg.BigSize)
		runtime.GC()
		lat = lat[:0]
		for range cfg.Big {
			t := time.Now()
			out, err := c.Echo(ctx, big)
			if err != nil {
				return r, fmt.Errorf("echo: %w", err)
			}
			d := time.Since(t)
			if len(out) != len(big) {
				return r, fmt.Errorf("echo: got %d bytes", len(out))
			}
			lat = append(lat, d)
		}
		r.Big = median(lat)
	}
	closed = true
	if err := c.Close(); err != nil {
		return r, fmt.Errorf("close: %w", err)
	}
	return r, nil
}
