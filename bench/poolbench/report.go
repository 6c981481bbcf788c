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

// column is one column of a table: a value per subject per round (NaN:
// n/a), so that a cell is the median across rounds and its spread the
// min–max; ratios are taken within each round (the two subjects of a
// ratio ran in the same round, seconds apart).
type column struct {
	name string
	val  func(sub, round int) float64
	fmt  func(float64) string
}

type table struct {
	title string
	group group
	cols  []column
}

func report(w io.Writer, subs []Subject, all [][]Sample, cfg Config, env *roundEnv, notes []string, took time.Duration) {
	idx := func(id string) int { return slices.IndexFunc(subs, func(s Subject) bool { return s.ID == id }) }
	get := func(i, r int) (Sample, bool) {
		if i < 0 || r >= len(all[i]) {
			return Sample{}, false
		}
		return all[i][r], true
	}
	// ops and friends return NaN when a subject did not run.
	ops := func(i, r int) float64 {
		if s, ok := get(i, r); ok {
			return s.Ops
		}
		return math.NaN()
	}
	floor, pisc, tiny, inproc, norec := idx("inproc"), idx("piscina"), idx("tinypool"), idx("cpu-inproc"), idx("pool")
	single := idx("worker")
	p99 := func(i, r int) float64 {
		if s, ok := get(i, r); ok && s.P99 > 0 {
			return float64(s.P99)
		}
		return math.NaN()
	}
	perRecycle := func(i, r int) float64 {
		s, ok := get(i, r)
		base := ops(norec, r)
		if !ok || s.Recycles == 0 || math.IsNaN(base) {
			return math.NaN()
		}
		// Wall time beyond what the same calls take without recycling.
		return (s.Elapsed.Seconds() - float64(s.Calls)/base) / float64(s.Recycles) * 1e9
	}

	tables := []table{
		{fmt.Sprintf("1. Dispatch: a trivial task (echo {\"message\":\"hello\"}), %d callers, N = %d", cfg.Callers, cfg.Members), groupDispatch, []column{
			{"calls/s", ops, benchfmt.Rate},
			{"cost vs floor", func(i, r int) float64 { return ops(floor, r) / ops(i, r) }, benchfmt.Cost},
			{"vs piscina", func(i, r int) float64 { return ops(i, r) / ops(pisc, r) }, benchfmt.Times},
			{"vs tinypool", func(i, r int) float64 { return ops(i, r) / ops(tiny, r) }, benchfmt.Times},
		}},
		{fmt.Sprintf("2. CPU: spin ≈ %v per call, %d callers", cfg.CPUWork, cfg.CPUCallers), groupCPU, []column{
			{"calls/s", ops, benchfmt.Rate},
			{"÷ in-process", func(i, r int) float64 { return ops(i, r) / ops(inproc, r) }, benchfmt.Times},
			{"p50", func(i, r int) float64 {
				if s, ok := get(i, r); ok && s.P50 > 0 {
					return float64(s.P50)
				}
				return math.NaN()
			}, benchfmt.Dur},
			{"p99", p99, benchfmt.Dur},
			{"p99 ÷ in-process", func(i, r int) float64 { return p99(i, r) / p99(inproc, r) }, benchfmt.Times},
		}},
		{fmt.Sprintf("3. Recycling: the dispatch task, %d callers, N = %d", cfg.Callers, cfg.Members), groupRecycle, []column{
			{"calls/s", ops, benchfmt.Rate},
			{"÷ no recycling", func(i, r int) float64 { return ops(i, r) / ops(norec, r) }, benchfmt.Times},
			{"recycles/s", func(i, r int) float64 {
				if s, ok := get(i, r); ok {
					return float64(s.Recycles) / s.Elapsed.Seconds()
				}
				return math.NaN()
			}, func(v float64) string { return fmt.Sprintf("%.0f", v) }},
			{"wall time per recycle", perRecycle, benchfmt.Dur},
		}},
	}

	fmt.Fprintf(w, "## Pool comparison\n\n")
	fmt.Fprintf(w, "- machine: nproc=%d, GOMAXPROCS=%d, CPU %q, %s %s/%s\n", runtime.NumCPU(), runtime.GOMAXPROCS(0), benchfmt.CPUModel(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
	if env.peers != nil && env.peers.nodeVersion != "" {
		fmt.Fprintf(w, "- peers: node %s, piscina %s, tinypool %s (npm, pinned in bench/poolbench/package.json)", env.peers.nodeVersion, pinned("piscina"), pinned("tinypool"))
		if env.peers.pyVersion != "" {
			fmt.Fprintf(w, "; %s (concurrent.futures)", env.peers.pyVersion)
		}
		fmt.Fprintln(w)
	}
	for _, n := range notes {
		fmt.Fprintf(w, "- note: %s\n", n)
	}
	fmt.Fprintf(w, "- rounds: %d measured (+1 warm-up), every subject once per round, alone, in an order that rotates; each cell is the median across rounds; ratios are taken within a round, then their median\n", cfg.Rounds)
	fmt.Fprintf(w, "- per subject per round: start its pool (not measured), %v of calls (not measured), then %v of calls; calls/s = calls completed ÷ wall time until the last one returned\n", cfg.Warm, cfg.Dur)
	if env.spinIters > 0 {
		fmt.Fprintf(w, "- CPU task: %d rounds of xorshift64 (calibrated in process to ≈ %v on one goroutine), the same Go function in process and in the members\n", env.spinIters, cfg.CPUWork)
	}
	fmt.Fprintf(w, "- cost vs floor = floor calls/s ÷ calls/s (>1 is slower); vs piscina, vs tinypool, ÷ … = calls/s ÷ theirs (>1 is faster); p99 ÷ in-process <1 is better\n")
	fmt.Fprintf(w, "- total run time %.0fs\n", took.Seconds())

	for _, t := range tables {
		rows := rowsOf(subs, t.group)
		if t.group == groupRecycle && len(rows) > 0 && norec >= 0 {
			rows = append([]int{norec}, rows...)
		}
		if len(rows) == 0 {
			continue
		}
		fmt.Fprintf(w, "\n### %s\n\n", t.title)
		writeTable(w, subs, rows, t, all, false, norec)
		if t.group == groupRecycle && single >= 0 {
			var sp []float64
			for _, s := range all[single] {
				sp = append(sp, float64(s.Spawn))
			}
			fmt.Fprintf(w, "\nStarting one member (worker.Spawn until its first reply, from the worker.Worker subject): %s (median).\n", benchfmt.Dur(benchfmt.Median(sp)))
		}
	}
	fmt.Fprintf(w, "\n### Spread across rounds (min – max)\n")
	for _, t := range tables {
		rows := rowsOf(subs, t.group)
		if t.group == groupRecycle && len(rows) > 0 && norec >= 0 {
			rows = append([]int{norec}, rows...)
		}
		if len(rows) == 0 {
			continue
		}
		fmt.Fprintf(w, "\n%s\n\n", t.title)
		writeTable(w, subs, rows, t, all, true, norec)
	}
	goals(w, subs, all, tables, idx)
}

func rowsOf(subs []Subject, g group) []int {
	var rows []int
	for i, s := range subs {
		if s.Group == g {
			rows = append(rows, i)
		}
	}
	return rows
}

// series returns a column's values for subject i, one per round, NaN
// left out.
func series(c column, i int, rounds int) []float64 {
	var v []float64
	for r := range rounds {
		if x := c.val(i, r); !math.IsNaN(x) && !math.IsInf(x, 0) {
			v = append(v, x)
		}
	}
	return v
}

func writeTable(w io.Writer, subs []Subject, rows []int, t table, all [][]Sample, spread bool, norec int) {
	fmt.Fprintf(w, "| subject |")
	for _, c := range t.cols {
		fmt.Fprintf(w, " %s |", c.name)
	}
	fmt.Fprintf(w, "\n|---|%s\n", strings.Repeat("---:|", len(t.cols)))
	for _, i := range rows {
		name := subs[i].Name
		if t.group == groupRecycle && i == norec {
			name += ", no recycling (the dispatch row)"
		}
		fmt.Fprintf(w, "| %s |", name)
		for _, c := range t.cols {
			fmt.Fprintf(w, " %s |", benchfmt.Cell(series(c, i, len(all[i])), spread, c.fmt))
		}
		fmt.Fprintln(w)
	}
}

// goals restates the figures issue 12 sets as goals (reported, not
// enforced).
func goals(w io.Writer, subs []Subject, all [][]Sample, tables []table, idx func(string) int) {
	med := func(t, c int, id string) (float64, bool) {
		i := idx(id)
		if i < 0 {
			return 0, false
		}
		v := series(tables[t].cols[c], i, len(all[i]))
		if len(v) == 0 {
			return 0, false
		}
		return benchfmt.Median(v), true
	}
	var lines []string
	check := func(what string, v float64, ok bool, goal float64, higher bool, unit string) {
		if !ok {
			return
		}
		met := v >= goal
		if !higher {
			met = v < goal
		}
		verdict := "met"
		if !met {
			verdict = "NOT met"
		}
		lines = append(lines, fmt.Sprintf("- %s: %.2f%s (goal %s%.2f%s): %s", what, v, unit, map[bool]string{true: "≥ ", false: "< "}[higher], goal, unit, verdict))
	}
	for _, id := range []string{"pool", "pool-mif1", "pool-mifall"} {
		if i := idx(id); i >= 0 {
			v, ok := med(0, 2, id)
			check(subs[i].Name+" vs piscina", v, ok, 5, true, "×")
			v, ok = med(0, 3, id)
			check(subs[i].Name+" vs tinypool", v, ok, 10, true, "×")
		}
	}
	for _, top := range []string{fmt.Sprintf("cpu-pool%d", runtime.NumCPU()), fmt.Sprintf("cpu-pool%d-mif", runtime.NumCPU())} {
		if i := idx(top); i >= 0 {
			v, ok := med(1, 1, top)
			check("CPU, "+subs[i].Name+", throughput ÷ in-process", v, ok, 0.95, true, "×")
			v, ok = med(1, 4, top)
			check("CPU, "+subs[i].Name+", p99 ÷ in-process", v, ok, 1, false, "×")
		}
	}
	if len(lines) > 0 {
		fmt.Fprintf(w, "\n### Goals of issue 12 (medians of the per-round ratios)\n\n%s\n", strings.Join(lines, "\n"))
	}
}
