//go:build unix

package proc

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func signalIgnoreTerm() { signal.Ignore(syscall.SIGTERM) }

// Stop reaches the worker's children: they are in its process group.
func TestStopKillsTheGroup(t *testing.T) {
	cmd := roleCmd(t, "spawn-grandchild")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := start(t, cmd)
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	grandchild, _ := strconv.Atoi(strings.TrimSpace(line))
	if !Alive(grandchild) {
		t.Fatalf("grandchild %d is not running", grandchild)
	}
	p.Stop(10 * time.Millisecond)
	// The grandchild is not ours to reap: init does, once it is killed.
	if !WaitGone(grandchild, 10*time.Second) {
		t.Fatalf("grandchild %d survived Stop", grandchild)
	}
}

func TestStatusNamesTheSignal(t *testing.T) {
	p := start(t, roleCmd(t, "sleep"))
	syscall.Kill(p.Pid(), syscall.SIGKILL)
	<-p.Exited()
	if st := p.Status(); st.ExitCode != -1 || st.Signal != "SIGKILL" {
		t.Fatalf("status %+v; want the signal's name, SIGKILL", st)
	}
}

// A worker that writes a record through LogStderr after its host (the
// reader of its stderr) is gone gets an error, and goes on to exit on its
// own: through os.Stderr, SIGPIPE would kill it.
func TestLogStderrSurvivesItsReader(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := roleCmd(t, "log-to-gone-reader")
	cmd.Stderr = w
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	cmd.Stdout = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	r.Close()
	stdin.Close()
	err = cmd.Wait()
	if err != nil || !strings.Contains(out.String(), "survived: write stderr: broken pipe") {
		t.Fatalf("the role ended with %v, output %q; want exit 0 after a failed write", err, out.String())
	}
}

// killOwnGroupRole starts the kill-own-group role with start, and returns
// its child's pid and the role's stdin, to tell it to kill.
func killOwnGroupRole(t *testing.T, cmd *exec.Cmd, start func()) (child int, stdin io.WriteCloser) {
	t.Helper()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	start()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	child, _ = strconv.Atoi(strings.TrimSpace(line))
	if !Alive(child) {
		t.Fatalf("the role's child %d is not running", child)
	}
	return child, stdin
}

// A worker that Start started leads its process group: KillOwnGroup kills
// it with its child.
func TestKillOwnGroupKillsTheGroup(t *testing.T) {
	cmd := roleCmd(t, "kill-own-group")
	var p *Process
	child, stdin := killOwnGroupRole(t, cmd, func() { p = start(t, cmd) })
	stdin.Write([]byte("kill\n"))
	select {
	case <-p.Exited():
	case <-time.After(10 * time.Second):
		t.Fatal("KillOwnGroup returned, or did not kill")
	}
	if st := p.Status(); st.Signal != "SIGKILL" {
		t.Fatalf("status %+v; want SIGKILL", st)
	}
	if !WaitGone(child, 10*time.Second) {
		t.Fatalf("the child %d survived KillOwnGroup", child)
	}
}

// A process that leads no group (this test's group is the test binary's)
// kills only itself.
func TestKillOwnGroupSparesAnotherGroup(t *testing.T) {
	cmd := roleCmd(t, "kill-own-group")
	child, stdin := killOwnGroupRole(t, cmd, func() {
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
	})
	defer syscall.Kill(child, syscall.SIGKILL)
	stdin.Write([]byte("kill\n"))
	if err := cmd.Wait(); err == nil || err.Error() != "signal: killed" {
		t.Fatalf("the role ended with %v; want SIGKILL", err)
	}
	if !Alive(child) {
		t.Fatalf("the child %d, in the test's group, was killed", child)
	}
}
