package proc

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The test binary, re-executed with IW_PROC_ROLE set, plays the worker.
func TestMain(m *testing.M) {
	switch os.Getenv("IW_PROC_ROLE") {
	case "":
		os.Exit(m.Run())
	case "ready-then-fail":
		fd, _ := strconv.Atoi(os.Getenv("IW_READY_FD"))
		os.NewFile(uintptr(fd), "ready").Write([]byte{1})
		fmt.Fprintln(os.Stderr, "boom: the decisive line")
		os.Exit(3)
	case "spawn-grandchild":
		signalIgnoreTerm()
		c := exec.Command(os.Args[0])
		c.Env = append(os.Environ(), "IW_PROC_ROLE=sleep")
		if err := c.Start(); err != nil {
			os.Exit(4)
		}
		fmt.Println(c.Process.Pid)
		time.Sleep(time.Hour)
	case "sleep":
		signalIgnoreTerm()
		time.Sleep(time.Hour)
	case "log-to-gone-reader":
		// Once stdin closes, nobody reads stderr any more.
		io.Copy(io.Discard, os.Stdin)
		_, err := fmt.Fprintln(LogStderr(), "a record nobody reads")
		fmt.Printf("survived: %v\n", err)
		os.Exit(0)
	case "kill-own-group":
		// Starts a child (sleep), prints its pid, and once a line comes on
		// stdin, kills its own group.
		c := exec.Command(os.Args[0])
		c.Env = append(os.Environ(), "IW_PROC_ROLE=sleep")
		if err := c.Start(); err != nil {
			os.Exit(4)
		}
		fmt.Println(c.Process.Pid)
		bufio.NewReader(os.Stdin).ReadString('\n')
		KillOwnGroup()
	}
	os.Exit(5)
}

func roleCmd(t *testing.T, role string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "IW_PROC_ROLE="+role, "GORACE=atexit_sleep_ms=0")
	return cmd
}

func start(t *testing.T, cmd *exec.Cmd) *Process {
	t.Helper()
	env := cmd.Env
	p, err := Start(cmd, Spec{StderrTail: 64, Env: func(readyFD, lifeFD int) []string {
		return append(env, "IW_READY_FD="+strconv.Itoa(readyFD))
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(0) })
	return p
}

func TestStartReadyAndStatus(t *testing.T) {
	p := start(t, roleCmd(t, "ready-then-fail"))
	<-p.Ready()
	<-p.Exited()
	st := p.Status()
	if !st.Exited || st.ExitCode != 3 || st.Signal != "" || !strings.Contains(st.Stderr, "boom: the decisive line") ||
		st.Reason != "boom: the decisive line" {
		t.Fatalf("status %+v; want exit code 3 and the stderr line, as the tail and the reason", st)
	}
	if len(st.Stderr) > 64 {
		t.Fatalf("kept %d bytes of stderr; the tail is 64", len(st.Stderr))
	}
}

func TestStatusBeforeExit(t *testing.T) {
	p := start(t, roleCmd(t, "sleep"))
	if st := p.Status(); st.Exited || st.ExitCode != -1 {
		t.Fatalf("status of a running process: %+v", st)
	}
	if !Alive(p.Pid()) {
		t.Fatal("Alive: false for a running process")
	}
	p.Stop(10 * time.Millisecond) // it ignores SIGTERM: killed after the grace period
	if !p.HasExited() || Alive(p.Pid()) {
		t.Fatal("Stop returned before the process was reaped")
	}
}

func TestTail(t *testing.T) {
	tl := NewTail(8)
	tl.Write([]byte("abcdef"))
	tl.Write([]byte("ghij"))
	if got := tl.String(); got != "cdefghij" {
		t.Fatalf("tail %q; want the last 8 bytes", got)
	}
	tl.Write([]byte("0123456789"))
	if got := tl.String(); got != "23456789" {
		t.Fatalf("tail %q after a long write", got)
	}
	if (*Tail)(nil).String() != "" {
		t.Fatal("a nil Tail is not empty")
	}
}

// RSS reads a live process's resident memory: more than nothing, less
// than this machine has.
func TestRSS(t *testing.T) {
	p := start(t, roleCmd(t, "sleep"))
	// Right after the fork, the child is a few pages; once the test binary
	// runs (the Go runtime alone takes more than a MiB), it is itself.
	deadline := time.Now().Add(10 * time.Second)
	for {
		n, err := p.RSS()
		if err != nil || n > 64<<30 {
			t.Fatalf("RSS of a live process: %d, %v", n, err)
		}
		if n > 1<<20 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("RSS of a live Go process still %d bytes after 10s", n)
		}
		time.Sleep(10 * time.Millisecond) // polling a reading: there is nothing to wait on
	}
}
