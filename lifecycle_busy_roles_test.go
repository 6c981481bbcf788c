package worker_test

// The roles of the host-death tests (lifecycle_hostdeath_test.go):
//
//	lc-busy-worker  an lc worker with a 30 s drain timeout, the longest a
//	                worker taking its host's death for a polite stop would
//	                linger
//	lc-busy-host    a host that spawns one lc-busy-worker per busy kind,
//	                makes each busy (LCBusy), prints one JSON line of
//	                lcBusyReport once every handler is, and blocks until
//	                stdin closes
//	lc-busy-child   a worker's child that starts a grandchild (block),
//	                prints its pid and waits for it

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/isolated-workers/worker"
)

// The busy kinds: what a handler is doing when its host dies. Every one
// has first started a child (block) that it leaves running.
var lcBusyKinds = []string{
	"spin",      // a CPU loop that never looks at its context
	"syscall",   // a blocking read, in the kernel, on a pipe nobody writes
	"stubborn",  // SIGTERM ignored (signal.Ignore), then a CPU loop
	"waitchild", // waits on a child that has a child of its own
	"stderr",    // writes to stderr, a pipe its host does not read: blocked in write
}

var (
	// LCBusy keeps its handler busy in the way its kind names, forever.
	LCBusy = worker.Define[string, worker.Void]("lcBusy")
	// LCBusyPids waits until the LCBusy handler of a kind is busy, and
	// returns the pids of the processes it started.
	LCBusyPids = worker.Define[string, []int]("lcBusyPids")
)

// lcBusyReport is what lc-busy-host prints: one entry per worker.
type lcBusyReport []struct {
	Kind     string `json:"kind"`
	Pid      int    `json:"pid"`
	Token    string `json:"token"`
	Children []int  `json:"children"`
}

var (
	lcBusyMu   sync.Mutex
	lcBusyPids = map[string][]int{}
	lcSpin     atomic.Int64
)

// lcRegisterBusy adds LCBusy and LCBusyPids to an lc worker.
func lcRegisterBusy(s *worker.Server) {
	worker.Handle(s, LCBusy, func(ctx context.Context, kind string) (worker.Void, error) {
		pids, wait, err := lcBusyChildren(kind)
		if err != nil {
			return worker.Void{}, err
		}
		var r, w *os.File
		switch kind {
		case "syscall":
			if r, w, err = os.Pipe(); err != nil {
				return worker.Void{}, err
			}
			r.Fd() // blocking mode: Read blocks in the kernel, not in the runtime's poller
		case "stubborn":
			lcIgnoreTerm()
		}
		lcBusyMu.Lock()
		lcBusyPids[kind] = pids
		lcBusyMu.Unlock()
		lcStarted(LCBusy.Name() + kind) <- struct{}{}
		switch kind {
		case "syscall":
			r.Read(make([]byte, 1))
			runtime.KeepAlive(w)
		case "waitchild":
			wait()
		case "stderr":
			line := []byte(strings.Repeat("x", 1023) + "\n")
			for {
				os.Stderr.Write(line) // EPIPE, once the host is gone
			}
		}
		for {
			lcSpin.Add(1)
		}
	})
	worker.Handle(s, LCBusyPids, func(ctx context.Context, kind string) ([]int, error) {
		select {
		case <-lcStarted(LCBusy.Name() + kind):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		lcBusyMu.Lock()
		defer lcBusyMu.Unlock()
		return lcBusyPids[kind], nil
	})
}

// lcBusyChildren starts what a busy handler of kind leaves running: a
// child in the block role or, for waitchild, one in the lc-busy-child role
// with its own child. It returns their pids and a wait for the child.
func lcBusyChildren(kind string) (pids []int, wait func() error, err error) {
	role := "block"
	if kind == "waitchild" {
		role = "lc-busy-child"
	}
	cmd, err := roleCommand(role)
	if err != nil {
		return nil, nil, err
	}
	var out io.Reader
	if role != "block" {
		if out, err = cmd.StdoutPipe(); err != nil {
			return nil, nil, err
		}
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	pids = []int{cmd.Process.Pid}
	if out != nil {
		line, _ := bufio.NewReader(out).ReadString('\n')
		gpid, err := strconv.Atoi(strings.TrimSpace(line))
		if err != nil {
			return nil, nil, fmt.Errorf("the child said %q, not its child's pid", line)
		}
		pids = append(pids, gpid)
	} else {
		go cmd.Wait()
	}
	return pids, cmd.Wait, nil
}

// lcBusyChild is the lc-busy-child role.
func lcBusyChild() {
	cmd, err := roleCommand("block")
	if err == nil {
		err = cmd.Start()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "lc busy child:", err)
		os.Exit(1)
	}
	fmt.Println(cmd.Process.Pid)
	cmd.Wait()
}

// lcBusyHost is the lc-busy-host role.
func lcBusyHost() {
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "lc busy host:", err)
		os.Exit(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var report lcBusyReport
	var unread *os.File
	for _, kind := range lcBusyKinds {
		cmd, err := roleCommand("lc-busy-worker")
		if err != nil {
			fail(err)
		}
		if kind == "stderr" {
			var w *os.File
			if unread, w, err = os.Pipe(); err != nil {
				fail(err)
			}
			cmd.Stderr = w
		}
		w, err := worker.Spawn(ctx, cmd, nil)
		if err != nil {
			fail(err)
		}
		go worker.Call(context.Background(), w, LCBusy, kind)
		pids, err := worker.Call(ctx, w, LCBusyPids, kind)
		if err != nil {
			fail(fmt.Errorf("%s: %w", kind, err))
		}
		report = append(report, lcBusyReport{{Kind: kind, Pid: w.Pid(), Token: w.Token(), Children: pids}}...)
	}
	line, _ := json.Marshal(report)
	fmt.Printf("%s\n", line)
	io.Copy(io.Discard, os.Stdin) // until the test closes stdin, or kills us
	runtime.KeepAlive(unread)
	os.Exit(0)
}

// rolesOfChildren records, for the role check of TestMain, the roles that
// a test's helper process starts in turn (this process does not see it
// start them).
func rolesOfChildren(t testing.TB, names ...string) {
	t.Helper()
	for _, name := range names {
		if _, ok := roles[name]; !ok {
			t.Fatalf("role %q is not registered in roles", name)
		}
		rolesUsed.Store(name, true)
	}
}
