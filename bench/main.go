// Command bench compares this library against its peers with real child
// processes over Unix sockets. See README.md.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

func main() {
	runChildIfRequested()

	cfg := DefaultConfig
	fs := flag.NewFlagSet("bench", flag.ExitOnError)
	fs.IntVar(&cfg.Rounds, "rounds", cfg.Rounds, "measured rounds (each subject once per round, interleaved); medians across rounds are reported")
	fs.IntVar(&cfg.Seq, "seq", cfg.Seq, "sequential small calls per subject per round (p50 taken)")
	fs.IntVar(&cfg.Inflight, "inflight", cfg.Inflight, "small calls per subject per round for the throughput metric")
	fs.IntVar(&cfg.Conc, "conc", cfg.Conc, "calls in flight at once for the throughput metric")
	fs.IntVar(&cfg.Big, "big", cfg.Big, "large echoes per subject per round (median taken)")
	fs.IntVar(&cfg.BigSize, "bigsize", cfg.BigSize, "size in bytes of the large payload")
	fs.IntVar(&cfg.Spawns, "spawns", cfg.Spawns, "spawn+close cycles per subject per round (median taken)")
	only := fs.String("subjects", "", "comma-separated subject ids to run (default all): "+subjectIDs())
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: go run . [flags]  (in bench/; see README.md)\n"+
			"       bench/baseline.sh REV [flags]  (adds the library at git revision REV as subjects base-json, base-binary)\n\nflags:\n")
		fs.PrintDefaults()
	}
	fs.Parse(os.Args[1:])

	subs, err := selectSubjects(*only)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if err := Compare(os.Stdout, os.Stderr, subs, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func subjectIDs() string {
	var ids []string
	for _, s := range subjects {
		ids = append(ids, s.ID)
	}
	return strings.Join(ids, ",")
}

func selectSubjects(only string) ([]Subject, error) {
	if only == "" {
		return subjects, nil
	}
	var out []Subject
	for _, id := range strings.Split(only, ",") {
		found := false
		for _, s := range subjects {
			if s.ID == strings.TrimSpace(id) {
				out = append(out, s)
				found = true
			}
		}
		if !found {
			return nil, fmt.Errorf("unknown subject %q (have %s)", id, subjectIDs())
		}
	}
	return out, nil
}

// Compare runs one unrecorded warm-up round and cfg.Rounds measured rounds.
// In each round every subject is measured once, alone (its children are
// reaped before the next subject starts); the starting subject rotates from
// round to round so that no subject always runs right after the same one.
func Compare(out, progress io.Writer, subs []Subject, cfg Config) error {
	start := time.Now()
	all := make([][]Result, len(subs)) // [subject][round]
	for round := 0; round <= cfg.Rounds; round++ {
		rc := cfg
		label := fmt.Sprintf("round %d/%d", round, cfg.Rounds)
		if round == 0 {
			rc = cfg.warmup()
			label = "warm-up round"
		}
		fmt.Fprintf(progress, "%s:", label)
		for k := range subs {
			i := (k + round) % len(subs)
			t := time.Now()
			r, err := MeasureRound(subs[i], rc)
			if err != nil {
				return fmt.Errorf("%s: %w", subs[i].Name, err)
			}
			fmt.Fprintf(progress, " %s %.1fs", subs[i].ID, time.Since(t).Seconds())
			if round > 0 {
				all[i] = append(all[i], r)
			}
		}
		fmt.Fprintln(progress)
	}
	report(out, subs, all, cfg, time.Since(start))
	return nil
}

// helperStartup describes the helper binary every child runs: its size and
// the time its Go package initialisers take (GODEBUG=inittrace=1, median of
// a few runs of the no-op role), which is part of every subject's spawn.
func helperStartup() string {
	exe := helperExe()
	st, err := os.Stat(exe)
	if err != nil {
		return "unknown"
	}
	var inits []float64
	for range 5 {
		cmd := exec.Command(exe)
		cmd.Env = append(os.Environ(), envRole+"=noop", "GODEBUG=inittrace=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			break
		}
		ms := 0.0
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			if len(f) >= 6 && f[0] == "init" && f[5] == "ms" {
				if v, err := strconv.ParseFloat(f[4], 64); err == nil {
					ms += v
				}
			}
		}
		inits = append(inits, ms)
	}
	s := fmt.Sprintf("%.1f MB", float64(st.Size())/1e6)
	if len(inits) > 0 {
		s += fmt.Sprintf(", Go package init ≈ %.2f ms per child start (included in every spawn)", medianF(inits))
	}
	return s
}

type metric struct {
	name       string
	floor      string // subject ID of the floor
	get        func(Result) float64
	higherGood bool
	format     func(float64) string
}

var metrics = []metric{
	{"seq p50", "raw", func(r Result) float64 { return float64(r.SeqP50) }, false, fmtDur},
	{"64 in flight", "raw", func(r Result) float64 { return r.Rate }, true, fmtRate},
	{"1 MiB", "raw", func(r Result) float64 { return float64(r.Big) }, false, fmtDur},
	{"spawn", "stdlib", func(r Result) float64 { return float64(r.Spawn) }, false, fmtDur},
	{"close", "stdlib", func(r Result) float64 { return float64(r.Close) }, false, fmtDur},
}

func fmtDur(v float64) string {
	d := time.Duration(v)
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%.1f µs", float64(d)/1e3)
	case d < time.Second:
		return fmt.Sprintf("%.2f ms", float64(d)/1e6)
	default:
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
}

func fmtRate(v float64) string {
	if v >= 1e3 {
		return fmt.Sprintf("%.1fk/s", v/1e3)
	}
	return fmt.Sprintf("%.0f/s", v)
}

func medianF(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func minMax(v []float64) (float64, float64) {
	lo, hi := v[0], v[0]
	for _, x := range v {
		lo, hi = min(lo, x), max(hi, x)
	}
	return lo, hi
}

func report(w io.Writer, subs []Subject, all [][]Result, cfg Config, took time.Duration) {
	fmt.Fprintf(w, "## Peer comparison\n\n")
	fmt.Fprintf(w, "- machine: nproc=%d, GOMAXPROCS=%d, CPU %q, %s %s/%s\n", runtime.NumCPU(), runtime.GOMAXPROCS(0), cpuModel(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
	fmt.Fprintf(w, "- helper binary (the same for every child): %s\n", helperStartup())
	fmt.Fprintf(w, "- rounds: %d measured (+1 warm-up), subjects interleaved per round; every cell is the median across rounds\n", cfg.Rounds)
	fmt.Fprintf(w, "- per subject per round: %d spawn+close cycles (median), %d sequential calls (p50), %d calls with %d in flight on one client, %d echoes of %d bytes (median)\n",
		cfg.Spawns, cfg.Seq, cfg.Inflight, cfg.Conc, cfg.Big, cfg.BigSize)
	fmt.Fprintf(w, "- ratio (×) = cost relative to the floor (raw for the first three columns, stdlib-child for spawn/close): latency ÷ floor latency, floor rate ÷ rate; >1 is slower\n")
	fmt.Fprintf(w, "- total run time %.0fs\n\n", took.Seconds())

	vals := make([][][]float64, len(subs)) // [subject][metric][round]
	for i := range subs {
		vals[i] = make([][]float64, len(metrics))
		for m, mt := range metrics {
			for _, r := range all[i] {
				vals[i][m] = append(vals[i][m], mt.get(r))
			}
		}
	}
	floorVal := func(m int) float64 {
		for i, s := range subs {
			if s.ID == metrics[m].floor {
				return medianF(vals[i][m])
			}
		}
		return 0
	}

	tableHead(w)
	for i, s := range subs {
		fmt.Fprintf(w, "| %s |", s.Name)
		for m, mt := range metrics {
			v := medianF(vals[i][m])
			if v == 0 {
				fmt.Fprintf(w, " n/a |")
				continue
			}
			ratio := "–"
			if f := floorVal(m); f > 0 {
				x := v / f
				if mt.higherGood {
					x = f / v
				}
				ratio = fmt.Sprintf("×%.2f", x)
			}
			fmt.Fprintf(w, " %s (%s) |", mt.format(v), ratio)
		}
		fmt.Fprintln(w)
	}

	fmt.Fprintf(w, "\nSpread across rounds (min – max):\n\n")
	tableHead(w)
	for i, s := range subs {
		fmt.Fprintf(w, "| %s |", s.Name)
		for m, mt := range metrics {
			if medianF(vals[i][m]) == 0 {
				fmt.Fprintf(w, " n/a |")
				continue
			}
			lo, hi := minMax(vals[i][m])
			fmt.Fprintf(w, " %s – %s |", mt.format(lo), mt.format(hi))
		}
		fmt.Fprintln(w)
	}
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

// tableHead writes the head of a Markdown table with a column per metric.
func tableHead(w io.Writer) {
	fmt.Fprintf(w, "| subject |")
	for _, mt := range metrics {
		fmt.Fprintf(w, " %s |", mt.name)
	}
	fmt.Fprintf(w, "\n|---|")
	for range metrics {
		fmt.Fprintf(w, "---:|")
	}
	fmt.Fprintln(w)
}
