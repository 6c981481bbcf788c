//go:build unix || windows

package worker_test

// Crash reports a person can act on: a *CrashError names, on one line, the
// call, how the worker ended and the line of its stderr that says why,
// even when that line scrolled out of the stderr tail.

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/isolated-workers/worker"
)

// A Go runtime death ends in a goroutine dump: its decisive line, printed
// first, is long gone from the 4 KiB tail, and the report still names it.
func TestCrashReportNamesTheDecisiveLine(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ how, want string }{
		{"panic", "panic: " + lcDiePanic},
		{"fatal", "fatal error: sync: unlock of unlocked mutex"},
	} {
		t.Run(c.how, func(t *testing.T) {
			t.Parallel()
			w := lcSpawn(t, "lc-worker", nil)
			_, err := worker.Call(testCtx(t), w, LCDie, LCDieReq{How: c.how, Parked: 200})
			ce := asCrash(t, err)
			if ce.Reason != c.want || ce.ExitCode != 2 {
				t.Fatalf("got exit code %d, reason %q; want 2, %q", ce.ExitCode, ce.Reason, c.want)
			}
			// Else this test would prove nothing.
			if strings.Contains(ce.Stderr, c.want) || !strings.Contains(ce.Stderr, "goroutine ") {
				t.Fatalf("the stderr tail is not the end of a goroutine dump without the decisive line:\n%s", ce.Stderr)
			}
			msg := err.Error()
			want := fmt.Sprintf(`worker: call "lcDie" failed (attempt 1 of 1): worker process %d exited with code 2; stderr: %s`, w.Pid(), c.want)
			if msg != want {
				t.Fatalf("Error():\n%s\nwant:\n%s", msg, want)
			}
		})
	}
}

// A worker that exits by itself after writing some lines: the report names
// the last line that is not blank, and leaves the rest to Stderr.
func TestCrashReportNamesTheLastLine(t *testing.T) {
	t.Parallel()
	w := lcSpawn(t, "lc-worker", nil)
	pid := w.Pid()
	_, err := worker.Call(testCtx(t), w, LCCrash, LCCrashReq{Stderr: "lc: first line\nlc: the last words\r\n\n  ", Code: 4})
	ce := asCrash(t, err)
	if ce.Reason != "lc: the last words" || !strings.Contains(ce.Stderr, "lc: first line") {
		t.Fatalf("got reason %q, stderr %q; want the last line, and both in stderr", ce.Reason, ce.Stderr)
	}
	want := fmt.Sprintf(`worker: call "lcCrash" failed (attempt 1 of 1): worker process %d exited with code 4; stderr: lc: the last words`, pid)
	if msg := err.Error(); msg != want {
		t.Fatalf("Error():\n%s\nwant:\n%s", msg, want)
	}
}

// Error is one line whatever the fields hold.
func TestCrashErrorIsOneLine(t *testing.T) {
	for _, c := range []struct {
		e    worker.CrashError
		want string
	}{
		{worker.CrashError{Type: "a\nb", Attempt: 1, MaxAttempts: 2, Pid: 7, ExitCode: -1, Signal: "SIGKILL", Reason: "x\r\ny\u2028z", Stderr: "s\nt"},
			`worker: call "a\nb" failed (attempt 1 of 2): worker process 7 was killed by SIGKILL; stderr: x; y; z`},
		{worker.CrashError{Pid: 7, ExitCode: -1, Err: errors.Join(errors.New("read: EOF"), errors.New("restarting the worker: no\x1bway"))},
			`worker: lost the worker: read: EOF; restarting the worker: no way`},
		{worker.CrashError{Pid: 7, ExitCode: 3, Reason: "\tpanic: boom\t"},
			"worker: worker process 7 exited with code 3; stderr: panic: boom"},
	} {
		if got := c.e.Error(); got != c.want {
			t.Errorf("Error():\n%q\nwant:\n%q", got, c.want)
		}
	}
}
