//go:build unix || windows

package worker_test

// Helpers of the lifecycle tests (lifecycle_*_test.go): real worker
// processes, crashed, killed, stopped, orphaned and attached to. The tests
// are written once; what differs between Unix and Windows (how to kill a
// process, what holds a worker's process tree, how an address looks) is in
// the hooks of lifecycle_unix_test.go and lifecycle_windows_test.go. The
// Windows tests run under Wine 8.0 in CI (.ci/wine.sh); where Wine cannot
// do what Windows does, they skip and say why.

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
	"testing"
	"time"

	"github.com/isolated-workers/worker"
)

// lcSpawn spawns the test binary in role (a worker role) and closes the
// worker at the end of the test.
func lcSpawn(t testing.TB, role string, opts *worker.Options) *worker.Worker {
	t.Helper()
	return lcSpawnCmd(t, roleCmd(t, role), opts)
}

func lcSpawnCmd(t testing.TB, cmd *exec.Cmd, opts *worker.Options) *worker.Worker {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	w, err := worker.Spawn(ctx, cmd, opts)
	if err != nil {
		t.Fatalf("Spawn(%v): %v", cmd.Args, err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

// recvWithin receives from ch, failing the test after d.
func recvWithin[T any](t testing.TB, ch <-chan T, d time.Duration, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(d):
		t.Fatalf("timed out after %v waiting for %s", d, what)
		panic("unreachable")
	}
}

// asCrash returns err as a *worker.CrashError, failing the test if it is not one.
func asCrash(t testing.TB, err error) *worker.CrashError {
	t.Helper()
	var ce *worker.CrashError
	if !errors.Is(err, worker.ErrCrashed) || !errors.As(err, &ce) {
		t.Fatalf("got %v (%T), want a *worker.CrashError matching ErrCrashed", err, err)
	}
	return ce
}

// handlerCanceled checks that the last Sleep handler saw its context end.
func handlerCanceled(t testing.TB, w *worker.Worker) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := worker.Call(ctx, w, Canceled, "")
	if err != nil || (got != context.Canceled.Error() && got != context.DeadlineExceeded.Error()) {
		t.Fatalf("the handler observed %q, %v; want its context to end", got, err)
	}
}

// awaitStarted returns once n more requests of type typ have started
// running in the lc worker w.
func awaitStarted(t testing.TB, ctx context.Context, w *worker.Worker, typ string, n int) {
	t.Helper()
	if _, err := worker.Call(ctx, w, LCAwait, LCAwaitReq{Type: typ, N: n}); err != nil {
		t.Fatalf("awaiting %d %s: %v", n, typ, err)
	}
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

// lcToken decodes a worker's token.
func lcToken(t testing.TB, tok string) map[string]any {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		t.Fatalf("token %q: %v", tok, err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("token %q: %v", tok, err)
	}
	return m
}

// lcAddr returns the address (socket path or pipe name) in a worker's token.
func lcAddr(t testing.TB, tok string) string {
	t.Helper()
	addr, _ := lcToken(t, tok)["addr"].(string)
	if addr == "" {
		t.Fatalf("token %q has no address", tok)
	}
	return addr
}

// lcTamper returns tok with one field of its JSON changed.
func lcTamper(t testing.TB, tok, field string) string {
	t.Helper()
	m := lcToken(t, tok)
	s, ok := m[field].(string)
	if !ok || s == "" {
		t.Fatalf("token has no %q: %v", field, m)
	}
	m[field] = strings.Repeat("0", len(s))
	raw, _ := json.Marshal(m)
	return base64.RawURLEncoding.EncodeToString(raw)
}

// lcHostProc is a host role process.
type lcHostProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   io.Reader
	once  sync.Once
	err   error
}

// lcStartHost starts the test binary in a host role, with start
// ((*exec.Cmd).Start or a job's Start). At the end of the test it is
// released (stdin closed), killed if need be, and reaped.
func lcStartHost(t *testing.T, role string, start func(*exec.Cmd) error, env ...string) *lcHostProc {
	t.Helper()
	cmd := roleCmd(t, role)
	cmd.Env = append(cmd.Env, env...)
	cmd.Stderr = os.Stderr
	h := &lcHostProc{cmd: cmd}
	var err error
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
func (h *lcHostProc) wait() error {
	h.once.Do(func() { h.err = h.cmd.Wait() })
	return h.err
}

// readWorker reads the "<pid> <token> <grandchild pid>" line the host
// prints, within 20s.
func (h *lcHostProc) readWorker(t testing.TB) (pid int, tok string, gpid int) {
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
	res := recvWithin(t, ch, 20*time.Second, "a line from the host")
	if _, err := fmt.Sscanf(res.line, "%d %s %d", &pid, &tok, &gpid); err != nil || pid <= 0 {
		t.Fatalf("the host printed %q (%v)", res.line, res.err)
	}
	return pid, tok, gpid
}

// lcHandWorker is a worker started by hand, not by Spawn, with startup
// data of the test's making (lcStartByHand, per OS).
type lcHandWorker struct {
	cmd     *exec.Cmd
	addr    string
	p       *lcProc
	started time.Time
	done    chan struct{} // closed once it exited, with err cmd.Wait's result
	err     error
}

// lcStartHand starts cmd, a worker listening at addr. At the end of the
// test it is killed if need be, and reaped.
func lcStartHand(t testing.TB, cmd *exec.Cmd, addr string) *lcHandWorker {
	t.Helper()
	hw := &lcHandWorker{cmd: cmd, addr: addr, done: make(chan struct{}), started: time.Now()}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { hw.err = cmd.Wait(); close(hw.done) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-hw.done })
	hw.p = lcWatch(t, cmd.Process.Pid)
	return hw
}

// lcCheckExitCode checks, where it can be known (Windows: through the
// process handle; on Unix the worker is not this process's child), that p
// exited with code.
func lcCheckExitCode(t testing.TB, p *lcProc, code int) {
	t.Helper()
	if got, ok := p.exitCode(t); ok && got != code {
		t.Fatalf("process %d exited with code %d; want %d", p.pid, got, code)
	}
}
