package proc

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// reasonOf writes the chunks to a fresh Tail and returns its Reason.
func reasonOf(chunks ...string) string {
	t := NewTail(64)
	for _, c := range chunks {
		t.Write([]byte(c))
	}
	return t.Reason()
}

func TestTailReason(t *testing.T) {
	dump := "\ngoroutine 1 [running]:\nmain.main()\n\t/src/main.go:12 +0x1d\nexit status 2\n"
	for _, c := range []struct {
		name   string
		chunks []string
		want   string
	}{
		{"panic split across writes", []string{"starting\npan", "ic: bo", "om\n" + dump}, "panic: boom"},
		{"the first decisive line wins", []string{"panic: first [recovered]\n\tpanic: second\nfatal error: third\n"}, "panic: first [recovered]"},
		{"fatal error", []string{"a log line\nfatal error: concurrent map writes\n" + dump}, "fatal error: concurrent map writes"},
		{"cgo", []string{"runtime/cgo: pthread_create failed: Resource temporarily unavailable\nSIGABRT: abort\n"}, "runtime/cgo: pthread_create failed: Resource temporarily unavailable"},
		{"signal in C code", []string{"SIGSEGV: segmentation violation\nPC=0x7f0 m=0 sigcode=1\nsignal arrived during cgo execution\n"}, "SIGSEGV: segmentation violation"},
		{"windows exception", []string{"Exception 0xc0000005 0x0 0x0 0x7ff6\nPC=0x7ff6\n"}, "Exception 0xc0000005 0x0 0x0 0x7ff6"},
		{"no decisive line: the last non-empty one", []string{"one\ntwo\n\n   \n\t\n"}, "two"},
		{"indented, not decisive", []string{"\tpanic: in a quote\nlast words\n"}, "last words"},
		{"SIGNAL is no signal", []string{"SIGNAL: not a crash\nbye\n"}, "bye"},
		{"CRLF", []string{"line one\r\nline two\r", "\n"}, "line two"},
		{"no trailing newline", []string{"one\ntw", "o"}, "two"},
		{"a decisive unfinished line", []string{"one\npanic: la", "te"}, "panic: late"},
		{"spaces around", []string{"  spaced out  \n"}, "spaced out"},
		{"nothing", []string{"\n\r\n  \n"}, ""},
	} {
		if got := reasonOf(c.chunks...); got != c.want {
			t.Errorf("%s: Reason %q; want %q", c.name, got, c.want)
		}
	}
	if (*Tail)(nil).Reason() != "" {
		t.Error("a nil Tail has a reason")
	}
}

// A line longer than MaxLine is cut, whole runes kept, in any number of
// writes; the lines after it are read as usual.
func TestTailReasonLongLine(t *testing.T) {
	long := "panic: " + strings.Repeat("é", 3*MaxLine) // 2 bytes a rune: some cut falls inside one
	for _, step := range []int{1, 7, 1000, len(long)} {
		tl := NewTail(64)
		for s := long; s != ""; {
			n := min(step, len(s))
			tl.Write([]byte(s[:n]))
			s = s[n:]
		}
		got := tl.Reason()
		if !strings.HasPrefix(got, "panic: éé") || !strings.HasSuffix(got, "é…") || len(got) > MaxLine+len("…") || !utf8.ValidString(got) {
			t.Fatalf("writes of %d: Reason of %d bytes: %.20q…%q", step, len(got), got, got[max(0, len(got)-20):])
		}
		tl.Write([]byte(" and more\n")) // the end of the long line
		if tl.Reason() != got {
			t.Fatalf("writes of %d: the end of the long line changed the reason", step)
		}
	}
	tl := NewTail(64)
	tl.Write([]byte(strings.Repeat("x", 5*MaxLine) + "\nshort\n"))
	if got := tl.Reason(); got != "short" {
		t.Fatalf("after a long line: Reason %q; want %q", got, "short")
	}
}
