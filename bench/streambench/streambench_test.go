package main

import (
	"bytes"
	"context"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// The test binary is also the children's binary.
func TestMain(m *testing.M) {
	runChildIfRequested()
	os.Exit(m.Run())
}

// TestRun runs the whole comparison once with tiny counts: every subject
// streams both kinds of item (every item checked) and runs the slow
// consumer. Nothing about speed or memory is asserted: only that every
// subject has its rows and that the library's slow-consumer streams
// completed.
func TestRun(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Rounds, cfg.Small, cfg.Big, cfg.MemItems = 1, 5000, 100, 40
	subs, all, err := measureAll(testWriter{t, new(bytes.Buffer)}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	report(&out, subs, all, cfg, time.Second)
	t.Log("\n" + out.String())
	for i, s := range subs {
		if n := strings.Count(out.String(), "| "+s.Name+" | "); n != 6 {
			t.Errorf("%d rows for %s, want 6 (3 tables, 3 spread tables)", n, s.ID)
		}
		if m := all[i][0].Mem; strings.HasPrefix(s.ID, "worker-") && (m.Capped || m.Err != "" || m.Items != cfg.MemItems) {
			t.Errorf("%s: the slow-consumer stream did not complete: %+v", s.ID, m)
		}
	}
	for _, h := range []string{"### 1. Small items", "### 2. Big items", "### 3. Slow consumer", "### Spread across rounds", "### Goals of issue 13"} {
		if !strings.Contains(out.String(), h) {
			t.Errorf("no %q in the report", h)
		}
	}
}

// TestEarlyStop: a consumer that stops a stream gets its error back and
// the items it took, for every subject (the slow consumer's cap relies on
// it).
func TestEarlyStop(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, s := range subjects() {
		t.Run(s.ID, func(t *testing.T) {
			c, err := s.Spawn(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			n := 0
			got, err := c.Bytes(ctx, 1000, 1<<10, func([]byte) error {
				if n++; n == 10 {
					return errStopped
				}
				return nil
			})
			if got != 9 || err == nil {
				t.Fatalf("got %d items, err %v; want 9 and an error", got, err)
			}
		})
	}
}

func TestSelectSubjects(t *testing.T) {
	subs, err := selectSubjects([]string{"ttrpc", "raw"})
	if err != nil {
		t.Fatal(err)
	}
	if ids := []string{subs[0].ID, subs[1].ID}; !slices.Equal(ids, []string{"ttrpc", "raw"}) {
		t.Fatalf("selected %v", ids)
	}
	if _, err := selectSubjects([]string{"nope"}); err == nil {
		t.Fatal("an unknown subject was accepted")
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
