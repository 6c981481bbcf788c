package worker_test

// The test binary plays helper roles, in the os/exec style: a test builds
// a command with roleCmd(t, name), which re-executes the test binary with
// envRole=name; TestMain sees envRole and runs roles[name] instead of the
// tests. Every role is registered here, and at the end of an unfiltered run
// TestMain checks that each one was requested by some test (or accounted
// for by a test that skipped, see skipRole), so that none goes stale.

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/isolated-workers/worker"
)

// envRole names the role this process plays; see roles.
const envRole = "IW_TEST_ROLE"

// roles are the helper roles of the test binary. A role that serves as a
// worker (through worker.Main) does not return; one that returns exits 0.
// (Set in init: some roles start others, through roles.)
var roles map[string]func()

func init() {
	roles = map[string]func(){
		// Test workers (main_test.go): registerHandlers' messages.
		"worker":           func() { testWorker(&worker.ServerOptions{}) },
		"worker-keepalive": func() { testWorker(&worker.ServerOptions{KeepAlive: true}) },
		"worker-binary":    func() { testWorker(&worker.ServerOptions{Serializer: worker.Binary}) },
		"worker-json":      func() { testWorker(&worker.ServerOptions{Serializer: worker.JSON}) },
		"worker-verbose":   func() { testWorker(&worker.ServerOptions{Serializer: verboseJSON{}}) }, // interop_ts_test.go
		// A worker that fails before it listens: exit code 3, "boom" on stderr.
		// A program that forgot worker.Main: it exits 0 without listening.
		"no-main": func() { fmt.Println("the host's code ran in the worker") },
		"exit-at-startup": func() {
			fmt.Fprintln(os.Stderr, "boom: refusing to start")
			os.Exit(3)
		},

		// The hostile-input, security and stress tests (hostile_modes_test.go).
		"hostile":       hsWorker,
		"peercred-dial": hsPeercredDialRole,

		// The memory of big frames (memory_linux_test.go).
		"mem-worker": memWorker,

		// The lifecycle tests (lifecycle_roles_test.go).
		"lc-worker":           func() { lcWorker(false) },
		"lc-worker-keepalive": func() { lcWorker(true) },
		"lc-host":             func() { lcHost(false) },
		"lc-detached-host":    func() { lcHost(true) },
		"block":               blockRole,
		"lc-busy-worker":      func() { lcWorkerWith(&worker.ServerOptions{DrainTimeout: 30 * time.Second}) },
		"lc-busy-host":        lcBusyHost,
		"lc-busy-child":       lcBusyChild,

		// The supervision tests (supervise_test.go).
		"sv-worker": svWorker,

		// A Go program that a worker's handler starts (interop_ts_test.go):
		// it must not take itself for a worker.
		"child-main": func() {
			worker.Main(worker.NewServer(nil))
			fmt.Print("not a worker")
		},
	}
}

// runRole runs this process in role name, and exits.
func runRole(name string) {
	f, ok := roles[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "%s=%q: no such role\n", envRole, name)
		os.Exit(2)
	}
	f()
	os.Exit(0)
}

// rolesUsed records the roles requested through roleCmd and skipRole.
var rolesUsed sync.Map

// roleCommand returns a command that runs the test binary in role name,
// or an error if there is no such role. It is for roles that start other
// roles; tests use roleCmd.
func roleCommand(name string) (*exec.Cmd, error) {
	if _, ok := roles[name]; !ok {
		return nil, fmt.Errorf("role %q is not registered in roles", name)
	}
	rolesUsed.Store(name, true)
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, "-test.run=^$")
	// The race runtime sleeps 1s at exit by default; helpers exit often.
	// Of duplicate variables the last one counts: a role's children get
	// the role they are given.
	cmd.Env = append(os.Environ(), envRole+"="+name, "GORACE=atexit_sleep_ms=0")
	return cmd, nil
}

// roleCmd returns a command that runs the test binary in role name.
func roleCmd(t testing.TB, name string) *exec.Cmd {
	t.Helper()
	cmd, err := roleCommand(name)
	if err != nil {
		t.Fatal(err)
	}
	return cmd
}

// skipRole skips a test that would have used role name, which counts as a
// use: the role has a test, which cannot run here.
func skipRole(t testing.TB, name, reason string) {
	t.Helper()
	if _, ok := roles[name]; !ok {
		t.Fatalf("role %q is not registered in roles", name)
	}
	rolesUsed.Store(name, true)
	t.Skip(reason)
}

// unusedRoles returns the registered roles that no test requested, or nil
// if the run was filtered (-test.run, -test.skip), so that not every test
// ran.
func unusedRoles() []string {
	for _, name := range []string{"test.run", "test.skip", "test.list"} {
		if f := flag.Lookup(name); f != nil && f.Value.String() != "" {
			return nil
		}
	}
	var out []string
	for name := range roles {
		if _, ok := rolesUsed.Load(name); !ok {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}
