// Command streambench compares the library's streams (worker.Stream /
// worker.HandleStream) with a raw length-prefixed floor, go-plugin gRPC
// server streaming and ttrpc streaming, in one interleaved run: items/s and
// bytes/s of small and of 64 KiB items, and the host's heap while its
// consumer is 10× slower than the producer. See ../README.md.
//
// Every child is this same binary in a role ($STREAMBENCH_CHILD), picked
// before anything else in main (and in TestMain).
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"
)

func main() {
	runChildIfRequested()

	cfg := DefaultConfig()
	fs := flag.NewFlagSet("streambench", flag.ExitOnError)
	fs.IntVar(&cfg.Rounds, "rounds", cfg.Rounds, "measured rounds (each subject once per round, interleaved, rotating order); medians across rounds are reported")
	fs.IntVar(&cfg.Small, "small", cfg.Small, "items of the small-item stream (int64), per subject per round")
	fs.IntVar(&cfg.Big, "big", cfg.Big, "items of the big-item stream, per subject per round")
	fs.IntVar(&cfg.BigSize, "bigsize", cfg.BigSize, "size in bytes of a big item ([]byte)")
	fs.IntVar(&cfg.MemItems, "mem-items", cfg.MemItems, "items of -bigsize bytes in the slow-consumer stream, per subject per round")
	fs.Float64Var(&cfg.Slower, "slower", cfg.Slower, "the slow consumer sleeps this many times the producer's per-item time (from the same round's big-item stream) between items")
	fs.IntVar(&cfg.MemCapMiB, "mem-cap", cfg.MemCapMiB, "stop a slow-consumer stream once the host's heap has grown by this many MiB")
	only := fs.String("subjects", "", "comma-separated subject ids to run (default all): "+strings.Join(subjectIDs(), ","))
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: go run ./streambench [flags]  (in bench/; see README.md)\n\nflags:\n")
		fs.PrintDefaults()
	}
	fs.Parse(os.Args[1:])
	if *only != "" {
		cfg.Only = strings.Split(*only, ",")
	}
	if err := Run(os.Stdout, os.Stderr, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "streambench:", err)
		os.Exit(1)
	}
}

// Config sets what one run measures.
type Config struct {
	Rounds    int
	Small     int     // items in the small-item stream
	Big       int     // items in the big-item stream
	BigSize   int     // bytes per big item
	MemItems  int     // items in the slow-consumer stream (BigSize bytes each)
	Slower    float64 // the slow consumer's sleep per item ÷ the producer's per-item time
	MemCapMiB int     // heap growth at which a slow-consumer stream is stopped
	Only      []string
}

// DefaultConfig takes about 3 minutes on 2 cores.
func DefaultConfig() Config {
	return Config{Rounds: 10, Small: 300_000, Big: 3000, BigSize: 64 << 10, MemItems: 1000, Slower: 10, MemCapMiB: 256}
}

func (c Config) warmup() Config {
	w := c
	w.Small, w.Big, w.MemItems = min(c.Small, 20_000), min(c.Big, 300), min(c.MemItems, 100)
	return w
}

// memSleep is how long the slow consumer sleeps per item, given the
// producer's per-item time.
func (c Config) memSleep(perItem time.Duration) time.Duration {
	return time.Duration(c.Slower * float64(perItem))
}
