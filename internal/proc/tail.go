package proc

import (
	"bytes"
	"sync"
	"unicode/utf8"
)

// Tail keeps the last bytes written to it, the end of a worker's stderr,
// and the line of the whole stream that tells why the worker died (see
// Reason): both for the errors that report its death.
type Tail struct {
	mu  sync.Mutex
	buf []byte
	max int

	line  []byte // the line being written, its first MaxLine bytes
	cut   bool   // line was longer than MaxLine
	last  []byte // the last non-empty line
	fatal string // the first decisive line (see decisive)
}

// MaxLine bounds a line that Reason returns: a longer one is cut, so that a
// worker cannot grow the host's memory with a line that never ends.
const MaxLine = 2 << 10

// NewTail returns a Tail that keeps the last max bytes.
func NewTail(max int) *Tail { return &Tail{max: max} }

// Write keeps the end of p and follows its lines; it never fails.
func (t *Tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.scan(p)
	n := len(p)
	if len(p) >= t.max {
		p = p[len(p)-t.max:]
		t.buf = t.buf[:0]
	}
	if over := len(t.buf) + len(p) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	t.buf = append(t.buf, p...)
	return n, nil
}

// scan follows the lines of p, which may begin or end in the middle of
// one.
func (t *Tail) scan(p []byte) {
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		chunk := p
		if i >= 0 {
			chunk = p[:i]
		}
		if room := MaxLine - len(t.line); len(chunk) > room {
			chunk, t.cut = chunk[:room], true
		}
		t.line = append(t.line, chunk...)
		if i < 0 {
			return
		}
		t.endLine()
		p = p[i+1:]
	}
}

// endLine takes note of the line just ended.
func (t *Tail) endLine() {
	l := lineText(t.line, t.cut)
	if t.fatal == "" && decisive(l) {
		t.fatal = string(l)
	}
	if l = bytes.TrimLeft(l, " \t"); len(l) > 0 {
		t.last = append(t.last[:0], l...)
	}
	t.line, t.cut = t.line[:0], false
}

// Reason returns the line of the stream that tells why the worker died: the
// first that reports a fatal error the way the Go runtime does (see
// decisive), or else the last line that is not blank, an unfinished one
// included; "" when there is none, or for a nil Tail. It has no line break
// and no surrounding spaces; a line longer than MaxLine bytes is cut there,
// and ends in "…".
func (t *Tail) Reason() string {
	if t == nil {
		return ""
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.fatal != "" {
		return t.fatal
	}
	// An unfinished line is the last, and if decisive, the first such.
	if l := bytes.TrimLeft(lineText(t.line, t.cut), " \t"); len(l) > 0 {
		return string(l)
	}
	return string(t.last)
}

// decisive reports whether line starts the way the Go runtime's reports of
// a fatal error do: a panic that nothing recovered, a fatal error (out of
// memory, concurrent map writes, a deadlock, …), a failure of cgo's
// runtime, a signal that crashed the process in C code or a goroutine dump
// on SIGQUIT ("SIGSEGV: segmentation violation"), an exception in C code
// on Windows ("Exception 0xc0000005 …").
func decisive(line []byte) bool {
	for _, p := range decisivePrefixes {
		if bytes.HasPrefix(line, []byte(p)) {
			return true
		}
	}
	return false
}

var decisivePrefixes = []string{"panic: ", "fatal error: ", "runtime/cgo: ", "Exception 0x",
	"SIGSEGV: ", "SIGBUS: ", "SIGFPE: ", "SIGILL: ", "SIGABRT: ", "SIGTRAP: ", "SIGSYS: ", "SIGQUIT: "}

// lineText returns line without its trailing spaces (the \r of a CRLF
// line ending included); a line that was cut ends in "…", without a rune
// split in two.
func lineText(line []byte, cut bool) []byte {
	if cut {
		line = line[:validPrefix(line)]
	}
	line = bytes.TrimRight(line, " \t\r\v\f")
	if cut && len(line) > 0 {
		line = append(line[:len(line):len(line)], "…"...)
	}
	return line
}

// validPrefix returns the length of b without a rune cut short at its end.
func validPrefix(b []byte) int {
	for i := len(b) - 1; i >= 0 && i >= len(b)-utf8.UTFMax; i-- {
		if utf8.RuneStart(b[i]) {
			if !utf8.FullRune(b[i:]) {
				return i
			}
			break
		}
	}
	return len(b)
}

// String returns the bytes kept; "" for a nil Tail.
func (t *Tail) String() string {
	if t == nil {
		return ""
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}
