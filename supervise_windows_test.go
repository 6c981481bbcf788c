package worker_test

import (
	"errors"

	"golang.org/x/sys/windows"
)

// svDropConns is not available on Windows: the test that needs it is
// Unix-only.
func svDropConns() (int, error) {
	return 0, errors.New("svDrop: not on Windows")
}

// lcKillPid terminates process pid and reports whether it could.
func lcKillPid(pid int) bool {
	h, err := windows.OpenProcess(windows.PROCESS_TERMINATE, false, uint32(pid))
	if err != nil {
		return false
	}
	defer windows.CloseHandle(h)
	return windows.TerminateProcess(h, 9) == nil
}
