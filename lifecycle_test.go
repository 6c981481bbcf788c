package worker_test

// Lifecycle tests with real processes: crashes and restarts, orphans,
// graceful and forced stops, disconnect and attach, cancellation and
// startup failures.
//
// The test binary plays extra roles here, selected by IW_LC_ROLE (see
// lifecycleRole, called first thing in TestMain):
//
//	worker         the test worker plus the lc* handlers below
//	host           a host process that spawns a worker, prints its pid and
//	               socket path, and blocks until stdin closes
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
	// LCCrash writes Stderr to stderr and exits with Code.
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
		Middleware: []worker.Middleware{func(ctx context.Context, dir worker.Direction, m *worker.Message) error {
			if dir == worker.Incoming && m.Kind == worker.KindRequest && m.Type == Sleep.Name() {
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
		os.Exit(r.Code)
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
	mode := ""
	if detached {
		mode = "keepalive"
	}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, envLCRole+"=") && !strings.HasPrefix(kv, envLCSock+"=") {
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
	return func(ctx context.Context, dir worker.Direction, m *worker.Message) error {
		if dir == worker.Outgoing && m.Kind == worker.KindRequest && m.Type == typ {
			ch <- struct{}{}
		}
		return nil
	}, ch
}

func lcRecv[T any](t testing.TB, ch <-chan T, d time.Duration, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(d):
		t.Fatalf("timed out after %v waiting for %s", d, what)
		panic("unreachable")
	}
}

func lcCrash(t testing.TB, err error) *worker.CrashError {
	t.Helper()
	var ce *worker.CrashError
	if !errors.Is(err, worker.ErrCrashed) || !errors.As(err, &ce) {
		t.Fatalf("got %v (%T), want a *worker.CrashError matching ErrCrashed", err, err)
	}
	return ce
}

// lcChildren returns the live child processes that are not in before.
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
			crashed := time.Now()
			if how == "exit" {
				_, err := worker.Call(ctx, w, LCCrash, LCCrashReq{Stderr: marker, Code: 7})
				if ce := lcCrash(t, err); ce.Type != LCCrash.Name() || ce.ExitCode != 7 {
					t.Fatalf("the crashing call: got %+v", ce)
				}
			} else {
				if _, err := worker.Call(ctx, w, Echo, []byte(marker)); err != nil {
					t.Fatal(err)
				}
				// Stderr is written by the Echo handler? No: write it ourselves
				// through the worker's own stderr by a crash-free path.
				if _, err := worker.Call(ctx, w, LCAwait, LCAwaitReq{Type: "none", N: 0}); err != nil {
					t.Fatal(err)
				}
				if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
			}
			for i := range n {
				r := lcRecv(t, results, 20*time.Second, fmt.Sprintf("call %d to fail", i))
				if d := r.at.Sub(crashed); d > 5*time.Second {
					t.Errorf("call %d failed %v after the crash", i, d)
				}
				ce := lcCrash(t, r.err)
				if ce.Type != Sleep.Name() || ce.Attempt != 1 || ce.MaxAttempts != 1 || ce.Pid != pid {
					t.Fatalf("call %d: got %+v", i, ce)
				}
				switch how {
				case "exit":
					if ce.ExitCode != 7 || ce.Signal != "" || !strings.Contains(ce.Stderr, marker) {
						t.Fatalf("call %d: got exit code %d, signal %q, stderr %q", i, ce.ExitCode, ce.Signal, ce.Stderr)
					}
				case "sigkill":
					if ce.ExitCode != -1 || ce.Signal != syscall.SIGKILL.String() {
						t.Fatalf("call %d: got exit code %d, signal %q", i, ce.ExitCode, ce.Signal)
					}
				}
			}
			// Later calls fail with the same crash.
			_, err := worker.Call(ctx, w, Ping, PingReq{})
			ce := lcCrash(t, err)
			if ce.Type != Ping.Name() || ce.Attempt != 1 || ce.MaxAttempts != 1 || ce.Pid != pid {
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
