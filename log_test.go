package worker_test

import (
	"context"
	"errors"
	"log/slog"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/isolated-workers/worker"
)

// Log records are for people: what a worker writes reaches the host's
// logger, and nothing normal is logged as a warning.

// captureLogger returns a logger that keeps every record, debug included.
func captureLogger() (*slog.Logger, *syncBuffer) {
	var b syncBuffer
	return slog.New(slog.NewTextHandler(&b, &slog.HandlerOptions{Level: slog.LevelDebug})), &b
}

// A worker's stderr, which the user left nil on the command, reaches the
// host's logger line by line, with the worker's pid.
func TestWorkerStderrReachesTheHostLogger(t *testing.T) {
	lg, logs := captureLogger()
	_, err := worker.Spawn(testCtx(t), roleCmd(t, "exit-at-startup"), &worker.Options{Logger: lg})
	ce := asCrash(t, err)
	want := `msg="worker stderr" pid=` + strconv.Itoa(ce.Pid) + ` line="boom: refusing to start"`
	if !strings.Contains(logs.String(), want) {
		t.Fatalf("the host's log lacks %s:\n%s", want, logs)
	}
}

// The late reply of a call whose context ended is expected: not a warning.
func TestLateReplyOfAGivenUpCallIsNoWarning(t *testing.T) {
	lg, logs := captureLogger()
	w := lcSpawn(t, "lc-worker", &worker.Options{Logger: lg, LogLevel: slog.LevelDebug})
	ctx, cancel := context.WithCancel(testCtx(t))
	errc := make(chan error, 1)
	go func() {
		_, err := worker.Call(ctx, w, Sleep, SleepReq{Ms: 5000})
		errc <- err
	}()
	awaitStarted(t, testCtx(t), w, Sleep.Name(), 1) // cancelled once it runs: its reply comes late
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want Canceled", err)
	}
	eventually(t, 10*time.Second, func() bool { return strings.Contains(logs.String(), "late reply") },
		"the late reply (the handler's cancellation) to be dropped")
	if strings.Contains(logs.String(), "level=WARN") {
		t.Fatalf("a warning for an expected late reply:\n%s", logs)
	}
}

// A worker closed by its host in order does not report the host's death.
func TestCloseIsNotReportedAsTheHostsDeath(t *testing.T) {
	lg, logs := captureLogger()
	cmd := roleCmd(t, "worker")
	cmd.Env = append(cmd.Env, "IW_TEST_LOG=1") // the worker logs to its stderr, which reaches lg
	w, err := worker.Spawn(testCtx(t), cmd, &worker.Options{Logger: lg})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := worker.Call(testCtx(t), w, Ping, PingReq{}); err != nil {
		t.Fatal(err)
	}
	w.Close() // returns once the worker is reaped and its stderr read
	s := logs.String()
	// On Unix the worker learns of the Close through its lifeline, as it
	// would of its host's death; on Windows it is asked over the connection.
	closedInOrder := runtime.GOOS == "windows" || strings.Contains(s, "the host closed this worker")
	if strings.Contains(s, "the host died") || !closedInOrder {
		t.Fatalf("the worker's log after a normal Close:\n%s", s)
	}
}
