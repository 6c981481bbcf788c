package worker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/isolated-workers/worker"
)

// hsLockedBuffer is an io.Writer safe for the exec package's copying
// goroutine and the test.
type hsLockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *hsLockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *hsLockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// A process of another user is refused. Two walls stand in its way: the
// socket's 0700 directory, and, for a process that can get past file
// permissions (here: one given CAP_DAC_OVERRIDE), the worker's check of
// the peer's uid with SO_PEERCRED. The dialing process is this test binary,
// re-executed as uid 65534 in the "peercred-dial" role: it presents the
// right secret, so only the uid check can refuse it.
func TestSecurityOtherUIDRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		skipRole(t, "peercred-dial", "needs root to start a process as another user")
	}
	const nobody = 65534
	const capDACOverride = 1

	// The test binary may sit in a directory that only root can enter;
	// the stranger runs a copy it can reach.
	exe := hsStrangerBinary(t)

	var stderr hsLockedBuffer
	cmd := roleCmd(t, "worker")
	cmd.Env = append(cmd.Env, "IW_TEST_LOG=1")
	cmd.Stderr = &stderr
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	w, err := worker.Spawn(ctx, cmd, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()

	dial := func(uid int, caps []uintptr) hsDialReport {
		t.Helper()
		c := roleCmd(t, "peercred-dial")
		c.Path, c.Args[0] = exe, exe
		c.Env = append(c.Env, hsEnvDialToken+"="+w.Token())
		c.Dir = "/"
		c.SysProcAttr = &syscall.SysProcAttr{AmbientCaps: caps}
		if uid != 0 {
			c.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(uid), Gid: nobody}
		}
		out, err := c.Output()
		var r hsDialReport
		if jerr := json.Unmarshal(out, &r); err != nil || jerr != nil {
			t.Fatalf("the dialing process (uid %d): %v, %v; output %q", uid, err, jerr, out)
		}
		if r.UID != uid {
			t.Fatalf("the dialing process ran as uid %d, not %d", r.UID, uid)
		}
		return r
	}

	t.Run("same-user", func(t *testing.T) {
		// The control: root, with the secret, is let in.
		r := dial(0, nil)
		if r.DialErr != "" || !strings.Contains(r.Reply, `"__iw.helloResult"`) {
			t.Fatalf("a process of the same user with the secret was refused: %+v", r)
		}
		hsStillServes(t, w)
	})
	t.Run("directory", func(t *testing.T) {
		r := dial(nobody, nil)
		if !strings.Contains(r.DialErr, "permission denied") {
			t.Fatalf("another user reached the socket: %+v; want permission denied", r)
		}
		hsStillServes(t, w)
	})
	t.Run("peercred", func(t *testing.T) {
		r := dial(nobody, []uintptr{capDACOverride})
		if r.DialErr != "" {
			t.Fatalf("with CAP_DAC_OVERRIDE the stranger should reach the socket: %+v", r)
		}
		if r.Reply != "" {
			t.Fatalf("the worker answered another user: %+v", r)
		}
		hsStillServes(t, w)
	})

	w.Close() // stderr is complete once the process is reaped
	if log := stderr.String(); !strings.Contains(log, "refused a connection") || !strings.Contains(log, "uid 65534") {
		t.Fatalf("the worker did not log the refusal of uid 65534; stderr:\n%s", log)
	}
}

// hsStrangerBinary copies the test binary where any user can run it.
func hsStrangerBinary(t *testing.T) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("/tmp", "iw-stranger-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	in, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	exe := filepath.Join(dir, "worker.test")
	out, err := os.OpenFile(exe, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return exe
}
