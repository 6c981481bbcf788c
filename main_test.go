package worker_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/isolated-workers/worker"
	"github.com/isolated-workers/worker/internal/wire"
)

// The contract shared by the tests (the host) and the test binary
// re-executed as a worker.
type (
	PingReq struct {
		Message string `json:"message"`
	}
	PingRes struct {
		Message string `json:"message"`
	}
	AddReq   struct{ A, B int }
	AddRes   struct{ Sum int }
	FailReq  struct{ Message, Code string }
	SleepReq struct {
		Ms int `json:"ms"`
	}
	SleepRes struct {
		Slept       bool   `json:"slept"`
		CtxErr      string `json:"ctxErr"`
		HasDeadline bool   `json:"hasDeadline"`
	}
)

var (
	Ping     = worker.Define[PingReq, PingRes]("ping")
	Add      = worker.Define[AddReq, AddRes]("add")
	Echo     = worker.Define[[]byte, []byte]("echo")
	Notify   = worker.Define[PingReq, worker.Void]("notify")
	Fail     = worker.Define[FailReq, worker.Void]("fail")
	Sleep    = worker.Define[SleepReq, SleepRes]("sleep")
	Exit     = worker.Define[int, worker.Void]("exit")
	Panic    = worker.Define[string, worker.Void]("panic")
	Getenv   = worker.Define[string, string]("getenv")
	GetPid   = worker.Define[worker.Void, int]("pid")
	Unknown  = worker.Define[string, string]("no-such-handler")
	Canceled = worker.Define[string, string]("lastCanceled")
	EchoText = worker.Define[string, string]("echoText")
	ChildFD3 = worker.Define[worker.Void, string]("childFD3")  // is fd 3 open in a child of the worker?
	ChildRun = worker.Define[worker.Void, string]("childMain") // the output of a child in role child-main

	ErrNotFound = worker.NewError("E_NOT_FOUND", "not found")
)

func TestMain(m *testing.M) {
	if name, ok := os.LookupEnv(envRole); ok {
		runRole(name) // roles_test.go; does not return
	}
	// Started as a worker without a role (the examples, the TypeScript
	// host, a caller's own exec.Cmd): the plain test worker.
	if _, ok := os.LookupEnv(wire.EnvStartupData); ok {
		runRole("worker")
	}
	os.Exit(runWithLeakChecks(m))
}

// testWorker is the test worker of the "worker*" roles: the messages of
// registerHandlers, served with opts (and a debug log on stderr if
// IW_TEST_LOG is set).
func testWorker(opts *worker.ServerOptions) {
	if os.Getenv("IW_TEST_LOG") != "" {
		opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
		opts.LogLevel = slog.LevelDebug
	}
	s := worker.NewServer(opts)
	registerHandlers(s)
	worker.Main(s)
	fmt.Fprintln(os.Stderr, "worker.Main returned in a worker")
	os.Exit(2)
}

var lastCanceled = make(chan string, 100)

func registerHandlers(s *worker.Server) {
	registerStreamHandlers(s)
	worker.Handle(s, EchoText, func(ctx context.Context, p string) (string, error) { return p, nil })
	worker.Handle(s, ChildFD3, func(ctx context.Context, _ worker.Void) (string, error) {
		out, err := exec.CommandContext(ctx, "sh", "-c", "if [ -e /dev/fd/3 ]; then echo open; else echo closed; fi").Output()
		return strings.TrimSpace(string(out)), err
	})
	worker.Handle(s, ChildRun, func(ctx context.Context, _ worker.Void) (string, error) {
		cmd, err := roleCommand("child-main")
		if err != nil {
			return "", err
		}
		out, err := cmd.Output()
		return string(out), err
	})
	worker.Handle(s, Ping, func(ctx context.Context, p PingReq) (PingRes, error) {
		return PingRes{Message: "pong: " + p.Message}, nil
	})
	worker.Handle(s, Add, func(ctx context.Context, p AddReq) (AddRes, error) {
		return AddRes{Sum: p.A + p.B}, nil
	})
	worker.Handle(s, Echo, func(ctx context.Context, p []byte) ([]byte, error) { return p, nil })
	worker.Handle(s, Notify, func(ctx context.Context, p PingReq) (worker.Void, error) { return worker.Void{}, nil })
	worker.Handle(s, Fail, func(ctx context.Context, p FailReq) (worker.Void, error) {
		if p.Code == "E_NOT_FOUND" {
			return worker.Void{}, fmt.Errorf("looking up %q: %w", p.Message, ErrNotFound)
		}
		if p.Code != "" {
			return worker.Void{}, worker.NewError(p.Code, p.Message)
		}
		return worker.Void{}, errors.New(p.Message)
	})
	worker.Handle(s, Sleep, func(ctx context.Context, p SleepReq) (SleepRes, error) {
		_, hasDeadline := ctx.Deadline()
		t := time.NewTimer(time.Duration(p.Ms) * time.Millisecond)
		defer t.Stop()
		select {
		case <-t.C:
			return SleepRes{Slept: true, HasDeadline: hasDeadline}, nil
		case <-ctx.Done():
			lastCanceled <- ctx.Err().Error()
			return SleepRes{CtxErr: ctx.Err().Error(), HasDeadline: hasDeadline}, ctx.Err()
		}
	})
	worker.Handle(s, Canceled, func(ctx context.Context, _ string) (string, error) {
		select {
		case e := <-lastCanceled:
			return e, nil
		case <-ctx.Done():
			return "", ctx.Err()
		}
	})
	worker.Handle(s, Exit, func(ctx context.Context, code int) (worker.Void, error) {
		os.Exit(code)
		return worker.Void{}, nil
	})
	worker.Handle(s, Panic, func(ctx context.Context, msg string) (worker.Void, error) { panic(msg) })
	worker.Handle(s, Getenv, func(ctx context.Context, k string) (string, error) { return os.Getenv(k), nil })
	worker.Handle(s, GetPid, func(ctx context.Context, _ worker.Void) (int, error) { return os.Getpid(), nil })
}

// spawn starts the test binary in role (a worker role) and closes the
// worker at the end of the test.
func spawn(t testing.TB, role string, opts *worker.Options) *worker.Worker {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	w, err := worker.Spawn(ctx, roleCmd(t, role), opts)
	if err != nil {
		t.Fatalf("Spawn(%s): %v", role, err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

// eventually polls cond until it holds, and fails the test, naming what
// it waited for, if it does not within d.
func eventually(t testing.TB, d time.Duration, cond func() bool, what string) {
	t.Helper()
	if !poll(d, cond) {
		t.Fatalf("timed out after %v waiting for %s", d, what)
	}
}

// poll checks cond every 10ms until it holds or d has passed, and reports
// whether it held. It is eventually's loop, for callers without a test.
func poll(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// children lists the live child processes of this process (Linux only).
func children() []int {
	if runtime.GOOS != "linux" {
		return nil
	}
	entries, _ := os.ReadDir("/proc")
	me := os.Getpid()
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, state := procStat(pid); ppid == me && state != "Z" {
			out = append(out, pid)
		}
	}
	return out
}

// procStat returns a process's parent pid and state from /proc.
func procStat(pid int) (ppid int, state string) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, ""
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, ""
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return 0, ""
	}
	ppid, _ = strconv.Atoi(f[1])
	return ppid, f[0]
}
