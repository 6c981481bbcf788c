//go:build unix || windows

package worker_test

// Lifecycle: host death. Whatever its handlers are doing, a worker whose
// host dies is gone at once, with every process it started.

import (
	"bufio"
	"encoding/json"
	"errors"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/isolated-workers/worker"
)

// lcHostDeathWithin bounds the time from the host's death to the end of
// its workers and their children. The promise is a second, and it takes
// tens of milliseconds; the bound leaves room for a loaded machine. Broken,
// a worker lingered for its drain timeout (30 s here) and its children
// forever.
const lcHostDeathWithin = 3 * time.Second

// TestLifecycleHostDeathEndsBusyWorkers: a host spawns one worker per
// busy kind (lcBusyKinds: a CPU loop, a blocking system call, SIGTERM
// ignored, waiting on a child that has a child, blocked writing to
// stderr), each with a child of its own left running and a 30 s drain
// timeout, and dies (SIGKILL, SIGTERM, SIGINT; TerminateProcess on
// Windows) once every handler is busy. Every worker, child and grandchild
// must go, with the workers' sockets (and their directories) and, on
// Linux, any other process in the workers' process groups. The variants
// run one after the other: each keeps two CPU loops going.
func TestLifecycleHostDeathEndsBusyWorkers(t *testing.T) {
	t.Parallel()
	for _, death := range lcHostDeaths {
		t.Run(death.name, func(t *testing.T) { lcBusyHostDies(t, death) })
	}
}

func lcBusyHostDies(t *testing.T, death lcDeath) {
	rolesOfChildren(t, "lc-busy-worker", "lc-busy-child")
	host := lcStartHost(t, "lc-busy-host", (*exec.Cmd).Start)
	report := host.readBusy(t)
	var procs []*lcProc
	var groups []int
	var addrs []string
	for _, w := range report {
		wp := lcWatch(t, w.Pid)
		lcCheckContained(t, wp, host.cmd.Process.Pid, 0)
		procs, groups, addrs = append(procs, wp), append(groups, w.Pid), append(addrs, lcAddr(t, w.Token))
		if len(w.Children) == 0 {
			t.Fatalf("the %s worker started no child", w.Kind)
		}
		for i, pid := range w.Children {
			parent := w.Pid
			if i > 0 {
				parent = w.Children[i-1]
			}
			cp := lcWatch(t, pid)
			lcCheckContained(t, cp, parent, w.Pid)
			procs = append(procs, cp)
		}
	}
	for _, p := range procs {
		if !p.running() {
			t.Fatalf("process %d is not running before the host dies", p.pid)
		}
	}

	killed := time.Now()
	if err := host.cmd.Process.Signal(death.sig); err != nil {
		t.Fatal(err)
	}
	host.wait()
	var left []string
	gone := poll(lcHostDeathWithin, func() bool {
		left = lcLeft(procs, groups, addrs)
		return len(left) == 0
	})
	if !gone {
		t.Fatalf("%v after the host's death (%s), still there: %s", lcHostDeathWithin, death.name, strings.Join(left, ", "))
	}
	t.Logf("%d workers, %d processes in all, and their sockets gone %v after the host's death (%s)",
		len(report), len(procs), time.Since(killed).Round(time.Millisecond), death.name)
}

// lcLeft names what is left of the busy workers: processes, addresses,
// socket directories, and other processes in their groups.
func lcLeft(procs []*lcProc, groups []int, addrs []string) []string {
	var left []string
	for _, p := range procs {
		if p.running() {
			left = append(left, "process "+strconv.Itoa(p.pid))
		}
	}
	for _, a := range addrs {
		if lcAddrExists(a) || lcDirLeft(a) {
			left = append(left, "address "+a)
		}
	}
	for _, pid := range lcLeftInGroups(groups) {
		left = append(left, "process "+strconv.Itoa(pid)+" in a worker's group")
	}
	return left
}

// readBusy reads the report that lc-busy-host prints, within 60 s (it
// spawns a worker per kind).
func (h *lcHostProc) readBusy(t testing.TB) lcBusyReport {
	t.Helper()
	type result struct {
		line string
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		line, err := bufio.NewReader(h.out).ReadString('\n')
		ch <- result{line, err}
	}()
	res := recvWithin(t, ch, 60*time.Second, "the busy host's report")
	var r lcBusyReport
	if err := json.Unmarshal([]byte(res.line), &r); err != nil || len(r) != len(lcBusyKinds) {
		t.Fatalf("the host printed %q (%v, %v)", res.line, res.err, err)
	}
	return r
}

// TestLifecycleStopByLivingHostIsNoDeath: a host that lives and stops its
// worker other than by Close (here it lost the connection to a worker whose
// process still runs: a reply over its message size limit) says so on the
// lifeline before closing it, so the worker neither reports nor acts on
// its host's death: no "the host died" record, no kill of its own.
func TestLifecycleStopByLivingHostIsNoDeath(t *testing.T) {
	t.Parallel()
	lg, logs := captureLogger()
	cmd := roleCmd(t, "worker-keepalive")
	cmd.Env = append(cmd.Env, "IW_TEST_LOG=1", "IW_BIG="+strings.Repeat("x", 8<<10))
	w := lcSpawnCmd(t, cmd, &worker.Options{Logger: lg, MaxMessageSize: 4 << 10})
	p := lcWatch(t, w.Pid())
	if _, err := worker.Call(testCtx(t), w, Getenv, "IW_BIG"); !errors.Is(err, worker.ErrProtocol) {
		t.Fatalf("a reply over the host's limit: got %v, want ErrProtocol", err)
	}
	if !p.goneWithin(20 * time.Second) {
		t.Fatalf("the worker %d still runs: the host did not stop it", p.pid)
	}
	w.Close() // returns once the worker's stderr is read
	if s := logs.String(); strings.Contains(s, "the host died") {
		t.Fatalf("a worker stopped by its living host reported its death:\n%s", s)
	}
}
