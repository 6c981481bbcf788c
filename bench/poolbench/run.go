package main

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Sample is one subject's figures for one round.
type Sample struct {
	Ops      float64 // calls completed ÷ Elapsed
	Calls    int
	Elapsed  time.Duration // until the last call returned
	P50, P99 time.Duration // CPU subjects only
	Recycles int           // pool subjects only: members recycled while measuring
	Spawn    time.Duration // the single Worker only: Spawn until the first reply
}

type group int

const (
	groupDispatch group = iota
	groupCPU
	groupRecycle
)

// roundEnv is what the subjects share in a run.
type roundEnv struct {
	spinIters int    // spin's argument, calibrated to cfg.CPUWork
	spinWant  uint64 // spin(spinIters)
	peers     *peerEnv
}

type runFunc func(ctx context.Context, cfg Config, env *roundEnv) (Sample, error)

type Subject struct {
	ID, Name string
	Group    group
	Run      runFunc
	Peer     string // "node" or "python3": the subject runs a peer program
	MaxCalls int    // recycling subjects
}

// subjects lists every subject in table order.
func subjects(cfg Config) []Subject {
	n := cfg.Members
	all := (cfg.Callers + n - 1) / n // MaxInFlight that lets every caller's call run at once
	subs := []Subject{
		{ID: "inproc", Name: fmt.Sprintf("in-process goroutine pool (%d goroutines; floor)", cfg.Callers), Group: groupDispatch, Run: inprocPool},
		{ID: "worker", Name: "worker.Worker (one process, no pool)", Group: groupDispatch, Run: singleWorker},
		{ID: "pool", Name: fmt.Sprintf("Pool N=%d, MaxInFlight default", n), Group: groupDispatch, Run: poolSubject(n, 0, 0, false)},
		{ID: "pool-mif1", Name: fmt.Sprintf("Pool N=%d, MaxInFlight 1", n), Group: groupDispatch, Run: poolSubject(n, 1, 0, false)},
		{ID: "pool-mifall", Name: fmt.Sprintf("Pool N=%d, MaxInFlight %d (callers ÷ N: none queued)", n, all), Group: groupDispatch, Run: poolSubject(n, all, 0, false)},
		{ID: "piscina", Name: fmt.Sprintf("piscina %s (worker threads, maxThreads %d)", pinned("piscina"), n), Group: groupDispatch, Run: nodePeer("piscina.mjs"), Peer: "node"},
		{ID: "tinypool", Name: fmt.Sprintf("tinypool %s (runtime child_process, %d)", pinned("tinypool"), n), Group: groupDispatch, Run: nodePeer("tinypool.mjs"), Peer: "node"},
		{ID: "python", Name: fmt.Sprintf("Python ProcessPoolExecutor (max_workers %d)", n), Group: groupDispatch, Run: pythonPeer, Peer: "python3"},
		{ID: "cpu-inproc", Name: fmt.Sprintf("in-process (%d goroutines call it)", cfg.CPUCallers), Group: groupCPU, Run: inprocSpin},
	}
	cores := runtime.NumCPU()
	for _, k := range slices.Compact([]int{1, 2, cores}) {
		subs = append(subs, Subject{ID: fmt.Sprintf("cpu-pool%d", k), Name: fmt.Sprintf("Pool N=%d, MaxInFlight 1", k), Group: groupCPU, Run: poolSubject(k, 1, 0, true)})
	}
	subs = append(subs, Subject{ID: fmt.Sprintf("cpu-pool%d-mif", cores), Name: fmt.Sprintf("Pool N=%d, MaxInFlight default", cores), Group: groupCPU, Run: poolSubject(cores, 0, 0, true)})
	for _, mc := range cfg.Recycle {
		subs = append(subs, Subject{ID: fmt.Sprintf("recycle%d", mc), Name: fmt.Sprintf("Pool N=%d, MaxInFlight default, MaxCalls %d", n, mc), Group: groupRecycle, Run: poolSubject(n, 0, mc, false), MaxCalls: mc})
	}
	return subs
}

func subjectIDs(cfg Config) []string {
	var ids []string
	for _, s := range subjects(cfg) {
		ids = append(ids, s.ID)
	}
	return ids
}

func selectSubjects(cfg Config) ([]Subject, error) {
	all := subjects(cfg)
	if cfg.Only == nil {
		return all, nil
	}
	var out []Subject
	for _, id := range cfg.Only {
		i := slices.IndexFunc(all, func(s Subject) bool { return s.ID == strings.TrimSpace(id) })
		if i < 0 {
			return nil, fmt.Errorf("unknown subject %q (have %s)", id, strings.Join(subjectIDs(cfg), ","))
		}
		out = append(out, all[i])
	}
	return out, nil
}

// Run measures the selected subjects in one unrecorded warm-up round and
// cfg.Rounds measured rounds; in each, every subject runs once, alone, and
// the starting subject rotates. The report goes to out, progress to
// progress.
func Run(out, progress io.Writer, cfg Config) error {
	start := time.Now()
	subs, err := selectSubjects(cfg)
	if err != nil {
		return err
	}
	env := &roundEnv{}
	var notes []string
	subs, notes, env.peers, err = preparePeers(subs, cfg, progress)
	if err != nil {
		return err
	}
	if slices.ContainsFunc(subs, func(s Subject) bool { return s.Group == groupCPU }) {
		env.spinIters = calibrateSpin(cfg.CPUWork)
		env.spinWant = spin(env.spinIters)
		fmt.Fprintf(progress, "spin: %d iterations ≈ %v\n", env.spinIters, cfg.CPUWork)
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
			ctx, cancel := context.WithTimeout(context.Background(), rc.Dur+rc.Warm+2*time.Minute)
			s, err := subs[i].Run(ctx, rc, env)
			cancel()
			if err != nil {
				fmt.Fprintln(progress)
				return fmt.Errorf("%s: %w", subs[i].ID, err)
			}
			fmt.Fprintf(progress, " %s %.1fs", subs[i].ID, time.Since(t).Seconds())
			if round > 0 {
				all[i] = append(all[i], s)
			}
		}
		fmt.Fprintln(progress)
	}
	report(out, subs, all, cfg, env, notes, time.Since(start))
	return nil
}

type callFunc func(ctx context.Context, caller int) error

// measure warms the subject up for cfg.Warm, then measures it for cfg.Dur,
// conc callers calling back to back.
func measure(ctx context.Context, cfg Config, conc int, keepLat bool, call callFunc) (Sample, error) {
	return measureWith(ctx, cfg, conc, keepLat, call, nil)
}

// measureWith is measure, calling atStart just before the measured calls.
func measureWith(ctx context.Context, cfg Config, conc int, keepLat bool, call callFunc, atStart func()) (Sample, error) {
	if _, err := drive(ctx, conc, cfg.Warm, false, call); err != nil {
		return Sample{}, fmt.Errorf("warm-up: %w", err)
	}
	runtime.GC()
	if atStart != nil {
		atStart()
	}
	d, err := drive(ctx, conc, cfg.Dur, keepLat, call)
	if err != nil {
		return Sample{}, err
	}
	s := Sample{Calls: d.calls, Elapsed: d.elapsed, Ops: float64(d.calls) / d.elapsed.Seconds()}
	if keepLat {
		slices.Sort(d.lat)
		s.P50, s.P99 = percentile(d.lat, 0.50), percentile(d.lat, 0.99)
	}
	return s, nil
}

type driven struct {
	calls   int
	elapsed time.Duration
	lat     []time.Duration
}

// drive runs conc goroutines that call back to back until d has passed (a
// caller finishes the call it is in), the loop of the Node and Python
// peers too. elapsed runs until the last call returned.
func drive(ctx context.Context, conc int, d time.Duration, keepLat bool, call callFunc) (driven, error) {
	var stop atomic.Bool
	var wg sync.WaitGroup
	counts := make([]int, conc)
	lats := make([][]time.Duration, conc)
	errs := make([]error, conc)
	start := time.Now()
	timer := time.AfterFunc(d, func() { stop.Store(true) })
	defer timer.Stop()
	for i := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := 0
			var lat []time.Duration
			for !stop.Load() {
				var t time.Time
				if keepLat {
					t = time.Now()
				}
				if err := call(ctx, i); err != nil {
					errs[i] = err
					stop.Store(true)
					return
				}
				if keepLat {
					lat = append(lat, time.Since(t))
				}
				n++
			}
			counts[i], lats[i] = n, lat
		}()
	}
	wg.Wait()
	r := driven{elapsed: time.Since(start)}
	for i := range conc {
		if errs[i] != nil {
			return r, errs[i]
		}
		r.calls += counts[i]
		r.lat = append(r.lat, lats[i]...)
	}
	return r, nil
}

// percentile of sorted durations (nearest rank).
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}
