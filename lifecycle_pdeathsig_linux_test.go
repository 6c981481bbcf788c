//go:build linux

package worker_test

import (
	"os"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/isolated-workers/worker"
	"github.com/isolated-workers/worker/internal/wire"
)

// TestLifecycleForkingThreadExitIsNoStop: Linux sends a worker its
// parent-death signal (SIGTERM, which a host sets for workers not built
// with this library) when the thread that forked it exits, which, when a
// host dies, can be while the host's other threads still run, and a
// worker took it for a polite stop: it drained, and exited without its
// children. A worker built with this library turns that signal off and
// trusts its lifeline. Here the thread that started a worker (with the
// signal set, and a lifeline that this test holds) exits while this
// process lives: the worker gets no SIGTERM, keeps serving, and goes only
// when the lifeline closes, by its own SIGKILL.
func TestLifecycleForkingThreadExitIsNoStop(t *testing.T) {
	t.Parallel()
	lifeR, lifeW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer lifeW.Close()
	readyR, readyW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer readyR.Close()
	sock := lcSocketPath(t)
	sd := wire.StartupData{Driver: wire.Driver, SocketPath: sock, Serializer: worker.JSON.Name(),
		ServerConnectTimeout: time.Minute.Milliseconds(), ReadyFD: 3, LifeFD: 4}
	cmd := roleCmd(t, "lc-worker-keepalive")
	cmd.ExtraFiles = []*os.File{readyW, lifeR}
	cmd.Env = append(cmd.Env, append(sd.Env(), envLCSignals+"=1")...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM, Setpgid: true}
	type started struct {
		tid int
		err error
	}
	ch := make(chan started, 1)
	var startOn func()
	startOn = func() {
		runtime.LockOSThread() // and never unlocked: the thread exits with this goroutine
		if unix.Gettid() == os.Getpid() {
			// The main thread, which never exits (the runtime parks it
			// instead): try another.
			runtime.UnlockOSThread()
			go startOn()
			return
		}
		err := cmd.Start()
		readyW.Close()
		lifeR.Close()
		if err == nil {
			// Once the worker listens, its init functions have run.
			var b [1]byte
			if n, _ := readyR.Read(b[:]); n != 1 {
				err = os.ErrClosed
			}
		}
		ch <- started{unix.Gettid(), err}
	}
	go startOn()
	st := recvWithin(t, ch, 20*time.Second, "the worker to start and listen")
	if st.err != nil {
		t.Fatalf("starting the worker: %v", st.err)
	}
	var waitErr error
	done := make(chan struct{})
	go func() { waitErr = cmd.Wait(); close(done) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-done })
	task := "/proc/self/task/" + strconv.Itoa(st.tid)
	eventually(t, 10*time.Second, func() bool { _, err := os.Stat(task); return err != nil },
		"the thread that started the worker to exit")

	// The parent-death signal, were it armed, is queued by now; a SIGWINCH
	// sent after it is handled after it.
	if err := syscall.Kill(cmd.Process.Pid, syscall.SIGWINCH); err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	c := lcDialByHand(t, ctx, &lcHandWorker{addr: sock})
	defer c.Close()
	if seen, err := worker.Call(ctx, c, LCTermSeen, worker.Void{}); err != nil || seen {
		t.Fatalf("after the thread that started it exited, the worker got SIGTERM: %v (err %v)", seen, err)
	}
	if _, err := worker.Call(ctx, c, Ping, PingReq{}); err != nil {
		t.Fatalf("the worker no longer serves: %v", err)
	}

	lifeW.Close() // the host's death, as the worker sees it
	recvWithin(t, done, 5*time.Second, "the worker to end when its lifeline closed")
	if waitErr == nil || waitErr.Error() != lcHostDiedEnd {
		t.Fatalf("the worker exited with %v; want %q", waitErr, lcHostDiedEnd)
	}
}
