package main

import (
	"fmt"
	"github.com/isolated-workers/worker/bench/internal/benchfmt"
	"io"
	"math"
	"runtime"
	"slices"
	"strings"
	"time"
)

func nan() float64 { return math.NaN() }

// column is one column of a table: a value per subject per round (NaN:
// n/a); a cell is the median across rounds, its spread the min–max.
// Ratios are taken within each round (the two subjects ran in the same
// round, seconds apart), then their median.
type column struct {
	name string
	val  func(sub, round int) float64
	fmt  func(float64) string
}

type table struct {
	title string
	cols  []column
	// outcome, when set, adds a last column of words (not a median).
	outcome func(sub int) string
}

const windowBytes = 1 << 20 // the library's default StreamWindowBytes

func report(w io.Writer, subs []Subject, all [][]Sample, cfg Config, took time.Duration) {
	idx := func(id string) int { return slices.IndexFunc(subs, func(s Subject) bool { return s.ID == id }) }
	get := func(i, r int) (Sample, bool) {
		if i < 0 || r >= len(all[i]) {
			return Sample{}, false
		}
		return all[i][r], true
	}
	val := func(f func(Sample) float64) func(i, r int) float64 {
		return func(i, r int) float64 {
			if s, ok := get(i, r); ok {
				return f(s)
			}
			return nan()
		}
	}
	floor, grpc, ttrpc := idx("raw"), idx("grpc"), idx("ttrpc")

	rateTable := func(title string, rate func(Sample) float64, itemBytes int) table {
		items := val(rate)
		return table{title: title, cols: []column{
			{"items/s", items, benchfmt.Rate},
			{"payload bytes/s", func(i, r int) float64 { return items(i, r) * float64(itemBytes) }, fmtBytesRate},
			{"cost vs floor", func(i, r int) float64 { return items(floor, r) / items(i, r) }, benchfmt.Cost},
			{"vs gRPC", func(i, r int) float64 { return items(i, r) / items(grpc, r) }, benchfmt.Times},
			{"vs ttrpc", func(i, r int) float64 { return items(i, r) / items(ttrpc, r) }, benchfmt.Times},
		}}
	}
	quarter := func(q int) column {
		return column{[]string{"¼", "½", "¾", "4/4"}[q], val(func(s Sample) float64 { return s.Mem.Quarters[q] }), fmtMiB}
	}
	tables := []table{
		rateTable(fmt.Sprintf("1. Small items: a stream of %d int64s, consumed as fast as they come", cfg.Small), func(s Sample) float64 { return s.Small }, 8),
		rateTable(fmt.Sprintf("2. Big items: a stream of %d items of %s ([]byte), consumed as fast as they come", cfg.Big, fmtSize(cfg.BigSize)), func(s Sample) float64 { return s.Big }, cfg.BigSize),
		{title: fmt.Sprintf("3. Slow consumer: %d items of %s, the host sleeping %g× the producer's per-item time after each; growth of the host's heap in use", cfg.MemItems, fmtSize(cfg.BigSize), cfg.Slower),
			cols: []column{
				{"sleep per item", val(func(s Sample) float64 { return float64(s.Mem.Sleep) }), benchfmt.Dur},
				{"consumed items/s", val(func(s Sample) float64 { return s.Mem.Rate }), benchfmt.Rate},
				quarter(0), quarter(1), quarter(2), quarter(3),
				{"max ÷ StreamWindowBytes", val(func(s Sample) float64 { return s.Mem.Max / windowBytes }), benchfmt.Times},
			},
			outcome: func(i int) string { return outcome(all[i]) },
		},
	}

	fmt.Fprintf(w, "## Stream comparison\n\n")
	fmt.Fprintf(w, "- machine: nproc=%d, GOMAXPROCS=%d, CPU %q, %s %s/%s\n", runtime.NumCPU(), runtime.GOMAXPROCS(0), benchfmt.CPUModel(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
	fmt.Fprintf(w, "- rounds: %d measured (+1 warm-up), every subject once per round, alone, in an order that rotates; each cell is the median across rounds; ratios are taken within a round, then their median\n", cfg.Rounds)
	fmt.Fprintf(w, "- per subject per round: spawn a child (not measured), warm-up streams (every item checked in full), then on that child: table 1's stream, table 2's, table 3's; items/s = items ÷ wall time from the call until the stream's end\n")
	fmt.Fprintf(w, "- payload bytes/s counts the items' own bytes (8 per int64), not the framing; cost vs floor = floor items/s ÷ items/s (>1 is slower); vs gRPC, vs ttrpc = items/s ÷ theirs (>1 is faster)\n")
	fmt.Fprintf(w, "- table 3: the producer's per-item time is the same round's table 2 figure for that subject (its producer is not paced); heap in use = runtime.MemStats.HeapInuse after runtime.GC(), sampled before the stream and every %d items; a cell is the largest growth sampled in that quarter of the items; the stream is stopped at %d MiB of growth\n", max(1, cfg.MemItems/40), cfg.MemCapMiB)
	fmt.Fprintf(w, "- total run time %.0fs\n", took.Seconds())

	for _, t := range tables {
		fmt.Fprintf(w, "\n### %s\n\n", t.title)
		writeTable(w, subs, t, all, false)
	}
	fmt.Fprintf(w, "\nWhat bounds what a host buffers for one stream:\n\n")
	for _, s := range subs {
		fmt.Fprintf(w, "- %s: %s\n", s.Name, s.Window)
	}
	fmt.Fprintf(w, "\n### Spread across rounds (min – max)\n")
	for _, t := range tables {
		fmt.Fprintf(w, "\n%s\n\n", t.title)
		writeTable(w, subs, t, all, true)
	}
	goals(w, subs, all, tables, idx)
}

// outcome sums up how a subject's slow-consumer streams ended.
func outcome(rounds []Sample) string {
	var done, capped int
	var errs []string
	for _, s := range rounds {
		switch {
		case s.Mem.Capped:
			capped++
		case s.Mem.Err != "":
			errs = append(errs, s.Mem.Err)
		default:
			done++
		}
	}
	var parts []string
	if done > 0 {
		parts = append(parts, fmt.Sprintf("complete %d/%d", done, len(rounds)))
	}
	if capped > 0 {
		parts = append(parts, fmt.Sprintf("stopped at the cap %d/%d", capped, len(rounds)))
	}
	if len(errs) > 0 {
		parts = append(parts, fmt.Sprintf("failed %d/%d (%s)", len(errs), len(rounds), errs[0]))
	}
	return strings.Join(parts, ", ")
}

// series returns a column's values for subject i, one per round, NaN
// left out.
func series(c column, i, rounds int) []float64 {
	var v []float64
	for r := range rounds {
		if x := c.val(i, r); !math.IsNaN(x) && !math.IsInf(x, 0) {
			v = append(v, x)
		}
	}
	return v
}

func writeTable(w io.Writer, subs []Subject, t table, all [][]Sample, spread bool) {
	fmt.Fprintf(w, "| subject |")
	for _, c := range t.cols {
		fmt.Fprintf(w, " %s |", c.name)
	}
	n := len(t.cols)
	if t.outcome != nil && !spread {
		fmt.Fprintf(w, " outcome |")
	}
	fmt.Fprintf(w, "\n|---|%s", strings.Repeat("---:|", n))
	if t.outcome != nil && !spread {
		fmt.Fprintf(w, "---|")
	}
	fmt.Fprintln(w)
	for i, s := range subs {
		fmt.Fprintf(w, "| %s |", s.Name)
		for _, c := range t.cols {
			fmt.Fprintf(w, " %s |", benchfmt.Cell(series(c, i, len(all[i])), spread, c.fmt))
		}
		if t.outcome != nil && !spread {
			fmt.Fprintf(w, " %s |", t.outcome(i))
		}
		fmt.Fprintln(w)
	}
}

// goals restates the figures issue 13 sets as goals against the medians
// (reported, never enforced), and the library's memory bound.
func goals(w io.Writer, subs []Subject, all [][]Sample, tables []table, idx func(string) int) {
	med := func(t, c, i int) (float64, bool) {
		v := series(tables[t].cols[c], i, len(all[i]))
		if len(v) == 0 {
			return 0, false
		}
		return benchfmt.Median(v), true
	}
	var lines []string
	for _, id := range []string{"worker-json", "worker-binary"} {
		i := idx(id)
		if i < 0 {
			continue
		}
		// The goals are message rates: table 1. Big items are reported
		// against the same marks, but there the floor itself may be below
		// 3× gRPC's rate: the line says so.
		if v, ok := med(0, 3, i); ok {
			lines = append(lines, fmt.Sprintf("- %s, small items: %.2f× gRPC's items/s (goal ≥ 3×): %s", subs[i].Name, v, verdict(v >= 3)))
		}
		if v, ok := med(0, 2, i); ok {
			lines = append(lines, fmt.Sprintf("- %s, small items: cost ×%.2f the raw floor's items/s (goal ≤ ×2): %s", subs[i].Name, v, verdict(v <= 2)))
		}
		if v, ok := med(1, 2, i); ok {
			line := fmt.Sprintf("- %s, big items: cost ×%.2f the raw floor's items/s (≤ ×2: %s)", subs[i].Name, v, verdict(v <= 2))
			if g, ok := med(1, 3, i); ok {
				line += fmt.Sprintf("; %.2f× gRPC's", g)
				if r := idx("raw"); r >= 0 {
					if f, ok := med(1, 3, r); ok {
						line += fmt.Sprintf(" (the floor itself is %.2f× gRPC's here)", f)
					}
				}
			}
			lines = append(lines, line)
		}
		if v, ok := med(2, 6, i); ok {
			var q []string
			for c := 2; c <= 5; c++ {
				if x, ok := med(2, c, i); ok {
					q = append(q, tables[2].cols[c].name+" "+fmtMiB(x))
				}
			}
			lines = append(lines, fmt.Sprintf("- %s, slow consumer: largest heap growth %s = %.2f× StreamWindowBytes; by quarter of the stream: %s",
				subs[i].Name, fmtMiB(v*windowBytes), v, strings.Join(q, ", ")))
		}
	}
	if len(lines) > 0 {
		fmt.Fprintf(w, "\n### Goals of issue 13 (medians of the per-round figures)\n\n%s\n", strings.Join(lines, "\n"))
	}
}

func verdict(met bool) string {
	if met {
		return "met"
	}
	return "NOT met"
}

func fmtBytesRate(v float64) string {
	switch {
	case v >= 1<<30:
		return fmt.Sprintf("%.2f GiB/s", v/(1<<30))
	default:
		return fmt.Sprintf("%.1f MiB/s", v/(1<<20))
	}
}

// fmtMiB formats a heap growth (it can be below zero: the heap shrank).
func fmtMiB(v float64) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	return fmt.Sprintf("%.2f MiB", v/(1<<20))
}

func fmtSize(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	default:
		return fmt.Sprintf("%d bytes", n)
	}
}
