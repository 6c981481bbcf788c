//go:build unix

package proc

import (
	"bufio"
	"os"
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
