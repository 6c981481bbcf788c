//go:build windows

package worker_test

// Lifecycle tests on Windows, with real processes: no orphan when the host
// is killed (the kill-on-close job, the worker's watch on the host's process
// handle), Close killing the worker's process tree (the job), graceful stops
// over the connection (Windows has no SIGTERM), crashes and restarts, and a
// detached worker attached to from another process.
//
// They run under Wine 8.0 in CI (.ci/wine.sh); where Wine cannot do what
// Windows does, they skip and say why.
//
// Processes that are not our children are watched through a handle opened
// while they are known to run (so their pid cannot be reused meanwhile):
// WaitForSingleObject with a timeout tells whether they are gone,
// GetExitCodeProcess how they ended.
//
// The test binary plays extra roles here, selected by IW_WIN_ROLE (see
// lifecycleRole, called first thing in TestMain):
//
//	worker         the test worker plus the lw* handlers below
//	host           a host process that spawns a test worker (in mode
//	               IW_WIN_MODE; an lw worker that starts a grandchild if
//	               IW_WIN_GRANDCHILD is set), prints "<pid> <token> <grandchild
//	               pid or 0>", and blocks until stdin closes
//	detached-host  a host that spawns a detached keep-alive worker, prints
//	               "<pid> <token> 0", disconnects and exits 0
//	block          a worker's grandchild: blocks for lwBlockFor, then
//	               exits 3 (so that one the test failed to kill goes away)

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/windows"

	"github.com/isolated-workers/worker"
	"github.com/isolated-workers/worker/internal/npipe"
	"github.com/isolated-workers/worker/internal/winproc"
	"github.com/isolated-workers/worker/internal/wire"
)

const (
	envWinRole = "IW_WIN_ROLE" // see the file comment
	envWinMode = "IW_WIN_MODE" // the IW_TEST_MODE of the host role's worker
	// envWinGrandchild, when set, has the host role's worker (then an lw
	// worker) start a grandchild, whose pid the host prints too.
	envWinGrandchild = "IW_WIN_GRANDCHILD"

	lwBlockFor = 2 * time.Minute
	// lwStillActive is GetExitCodeProcess's code for a running process.
	lwStillActive = 259
)

// Messages of the lw worker, on top of those of registerHandlers.
var (
	// LWAwait returns once n more sleep requests have started running.
	LWAwait = worker.Define[int, worker.Void]("lwAwait")
	// LWGrandchild starts the test binary in the block role, in the
	// worker's job like anything the worker starts, and returns its pid.
	LWGrandchild = worker.Define[worker.Void, int]("lwGrandchild")
	// LWCrashIfPid exits with code 5, after writing lwCrashMarker to
	// stderr, if its process's pid is the one given; otherwise it returns
	// that pid.
	LWCrashIfPid = worker.Define[int, int]("lwCrashIfPid")
)

const lwCrashMarker = "lw: crashing on purpose"

// lifecycleRole runs this process in one of the roles above, and exits; in
// the test process itself it returns at once.
func lifecycleRole() {
	switch os.Getenv(envWinRole) {
	case "":
		return
	case "worker":
		if _, ok := os.LookupEnv(wire.EnvStartupData); ok {
			lwWorker()
		}
	case "host":
		lwHost(false)
	case "detached-host":
		lwHost(true)
	case "block":
		time.Sleep(lwBlockFor)
		os.Exit(3)
	}
	fmt.Fprintf(os.Stderr, "%s=%q: unknown role or missing startup data\n", envWinRole, os.Getenv(envWinRole))
	os.Exit(2)
}

// lwSleeps receives a value each time a sleep request starts running in
// this worker.
var lwSleeps = make(chan struct{}, 1024)

func lwWorker() {
	opts := &worker.ServerOptions{
		KeepAlive: os.Getenv(envMode) == "keepalive",
		// Incoming middleware runs on the handler's goroutine, right
		// before the handler: a counted sleep is in flight.
		Middleware: []worker.Middleware{func(ctx context.Context, m *worker.Message) error {
			if m.Incoming && m.Type == Sleep.Name() {
				lwSleeps <- struct{}{}
			}
			return nil
		}},
	}
	s := worker.NewServer(opts)
	registerHandlers(s)
	worker.Handle(s, LWAwait, func(ctx context.Context, n int) (worker.Void, error) {
		for range n {
			select {
			case <-lwSleeps:
			case <-ctx.Done():
				return worker.Void{}, ctx.Err()
			}
		}
		return worker.Void{}, nil
	})
	worker.Handle(s, LWGrandchild, func(ctx context.Context, _ worker.Void) (int, error) {
		exe, err := os.Executable()
		if err != nil {
			return 0, err
		}
		cmd := exec.Command(exe, "-test.run=^$")
		cmd.Env = append(os.Environ(), envWinRole+"=block") // the last value wins
		if err := cmd.Start(); err != nil {
			return 0, err
		}
		go cmd.Wait()
		return cmd.Process.Pid, nil
	})
	worker.Handle(s, LWCrashIfPid, func(ctx context.Context, pid int) (int, error) {
		if os.Getpid() == pid {
			fmt.Fprintln(os.Stderr, lwCrashMarker)
			os.Exit(5)
		}
		return os.Getpid(), nil
	})
	worker.Main(s)
	fmt.Fprintln(os.Stderr, "worker.Main returned in an lw worker")
	os.Exit(2)
}

// lwHost is a host process: it spawns a plain test worker (detached and
// keep-alive when detached).
func lwHost(detached bool) {
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "lw host:", err)
		os.Exit(1)
	}
	exe, err := os.Executable()
	if err != nil {
		fail(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	mode := os.Getenv(envWinMode)
	if detached {
		mode = "keepalive"
	}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, envWinRole+"=") && !strings.HasPrefix(kv, envWinMode+"=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, envMode+"="+mode)
	if os.Getenv(envWinGrandchild) != "" {
		cmd.Env = append(cmd.Env, envWinRole+"=worker")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	w, err := worker.Spawn(ctx, cmd, &worker.Options{Detached: detached})
	if err != nil {
		fail(err)
	}
	gpid := 0
	if os.Getenv(envWinGrandchild) != "" {
		if gpid, err = worker.Call(ctx, w, LWGrandchild, worker.Void{}); err != nil {
			fail(err)
		}
	}
	fmt.Printf("%d %s %d\n", w.Pid(), w.Token(), gpid)
	if detached {
		if err := w.Disconnect(); err != nil {
			fail(err)
		}
		os.Exit(0)
	}
	io.Copy(io.Discard, os.Stdin) // until the test closes stdin, or kills us
	w.Close()
	os.Exit(0)
}

// --- helpers ----------------------------------------------------------------

// lwCmd returns a command that runs the test binary as an lw worker.
func lwCmd(t testing.TB, mode string) *exec.Cmd {
	cmd := helperCmd(t, mode)
	cmd.Env = append(cmd.Env, envWinRole+"=worker")
	return cmd
}

// lwSpawn spawns an lw worker and closes it at the end of the test.
func lwSpawn(t testing.TB, mode string, opts *worker.Options) *worker.Worker {
	t.Helper()
	return lwSpawnCmd(t, lwCmd(t, mode), opts)
}

func lwSpawnCmd(t testing.TB, cmd *exec.Cmd, opts *worker.Options) *worker.Worker {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	w, err := worker.Spawn(ctx, cmd, opts)
	if err != nil {
		t.Fatalf("Spawn: %v", err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

// lwProc is a handle to a process, opened while it runs.
type lwProc struct {
	pid int
	h   windows.Handle
}

// lwOpen opens a handle to process pid. At the end of the test, a process
// still running (the test failed) is terminated, and the handle closed.
func lwOpen(t testing.TB, pid int) *lwProc {
	t.Helper()
	h, err := windows.OpenProcess(windows.SYNCHRONIZE|windows.PROCESS_QUERY_INFORMATION|windows.PROCESS_TERMINATE,
		false, uint32(pid))
	if err != nil {
		t.Fatalf("OpenProcess(%d): %v", pid, err)
	}
	p := &lwProc{pid: pid, h: h}
	t.Cleanup(func() {
		if p.running() {
			t.Logf("process %d still runs at the end of the test: terminating it", pid)
			windows.TerminateProcess(h, 1)
			windows.WaitForSingleObject(h, 5000)
		}
		windows.CloseHandle(h)
	})
	return p
}

// running reports whether the process is running, by its exit code.
func (p *lwProc) running() bool {
	var code uint32
	return windows.GetExitCodeProcess(p.h, &code) == nil && code == lwStillActive
}

// gone waits up to d for the process to exit and reports whether it did.
func (p *lwProc) gone(d time.Duration) bool {
	ev, err := windows.WaitForSingleObject(p.h, uint32(d/time.Millisecond))
	return err == nil && ev == windows.WAIT_OBJECT_0
}

// exitCode returns the exit code of the exited process.
func (p *lwProc) exitCode(t testing.TB) uint32 {
	t.Helper()
	var code uint32
	if err := windows.GetExitCodeProcess(p.h, &code); err != nil {
		t.Fatal(err)
	}
	return code
}

var lwIsProcessInJob = windows.NewLazySystemDLL("kernel32.dll").NewProc("IsProcessInJob")

// inJob reports whether the process is in job, or with job 0 in any job.
func (p *lwProc) inJob(t testing.TB, job windows.Handle) bool {
	t.Helper()
	var result int32
	r, _, err := lwIsProcessInJob.Call(uintptr(p.h), uintptr(job), uintptr(unsafe.Pointer(&result)))
	if r == 0 {
		t.Fatalf("IsProcessInJob(%d): %v", p.pid, err)
	}
	return result != 0
}

// lwSelfInJob reports whether this process is in a job.
func lwSelfInJob(t testing.TB) bool {
	return (&lwProc{pid: os.Getpid(), h: windows.CurrentProcess()}).inJob(t, 0)
}

func lwBreakawayAllowed(t testing.TB) bool {
	t.Helper()
	ok, err := winproc.BreakawayAllowed()
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

// lwIsWine reports whether the test runs under Wine (whose ntdll exports
// wine_get_version).
func lwIsWine() bool {
	return windows.NewLazySystemDLL("ntdll.dll").NewProc("wine_get_version").Find() == nil
}

// lwPipeExists reports whether a named pipe exists at path. It connects
// if it can, so it is only for pipes whose server should be gone.
func lwPipeExists(path string) bool {
	p, err := windows.UTF16PtrFromString(path)
	if err != nil {
		return false
	}
	h, err := windows.CreateFile(p, 0, 0, nil, windows.OPEN_EXISTING,
		windows.SECURITY_SQOS_PRESENT|windows.SECURITY_ANONYMOUS, 0)
	if err == nil {
		windows.CloseHandle(h)
		return true
	}
	return !errors.Is(err, windows.ERROR_FILE_NOT_FOUND)
}

// lwTokenAddr returns the pipe path in a worker's token.
func lwTokenAddr(t testing.TB, tok string) string {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	var v struct {
		Addr string `json:"addr"`
	}
	if err == nil {
		err = json.Unmarshal(raw, &v)
	}
	if err != nil || !strings.HasPrefix(v.Addr, `\\.\pipe\`) {
		t.Fatalf("token %q: addr %q, %v", tok, v.Addr, err)
	}
	return v.Addr
}

// lwHostProc is a host role process.
type lwHostProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   io.Reader
	once  sync.Once
	err   error
}

// lwStartHost starts the test binary in a host role, with start
// ((*exec.Cmd).Start or a job's Start). At the end of the test it is
// released (stdin closed), killed if need be, and reaped.
func lwStartHost(t *testing.T, role, mode string, start func(*exec.Cmd) error, env ...string) *lwHostProc {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), envWinRole+"="+role, envWinMode+"="+mode)
	cmd.Env = append(cmd.Env, env...)
	cmd.Stderr = os.Stderr
	h := &lwHostProc{cmd: cmd}
	if h.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if h.out, err = cmd.StdoutPipe(); err != nil {
		t.Fatal(err)
	}
	if err := start(cmd); err != nil {
		t.Fatalf("starting the %s: %v", role, err)
	}
	t.Cleanup(func() {
		h.stdin.Close()
		cmd.Process.Kill()
		h.wait()
	})
	return h
}

// wait reaps the host (once) and returns cmd.Wait's result.
func (h *lwHostProc) wait() error {
	h.once.Do(func() { h.err = h.cmd.Wait() })
	return h.err
}

// readWorker reads the "<pid> <token> <grandchild pid>" line the host
// prints, within 20s.
func (h *lwHostProc) readWorker(t testing.TB) (pid int, tok string, gpid int) {
	t.Helper()
	type result struct {
		line string
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		line, err := bufio.NewReader(h.out).ReadString('\n')
		ch <- result{strings.TrimSpace(line), err}
	}()
	var res result
	select {
	case res = <-ch:
	case <-time.After(20 * time.Second):
		t.Fatal("the host printed nothing within 20s")
	}
	if _, err := fmt.Sscanf(res.line, "%d %s %d", &pid, &tok, &gpid); err != nil || pid <= 0 {
		t.Fatalf("the host printed %q (%v)", res.line, res.err)
	}
	return pid, tok, gpid
}

// lwNoConsole makes a worker's command start without a console
// (DETACHED_PROCESS): no console control event can reach it, so only the
// connection can ask it to stop.
func lwNoConsole(cmd *exec.Cmd) *exec.Cmd {
	cmd.SysProcAttr = &syscall.SysProcAttr{CreationFlags: windows.DETACHED_PROCESS}
	return cmd
}

// --- 1. No orphans ----------------------------------------------------------

func TestLifecycleWindowsKilledHostLeavesNoOrphan(t *testing.T) {
	// A shutdown-on-disconnect worker would also exit as its connection
	// breaks; a keep-alive one has only the job and its watch on the host.
	// The worker's grandchild has only the job.
	for _, mode := range []string{"", "keepalive"} {
		t.Run("mode="+mode, func(t *testing.T) {
			host := lwStartHost(t, "host", mode, (*exec.Cmd).Start, envWinGrandchild+"=1")
			wpid, tok, gpid := host.readWorker(t)
			wp := lwOpen(t, wpid)
			gp := lwOpen(t, gpid)
			addr := lwTokenAddr(t, tok)
			for _, p := range []*lwProc{wp, gp} {
				if !p.running() {
					t.Fatalf("process %d is not running", p.pid)
				}
				if !p.inJob(t, 0) {
					t.Errorf("process %d is in no job", p.pid)
				}
			}

			killed := time.Now()
			if err := host.cmd.Process.Kill(); err != nil { // TerminateProcess
				t.Fatal(err)
			}
			host.wait()
			if !wp.gone(2 * time.Second) {
				t.Fatalf("2s after the host was killed, its worker %d still runs", wpid)
			}
			if !gp.gone(2 * time.Second) {
				t.Fatalf("2s after the host was killed, its worker's child %d still runs", gpid)
			}
			t.Logf("worker and its child gone %v after the host was killed (exit codes %d, %d)",
				time.Since(killed).Round(time.Millisecond), wp.exitCode(t), gp.exitCode(t))
			if lwPipeExists(addr) {
				t.Errorf("the worker's pipe %s outlived it", addr)
			}
		})
	}
}

// TestLifecycleWindowsWorkerWatchesHost isolates the worker's own watch on
// its host: a worker started by hand, in no job, with a stand-in host
// process's pid in its startup data, must exit (cleanly: nothing kills it)
// as soon as that process dies.
func TestLifecycleWindowsWorkerWatchesHost(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	stand := exec.Command(exe, "-test.run=^$")
	stand.Env = append(os.Environ(), envWinRole+"=block")
	if err := stand.Start(); err != nil {
		t.Fatal(err)
	}
	standDone := make(chan struct{})
	go func() { stand.Wait(); close(standDone) }()
	t.Cleanup(func() { stand.Process.Kill(); <-standDone })

	path, err := npipe.NewPath()
	if err != nil {
		t.Fatal(err)
	}
	sd := wire.StartupData{Driver: wire.Driver, SocketPath: path, Serializer: worker.JSON.Name(),
		ServerConnectTimeout: 60_000, HostPID: stand.Process.Pid}
	cmd := helperCmd(t, "keepalive")
	cmd.Env = append(cmd.Env, sd.Env()...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	workerDone := make(chan struct{})
	go func() { cmd.Wait(); close(workerDone) }()
	wp := lwOpen(t, cmd.Process.Pid)
	t.Cleanup(func() { cmd.Process.Kill(); <-workerDone })
	if wp.inJob(t, 0) {
		t.Fatal("the worker is in a job")
	}

	// A completed call shows that the worker is serving, so it watches its
	// host (it starts to before it accepts connections).
	ctx := testCtx(t)
	c := dialStarting(t, ctx, path, wp)
	defer c.Close()
	if _, err := worker.Call(ctx, c, Ping, PingReq{}); err != nil {
		t.Fatal(err)
	}

	killed := time.Now()
	if err := stand.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	if !wp.gone(2 * time.Second) {
		t.Fatal("the worker still runs 2s after its host died")
	}
	if code := wp.exitCode(t); code != 0 {
		t.Fatalf("the worker's exit code is %d; want 0, its own clean exit", code)
	}
	t.Logf("the worker exited %v after its host died", time.Since(killed).Round(time.Millisecond))
}

// --- 2. Close kills the process tree ----------------------------------------

func TestLifecycleWindowsCloseKillsProcessTree(t *testing.T) {
	w := lwSpawn(t, "", nil)
	wp := lwOpen(t, w.Pid())
	gpid, err := worker.Call(testCtx(t), w, LWGrandchild, worker.Void{})
	if err != nil {
		t.Fatal(err)
	}
	gp := lwOpen(t, gpid)
	if !gp.running() {
		t.Fatalf("the grandchild %d is not running", gpid)
	}
	if !gp.inJob(t, 0) {
		t.Errorf("the grandchild %d is in no job", gpid)
	}
	start := time.Now()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if !wp.gone(0) {
		t.Fatalf("the worker %d still runs after Close returned", wp.pid)
	}
	if !gp.gone(2 * time.Second) {
		t.Fatalf("the grandchild %d outlived Close by 2s", gpid)
	}
	// Left alone it would have run for lwBlockFor, then exited with 3.
	t.Logf("Close took %v; grandchild exit code %d", time.Since(start).Round(time.Millisecond), gp.exitCode(t))
	if code := gp.exitCode(t); code == 3 {
		t.Fatalf("the grandchild exited by itself (code %d)", code)
	}
}

// --- 3. Graceful stops, without POSIX signals --------------------------------

func TestLifecycleWindowsCloseStopsKeepAliveOverConnection(t *testing.T) {
	// Without a console the worker cannot get CTRL_BREAK (which fails
	// under Wine anyway): only the __iw.shutdown message can make it exit
	// before the kill that follows the grace period.
	const grace = 5 * time.Second
	w := lwSpawnCmd(t, lwNoConsole(helperCmd(t, "keepalive")), &worker.Options{GracePeriod: grace})
	wp := lwOpen(t, w.Pid())
	if _, err := worker.Call(testCtx(t), w, Ping, PingReq{}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	if elapsed > 2*time.Second {
		t.Fatalf("Close took %v (grace period %v): the worker did not stop when asked", elapsed, grace)
	}
	if !wp.gone(0) {
		t.Fatal("the worker still runs after Close returned")
	}
	// A kill (Job.Terminate) would have left exit code 1.
	if code := wp.exitCode(t); code != 0 {
		t.Fatalf("the worker's exit code is %d; want 0, a clean exit", code)
	}
	t.Logf("Close took %v", elapsed.Round(time.Millisecond))
}

func TestLifecycleWindowsShutdownDrainsCallInFlight(t *testing.T) {
	sentCh := make(chan struct{}, 1)
	sent := func(ctx context.Context, m *worker.Message) error {
		if !m.Incoming && m.Type == Sleep.Name() {
			sentCh <- struct{}{}
		}
		return nil
	}
	held := make(chan struct{})
	release := make(chan struct{})
	// Hold the sleep's reply on its way in: the call stays in flight for as
	// long as the test needs.
	hold := func(ctx context.Context, m *worker.Message) error {
		if m.Incoming && m.Type == Sleep.Name()+"Result" {
			close(held)
			<-release
		}
		return nil
	}
	const grace = 5 * time.Second
	w := lwSpawnCmd(t, lwNoConsole(helperCmd(t, "keepalive")),
		&worker.Options{GracePeriod: grace, Middleware: []worker.Middleware{sent, hold}})
	wp := lwOpen(t, w.Pid())
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
	start := time.Now()
	shut := make(chan error, 1)
	go func() { shut <- w.Shutdown(ctx) }()

	// New calls fail with ErrClosed once Shutdown has begun (before, they
	// succeed: the held sleep does not block them).
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := worker.Call(ctx, w, Ping, PingReq{})
		if errors.Is(err, worker.ErrClosed) {
			break
		}
		if err != nil || time.Now().After(deadline) {
			t.Fatalf("a new call during Shutdown: got %v, want ErrClosed", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	recvWithin(t, held, 10*time.Second, "the sleep's reply")
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with a call in flight", err)
	default:
	}
	close(release)
	if r := recvWithin(t, call, 10*time.Second, "the sleep"); r.err != nil || !r.res.Slept {
		t.Fatalf("the call in flight: got %+v, %v; want it to complete", r.res, r.err)
	}
	if err := recvWithin(t, shut, 10*time.Second, "Shutdown"); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	elapsed := time.Since(start)
	if elapsed > 2*time.Second {
		t.Fatalf("Shutdown took %v (grace period %v): the worker did not stop when asked", elapsed, grace)
	}
	if !wp.gone(0) || w.IsActive() {
		t.Fatalf("after Shutdown: process running %v, IsActive %v", wp.running(), w.IsActive())
	}
	if code := wp.exitCode(t); code != 0 {
		t.Fatalf("the worker's exit code is %d; want 0, a clean exit", code)
	}
}

// --- 4. Crashes ---------------------------------------------------------------

func TestLifecycleWindowsCrashFailsCallsInFlight(t *testing.T) {
	for _, how := range []string{"exit", "terminate"} {
		t.Run(how, func(t *testing.T) {
			w := lwSpawn(t, "", nil)
			pid := w.Pid()
			wp := lwOpen(t, pid)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()

			const n = 16
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
			// All n handlers are running in the worker.
			if _, err := worker.Call(ctx, w, LWAwait, n); err != nil {
				t.Fatalf("awaiting the sleeps: %v", err)
			}
			crashed := time.Now()
			var code int
			if how == "exit" {
				code = 7
				_, err := worker.Call(ctx, w, Exit, code)
				if ce := asCrash(t, err); ce.Type != Exit.Name() || ce.ExitCode != code || ce.Pid != pid {
					t.Fatalf("the crashing call: got %+v", ce)
				}
			} else {
				code = 9
				if err := windows.TerminateProcess(wp.h, uint32(code)); err != nil {
					t.Fatal(err)
				}
			}
			for i := range n {
				r := recvWithin(t, results, 20*time.Second, fmt.Sprintf("call %d to fail", i))
				if d := r.at.Sub(crashed); d > 5*time.Second {
					t.Errorf("call %d failed %v after the crash", i, d)
				}
				ce := asCrash(t, r.err)
				if ce.Type != Sleep.Name() || ce.Attempt != 1 || ce.MaxAttempts != 1 || ce.Pid != pid ||
					ce.ExitCode != code || ce.Signal != "" {
					t.Fatalf("call %d: got %+v", i, ce)
				}
			}
			_, err := worker.Call(ctx, w, Ping, PingReq{})
			if ce := asCrash(t, err); ce.Type != Ping.Name() || ce.Pid != pid || ce.ExitCode != code {
				t.Fatalf("a later call: got %+v", ce)
			}
			if w.IsActive() || !wp.gone(0) {
				t.Fatal("the worker is active after the crash")
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestLifecycleWindowsCrashRestart(t *testing.T) {
	type restart struct {
		crash  *worker.CrashError
		newPid int
	}
	restarts := make(chan restart, 8)
	w := lwSpawn(t, "", &worker.Options{OnCrash: worker.CrashPolicy{Attempts: 2,
		OnRestart: func(c *worker.CrashError, newPid int) { restarts <- restart{c, newPid} }}})
	ctx := testCtx(t)
	old := w.Pid()
	op := lwOpen(t, old)

	// The first attempt crashes the first process; the retry runs on a
	// fresh one.
	got, err := worker.Call(ctx, w, LWCrashIfPid, old)
	now := w.Pid()
	if err != nil || got != now || now == old {
		t.Fatalf("got %d, %v; want the retry to succeed on a new process (Pid %d, was %d)", got, err, now, old)
	}
	if !op.gone(5 * time.Second) {
		t.Fatalf("the crashed process %d still runs", old)
	}
	r := recvWithin(t, restarts, 10*time.Second, "OnRestart")
	if r.newPid != now || r.crash.Pid != old || r.crash.ExitCode != 5 || !strings.Contains(r.crash.Stderr, lwCrashMarker) {
		t.Fatalf("OnRestart got newPid %d (want %d), crash %+v", r.newPid, now, r.crash)
	}
	np := lwOpen(t, now)

	// Both attempts crash: the call fails with the second crash, and the
	// worker is replaced once more.
	_, err = worker.Call(ctx, w, Exit, 9)
	if ce := asCrash(t, err); ce.Type != Exit.Name() || ce.Attempt != 2 || ce.MaxAttempts != 2 || ce.ExitCode != 9 {
		t.Fatalf("exit: got %+v", ce)
	}
	if !np.gone(5 * time.Second) {
		t.Fatalf("the crashed process %d still runs", now)
	}
	for i := range 2 {
		recvWithin(t, restarts, 10*time.Second, fmt.Sprintf("OnRestart after exit, %d of 2", i+1))
	}
	last, err := worker.Call(ctx, w, GetPid, worker.Void{})
	if err != nil || last != w.Pid() || last == now || last == old {
		t.Fatalf("after the crashes: pid %d, %v (Pid %d; earlier %d, %d)", last, err, w.Pid(), old, now)
	}
	select {
	case r := <-restarts:
		t.Fatalf("an extra restart: %+v", r)
	default:
	}
}

// --- 5. Detached workers ------------------------------------------------------

func TestLifecycleWindowsDetachedSurvivesHostAndAttach(t *testing.T) {
	t.Run("host-in-no-job", func(t *testing.T) {
		host := lwStartHost(t, "detached-host", "", (*exec.Cmd).Start)
		wpid, tok, _ := host.readWorker(t)
		wp := lwOpen(t, wpid)
		if err := host.wait(); err != nil {
			t.Fatalf("the detached host: %v", err)
		}
		// In a job only if this test runs in one that it cannot leave.
		if wp.inJob(t, 0) && !(lwSelfInJob(t) && !lwBreakawayAllowed(t)) {
			t.Fatalf("the detached worker %d is in a job", wpid)
		}
		lwAttachAndClose(t, wp, tok)
	})

	t.Run("host-in-job", func(t *testing.T) {
		// The host runs in a kill-on-close job that allows breakaway, as a
		// CI system's or a terminal's may: the detached worker must break
		// away from it, and survive its closing.
		if lwSelfInJob(t) && !lwBreakawayAllowed(t) {
			t.Skip("this test runs in a job that does not allow breakaway, so no process it starts can leave it")
		}
		job, err := winproc.NewJob()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { job.Close() })
		var info windows.JOBOBJECT_EXTENDED_LIMIT_INFORMATION
		info.BasicLimitInformation.LimitFlags = windows.JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE | windows.JOB_OBJECT_LIMIT_BREAKAWAY_OK
		if _, err := windows.SetInformationJobObject(job.Handle(), windows.JobObjectExtendedLimitInformation,
			uintptr(unsafe.Pointer(&info)), uint32(unsafe.Sizeof(info))); err != nil {
			t.Fatal(err)
		}
		host := lwStartHost(t, "detached-host", "", job.Start)
		wpid, tok, _ := host.readWorker(t)
		wp := lwOpen(t, wpid)
		if err := host.wait(); err != nil {
			t.Fatalf("the detached host: %v", err)
		}
		if wp.inJob(t, job.Handle()) {
			if lwIsWine() {
				t.Skip("Wine 8.0's QueryInformationJobObject reports no limit flags, so winproc.BreakawayAllowed " +
					"cannot see JOB_OBJECT_LIMIT_BREAKAWAY_OK and leaves CREATE_BREAKAWAY_FROM_JOB out: the detached " +
					"worker stays in the host's job and would die with it")
			}
			t.Fatalf("the detached worker %d is in its host's job, which allows breakaway", wpid)
		}
		if err := job.Close(); err != nil {
			t.Fatal(err)
		}
		lwAttachAndClose(t, wp, tok)
	})
}

// lwAttachAndClose attaches to the detached worker wp, which must have
// outlived its host, calls it, and closes it: it must exit at once, on the
// shutdown message (the fallback, a kill after the grace period, would
// leave exit code 1).
func lwAttachAndClose(t *testing.T, wp *lwProc, tok string) {
	t.Helper()
	if !wp.running() {
		t.Fatalf("the detached worker %d did not survive its host (exit code %d)", wp.pid, wp.exitCode(t))
	}
	addr := lwTokenAddr(t, tok)
	ctx := testCtx(t)
	const grace = 5 * time.Second
	w, err := worker.Attach(ctx, tok, &worker.Options{GracePeriod: grace})
	if err != nil {
		t.Fatalf("Attach: %v", err)
	}
	defer w.Close()
	if res, err := worker.Call(ctx, w, Ping, PingReq{Message: "attached"}); err != nil || res.Message != "pong: attached" {
		t.Fatalf("Ping: %+v, %v", res, err)
	}
	if w.Pid() != wp.pid {
		t.Fatalf("Pid: %d, want %d", w.Pid(), wp.pid)
	}
	start := time.Now()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	if !wp.gone(2 * time.Second) {
		t.Fatalf("the worker %d still runs 2s after Close", wp.pid)
	}
	if code := wp.exitCode(t); code != 0 || elapsed > 2*time.Second {
		t.Fatalf("Close took %v (grace period %v), exit code %d; want a prompt, clean exit", elapsed, grace, code)
	}
	if lwPipeExists(addr) {
		t.Errorf("the worker's pipe %s outlived it", addr)
	}
	t.Logf("Close of the attached worker took %v", elapsed.Round(time.Millisecond))
}

// TestLifecycleWindowsCrashUnderLoad kills the worker (TerminateProcess)
// while calls are being written: on Windows a write to a pipe whose server
// died fails at once, and those calls too must fail with the crash, exit
// code included.
//
// The worker is killed from outside rather than made to exit: under Wine
// 8.0, a worker calling os.Exit (ExitProcess) amid this much pipe I/O
// sometimes never finishes exiting (one thread left, which winedbg cannot
// attach to), and then nothing ends the calls.
func TestLifecycleWindowsCrashUnderLoad(t *testing.T) {
	w := lwSpawn(t, "", nil)
	pid := w.Pid()
	wp := lwOpen(t, pid)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const goroutines = 64
	errs := make(chan error, goroutines)
	var calling sync.WaitGroup
	calling.Add(goroutines)
	for range goroutines {
		go func() {
			var err error
			for n := 0; err == nil; n++ {
				if n == 20 {
					calling.Done()
				}
				_, err = worker.Call(ctx, w, Add, AddReq{A: n, B: 1})
			}
			errs <- err
		}()
	}
	calling.Wait() // every goroutine has made 20 calls, and goes on
	crashed := time.Now()
	const code = 9
	if err := windows.TerminateProcess(wp.h, code); err != nil {
		t.Fatal(err)
	}
	for i := range goroutines {
		err := recvWithin(t, errs, 20*time.Second, fmt.Sprintf("goroutine %d to fail", i))
		if d := time.Since(crashed); d > 5*time.Second {
			t.Errorf("goroutine %d's call failed %v after the crash", i, d)
		}
		var ce *worker.CrashError
		if !errors.As(err, &ce) || ce.Pid != pid || ce.ExitCode != code || ce.Type != Add.Name() {
			t.Errorf("goroutine %d: got %v (%T); want a *worker.CrashError with exit code %d", i, err, err, code)
		}
	}
}

// --- 6. Ports of the remaining Unix lifecycle tests ---------------------------

var lwSuspendThread = windows.NewLazySystemDLL("kernel32.dll").NewProc("SuspendThread")

// lwSuspend suspends every thread of process p (as a debugger would): it
// can no longer answer anything, not even the shutdown message, which makes
// it the most stubborn of workers. The threads are counted to make sure
// that some were found.
func lwSuspend(t testing.TB, p *lwProc) {
	t.Helper()
	snap, err := windows.CreateToolhelp32Snapshot(windows.TH32CS_SNAPTHREAD, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer windows.CloseHandle(snap)
	te := windows.ThreadEntry32{Size: uint32(unsafe.Sizeof(windows.ThreadEntry32{}))}
	n := 0
	for err = windows.Thread32First(snap, &te); err == nil; err = windows.Thread32Next(snap, &te) {
		if te.OwnerProcessID != uint32(p.pid) {
			continue
		}
		th, err := windows.OpenThread(windows.THREAD_SUSPEND_RESUME, false, te.ThreadID)
		if err != nil {
			t.Fatalf("OpenThread(%d): %v", te.ThreadID, err)
		}
		r, _, err := lwSuspendThread.Call(uintptr(th))
		windows.CloseHandle(th)
		if int32(r) == -1 {
			t.Fatalf("SuspendThread(%d): %v", te.ThreadID, err)
		}
		n++
	}
	if !errors.Is(err, windows.ERROR_NO_MORE_FILES) {
		t.Fatalf("enumerating threads: %v", err)
	}
	if n == 0 {
		t.Fatalf("no thread of process %d found to suspend", p.pid)
	}
}

// lwChildren lists the running processes whose parent is this process.
func lwChildren(t testing.TB) map[int]bool {
	t.Helper()
	snap, err := windows.CreateToolhelp32Snapshot(windows.TH32CS_SNAPPROCESS, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer windows.CloseHandle(snap)
	pe := windows.ProcessEntry32{Size: uint32(unsafe.Sizeof(windows.ProcessEntry32{}))}
	out := map[int]bool{}
	me := uint32(os.Getpid())
	for err = windows.Process32First(snap, &pe); err == nil; err = windows.Process32Next(snap, &pe) {
		if pe.ParentProcessID == me && lwAlive(int(pe.ProcessID)) {
			out[int(pe.ProcessID)] = true
		}
	}
	return out
}

// lwAlive reports whether process pid runs.
func lwAlive(pid int) bool {
	h, err := windows.OpenProcess(windows.PROCESS_QUERY_LIMITED_INFORMATION, false, uint32(pid))
	if err != nil {
		return false
	}
	defer windows.CloseHandle(h)
	var code uint32
	return windows.GetExitCodeProcess(h, &code) == nil && code == lwStillActive
}

// lwNoNewChildren fails if a child process that was not in before runs.
func lwNoNewChildren(t testing.TB, before map[int]bool) {
	t.Helper()
	for pid := range lwChildren(t) {
		if !before[pid] {
			t.Fatalf("child process %d left running", pid)
		}
	}
}

// TestLifecycleWindowsStubbornKilledAfterGrace: a worker that does not
// answer at all (every thread suspended, with a call in flight) is killed
// by Close once the grace period is over, not before, with whatever Close
// has for a kill: the job (exit code 1) or, detached, the process alone
// (also 1). Close is idempotent, and fails the call in flight and later
// calls with ErrClosed.
func TestLifecycleWindowsStubbornKilledAfterGrace(t *testing.T) {
	for _, detached := range []bool{false, true} {
		t.Run(fmt.Sprintf("detached=%v", detached), func(t *testing.T) {
			const grace = 500 * time.Millisecond
			w := lwSpawnCmd(t, lwNoConsole(lwCmd(t, "keepalive")), &worker.Options{GracePeriod: grace, Detached: detached})
			wp := lwOpen(t, w.Pid())
			addr := lwTokenAddr(t, w.Token())
			if wp.inJob(t, 0) == detached && !(detached && lwSelfInJob(t) && !lwBreakawayAllowed(t)) {
				t.Fatalf("the worker is in a job: %v; detached %v", !detached, detached)
			}
			ctx := testCtx(t)
			call := make(chan error, 1)
			go func() {
				_, err := worker.Call(ctx, w, Sleep, SleepReq{Ms: 60_000})
				call <- err
			}()
			if _, err := worker.Call(ctx, w, LWAwait, 1); err != nil {
				t.Fatal(err)
			}
			lwSuspend(t, wp)

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
			if elapsed < grace || elapsed > grace+2*time.Second {
				t.Fatalf("Close took %v; want the grace period %v, then a kill", elapsed, grace)
			}
			if !wp.gone(2 * time.Second) {
				t.Fatal("the worker still runs after Close")
			}
			if code := wp.exitCode(t); code != 1 || w.IsActive() {
				t.Fatalf("after Close: exit code %d (want 1, a kill), IsActive %v", code, w.IsActive())
			}
			if lwPipeExists(addr) {
				t.Errorf("the worker's pipe %s outlived it", addr)
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
			t.Logf("Close took %v (grace period %v)", elapsed.Round(time.Millisecond), grace)
		})
	}
}

// TestLifecycleWindowsKeepAliveDisconnectReconnectAttach: Disconnect fails
// the call in flight with ErrNotConnected and leaves the worker running;
// Reconnect reaches the same process; a second host Attaches in between;
// Close then stops the worker cleanly and its pipe goes.
func TestLifecycleWindowsKeepAliveDisconnectReconnectAttach(t *testing.T) {
	sentCh := make(chan struct{}, 1)
	sent := func(ctx context.Context, m *worker.Message) error {
		if !m.Incoming && m.Type == Sleep.Name() {
			sentCh <- struct{}{}
		}
		return nil
	}
	w := lwSpawnCmd(t, lwNoConsole(helperCmd(t, "keepalive")),
		&worker.Options{GracePeriod: 5 * time.Second, Middleware: []worker.Middleware{sent}})
	pid := w.Pid()
	wp := lwOpen(t, pid)
	addr := lwTokenAddr(t, w.Token())
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
	if !w.IsActive() || w.IsConnected() || wp.gone(200*time.Millisecond) {
		t.Fatalf("after Disconnect: IsActive %v, IsConnected %v, running %v", w.IsActive(), w.IsConnected(), wp.running())
	}
	if _, err := worker.Call(ctx, w, Ping, PingReq{}); !errors.Is(err, worker.ErrNotConnected) {
		t.Fatalf("a call while disconnected: got %v, want ErrNotConnected", err)
	}

	reconnectAndHandOver(t, ctx, w, pid)
	start := time.Now()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if !wp.gone(0) {
		t.Fatal("the worker still runs after Close returned")
	}
	if code, d := wp.exitCode(t), time.Since(start); code != 0 || d > 2*time.Second {
		t.Fatalf("Close took %v, exit code %d; want a prompt, clean exit", d, code)
	}
	if lwPipeExists(addr) {
		t.Errorf("the worker's pipe %s outlived it", addr)
	}
}

// TestLifecycleWindowsHostConnectTimeout: a worker started by hand, that no
// host connects to, exits by itself, cleanly, once its host-connect timeout
// is over (and not before), and its pipe goes with it.
func TestLifecycleWindowsHostConnectTimeout(t *testing.T) {
	path, err := npipe.NewPath()
	if err != nil {
		t.Fatal(err)
	}
	const timeout = 300 * time.Millisecond
	sd := wire.StartupData{Driver: wire.Driver, SocketPath: path, Serializer: worker.JSON.Name(),
		ServerConnectTimeout: timeout.Milliseconds(), HostPID: os.Getpid()}
	cmd := helperCmd(t, "")
	cmd.Env = append(cmd.Env, sd.Env()...)
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	waited := make(chan struct{})
	go func() { exited <- cmd.Wait(); close(waited) }()
	defer func() {
		cmd.Process.Kill() // if the test failed before it exited
		<-waited
	}()
	err = recvWithin(t, exited, 10*time.Second, "the unconnected worker to exit")
	elapsed := time.Since(start)
	if err != nil {
		t.Fatalf("the worker exited with %v, want 0", err)
	}
	if elapsed < timeout {
		t.Fatalf("the worker exited after %v, before its host-connect timeout", elapsed)
	}
	if lwPipeExists(path) {
		t.Fatalf("the worker's pipe %s outlived it", path)
	}
	t.Logf("the unconnected worker exited after %v", elapsed.Round(time.Millisecond))
}

func TestLifecycleWindowsStartupFailures(t *testing.T) {
	t.Run("exit-at-startup", func(t *testing.T) {
		before := lwChildren(t)
		start := time.Now()
		w, err := worker.Spawn(testCtx(t), helperCmd(t, "exit-at-startup"), &worker.Options{StartupTimeout: 10 * time.Second})
		elapsed := time.Since(start)
		if err == nil {
			w.Close()
			t.Fatal("Spawn succeeded")
		}
		ce := asCrash(t, err)
		if ce.ExitCode != 3 || !strings.Contains(ce.Stderr, "boom") || ce.Pid <= 0 {
			t.Fatalf("got pid %d, exit code %d, stderr %q: %v", ce.Pid, ce.ExitCode, ce.Stderr, err)
		}
		if elapsed > 3*time.Second {
			t.Fatalf("Spawn failed after %v; want at once", elapsed)
		}
		if lwAlive(ce.Pid) {
			t.Fatalf("the worker %d still runs", ce.Pid)
		}
		lwNoNewChildren(t, before)
	})
	t.Run("never-listen", func(t *testing.T) {
		before := lwChildren(t)
		start := time.Now()
		// Not main_test.go's never-listen mode: its bare select{} is a
		// deadlock to the Go runtime on Windows (no signal-handling
		// goroutine keeps it company), so that worker dies with exit code
		// 2 at once. The block role runs without listening for lwBlockFor.
		cmd := helperCmd(t, "")
		cmd.Env = append(cmd.Env, envWinRole+"=block")
		w, err := worker.Spawn(testCtx(t), cmd, &worker.Options{StartupTimeout: 300 * time.Millisecond})
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
		lwNoNewChildren(t, before)
	})
}

// Hooks of the portable lifecycle tests (lifecycle_portable_test.go).

func lifecycleSpawn(t testing.TB, mode string, opts *worker.Options) *worker.Worker {
	return lwSpawn(t, mode, opts)
}

// awaitSleeping returns once n Sleep handlers are running in w.
func awaitSleeping(t testing.TB, w *worker.Worker, n int) {
	t.Helper()
	if _, err := worker.Call(testCtx(t), w, LWAwait, n); err != nil {
		t.Fatal(err)
	}
}

// dialStarting connects to a worker that was started by hand and may not
// listen yet, the way Spawn does: it dials again while the pipe does not
// exist, and also when the handshake breaks because the dial won the race
// with npipe.Listen for the pipe's first instance (where that instance is
// connectable, as under Wine, Listen drops such a client and listens
// again). The worker announces nothing to a hand-started host, so polling
// is the only way to learn that it listens; wp.running ends the wait early
// if the worker dies.
func dialStarting(t *testing.T, ctx context.Context, path string, wp *lwProc) *worker.Client {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		conn, err := npipe.Dial(ctx, path)
		if err == nil {
			c, herr := worker.NewClient(ctx, conn, nil)
			if herr == nil {
				return c
			}
			err = fmt.Errorf("handshake: %w", herr)
			t.Logf("dialling again after %v", err)
		} else if !errors.Is(err, windows.ERROR_FILE_NOT_FOUND) {
			t.Fatalf("connecting to the worker: %v", err)
		}
		if time.Now().After(deadline) || !wp.running() {
			t.Fatalf("connecting to the worker: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
