//go:build unix

package worker_test

// Lifecycle tests with real processes: crashes and restarts, orphans,
// graceful and forced stops, disconnect and attach, cancellation and
// startup failures.
//
// The test binary plays extra roles here, selected by IW_LC_ROLE (see
// lifecycleRole, called first thing in TestMain):
//
//	worker         the test worker plus the lc* handlers below
//	host           a host process that spawns a worker (in mode IW_LC_MODE),
//	               prints its pid and socket path, and blocks until stdin
//	               closes
//	detached-host  a host that spawns a detached keep-alive worker, prints
//	               its pid and token, disconnects and exits 0

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/isolated-workers/worker"
	"github.com/isolated-workers/worker/internal/wire"
)

const (
	envLCRole = "IW_LC_ROLE" // see the file comment
	envLCSock = "IW_LC_SOCK" // the socket path a host role gives its worker
	envLCMode = "IW_LC_MODE" // the IW_TEST_MODE of the host role's worker
)

// Messages of the lc worker, on top of those of registerHandlers.
type (
	LCAwaitReq struct {
		Type string `json:"type"` // "sleep" or "lcStubborn"
		N    int    `json:"n"`
	}
	LCCrashReq struct {
		Stderr string `json:"stderr"`
		Code   int    `json:"code"`
	}
)

var (
	// LCAwait returns once N more requests of Type have started running.
	LCAwait = worker.Define[LCAwaitReq, worker.Void]("lcAwait")
	// LCCrash writes Stderr to stderr and exits with Code; with a negative
	// Code it returns instead.
	LCCrash = worker.Define[LCCrashReq, worker.Void]("lcCrash")
	// LCCrashOnce crashes (exit 5) unless the marker file exists, which it
	// creates first; then it answers "recovered".
	LCCrashOnce = worker.Define[string, string]("lcCrashOnce")
	// LCGrandchild starts `sleep 60` in the worker's process group and
	// returns its pid.
	LCGrandchild = worker.Define[worker.Void, int]("lcGrandchild")
	// LCTermSelf sends SIGTERM to its own worker, then sleeps ms.
	LCTermSelf = worker.Define[int, SleepRes]("lcTermSelf")
	// LCStubborn ignores SIGTERM from now on and never returns, whatever
	// its context says.
	LCStubborn = worker.Define[worker.Void, worker.Void]("lcStubborn")
)

// lifecycleRole runs this process in one of the roles above, and exits; in
// the test process itself it returns at once.
func lifecycleRole() {
	switch os.Getenv(envLCRole) {
	case "":
		return
	case "worker":
		if _, ok := os.LookupEnv(wire.EnvStartupData); ok {
			lcWorker()
		}
	case "host":
		lcHost(false)
	case "detached-host":
		lcHost(true)
	}
	fmt.Fprintf(os.Stderr, "%s=%q: unknown role or missing startup data\n", envLCRole, os.Getenv(envLCRole))
	os.Exit(2)
}

var (
	lcStartedMu sync.Mutex
	lcStartedCh = map[string]chan struct{}{}
)

// lcStarted returns the channel that receives a value each time a request
// of type typ starts running in this worker.
func lcStarted(typ string) chan struct{} {
	lcStartedMu.Lock()
	defer lcStartedMu.Unlock()
	ch := lcStartedCh[typ]
	if ch == nil {
		ch = make(chan struct{}, 1024)
		lcStartedCh[typ] = ch
	}
	return ch
}

func lcWorker() {
	opts := &worker.ServerOptions{
		KeepAlive: os.Getenv(envMode) == "keepalive",
		// Incoming middleware runs on the handler's goroutine, right
		// before the handler: a counted sleep is in flight.
		Middleware: []worker.Middleware{func(ctx context.Context, m *worker.Message) error {
			if m.Incoming && m.Type == Sleep.Name() {
				lcStarted(m.Type) <- struct{}{}
			}
			return nil
		}},
	}
	s := worker.NewServer(opts)
	registerHandlers(s)
	worker.Handle(s, LCAwait, func(ctx context.Context, r LCAwaitReq) (worker.Void, error) {
		ch := lcStarted(r.Type)
		for range r.N {
			select {
			case <-ch:
			case <-ctx.Done():
				return worker.Void{}, ctx.Err()
			}
		}
		return worker.Void{}, nil
	})
	worker.Handle(s, LCCrash, func(ctx context.Context, r LCCrashReq) (worker.Void, error) {
		fmt.Fprintln(os.Stderr, r.Stderr)
		if r.Code >= 0 {
			os.Exit(r.Code)
		}
		return worker.Void{}, nil
	})
	worker.Handle(s, LCCrashOnce, func(ctx context.Context, marker string) (string, error) {
		if _, err := os.Stat(marker); err == nil {
			return "recovered", nil
		}
		if err := os.WriteFile(marker, []byte("crashed"), 0o600); err != nil {
			return "", err
		}
		fmt.Fprintln(os.Stderr, "lc: first run, crashing")
		os.Exit(5)
		return "", nil
	})
	worker.Handle(s, LCGrandchild, func(ctx context.Context, _ worker.Void) (int, error) {
		cmd := exec.Command("sleep", "60") // same process group, no pipes
		if err := cmd.Start(); err != nil {
			return 0, err
		}
		go cmd.Wait()
		return cmd.Process.Pid, nil
	})
	worker.Handle(s, LCTermSelf, func(ctx context.Context, ms int) (SleepRes, error) {
		syscall.Kill(os.Getpid(), syscall.SIGTERM)
		t := time.NewTimer(time.Duration(ms) * time.Millisecond)
		defer t.Stop()
		select {
		case <-t.C:
			return SleepRes{Slept: true}, nil
		case <-ctx.Done():
			return SleepRes{CtxErr: ctx.Err().Error()}, ctx.Err()
		}
	})
	worker.Handle(s, LCStubborn, func(ctx context.Context, _ worker.Void) (worker.Void, error) {
		signal.Ignore(syscall.SIGTERM) // undoes Serve's signal.Notify
		lcStarted(LCStubborn.Name()) <- struct{}{}
		<-make(chan struct{})
		return worker.Void{}, nil
	})
	worker.Main(s)
	fmt.Fprintln(os.Stderr, "worker.Main returned in an lc worker")
	os.Exit(2)
}

// lcHost is a host process: it spawns a plain test worker (detached and
// keep-alive when detached) at the socket path of envLCSock.
func lcHost(detached bool) {
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "lc host:", err)
		os.Exit(1)
	}
	exe, err := os.Executable()
	if err != nil {
		fail(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	mode := os.Getenv(envLCMode)
	if detached {
		mode = "keepalive"
	}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, envLCRole+"=") && !strings.HasPrefix(kv, envLCSock+"=") && !strings.HasPrefix(kv, envLCMode+"=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, envMode+"="+mode, "GORACE=atexit_sleep_ms=0")
	sock := os.Getenv(envLCSock)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	w, err := worker.Spawn(ctx, cmd, &worker.Options{Detached: detached, SocketPath: sock})
	if err != nil {
		fail(err)
	}
	if detached {
		fmt.Printf("%d %s\n", w.Pid(), w.Token())
		if err := w.Disconnect(); err != nil {
			fail(err)
		}
		os.Exit(0)
	}
	fmt.Printf("%d %s\n", w.Pid(), sock)
	io.Copy(io.Discard, os.Stdin) // until the test closes stdin, or kills us
	w.Close()
	os.Exit(0)
}

// lcCmd returns a command that runs the test binary as an lc worker.
func lcCmd(t testing.TB, mode string) *exec.Cmd {
	cmd := helperCmd(t, mode)
	cmd.Env = append(cmd.Env, envLCRole+"=worker")
	return cmd
}

// lcSpawn spawns an lc worker and closes it at the end of the test.
func lcSpawn(t testing.TB, mode string, opts *worker.Options) *worker.Worker {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	w, err := worker.Spawn(ctx, lcCmd(t, mode), opts)
	if err != nil {
		t.Fatalf("Spawn(lc %q): %v", mode, err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

// lcDir makes a directory, short enough for socket paths, removed at the
// end of the test.
func lcDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "lc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// lcGone reports whether pid has exited: it no longer exists, or it is a
// zombie (an orphan's zombie may never be reaped by this system's init).
func lcGone(pid int) bool {
	if syscall.Kill(pid, 0) == syscall.ESRCH {
		return true
	}
	_, state := procStat(pid)
	return state == "Z" || state == "X" || state == ""
}

// lcEventually polls cond every 10ms until it holds or d has passed.
func lcEventually(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func lcIsSocket(path string) bool {
	fi, err := os.Lstat(path)
	return err == nil && fi.Mode()&os.ModeSocket != 0
}

func lcExists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// lcStatFields returns the fields of /proc/<pid>/stat after the command
// name: state, ppid, pgrp, session, ...
func lcStatFields(t testing.TB, pid string) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
}

// lcSent returns host middleware that reports, on the channel, each
// request of type typ about to be written: the call is counted in flight.
func lcSent(typ string) (worker.Middleware, chan struct{}) {
	ch := make(chan struct{}, 128)
	return func(ctx context.Context, m *worker.Message) error {
		if !m.Incoming && m.Type == typ {
			ch <- struct{}{}
		}
		return nil
	}, ch
}

// lcNewChildren returns the live child processes that are not in before.
func lcNewChildren(before []int) []int {
	var out []int
	for _, pid := range children() {
		if !slices.Contains(before, pid) {
			out = append(out, pid)
		}
	}
	return out
}

// --- 1. Crashes -----------------------------------------------------------

func TestLifecycleCrashFailsCallsInFlight(t *testing.T) {
	for _, how := range []string{"exit", "sigkill"} {
		t.Run(how, func(t *testing.T) {
			w := lcSpawn(t, "", nil)
			pid := w.Pid()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()

			const n = 64
			type outcome struct {
				err error
				at  time.Time
			}
			results := make(chan outcome, n)
			for range n {
				go func() {
					_, err := worker.Call(ctx, w, Sleep, SleepReq{Ms: 60_000})
					results <- outcome{err, time.Now()}
				}()
			}
			// All 64 handlers are running in the worker.
			if _, err := worker.Call(ctx, w, LCAwait, LCAwaitReq{Type: Sleep.Name(), N: n}); err != nil {
				t.Fatalf("awaiting the sleeps: %v", err)
			}
			marker := "lc: about to die (" + how + ")"
			var crashed time.Time
			if how == "exit" {
				crashed = time.Now()
				_, err := worker.Call(ctx, w, LCCrash, LCCrashReq{Stderr: marker, Code: 7})
				if ce := asCrash(t, err); ce.Type != LCCrash.Name() || ce.ExitCode != 7 {
					t.Fatalf("the crashing call: got %+v", ce)
				}
			} else {
				if _, err := worker.Call(ctx, w, LCCrash, LCCrashReq{Stderr: marker, Code: -1}); err != nil {
					t.Fatal(err)
				}
				crashed = time.Now()
				if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
			}
			for i := range n {
				r := recvWithin(t, results, 20*time.Second, fmt.Sprintf("call %d to fail", i))
				if d := r.at.Sub(crashed); d > 5*time.Second {
					t.Errorf("call %d failed %v after the crash", i, d)
				}
				ce := asCrash(t, r.err)
				if ce.Type != Sleep.Name() || ce.Attempt != 1 || ce.MaxAttempts != 1 || ce.Pid != pid {
					t.Fatalf("call %d: got %+v", i, ce)
				}
				switch how {
				case "exit":
					if ce.ExitCode != 7 || ce.Signal != "" || !strings.Contains(ce.Stderr, marker) {
						t.Fatalf("call %d: got exit code %d, signal %q, stderr %q", i, ce.ExitCode, ce.Signal, ce.Stderr)
					}
				case "sigkill":
					if ce.ExitCode != -1 || ce.Signal != syscall.SIGKILL.String() || !strings.Contains(ce.Stderr, marker) {
						t.Fatalf("call %d: got exit code %d, signal %q, stderr %q", i, ce.ExitCode, ce.Signal, ce.Stderr)
					}
				}
			}
			// Later calls fail with the same crash.
			_, err := worker.Call(ctx, w, Ping, PingReq{})
			ce := asCrash(t, err)
			if ce.Type != Ping.Name() || ce.Attempt != 1 || ce.MaxAttempts != 1 || ce.Pid != pid ||
				(how == "exit") != (ce.ExitCode == 7) || (how == "sigkill") != (ce.Signal == syscall.SIGKILL.String()) {
				t.Fatalf("later call: got %+v", ce)
			}
			if w.IsActive() {
				t.Fatal("IsActive after the crash")
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestLifecycleCrashRetryRestarts(t *testing.T) {
	type restart struct {
		crash  *worker.CrashError
		newPid int
	}
	restarts := make(chan restart, 8)
	w := lcSpawn(t, "", &worker.Options{OnCrash: worker.CrashPolicy{Attempts: 3,
		OnRestart: func(c *worker.CrashError, newPid int) { restarts <- restart{c, newPid} }}})
	ctx := testCtx(t)
	old := w.Pid()
	marker := filepath.Join(lcDir(t), "crashed-once")

	got, err := worker.Call(ctx, w, LCCrashOnce, marker)
	if err != nil || got != "recovered" {
		t.Fatalf("got %q, %v; want the retry on a fresh worker to succeed", got, err)
	}
	if !lcExists(marker) {
		t.Fatal("the first attempt did not run")
	}
	now := w.Pid()
	if now == old || now == 0 {
		t.Fatalf("Pid: %d before, %d after the crash", old, now)
	}
	if !lcEventually(5*time.Second, func() bool { return lcGone(old) }) {
		t.Fatalf("the crashed process %d is still there", old)
	}
	r := recvWithin(t, restarts, 10*time.Second, "OnRestart")
	if r.newPid != now || r.crash.Pid != old || r.crash.ExitCode != 5 ||
		!strings.Contains(r.crash.Stderr, "first run, crashing") {
		t.Fatalf("OnRestart got newPid %d (want %d), crash %+v", r.newPid, now, r.crash)
	}
	if got, err := worker.Call(ctx, w, GetPid, worker.Void{}); err != nil || got != now {
		t.Fatalf("the new worker answers %d, %v; want %d", got, err, now)
	}
	select {
	case r := <-restarts:
		t.Fatalf("a second restart: %+v", r)
	default:
	}
}

func TestLifecycleCrashAttemptsByType(t *testing.T) {
	ctx := testCtx(t)
	t.Run("override", func(t *testing.T) {
		var mu sync.Mutex
		restarts := 0
		w := lcSpawn(t, "", &worker.Options{OnCrash: worker.CrashPolicy{Attempts: 3,
			AttemptsByType: map[string]int{Exit.Name(): 1, LCCrash.Name(): 2},
			OnRestart:      func(*worker.CrashError, int) { mu.Lock(); restarts++; mu.Unlock() }}})

		_, err := worker.Call(ctx, w, Exit, 9) // overridden down to 1
		if ce := asCrash(t, err); ce.Type != Exit.Name() || ce.Attempt != 1 || ce.MaxAttempts != 1 || ce.ExitCode != 9 {
			t.Fatalf("exit: got %+v", ce)
		}
		_, err = worker.Call(ctx, w, LCCrash, LCCrashReq{Stderr: "lc: typed crash", Code: 4}) // overridden to 2
		ce := asCrash(t, err)
		if ce.Type != LCCrash.Name() || ce.Attempt != 2 || ce.MaxAttempts != 2 || ce.ExitCode != 4 ||
			!strings.Contains(ce.Stderr, "lc: typed crash") {
			t.Fatalf("lcCrash: got %+v", ce)
		}
		// The default, 3 attempts, still applies to other types.
		if got, err := worker.Call(ctx, w, LCCrashOnce, filepath.Join(lcDir(t), "m")); err != nil || got != "recovered" {
			t.Fatalf("lcCrashOnce: got %q, %v", got, err)
		}
		if _, err := worker.Call(ctx, w, Ping, PingReq{}); err != nil {
			t.Fatalf("after the crashes: %v", err)
		}
		// 1 (exit) + 2 (lcCrash) + 1 (lcCrashOnce) crashes, each replaced.
		if !lcEventually(5*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return restarts == 4 }) {
			mu.Lock()
			t.Fatalf("%d restarts, want 4", restarts)
		}
	})
	t.Run("only-by-type", func(t *testing.T) {
		// Attempts is left at 1: the per-type entry alone enables restarts.
		w := lcSpawn(t, "", &worker.Options{OnCrash: worker.CrashPolicy{
			AttemptsByType: map[string]int{LCCrashOnce.Name(): 2}}})
		if got, err := worker.Call(ctx, w, LCCrashOnce, filepath.Join(lcDir(t), "m")); err != nil || got != "recovered" {
			t.Fatalf("lcCrashOnce: got %q, %v", got, err)
		}
		_, err := worker.Call(ctx, w, Exit, 6)
		if ce := asCrash(t, err); ce.Attempt != 1 || ce.MaxAttempts != 1 || ce.ExitCode != 6 {
			t.Fatalf("exit: got %+v", ce)
		}
		if _, err := worker.Call(ctx, w, Ping, PingReq{}); err != nil {
			t.Fatalf("after the crash: %v", err)
		}
	})
}

// --- 2. No orphans --------------------------------------------------------

func TestLifecycleKilledHostLeavesNoOrphan(t *testing.T) {
	// A shutdown-on-disconnect worker would also exit as the host's end of
	// the connection closes; a keep-alive one has only the parent-death
	// signal and the lifeline to tell it.
	for _, mode := range []string{"", "keepalive"} {
		t.Run("mode="+mode, func(t *testing.T) { lcKillHost(t, mode) })
	}
}

func lcKillHost(t *testing.T, mode string) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(lcDir(t), "w.sock")
	host := exec.Command(exe, "-test.run=^$")
	host.Env = append(os.Environ(), envLCRole+"=host", envLCSock+"="+sock, envLCMode+"="+mode, "GORACE=atexit_sleep_ms=0")
	host.Stderr = os.Stderr
	stdin, err := host.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := host.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := host.Start(); err != nil {
		t.Fatal(err)
	}
	var waitOnce sync.Once
	wait := func() { waitOnce.Do(func() { host.Wait() }) }
	var wpid int
	t.Cleanup(func() {
		stdin.Close()
		host.Process.Kill()
		wait()
		if wpid > 0 && !lcGone(wpid) {
			syscall.Kill(-wpid, syscall.SIGKILL) // the test failed: do not leave it behind
		}
	})

	line := lcReadLine(t, stdout)
	var path string
	if _, err := fmt.Sscanf(line, "%d %s", &wpid, &path); err != nil || path != sock {
		t.Fatalf("host printed %q", line)
	}
	if ppid, _ := procStat(wpid); ppid != host.Process.Pid || !lcIsSocket(sock) {
		t.Fatalf("worker %d: parent %d (want the host %d), socket there: %v", wpid, ppid, host.Process.Pid, lcIsSocket(sock))
	}

	if err := host.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	wait()
	killed := time.Now()
	ok := lcEventually(time.Second, func() bool { return lcGone(wpid) && !lcExists(sock) })
	if !ok {
		t.Fatalf("1s after the host was killed: worker %d gone: %v, socket there: %v",
			wpid, lcGone(wpid), lcExists(sock))
	}
	t.Logf("worker gone and socket removed %v after the host was killed", time.Since(killed).Round(time.Millisecond))
}

// lcReadLine reads one line from r, within 20s.
func lcReadLine(t testing.TB, r io.Reader) string {
	t.Helper()
	type result struct {
		line string
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		line, err := bufio.NewReader(r).ReadString('\n')
		ch <- result{strings.TrimSpace(line), err}
	}()
	res := recvWithin(t, ch, 20*time.Second, "a line from the host")
	if res.err != nil {
		t.Fatalf("reading from the host: %v (got %q)", res.err, res.line)
	}
	return res.line
}

func TestLifecycleCloseKillsProcessGroup(t *testing.T) {
	w := lcSpawn(t, "", nil)
	ctx := testCtx(t)
	gpid, err := worker.Call(ctx, w, LCGrandchild, worker.Void{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !lcGone(gpid) {
			syscall.Kill(gpid, syscall.SIGKILL)
		}
	})
	f := lcStatFields(t, strconv.Itoa(gpid))
	if lcGone(gpid) || f[1] != strconv.Itoa(w.Pid()) || f[2] != strconv.Itoa(w.Pid()) {
		t.Fatalf("grandchild %d: state %s, parent %s, group %s; want a live child in group %d", gpid, f[0], f[1], f[2], w.Pid())
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if !lcEventually(2*time.Second, func() bool { return lcGone(gpid) }) {
		t.Fatalf("the grandchild %d outlived Close", gpid)
	}
}

// --- 3. Graceful stops ----------------------------------------------------

func TestLifecycleShutdownDrainsCallInFlight(t *testing.T) {
	sent, sentCh := lcSent(Sleep.Name())
	held := make(chan struct{})
	release := make(chan struct{})
	// Hold the reply of the sleep on its way in: the call stays in flight
	// for as long as the test needs.
	hold := func(ctx context.Context, m *worker.Message) error {
		if m.Incoming && m.Type == Sleep.Name()+"Result" {
			close(held)
			<-release
		}
		return nil
	}
	sock := filepath.Join(lcDir(t), "w.sock")
	w := lcSpawn(t, "", &worker.Options{SocketPath: sock, Middleware: []worker.Middleware{sent, hold}})
	pid := w.Pid()
	ctx := testCtx(t)

	type result struct {
		res SleepRes
		err error
	}
	call := make(chan result, 1)
	go func() {
		res, err := worker.Call(ctx, w, Sleep, SleepReq{Ms: 300})
		call <- result{res, err}
	}()
	recvWithin(t, sentCh, 10*time.Second, "the sleep to be sent")
	shut := make(chan error, 1)
	go func() { shut <- w.Shutdown(ctx) }()

	// Disconnect reports ErrClosed once Shutdown has begun (and, on this
	// shutdown-on-disconnect worker, ErrNotKeepAlive before that).
	if !lcEventually(5*time.Second, func() bool { return errors.Is(w.Disconnect(), worker.ErrClosed) }) {
		t.Fatal("Shutdown did not begin")
	}
	if _, err := worker.Call(ctx, w, Ping, PingReq{}); !errors.Is(err, worker.ErrClosed) {
		t.Fatalf("a new call during Shutdown: got %v, want ErrClosed", err)
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with a call in flight", err)
	default:
	}
	recvWithin(t, held, 10*time.Second, "the sleep's reply")
	close(release)
	if r := recvWithin(t, call, 10*time.Second, "the sleep"); r.err != nil || !r.res.Slept {
		t.Fatalf("the call in flight: got %+v, %v; want it to complete", r.res, r.err)
	}
	if err := recvWithin(t, shut, 10*time.Second, "Shutdown"); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if !lcGone(pid) || w.IsActive() || lcExists(sock) {
		t.Fatalf("after Shutdown: process gone %v, IsActive %v, socket there %v", lcGone(pid), w.IsActive(), lcExists(sock))
	}
}

func TestLifecycleShutdownExpiredContext(t *testing.T) {
	sent, sentCh := lcSent(Sleep.Name())
	sock := filepath.Join(lcDir(t), "w.sock")
	w := lcSpawn(t, "", &worker.Options{SocketPath: sock, GracePeriod: 5 * time.Second, Middleware: []worker.Middleware{sent}})
	pid := w.Pid()
	call := make(chan error, 1)
	go func() {
		_, err := worker.Call(testCtx(t), w, Sleep, SleepReq{Ms: 60_000})
		call <- err
	}()
	recvWithin(t, sentCh, 10*time.Second, "the sleep to be sent")

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	err := w.Shutdown(ctx)
	elapsed := time.Since(start)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Shutdown: got %v, want context.Canceled", err)
	}
	if elapsed > 2500*time.Millisecond { // half the grace period: no drain, no wait for a kill
		t.Fatalf("Shutdown with an expired context took %v", elapsed)
	}
	if err := recvWithin(t, call, 5*time.Second, "the call in flight"); !errors.Is(err, worker.ErrClosed) {
		t.Fatalf("the call in flight: got %v, want ErrClosed", err)
	}
	if !lcGone(pid) || lcExists(sock) {
		t.Fatalf("after Shutdown: process gone %v, socket there %v", lcGone(pid), lcExists(sock))
	}
}

func TestLifecycleSIGTERMDrainsAndExitsZero(t *testing.T) {
	w := lcSpawn(t, "", nil)
	ctx := testCtx(t)
	start := time.Now()
	// The handler sends SIGTERM to its own worker, then sleeps 300ms: the
	// signal arrives with the call in flight.
	res, err := worker.Call(ctx, w, LCTermSelf, 300)
	if err != nil || !res.Slept {
		t.Fatalf("the call in flight during SIGTERM: got %+v, %v", res, err)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Fatalf("the call took %v", d)
	}
	if !lcEventually(5*time.Second, func() bool { return !w.IsActive() && !w.IsConnected() }) {
		t.Fatal("the worker did not exit after SIGTERM")
	}
	_, err = worker.Call(ctx, w, Ping, PingReq{})
	if ce := asCrash(t, err); ce.ExitCode != 0 || ce.Signal != "" {
		t.Fatalf("got exit code %d, signal %q; want a clean exit: %v", ce.ExitCode, ce.Signal, ce)
	}
}

func TestLifecycleCloseIdempotentAndBounded(t *testing.T) {
	for _, detached := range []bool{false, true} {
		t.Run(fmt.Sprintf("detached=%v", detached), func(t *testing.T) {
			// Detached, only SIGKILL after the grace period stops it; otherwise
			// the lifeline does, well before the (longer) grace period.
			grace := 3 * time.Second
			if detached {
				grace = 500 * time.Millisecond
			}
			sock := filepath.Join(lcDir(t), "w.sock")
			w := lcSpawn(t, "", &worker.Options{SocketPath: sock, GracePeriod: grace, Detached: detached})
			pid := w.Pid()
			ctx := testCtx(t)
			call := make(chan error, 1)
			go func() {
				_, err := worker.Call(ctx, w, LCStubborn, worker.Void{})
				call <- err
			}()
			// The stubborn handler runs and SIGTERM is ignored.
			if _, err := worker.Call(ctx, w, LCAwait, LCAwaitReq{Type: LCStubborn.Name(), N: 1}); err != nil {
				t.Fatal(err)
			}

			start := time.Now()
			errs := make(chan error, 2)
			for range 2 {
				go func() { errs <- w.Close() }()
			}
			for range 2 {
				if err := recvWithin(t, errs, 10*time.Second, "Close"); err != nil {
					t.Fatalf("Close: %v", err)
				}
			}
			elapsed := time.Since(start)
			if detached {
				// No lifeline: only SIGKILL, after the grace period, stops it.
				if elapsed < grace || elapsed > grace+2*time.Second {
					t.Fatalf("Close took %v; want the grace period %v, then a kill", elapsed, grace)
				}
			} else if elapsed > grace {
				// The lifeline stops it without waiting for the grace period.
				t.Fatalf("Close took %v, more than the grace period %v", elapsed, grace)
			}
			if !lcGone(pid) || w.IsActive() || lcExists(sock) {
				t.Fatalf("after Close: process gone %v, IsActive %v, socket there %v", lcGone(pid), w.IsActive(), lcExists(sock))
			}
			if err := recvWithin(t, call, 5*time.Second, "the call in flight"); !errors.Is(err, worker.ErrClosed) {
				t.Fatalf("the call in flight: got %v, want ErrClosed", err)
			}
			start = time.Now()
			if err := w.Close(); err != nil || time.Since(start) > 100*time.Millisecond {
				t.Fatalf("a further Close: %v after %v", err, time.Since(start))
			}
			if _, err := worker.Call(ctx, w, Ping, PingReq{}); !errors.Is(err, worker.ErrClosed) {
				t.Fatalf("a call after Close: got %v, want ErrClosed", err)
			}
		})
	}
}

// --- 4. Disconnect and reconnect ------------------------------------------

func TestLifecycleKeepAliveDisconnectReconnectAttach(t *testing.T) {
	sent, sentCh := lcSent(Sleep.Name())
	sock := filepath.Join(lcDir(t), "w.sock")
	w := lcSpawn(t, "keepalive", &worker.Options{SocketPath: sock, Middleware: []worker.Middleware{sent}})
	pid := w.Pid()
	ctx := testCtx(t)

	call := make(chan error, 1)
	go func() {
		_, err := worker.Call(ctx, w, Sleep, SleepReq{Ms: 60_000})
		call <- err
	}()
	recvWithin(t, sentCh, 10*time.Second, "the sleep to be sent")
	if err := w.Disconnect(); err != nil {
		t.Fatalf("Disconnect: %v", err)
	}
	if err := recvWithin(t, call, 5*time.Second, "the call in flight"); !errors.Is(err, worker.ErrNotConnected) {
		t.Fatalf("the call in flight: got %v, want ErrNotConnected", err)
	}
	if !w.IsActive() || w.IsConnected() || lcGone(pid) || !lcIsSocket(sock) {
		t.Fatalf("after Disconnect: IsActive %v, IsConnected %v, gone %v, socket %v",
			w.IsActive(), w.IsConnected(), lcGone(pid), lcIsSocket(sock))
	}
	if _, err := worker.Call(ctx, w, Ping, PingReq{}); !errors.Is(err, worker.ErrNotConnected) {
		t.Fatalf("a call while disconnected: got %v, want ErrNotConnected", err)
	}

	reconnectAndHandOver(t, ctx, w, pid)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if !lcGone(pid) || lcExists(sock) {
		t.Fatalf("after Close: gone %v, socket there %v", lcGone(pid), lcExists(sock))
	}
}

func TestLifecycleHostConnectTimeout(t *testing.T) {
	sock := filepath.Join(lcDir(t), "w.sock")
	readyR, readyW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer readyR.Close()
	sd := wire.StartupData{Driver: wire.Driver, SocketPath: sock, Serializer: worker.JSON.Name(),
		ServerConnectTimeout: 300, ReadyFD: 3}
	cmd := helperCmd(t, "")
	cmd.Env = append(cmd.Env, sd.Env()...)
	cmd.ExtraFiles = []*os.File{readyW}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	readyW.Close()
	exited := make(chan error, 1)
	waited := make(chan struct{})
	go func() { exited <- cmd.Wait(); close(waited) }()
	defer func() {
		cmd.Process.Kill() // if the test failed before it exited
		<-waited
	}()

	var b [1]byte
	if n, _ := readyR.Read(b[:]); n != 1 || !lcIsSocket(sock) {
		t.Fatalf("the worker did not report listening (socket there: %v)", lcIsSocket(sock))
	}
	err = recvWithin(t, exited, 10*time.Second, "the unconnected worker to exit")
	elapsed := time.Since(start)
	if err != nil {
		t.Fatalf("the worker exited with %v, want 0", err)
	}
	if elapsed < 300*time.Millisecond {
		t.Fatalf("the worker exited after %v, before its host-connect timeout", elapsed)
	}
	if lcExists(sock) {
		t.Fatal("the worker left its socket file behind")
	}
}

// --- 5. Detached workers, attached from another process -------------------

func TestLifecycleDetachedSurvivesHostAndAttach(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(lcDir(t), "w.sock")
	hctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	host := exec.CommandContext(hctx, exe, "-test.run=^$")
	host.Env = append(os.Environ(), envLCRole+"=detached-host", envLCSock+"="+sock, "GORACE=atexit_sleep_ms=0")
	host.Stderr = os.Stderr
	out, err := host.Output()
	var wpid int
	var tok string
	fmt.Sscanf(string(out), "%d %s", &wpid, &tok)
	if wpid > 0 {
		t.Cleanup(func() {
			if !lcGone(wpid) {
				syscall.Kill(-wpid, syscall.SIGKILL) // the test failed: do not leave it behind
			}
		})
	}
	if err != nil || wpid <= 0 || tok == "" {
		t.Fatalf("detached host: %v, printed %q", err, out)
	}

	// The worker outlived its host, in a session of its own.
	if lcGone(wpid) || !lcIsSocket(sock) {
		t.Fatalf("the detached worker %d did not survive its host (socket there: %v)", wpid, lcIsSocket(sock))
	}
	mine := lcStatFields(t, "self")[3]
	if f := lcStatFields(t, strconv.Itoa(wpid)); f[3] == mine || f[3] != strconv.Itoa(wpid) {
		t.Fatalf("the detached worker's session is %s; ours is %s", f[3], mine)
	}

	ctx := testCtx(t)
	for _, field := range []string{"id", "secret"} {
		bad := lcTamper(t, tok, field)
		if a, err := worker.Attach(ctx, bad, nil); !errors.Is(err, worker.ErrUnauthorized) {
			if a != nil {
				a.Close()
			}
			t.Fatalf("Attach with a wrong %s: got %v, want ErrUnauthorized", field, err)
		}
	}

	w, err := worker.Attach(ctx, tok, nil)
	if err != nil {
		t.Fatalf("Attach: %v", err)
	}
	defer w.Close()
	if res, err := worker.Call(ctx, w, Ping, PingReq{Message: "attached"}); err != nil || res.Message != "pong: attached" {
		t.Fatalf("Ping: %+v, %v", res, err)
	}
	if w.Pid() != wpid {
		t.Fatalf("Pid: %d, want %d", w.Pid(), wpid)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if !lcEventually(2*time.Second, func() bool { return lcGone(wpid) && !lcExists(sock) }) {
		t.Fatalf("after Close: worker gone %v, socket there %v", lcGone(wpid), lcExists(sock))
	}
}

// lcTamper returns tok with one field of its JSON changed.
func lcTamper(t testing.TB, tok, field string) string {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	s, ok := m[field].(string)
	if !ok || s == "" {
		t.Fatalf("token has no %q: %s", field, raw)
	}
	m[field] = strings.Repeat("0", len(s))
	raw, _ = json.Marshal(m)
	return base64.RawURLEncoding.EncodeToString(raw)
}

// --- 6. Cancellation and timeouts -----------------------------------------

func TestLifecycleOptionsTimeouts(t *testing.T) {
	t.Run("Timeout", func(t *testing.T) {
		w := lcSpawn(t, "", &worker.Options{Timeout: 300 * time.Millisecond})
		start := time.Now()
		_, err := worker.Call(testCtx(t), w, Sleep, SleepReq{Ms: 60_000})
		if d := time.Since(start); !errors.Is(err, context.DeadlineExceeded) || d < 250*time.Millisecond || d > 3*time.Second {
			t.Fatalf("got %v after %v, want context.DeadlineExceeded after 300ms", err, d)
		}
		handlerCanceled(t, w)
		if res, err := worker.Call(context.Background(), w, Sleep, SleepReq{Ms: 1}); err != nil || !res.HasDeadline {
			t.Fatalf("the timeout is the handler's deadline: %+v, %v", res, err)
		}
	})
	t.Run("Timeouts", func(t *testing.T) {
		w := lcSpawn(t, "", &worker.Options{Timeout: 200 * time.Millisecond,
			Timeouts: map[string]time.Duration{Sleep.Name(): 10 * time.Second, Echo.Name(): 300 * time.Millisecond}})
		// sleep's own timeout is longer than Timeout.
		if res, err := worker.Call(testCtx(t), w, Sleep, SleepReq{Ms: 500}); err != nil || !res.Slept {
			t.Fatalf("sleep under its 10s timeout: %+v, %v", res, err)
		}
		// lastCanceled has nothing to report: it blocks until Timeout.
		start := time.Now()
		_, err := worker.Call(testCtx(t), w, Canceled, "")
		if d := time.Since(start); !errors.Is(err, context.DeadlineExceeded) || d > 3*time.Second {
			t.Fatalf("lastCanceled: got %v after %v, want context.DeadlineExceeded after 200ms", err, d)
		}
		w2 := lcSpawn(t, "", &worker.Options{Timeouts: map[string]time.Duration{Sleep.Name(): 300 * time.Millisecond}})
		start = time.Now()
		_, err = worker.Call(testCtx(t), w2, Sleep, SleepReq{Ms: 60_000})
		if d := time.Since(start); !errors.Is(err, context.DeadlineExceeded) || d < 250*time.Millisecond || d > 3*time.Second {
			t.Fatalf("sleep: got %v after %v, want context.DeadlineExceeded after 300ms", err, d)
		}
		handlerCanceled(t, w2)
	})
}

// --- 7. Startup failures --------------------------------------------------

func TestLifecycleStartupFailures(t *testing.T) {
	t.Run("exit-at-startup", func(t *testing.T) {
		tmp := lcDir(t)
		t.Setenv("TMPDIR", tmp) // where Spawn makes the socket's directory
		before := children()
		start := time.Now()
		w, err := worker.Spawn(testCtx(t), helperCmd(t, "exit-at-startup"), &worker.Options{StartupTimeout: 10 * time.Second})
		elapsed := time.Since(start)
		if err == nil {
			w.Close()
			t.Fatal("Spawn succeeded")
		}
		ce := asCrash(t, err)
		if ce.ExitCode != 3 || !strings.Contains(ce.Stderr, "boom") {
			t.Fatalf("got exit code %d, stderr %q: %v", ce.ExitCode, ce.Stderr, err)
		}
		if elapsed > 3*time.Second {
			t.Fatalf("Spawn failed after %v; want at once", elapsed)
		}
		lcNothingLeft(t, tmp, before, ce.Pid)
	})
	t.Run("never-listen", func(t *testing.T) {
		tmp := lcDir(t)
		t.Setenv("TMPDIR", tmp)
		before := children()
		start := time.Now()
		w, err := worker.Spawn(testCtx(t), helperCmd(t, "never-listen"), &worker.Options{StartupTimeout: 300 * time.Millisecond})
		elapsed := time.Since(start)
		if err == nil {
			w.Close()
			t.Fatal("Spawn succeeded")
		}
		var ce *worker.CrashError
		if !errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ce) {
			t.Fatalf("got %v, want context.DeadlineExceeded", err)
		}
		if elapsed < 300*time.Millisecond || elapsed > 3*time.Second {
			t.Fatalf("Spawn failed after %v; want the startup timeout, 300ms", elapsed)
		}
		lcNothingLeft(t, tmp, before, 0)
	})
}

// lcNothingLeft checks that a failed Spawn left no process and no file.
func lcNothingLeft(t testing.TB, tmp string, before []int, pid int) {
	t.Helper()
	if c := lcNewChildren(before); len(c) > 0 {
		t.Fatalf("child processes left: %v", c)
	}
	if pid > 0 && !lcGone(pid) {
		t.Fatalf("the worker %d is still there", pid)
	}
	if f := leftovers(tmp); len(f) > 0 {
		t.Fatalf("files left: %v", f)
	}
}

// Hooks of the portable lifecycle tests (lifecycle_portable_test.go).

func lifecycleSpawn(t testing.TB, mode string, opts *worker.Options) *worker.Worker {
	return lcSpawn(t, mode, opts)
}

// awaitSleeping returns once n Sleep handlers are running in w.
func awaitSleeping(t testing.TB, w *worker.Worker, n int) {
	t.Helper()
	if _, err := worker.Call(testCtx(t), w, LCAwait, LCAwaitReq{Type: Sleep.Name(), N: n}); err != nil {
		t.Fatal(err)
	}
}
