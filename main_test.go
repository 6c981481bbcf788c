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

	ErrNotFound = worker.NewError("E_NOT_FOUND", "not found")
)

// Environment of the test worker.
const (
	envMode = "IW_TEST_MODE" // selects a worker behaviour, see testWorker
)

func TestMain(m *testing.M) {
	lifecycleRole() // lifecycle_test.go: host roles and lc workers; returns in the test process
	if _, ok := os.LookupEnv("ISOLATED_WORKERS_STARTUP_DATA"); ok {
		testWorker(os.Getenv(envMode))
		return
	}
	os.Exit(runWithLeakChecks(m))
}

// testWorker is the worker side of the tests.
func testWorker(mode string) {
	opts := &worker.ServerOptions{}
	switch mode {
	case "exit-at-startup":
		fmt.Fprintln(os.Stderr, "boom: refusing to start")
		os.Exit(3)
	case "never-listen":
		time.Sleep(time.Hour) // not select{}: with no other goroutine that is a fatal deadlock
	case "keepalive":
		opts.KeepAlive = true
	case "binary":
		opts.Serializer = worker.Binary
	case "json":
		opts.Serializer = worker.JSON
	case "hostile", "peercred-dial":
		hostileMode(mode) // hostile_modes_test.go; does not return
	}
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

// helperCmd returns a command that re-executes the test binary as a worker
// in the given mode.
func helperCmd(t testing.TB, mode string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	// The race runtime sleeps 1s at exit by default; workers exit often here.
	cmd.Env = append(os.Environ(), envMode+"="+mode, "GORACE=atexit_sleep_ms=0")
	return cmd
}

// spawn starts a test worker and closes it at the end of the test.
func spawn(t testing.TB, mode string, opts *worker.Options) *worker.Worker {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	w, err := worker.Spawn(ctx, helperCmd(t, mode), opts)
	if err != nil {
		t.Fatalf("Spawn(%s): %v", mode, err)
	}
	t.Cleanup(func() { w.Close() })
	return w
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
