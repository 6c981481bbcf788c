package worker_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/isolated-workers/worker"
)

func TestConcurrentCallsShareOneConnection(t *testing.T) {
	w := spawn(t, "worker", nil)
	ctx := testCtx(t)
	const goroutines, each = 64, 50
	var wg sync.WaitGroup
	errs := make(chan error, goroutines*each)
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				res, err := worker.Call(ctx, w, Add, AddReq{A: g * 1000, B: i})
				if err == nil && res.Sum != g*1000+i {
					err = fmt.Errorf("call (%d,%d) got %d", g, i, res.Sum)
				}
				if err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestRepliesInCompletionOrder(t *testing.T) {
	w := spawn(t, "worker", nil)
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	slow := make(chan error, 1)
	go func() {
		_, err := worker.Call(ctx, w, Sleep, SleepReq{Ms: 60_000})
		slow <- err
	}()
	// The slow call is still running in the worker: a later call must not
	// wait behind it.
	if _, err := worker.Call(testCtx(t), w, Ping, PingReq{Message: "fast"}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-slow:
		t.Fatalf("the slow call ended before the fast one: %v", err)
	default:
	}
	cancel()
	if err := <-slow; !errors.Is(err, context.Canceled) {
		t.Fatalf("slow call: got %v, want context.Canceled", err)
	}
}

func TestRemoteErrors(t *testing.T) {
	w := spawn(t, "worker", nil)
	ctx := testCtx(t)

	_, err := worker.Call(ctx, w, Fail, FailReq{Message: "plain failure"})
	var re *worker.RemoteError
	if !errors.As(err, &re) || re.Message != "plain failure" || re.Name != "Error" || re.Type != "fail" || re.Code != "" {
		t.Fatalf("plain: got %#v (%v)", re, err)
	}

	_, err = worker.Call(ctx, w, Fail, FailReq{Message: "alice", Code: "E_NOT_FOUND"})
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("sentinel: %v does not match ErrNotFound", err)
	}
	if errors.As(err, &re); !strings.Contains(re.Message, `looking up "alice"`) || re.Code != "E_NOT_FOUND" {
		t.Fatalf("sentinel: got %#v", re)
	}
	if errors.Is(err, worker.NewError("E_OTHER", "x")) {
		t.Fatal("a different code matched")
	}

	_, err = worker.Call(ctx, w, Panic, "kaboom")
	if !errors.As(err, &re) || re.Code != "E_PANIC" || !strings.Contains(re.Message, "kaboom") ||
		!strings.Contains(re.Stack, "goroutine") {
		t.Fatalf("panic: got %#v", re)
	}
	// The worker survived the panic.
	if _, err := worker.Call(ctx, w, Ping, PingReq{}); err != nil {
		t.Fatalf("after panic: %v", err)
	}

	_, err = worker.Call(ctx, w, Unknown, "x")
	if !errors.Is(err, worker.ErrUnknownMessage) || !strings.Contains(err.Error(), "Unknown message type: no-such-handler") {
		t.Fatalf("unknown: got %v", err)
	}
}

func TestVoidMessage(t *testing.T) {
	w := spawn(t, "worker", nil)
	if _, err := worker.Call(testCtx(t), w, Notify, PingReq{Message: "x"}); err != nil {
		t.Fatal(err)
	}
}

func TestBinarySerializer(t *testing.T) {
	w := spawn(t, "worker-binary", &worker.Options{Serializer: worker.Binary})
	big := make([]byte, 1<<20)
	for i := range big {
		big[i] = byte(i * 7)
	}
	got, err := worker.Call(testCtx(t), w, Echo, big)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(big) {
		t.Fatal("1 MiB echo came back different")
	}
	res, err := worker.Call(testCtx(t), w, Ping, PingReq{Message: "héllo 🎉"})
	if err != nil || res.Message != "pong: héllo 🎉" {
		t.Fatalf("got %q, %v", res.Message, err)
	}
}

func TestSerializerMismatchFailsSpawn(t *testing.T) {
	for _, tc := range []struct {
		role string
		ser  worker.Serializer
	}{{"worker-json", worker.Binary}, {"worker-binary", worker.JSON}} {
		_, err := worker.Spawn(testCtx(t), roleCmd(t, tc.role), &worker.Options{Serializer: tc.ser})
		if !errors.Is(err, worker.ErrSerializerMismatch) || !strings.Contains(err.Error(), "configure the same serializer") {
			t.Fatalf("host %s, worker role %q: got %v", tc.ser.Name(), tc.role, err)
		}
	}
}

// A worker that did not choose a serializer follows the host's built-in one.
func TestWorkerAdoptsTheHostsBuiltinSerializer(t *testing.T) {
	w := spawn(t, "worker", &worker.Options{Serializer: worker.Binary})
	got, err := worker.Call(testCtx(t), w, Echo, []byte{0, 1, 2, 255})
	if err != nil || string(got) != "\x00\x01\x02\xff" {
		t.Fatalf("got %q, %v", got, err)
	}
}

func TestHostMiddleware(t *testing.T) {
	var mu sync.Mutex
	var trace []string
	record := func(name string) worker.Middleware {
		return func(ctx context.Context, m *worker.Message) error {
			mu.Lock()
			defer mu.Unlock()
			trace = append(trace, fmt.Sprintf("%s %s %s", name, direction(m), m.Type))
			return nil
		}
	}
	rewrite := func(ctx context.Context, m *worker.Message) error {
		if m.Incoming || m.Type != "ping" {
			return nil
		}
		var p PingReq
		if err := m.Decode(&p); err != nil {
			return err
		}
		p.Message = strings.ToUpper(p.Message)
		return m.SetPayload(p)
	}
	fail := func(ctx context.Context, m *worker.Message) error {
		if m.Type == "add" {
			return errors.New("adds are not allowed")
		}
		return nil
	}
	w := spawn(t, "worker", &worker.Options{Middleware: []worker.Middleware{record("A"), rewrite, record("B"), fail}})
	res, err := worker.Call(testCtx(t), w, Ping, PingReq{Message: "quiet"})
	if err != nil || res.Message != "pong: QUIET" {
		t.Fatalf("got %q, %v", res.Message, err)
	}
	want := []string{"A outgoing ping", "B outgoing ping", "A incoming pingResult", "B incoming pingResult"}
	if strings.Join(trace, "|") != strings.Join(want, "|") {
		t.Fatalf("middleware order:\n got %q\nwant %q", trace, want)
	}
	_, err = worker.Call(testCtx(t), w, Add, AddReq{A: 1})
	if err == nil || !strings.Contains(err.Error(), "adds are not allowed") {
		t.Fatalf("failing middleware: got %v", err)
	}
	if _, err := worker.Call(testCtx(t), w, Ping, PingReq{}); err != nil {
		t.Fatalf("a failed middleware broke the worker: %v", err)
	}
}

func TestCustomTransactionIDs(t *testing.T) {
	var n atomic.Int64
	var seen sync.Map
	w := spawn(t, "worker", &worker.Options{
		NewTx: func(m *worker.Message) string { return fmt.Sprintf("%s-%d", m.Type, n.Add(1)) },
		Middleware: []worker.Middleware{func(ctx context.Context, m *worker.Message) error {
			if m.Incoming {
				seen.Store(m.Tx, true)
			}
			return nil
		}},
	})
	for range 3 {
		if _, err := worker.Call(testCtx(t), w, Ping, PingReq{}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i <= 3; i++ {
		if _, ok := seen.Load(fmt.Sprintf("ping-%d", i)); !ok {
			t.Fatalf("no reply with tx ping-%d", i)
		}
	}
}

type panickingHandler struct{ calls *atomic.Int64 }

func (h panickingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h panickingHandler) Handle(context.Context, slog.Record) error {
	h.calls.Add(1)
	panic("logger exploded")
}
func (h panickingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h panickingHandler) WithGroup(string) slog.Handler      { return h }

func TestBrokenLoggerNeverBreaksACall(t *testing.T) {
	var calls atomic.Int64
	w := spawn(t, "worker", &worker.Options{Logger: slog.New(panickingHandler{&calls}), LogLevel: slog.LevelDebug})
	if _, err := worker.Call(testCtx(t), w, Ping, PingReq{}); err != nil {
		t.Fatal(err)
	}
	w.Close()
	if calls.Load() == 0 {
		t.Fatal("the logger was never called, so the test proves nothing")
	}
}

func TestLogLevelFilters(t *testing.T) {
	var calls atomic.Int64
	w := spawn(t, "worker", &worker.Options{Logger: slog.New(panickingHandler{&calls}), LogLevel: slog.LevelError})
	if _, err := worker.Call(testCtx(t), w, Ping, PingReq{}); err != nil {
		t.Fatal(err)
	}
	w.Close()
	if n := calls.Load(); n != 0 {
		t.Fatalf("%d records below LevelError reached the logger", n)
	}
}

func TestConnectDelayError(t *testing.T) {
	w := spawn(t, "worker", nil)
	tok := w.Token()
	w.Close()
	calls := 0
	_, err := worker.Attach(testCtx(t), tok, &worker.Options{
		ConnectDelay: func(attempt int) time.Duration { calls++; return -time.Second },
	})
	if err == nil || !strings.Contains(err.Error(), "negative delay") || calls != 1 {
		t.Fatalf("got %v after %d calls of ConnectDelay", err, calls)
	}
}

func TestConnectAttempts(t *testing.T) {
	w := spawn(t, "worker", nil)
	tok := w.Token()
	w.Close()
	var delays []int
	_, err := worker.Attach(testCtx(t), tok, &worker.Options{
		ConnectAttempts: 3,
		ConnectDelay:    func(attempt int) time.Duration { delays = append(delays, attempt); return time.Millisecond },
	})
	if err == nil || !strings.Contains(err.Error(), "after 3 attempts") || fmt.Sprint(delays) != "[1 2]" {
		t.Fatalf("got %v, delays after attempts %v", err, delays)
	}
}

func TestCloseRejectsPendingCalls(t *testing.T) {
	w := spawn(t, "worker", nil)
	started := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		close(started)
		_, err := worker.Call(testCtx(t), w, Sleep, SleepReq{Ms: 60_000})
		done <- err
	}()
	<-started
	// Make sure the call is in flight: a second call on the same
	// connection completes only after the first was written.
	if _, err := worker.Call(testCtx(t), w, Ping, PingReq{}); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, worker.ErrClosed) {
		t.Fatalf("pending call: got %v, want ErrClosed", err)
	}
	if d := time.Since(begin); d > 3*time.Second /* the default grace period */ {
		t.Fatalf("Close took %v", d)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := worker.Call(testCtx(t), w, Ping, PingReq{}); !errors.Is(err, worker.ErrClosed) {
		t.Fatalf("call after Close: got %v", err)
	}
}

func TestEnvAndArgsReachTheWorker(t *testing.T) {
	cmd := roleCmd(t, "worker")
	cmd.Env = append(cmd.Env, "IW_TEST_GREETING=bonjour")
	w, err := worker.Spawn(testCtx(t), cmd, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	got, err := worker.Call(testCtx(t), w, Getenv, "IW_TEST_GREETING")
	if err != nil || got != "bonjour" {
		t.Fatalf("got %q, %v", got, err)
	}
	// The secret is not passed on to the worker's own children.
	got, err = worker.Call(testCtx(t), w, Getenv, "ISOLATED_WORKERS_STARTUP_DATA")
	if err != nil || got != "" {
		t.Fatalf("startup data still in the worker's environment: %q, %v", got, err)
	}
}

func direction(m *worker.Message) string {
	if m.Incoming {
		return "incoming"
	}
	return "outgoing"
}
