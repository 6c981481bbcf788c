package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"time"

	"github.com/isolated-workers/worker/bench/internal/child"
)

// Sample is one subject's figures for one round.
type Sample struct {
	Small, Big float64 // items/s of the small-item and of the big-item stream
	Mem        MemSample
}

// MemSample is the slow-consumer stream of one round.
type MemSample struct {
	Sleep    time.Duration // the consumer's sleep per item
	Quarters [4]float64    // the largest heap growth sampled in each quarter of the items (bytes; NaN: no sample)
	Max      float64       // the largest of them
	Items    int           // items consumed
	Rate     float64       // items consumed per second
	Capped   bool          // stopped at Config.MemCapMiB
	Err      string        // the stream failed (not at the cap)
}

// Run measures the selected subjects in one unrecorded warm-up round and
// cfg.Rounds measured rounds; in each, every subject runs once, alone (its
// child is reaped before the next one starts), and the starting subject
// rotates. The report goes to out, progress to progress.
func Run(out, progress io.Writer, cfg Config) error {
	start := time.Now()
	subs, all, err := measureAll(progress, cfg)
	if err != nil {
		return err
	}
	report(out, subs, all, cfg, time.Since(start))
	return nil
}

// measureAll runs the rounds and returns every subject's samples, one per
// measured round.
func measureAll(progress io.Writer, cfg Config) ([]Subject, [][]Sample, error) {
	subs, err := selectSubjects(cfg.Only)
	if err != nil {
		return nil, nil, err
	}
	all := make([][]Sample, len(subs)) // [subject][round]
	for round := 0; round <= cfg.Rounds; round++ {
		rc, label := cfg, fmt.Sprintf("round %d/%d", round, cfg.Rounds)
		if round == 0 {
			rc, label = cfg.warmup(), "warm-up round"
		}
		fmt.Fprintf(progress, "%s:", label)
		for k := range subs {
			i := (k + round) % len(subs)
			t := time.Now()
			s, err := measureRound(subs[i], rc)
			if err != nil {
				fmt.Fprintln(progress)
				return nil, nil, fmt.Errorf("%s: %w", subs[i].ID, err)
			}
			fmt.Fprintf(progress, " %s %.1fs", subs[i].ID, time.Since(t).Seconds())
			if round > 0 {
				all[i] = append(all[i], s)
			}
		}
		fmt.Fprintln(progress)
	}
	return subs, all, nil
}

// measureRound spawns the subject's child (not measured), warms it up with
// both kinds of stream (every item checked in full), then measures the
// small-item stream, the big-item stream and the slow-consumer stream, in
// that order, on the same child, and closes it.
func measureRound(s Subject, cfg Config) (Sample, error) {
	var smp Sample
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, err := s.Spawn(ctx)
	if err != nil {
		return smp, fmt.Errorf("spawn: %w", err)
	}
	closed := false
	defer func() {
		if !closed {
			c.Close()
		}
	}()

	payload := child.Payload(cfg.BigSize)
	if err := want(1000)(c.Ints(ctx, 1000, inOrder())); err != nil {
		return smp, fmt.Errorf("warm-up, ints: %w", err)
	}
	if err := want(20)(c.Bytes(ctx, 20, cfg.BigSize, func(b []byte) error {
		if !bytes.Equal(b, payload) {
			return fmt.Errorf("%w: an item of %d bytes differs from the payload", errBadItem, len(b))
		}
		return nil
	})); err != nil {
		return smp, fmt.Errorf("warm-up, bytes: %w", err)
	}

	runtime.GC()
	t := time.Now()
	if err := want(cfg.Small)(c.Ints(ctx, cfg.Small, inOrder())); err != nil {
		return smp, fmt.Errorf("ints: %w", err)
	}
	smp.Small = float64(cfg.Small) / time.Since(t).Seconds()

	runtime.GC()
	t = time.Now()
	if err := want(cfg.Big)(c.Bytes(ctx, cfg.Big, cfg.BigSize, sameAs(payload))); err != nil {
		return smp, fmt.Errorf("bytes: %w", err)
	}
	big := time.Since(t)
	smp.Big = float64(cfg.Big) / big.Seconds()

	smp.Mem, err = slowConsumer(ctx, c, cfg, cfg.memSleep(big/time.Duration(cfg.Big)))
	if err != nil {
		return smp, fmt.Errorf("slow consumer: %w", err)
	}
	closed = true
	if err := c.Close(); err != nil {
		return smp, fmt.Errorf("close: %w", err)
	}
	return smp, nil
}

var errBadItem = errors.New("bad item")

// want returns nil when a stream succeeded with n items.
func want(n int) func(int, error) error {
	return func(got int, err error) error {
		switch {
		case err != nil:
			return fmt.Errorf("%w (after %d items)", err, got)
		case got != n:
			return fmt.Errorf("%d items came, not %d", got, n)
		}
		return nil
	}
}

// inOrder checks that the ints are 0, 1, 2, ...
func inOrder() func(int64) error {
	var next int64
	return func(v int64) error {
		if v != next {
			return fmt.Errorf("%w: %d where %d was due", errBadItem, v, next)
		}
		next++
		return nil
	}
}

// sameAs checks a big item cheaply (its length and a few bytes): the
// warm-up compared whole items.
func sameAs(p []byte) func([]byte) error {
	return func(b []byte) error {
		if len(b) != len(p) || b[0] != p[0] || b[len(b)/2] != p[len(p)/2] || b[len(b)-1] != p[len(p)-1] {
			return fmt.Errorf("%w: an item of %d bytes differs from the payload", errBadItem, len(b))
		}
		return nil
	}
}

// slowConsumer streams cfg.MemItems big items and sleeps sleep after
// each. It samples the host's heap in use (runtime.GC, then
// runtime.ReadMemStats: HeapInuse, what is kept rather than garbage not
// yet collected) before the stream and about 40 times during it, evenly
// over the items, and stops the stream early once the heap has grown by
// cfg.MemCapMiB. Max is the largest growth sampled, 0 if the heap never
// grew.
func slowConsumer(ctx context.Context, c Conn, cfg Config, sleep time.Duration) (MemSample, error) {
	m := MemSample{Sleep: sleep}
	var seen [4]bool
	heap := func() float64 {
		var ms runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&ms)
		return float64(ms.HeapInuse)
	}
	heap()
	base := heap() // twice: sync.Pool victims go in the second collection
	every := max(1, cfg.MemItems/40)
	check := sameAs(child.Payload(cfg.BigSize))
	limit := float64(cfg.MemCapMiB << 20)
	i := 0
	t := time.Now()
	got, err := c.Bytes(ctx, cfg.MemItems, cfg.BigSize, func(b []byte) error {
		if err := check(b); err != nil {
			return err
		}
		i++
		time.Sleep(sleep)
		// Sampled at the end of the consumer's sleep, when the producer has
		// had the longest to run ahead, with the item in hand kept alive
		// (the host holds it).
		if i%every == 0 || i == 1 {
			g := heap() - base
			runtime.KeepAlive(b)
			q := min(3, (i-1)*4/cfg.MemItems)
			if !seen[q] || g > m.Quarters[q] {
				m.Quarters[q], seen[q] = g, true
			}
			m.Max = max(m.Max, g)
			if g > limit {
				m.Capped = true
				return errStopped
			}
		}
		return nil
	})
	m.Items, m.Rate = got, float64(got)/time.Since(t).Seconds()
	for q := range m.Quarters {
		if !seen[q] {
			m.Quarters[q] = nan()
		}
	}
	switch {
	case errors.Is(err, errBadItem):
		return m, err
	case m.Capped:
	case err != nil:
		m.Err = err.Error() // an outcome to report (ttrpc's ErrStreamFull), not a failure of the run
	case got != cfg.MemItems:
		return m, fmt.Errorf("%d items came, not %d", got, cfg.MemItems)
	}
	return m, nil
}
