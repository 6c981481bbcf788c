// Command poolbench compares worker.Pool with an in-process goroutine pool,
// a single worker.Worker, piscina, tinypool (process mode) and Python's
// ProcessPoolExecutor, in one interleaved run. See ../README.md.
//
// It is its own main package (not a mode of the bench command) so that its
// worker processes are a small binary that links only this library: the
// recycling figures are dominated by spawning members, and the bench
// command's helper binary spends ~2 ms of every start initialising gRPC.
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/isolated-workers/worker"
)

func main() {
	// A pool member (or the single Worker) started by this program serves
	// here and exits; the harness itself returns at once.
	worker.Main(memberServer())

	cfg := DefaultConfig()
	fs := flag.NewFlagSet("poolbench", flag.ExitOnError)
	fs.IntVar(&cfg.Rounds, "rounds", cfg.Rounds, "measured rounds (each subject once per round, interleaved, rotating order); medians across rounds are reported")
	fs.DurationVar(&cfg.Dur, "dur", cfg.Dur, "measured time per subject per round")
	fs.DurationVar(&cfg.Warm, "warm", cfg.Warm, "unmeasured calls per subject per round before measuring (after its pool has started)")
	fs.IntVar(&cfg.Members, "members", cfg.Members, "pool members / threads / processes for the dispatch and recycling subjects")
	fs.IntVar(&cfg.Callers, "callers", cfg.Callers, "concurrent callers for the dispatch and recycling subjects")
	fs.IntVar(&cfg.CPUCallers, "cpu-callers", cfg.CPUCallers, "concurrent callers for the CPU subjects")
	fs.DurationVar(&cfg.CPUWork, "cpu-work", cfg.CPUWork, "target duration of one CPU task (the loop is calibrated to it once, at the start)")
	only := fs.String("subjects", "", "comma-separated subject ids to run (default all): "+strings.Join(subjectIDs(cfg), ","))
	fs.StringVar(&cfg.PeersDir, "peers", "", "directory with package.json and peers/ (default: found from the source path or the working directory)")
	setup := fs.Bool("setup", false, "install the pinned npm packages of the Node peers (npm ci) and exit")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: go run ./poolbench [flags]  (in bench/; see README.md)\n\nflags:\n")
		fs.PrintDefaults()
	}
	fs.Parse(os.Args[1:])
	if *only != "" {
		cfg.Only = strings.Split(*only, ",")
	}

	if *setup {
		dir, err := peersDir(cfg.PeersDir)
		if err == nil {
			err = ensureNodePeers(dir, os.Stderr)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "poolbench:", err)
			os.Exit(1)
		}
		return
	}
	if err := Run(os.Stdout, os.Stderr, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "poolbench:", err)
		os.Exit(1)
	}
}

// Config sets what one run measures.
type Config struct {
	Rounds     int
	Dur, Warm  time.Duration
	Members    int // N for the dispatch and recycling subjects
	Callers    int // in flight for the dispatch and recycling subjects
	CPUCallers int // in flight for the CPU subjects
	CPUWork    time.Duration
	Recycle    []int    // MaxCalls values of the recycling subjects
	Only       []string // subject ids; nil: all
	PeersDir   string
}

// DefaultConfig takes about 4 minutes on 2 cores.
func DefaultConfig() Config {
	return Config{
		Rounds:     10,
		Dur:        time.Second,
		Warm:       250 * time.Millisecond,
		Members:    runtime.NumCPU(),
		Callers:    64,
		CPUCallers: 32,
		CPUWork:    time.Millisecond,
		Recycle:    []int{1000, 100},
	}
}

func (c Config) warmup() Config {
	w := c
	w.Dur, w.Warm = min(c.Dur, 200*time.Millisecond), min(c.Warm, 100*time.Millisecond)
	return w
}
