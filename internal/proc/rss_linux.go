package proc

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
)

// RSS returns the process's resident memory in bytes, from
// /proc/<pid>/statm (a read of a few dozen bytes, no allocation to speak
// of).
func (p *Process) RSS() (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/statm", p.pid))
	if err != nil {
		return 0, err
	}
	f := bytes.Fields(b)
	if len(f) < 2 {
		return 0, fmt.Errorf("proc: unexpected /proc/%d/statm: %q", p.pid, b)
	}
	pages, err := strconv.ParseInt(string(f[1]), 10, 64)
	if err != nil {
		return 0, err
	}
	return pages * int64(os.Getpagesize()), nil
}
