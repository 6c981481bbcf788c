package worker_test

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"
)

// runWithLeakChecks runs the tests with TMPDIR pointing at a fresh
// directory, then fails the run if a registered role went unused (see
// roles_test.go), or if any goroutine, child process or socket file
// outlived the tests.
func runWithLeakChecks(m *testing.M) int {
	tmp, err := os.MkdirTemp("", "iw-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)
	os.Setenv("TMPDIR", tmp)
	code := m.Run()
	if code != 0 {
		return code
	}
	if unused := unusedRoles(); len(unused) > 0 {
		fmt.Fprintf(os.Stderr, "ROLE CHECK FAILED: roles registered in roles_test.go but used by no test: %v\n", unused)
		return 1
	}
	var problems []string
	// Leaked resources are released by goroutines that may still be
	// finishing; poll with a deadline, as goleak does.
	poll(5*time.Second, func() bool {
		problems = problems[:0]
		if g := leakedGoroutines(); len(g) > 0 {
			problems = append(problems, "goroutines:\n"+strings.Join(g, "\n\n"))
		}
		if c := children(); len(c) > 0 {
			problems = append(problems, fmt.Sprintf("child processes: %v", c))
		}
		if f := leftovers(tmp); len(f) > 0 {
			problems = append(problems, "files left in TMPDIR: "+strings.Join(f, ", "))
		}
		return len(problems) == 0
	})
	if len(problems) > 0 {
		fmt.Fprintln(os.Stderr, "LEAK CHECK FAILED:\n"+strings.Join(problems, "\n"))
		return 1
	}
	fmt.Fprintln(os.Stderr, "leak check: no goroutine, child process or socket file left behind")
	return 0
}

func leftovers(dir string) []string {
	var out []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if p != dir && err == nil {
			out = append(out, strings.TrimPrefix(p, dir))
		}
		return nil
	})
	sort.Strings(out)
	return out
}

// leakedGoroutines lists the goroutines that are not the runtime's or the
// testing package's own.
func leakedGoroutines() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "runWithLeakChecks") || strings.Contains(g, "testing.(*M).") ||
			strings.Contains(g, "testing.tRunner") && strings.Contains(g, "testing.(*T).Run") ||
			strings.Contains(g, "os/signal.signal_recv") || strings.Contains(g, "runtime.ensureSigM") ||
			strings.Contains(g, "created by runtime") || strings.TrimSpace(g) == "" ||
			strings.Contains(g, "go-winio.ioCompletionProcessor") { // one per process, by design
			continue
		}
		out = append(out, g)
	}
	return out
}
