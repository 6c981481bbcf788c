package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/isolated-workers/worker"
)

// The test binary is also the members' binary.
func TestMain(m *testing.M) {
	worker.Main(memberServer())
	os.Exit(m.Run())
}

// TestRun runs the whole comparison once with tiny durations: every
// subject, the peers included (npm ci installs the pinned Node packages
// when they are missing; a missing node or npm fails the test with what
// to do). Nothing about speed is asserted: only that every subject ran and
// has its row.
func TestRun(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Rounds, cfg.Dur, cfg.Warm = 1, 50*time.Millisecond, 20*time.Millisecond
	var out bytes.Buffer
	if err := Run(&out, testWriter{t, new(bytes.Buffer)}, cfg); err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + out.String())
	report := out.String()
	for _, s := range subjects(cfg) {
		if s.Peer == "python3" && strings.Contains(report, "python3 not found") {
			continue // by design: Python's row is left out without python3, and the report says so
		}
		if !strings.Contains(report, "| "+s.Name+" | ") {
			t.Errorf("no row for %s (%s)", s.ID, s.Name)
		}
	}
	for _, h := range []string{"### 1. Dispatch", "### 2. CPU", "### 3. Recycling", "### Spread across rounds", "### Goals"} {
		if !strings.Contains(report, h) {
			t.Errorf("no %q in the report", h)
		}
	}
}

// TestPeerFailure: a peer program that fails makes the run fail with its
// stderr, not a row of zeros.
func TestPeerFailure(t *testing.T) {
	dir, err := peersDir("")
	if err != nil {
		t.Fatal(err)
	}
	_, err = runPeer(context.Background(), dir, "node", "-e", "console.error('boom'); process.exit(3)")
	if err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("err = %v, want the peer's stderr", err)
	}
	_, err = runPeer(context.Background(), dir, "node", "-e", "console.log('{\"ops\":0}')")
	if err == nil {
		t.Fatal("a peer that reports no calls was accepted")
	}
}

func TestSelectSubjects(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Only = []string{"pool", "piscina"}
	subs, err := selectSubjects(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if ids := []string{subs[0].ID, subs[1].ID}; !slices.Equal(ids, cfg.Only) {
		t.Fatalf("selected %v", ids)
	}
	cfg.Only = []string{"nope"}
	if _, err := selectSubjects(cfg); err == nil {
		t.Fatal("an unknown subject was accepted")
	}
}

// TestDrive: every caller's calls are counted, and the first error stops
// the run and is returned.
func TestDrive(t *testing.T) {
	ctx := context.Background()
	d, err := drive(ctx, 8, 20*time.Millisecond, true, func(context.Context, int) error { return nil })
	if err != nil || d.calls == 0 || len(d.lat) != d.calls {
		t.Fatalf("calls %d, latencies %d, err %v", d.calls, len(d.lat), err)
	}
	boom := errors.New("boom")
	if _, err := drive(ctx, 8, time.Minute, false, func(_ context.Context, i int) error {
		if i == 3 {
			return boom
		}
		return nil
	}); !errors.Is(err, boom) {
		t.Fatalf("err = %v, want boom", err)
	}
	sorted := []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	if p := percentile(sorted, 0.5); p != 5 {
		t.Fatalf("p50 = %v", p)
	}
	if p := percentile(sorted, 0.99); p != 10 {
		t.Fatalf("p99 = %v", p)
	}
}

// testWriter logs the progress a line at a time.
type testWriter struct {
	t   *testing.T
	buf *bytes.Buffer
}

func (w testWriter) Write(p []byte) (int, error) {
	w.buf.Write(p)
	for {
		line, err := w.buf.ReadString('\n')
		if err != nil {
			w.buf.WriteString(line) // an unfinished line: keep it
			return len(p), nil
		}
		w.t.Log(strings.TrimSpace(line))
	}
}
