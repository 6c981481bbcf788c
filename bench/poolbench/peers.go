package main

// The peers: piscina and tinypool (Node, pinned in package.json, installed
// with npm ci into node_modules/ next to it) and Python's standard
// ProcessPoolExecutor. Each round, the harness starts the peer's program
// (peers/*.mjs, peers/procpool.py), which starts its pool, warms it up,
// measures, and prints {"ops","calls","seconds"} as one JSON line.

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

//go:embed package.json
var packageJSON []byte

// pinned returns the version of an npm package that package.json pins.
func pinned(name string) string {
	var p struct {
		Dependencies map[string]string `json:"dependencies"`
	}
	if err := json.Unmarshal(packageJSON, &p); err != nil {
		panic(err)
	}
	return p.Dependencies[name]
}

type peerEnv struct {
	dir         string // holds package.json, package-lock.json, peers/, node_modules/
	nodeVersion string
	python      string // "" when python3 was not found
	pyVersion   string
}

// peersDir finds the directory with package.json and peers/: flagged, or
// this source file's (go run, go test), or below the working directory.
func peersDir(flagged string) (string, error) {
	var cands []string
	if flagged != "" {
		cands = append(cands, flagged)
	} else {
		if _, file, _, ok := runtime.Caller(0); ok {
			cands = append(cands, filepath.Dir(file))
		}
		if wd, err := os.Getwd(); err == nil {
			cands = append(cands, wd, filepath.Join(wd, "poolbench"), filepath.Join(wd, "bench", "poolbench"))
		}
	}
	for _, d := range cands {
		if fileExists(filepath.Join(d, "package.json")) && fileExists(filepath.Join(d, "peers", "drive.mjs")) {
			return d, nil
		}
	}
	return "", fmt.Errorf("cannot find the peers' directory (bench/poolbench, with package.json and peers/) among %q: run from bench/ or pass -peers", cands)
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// ensureNodePeers checks that node (≥ 20) runs and that node_modules holds
// the pinned versions; if not, it runs `npm ci` (package-lock.json) in dir.
// It returns node's version.
func ensureNodePeers(dir string, progress io.Writer) error {
	_, err := nodeVersion()
	if err != nil {
		return err
	}
	if installedOK(dir) == nil {
		return nil
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		return errors.New("npm not found: the Node peers (piscina, tinypool) are installed with npm ci; install npm, or leave the peers out with -subjects")
	}
	fmt.Fprintf(progress, "installing the Node peers: npm ci in %s\n", dir)
	cmd := exec.Command(npm, "ci", "--no-audit", "--no-fund")
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = progress, progress
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("npm ci in %s (installs the pinned piscina and tinypool from the npm registry): %w", dir, err)
	}
	return installedOK(dir)
}

// installedOK says whether node_modules holds every pinned package at its
// pinned version.
func installedOK(dir string) error {
	var p struct {
		Dependencies map[string]string `json:"dependencies"`
	}
	if err := json.Unmarshal(packageJSON, &p); err != nil {
		return err
	}
	for name, want := range p.Dependencies {
		b, err := os.ReadFile(filepath.Join(dir, "node_modules", name, "package.json"))
		if err != nil {
			return fmt.Errorf("%s is not installed: %w", name, err)
		}
		var got struct{ Version string }
		if err := json.Unmarshal(b, &got); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if got.Version != want {
			return fmt.Errorf("%s %s is installed, %s is pinned", name, got.Version, want)
		}
	}
	return nil
}

func nodeVersion() (string, error) {
	out, err := exec.Command("node", "--version").Output()
	if err != nil {
		return "", fmt.Errorf("node not found or not working (%v): the Node peers (piscina, tinypool) need Node ≥ 20; install it, or leave the peers out with -subjects", err)
	}
	v := strings.TrimSpace(string(out))
	major, _, _ := strings.Cut(strings.TrimPrefix(v, "v"), ".")
	if m, err := strconv.Atoi(major); err != nil || m < 20 {
		return v, fmt.Errorf("node %s: piscina %s and tinypool %s need Node ≥ 20", v, pinned("piscina"), pinned("tinypool"))
	}
	return v, nil
}

// preparePeers installs what the selected peers need. A missing node or
// npm package is an error; a missing python3 drops the Python subject,
// with a note for the report.
func preparePeers(subs []Subject, cfg Config, progress io.Writer) ([]Subject, []string, *peerEnv, error) {
	env := &peerEnv{}
	var notes []string
	needs := func(peer string) bool {
		return slices.ContainsFunc(subs, func(s Subject) bool { return s.Peer == peer })
	}
	if needs("node") || needs("python3") {
		d, err := peersDir(cfg.PeersDir)
		if err != nil {
			return nil, nil, nil, err
		}
		env.dir = d
	}
	if needs("node") {
		if err := ensureNodePeers(env.dir, progress); err != nil {
			return nil, nil, nil, err
		}
		env.nodeVersion, _ = nodeVersion()
	}
	if needs("python3") {
		py, err := exec.LookPath("python3")
		if err == nil {
			var out []byte
			out, err = exec.Command(py, "--version").CombinedOutput()
			env.python, env.pyVersion = py, strings.TrimSpace(string(out))
		}
		if err != nil {
			env.python = ""
			notes = append(notes, "python3 not found (or not working): the ProcessPoolExecutor row is left out")
			fmt.Fprintln(progress, notes[len(notes)-1])
			subs = slices.DeleteFunc(slices.Clone(subs), func(s Subject) bool { return s.Peer == "python3" })
		}
	}
	return subs, notes, env, nil
}

// peerArg is the JSON argument of every peer program.
func peerArg(cfg Config) string {
	b, _ := json.Marshal(map[string]int{
		"threads": cfg.Members,
		"conc":    cfg.Callers,
		"warmMs":  max(1, int(cfg.Warm/time.Millisecond)),
		"durMs":   max(1, int(cfg.Dur/time.Millisecond)),
	})
	return string(b)
}

func nodePeer(script string) runFunc {
	return func(ctx context.Context, cfg Config, env *roundEnv) (Sample, error) {
		return runPeer(ctx, env.peers.dir, "node", filepath.Join("peers", script), peerArg(cfg))
	}
}

func pythonPeer(ctx context.Context, cfg Config, env *roundEnv) (Sample, error) {
	return runPeer(ctx, env.peers.dir, env.peers.python, filepath.Join("peers", "procpool.py"), peerArg(cfg))
}

// runPeer runs one peer program in dir and reads its last line of stdout.
func runPeer(ctx context.Context, dir, prog string, args ...string) (Sample, error) {
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.Output()
	if err != nil {
		return Sample{}, fmt.Errorf("%s %s: %w\n%s", prog, strings.Join(args, " "), err, tail(stderr.String(), 2000))
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var r struct {
		Ops     float64 `json:"ops"`
		Calls   int     `json:"calls"`
		Seconds float64 `json:"seconds"`
	}
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &r); err != nil || r.Ops <= 0 {
		return Sample{}, fmt.Errorf("%s %s: no result on stdout (%v): %q", prog, args[0], err, tail(string(out), 500))
	}
	return Sample{Ops: r.Ops, Calls: r.Calls, Elapsed: time.Duration(r.Seconds * float64(time.Second))}, nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
