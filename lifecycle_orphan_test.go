//go:build unix || windows

package worker_test

// Lifecycle: no orphans. A worker (and on Windows its own children) goes
// when its host is killed, and Close takes the worker's process tree with
// it.

import (
	"os/exec"
	"testing"
	"time"

	"github.com/isolated-workers/worker"
)

func TestLifecycleKilledHostLeavesNoOrphan(t *testing.T) {
	t.Parallel()
	// A shutdown-on-disconnect worker would also exit as the host's end of
	// the connection closes; a keep-alive one has only the lifeline (Unix),
	// or the job and its watch on the host (Windows), to tell it. The
	// worker's idle child goes with it: killed with the worker's process
	// group by the worker (Unix), or by the job (Windows). The worker must
	// not take its host's death for a disconnection, and exit leaving it.
	for _, tc := range []struct{ name, role string }{{"mode=", "lc-worker"}, {"mode=keepalive", "lc-worker-keepalive"}} {
		t.Run(tc.name, func(t *testing.T) {
			sock := lcSocketPath(t)
			env := []string{envLCWorker + "=" + tc.role, envLCSock + "=" + sock}
			if lcOrphanGrandchild {
				env = append(env, envLCGrandchild+"=1")
			}
			host := lcStartHost(t, "lc-host", (*exec.Cmd).Start, env...)
			hostPid := host.cmd.Process.Pid
			wpid, tok, gpid := host.readWorker(t)
			wp := lcWatch(t, wpid)
			addr := lcAddr(t, tok)
			if sock != "" && addr != sock {
				t.Fatalf("the worker listens at %s, not %s", addr, sock)
			}
			lcCheckListening(t, addr)
			if !wp.running() {
				t.Fatalf("the worker %d is not running", wpid)
			}
			lcCheckContained(t, wp, hostPid, 0)
			procs := []*lcProc{wp}
			if lcOrphanGrandchild {
				gp := lcWatch(t, gpid)
				if !gp.running() {
					t.Fatalf("the worker's child %d is not running", gpid)
				}
				lcCheckContained(t, gp, wpid, wpid)
				procs = append(procs, gp)
			}

			if err := host.cmd.Process.Kill(); err != nil { // SIGKILL; TerminateProcess
				t.Fatal(err)
			}
			host.wait()
			killed := time.Now()
			eventually(t, lcOrphanWithin, func() bool {
				for _, p := range procs {
					if !p.goneWithin(0) {
						return false
					}
				}
				return !lcAddrExists(addr)
			}, "the host's worker (and its child) to go, and its address "+addr)
			t.Logf("worker gone and address removed %v after the host was killed", time.Since(killed).Round(time.Millisecond))
		})
	}
}

// TestLifecycleWorkerWatchesHost isolates the worker's own watch on its
// host: a worker started by hand (in no job, on Windows), with a stand-in
// host process (whose pid it is given on Windows; which holds its
// lifeline on Unix), must end itself as soon as that process dies: killed
// by its own SIGKILL on Unix (it leads no process group here, so it kills
// only itself), with exit code 1 on Windows.
func TestLifecycleWorkerWatchesHost(t *testing.T) {
	t.Parallel()
	stand := lcStartStandIn(t)
	hw := lcStartByHand(t, "worker-keepalive", time.Minute, stand)

	// A completed call shows that the worker is serving, so it watches its
	// host (it starts to before it accepts connections).
	ctx := testCtx(t)
	c := lcDialByHand(t, ctx, hw)
	defer c.Close()
	if _, err := worker.Call(ctx, c, Ping, PingReq{}); err != nil {
		t.Fatal(err)
	}

	killed := time.Now()
	if err := stand.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	recvWithin(t, hw.done, 2*time.Second, "the worker to exit after its host died")
	if hw.err == nil || hw.err.Error() != lcHostDiedEnd {
		t.Fatalf("the worker exited with %v; want %q, its own end", hw.err, lcHostDiedEnd)
	}
	t.Logf("the worker exited %v after its host died", time.Since(killed).Round(time.Millisecond))
}

func TestLifecycleCloseKillsProcessTree(t *testing.T) {
	t.Parallel()
	w := lcSpawn(t, "lc-worker", nil)
	wp := lcWatch(t, w.Pid())
	gpid, err := worker.Call(testCtx(t), w, LCGrandchild, worker.Void{})
	if err != nil {
		t.Fatal(err)
	}
	gp := lcWatch(t, gpid)
	if !gp.running() {
		t.Fatalf("the grandchild %d is not running", gpid)
	}
	lcCheckContained(t, gp, w.Pid(), w.Pid())
	start := time.Now()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if !wp.goneWithin(0) {
		t.Fatalf("the worker %d still runs after Close returned", wp.pid)
	}
	if !gp.goneWithin(2 * time.Second) {
		t.Fatalf("the grandchild %d outlived Close by 2s", gpid)
	}
	// Left alone it would have run for blockFor, then exited with 3.
	code, ok := gp.exitCode(t)
	if ok && code == 3 {
		t.Fatalf("the grandchild exited by itself (code %d)", code)
	}
	t.Logf("Close took %v; grandchild exit code %d (known: %v)", time.Since(start).Round(time.Millisecond), code, ok)
}
