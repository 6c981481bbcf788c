package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
	// The worker logs at debug to its stderr (a text handler), which
	// reaches lg at the level of each line.
	cmd.Env = append(cmd.Env, "IW_TEST_LOG=1")
	w, err := worker.Spawn(testCtx(t), cmd, &worker.Options{Logger: lg, LogLevel: slog.LevelDebug})
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

// jsonLogger returns a logger that keeps every record as a JSON line, so
// that the types of the attributes show.
func jsonLogger() (*slog.Logger, *syncBuffer) {
	var b syncBuffer
	return slog.New(slog.NewJSONHandler(&b, &slog.HandlerOptions{Level: slog.LevelDebug})), &b
}

// The library's own records in a worker (its ServerOptions.Logger left
// nil) reach the host's logger as those records, with the worker's pid, and
// still feed the crash report.
func TestWorkerLogRecordsReachTheHostLogger(t *testing.T) {
	lg, logs := jsonLogger()
	w := spawn(t, "worker", &worker.Options{Logger: lg})
	pid := w.Pid()
	// A host with the wrong secret: the worker refuses it, with a warning.
	if _, err := worker.Attach(testCtx(t), lcTamper(t, w.Token(), "secret"), nil); !errors.Is(err, worker.ErrUnauthorized) {
		t.Fatalf("Attach with a wrong secret: %v; want ErrUnauthorized", err)
	}
	want := fmt.Sprintf(`"level":"WARN","msg":"refused a host","pid":%d,"reason":"`, pid)
	eventually(t, 10*time.Second, func() bool { return strings.Contains(logs.String(), want) },
		"the worker's warning in the host's log: "+want)
	if strings.Contains(logs.String(), "worker stderr") {
		t.Fatalf("the worker's record was also logged as a plain line:\n%s", logs)
	}
	_, err := worker.Call(testCtx(t), w, Exit, 3)
	if ce := asCrash(t, err); !strings.Contains(ce.Stderr, `"msg":"refused a host"`) {
		t.Fatalf("the worker's record is not in the crash report's stderr: %q", ce.Stderr)
	}
}

// Lines that a worker writes to stderr: a JSON record of slog is logged as
// that record, its attributes' types and order kept; a line that only
// looks like one is logged as the line it is; slog's default logger and
// text handler name the level of their lines.
func TestWorkerStderrLinesAndRecords(t *testing.T) {
	lg, logs := jsonLogger()
	w := spawn(t, "lc-worker", &worker.Options{Logger: lg, LogLevel: slog.LevelDebug})
	pid := w.Pid()
	record := `{"time":"2026-11-29T08:00:00.123+01:00","level":"WARN+2","msg":"a worker's record","n":3,"s":"3",` +
		`"f":1.5,"ok":true,"none":null,"list":[1,"a"],"g":{"z":"b","h":{"c":1}},"msg":"an attribute named msg"}`
	plain := map[string]string{ // line: its level
		`{"level":"INFO","msg":"no time"}`:                                             "INFO",
		`{"time":"yesterday","level":"ERROR","msg":"a bad time"}`:                      "INFO",
		`{"time":"2026-11-29T08:00:00Z","level":"LOUD","msg":"a bad level"}`:           "INFO",
		`{"time":"2026-11-29T08:00:00Z","level":"ERROR","msg":42}`:                     "INFO",
		`{"time":"2026-11-29T08:00:00Z","level":"ERROR","msg":"trailing"} and more`:    "INFO",
		`{"time":"2026-11-29T08:00:00Z","level":"ERROR","msg":"unterminated"`:          "INFO",
		`["time","level","msg"]`:                                                       "INFO",
		`2026/11/29 08:00:00 WARN slog's default logger k=v`:                           "WARN",
		`2026/11/29 08:00:00.123456 ERROR slog's default logger, with microseconds`:    "ERROR",
		`2026/11/29 08:00:00 error: a log.Printf line, not a level`:                    "INFO",
		`time=2026-11-29T08:00:00.000+01:00 level=DEBUG msg="slog's text handler" k=v`: "DEBUG",
	}
	big := strings.Repeat("x", 40<<10) // longer than a plain line may be, and than a read of the pipe
	long := `{"time":"2026-11-29T08:00:00Z","level":"INFO","msg":"a long record","big":"` + big + `"}`
	lines := []string{record, long}
	for l := range plain {
		lines = append(lines, l)
	}
	if _, err := worker.Call(testCtx(t), w, LCCrash, LCCrashReq{Stderr: strings.Join(lines, "\n"), Code: -1}); err != nil {
		t.Fatal(err)
	}
	w.Close() // returns once the worker is reaped and its stderr read
	got := logs.String()
	wantRecord := fmt.Sprintf(`{"time":"2026-11-29T08:00:00.123+01:00","level":"WARN+2","msg":"a worker's record","pid":%d,"n":3,"s":"3",`+
		`"f":1.5,"ok":true,"none":null,"list":[1,"a"],"g":{"z":"b","h":{"c":1}},"msg":"an attribute named msg"}`, pid)
	if !strings.Contains(got, wantRecord+"\n") {
		t.Errorf("the host's log lacks the record\n%s\n%s", wantRecord, got)
	}
	if !strings.Contains(got, fmt.Sprintf(`"msg":"a long record","pid":%d,"big":"%s"}`, pid, big)) {
		t.Errorf("the host's log lacks the long record")
	}
	for _, l := range strings.Split(strings.TrimSpace(got), "\n") {
		var r struct {
			Level, Msg, Line string
			Pid              int
		}
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("%v: %s", err, l)
		}
		if level, ok := plain[r.Line]; ok && r.Msg == "worker stderr" && r.Pid == pid {
			if r.Level != level {
				t.Errorf("logged at %s, want %s: %s", r.Level, level, r.Line)
			}
			delete(plain, r.Line)
		}
	}
	for l := range plain {
		t.Errorf("not logged as a plain line: %s", l)
	}
	if t.Failed() {
		t.Logf("the host's log:\n%s", got)
	}
}
