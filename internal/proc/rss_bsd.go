//go:build unix && !linux

package proc

import (
	"bytes"
	"os/exec"
	"strconv"
)

// RSS returns the process's resident memory in bytes, as ps(1) reports it
// (in KiB): the BSDs and macOS have no /proc to read, and their sysctl
// structures differ; ps is on every one of them. It costs a process start,
// which is why a pool reads it about once a second.
func (p *Process) RSS() (int64, error) {
	out, err := exec.Command("ps", "-o", "rss=", "-p", strconv.Itoa(p.pid)).Output()
	if err != nil {
		return 0, err
	}
	kib, err := strconv.ParseInt(string(bytes.TrimSpace(out)), 10, 64)
	return kib << 10, err
}
