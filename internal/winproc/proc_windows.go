//go:build windows

package winproc

import (
	"fmt"
	"syscall"
	"unsafe"

	"golang.org/x/sys/windows"
)

// Interrupt sends CTRL_BREAK_EVENT to the process group whose id is pid, as
// a request to stop gracefully. The target must have been started with
// CREATE_NEW_PROCESS_GROUP (WorkerSysProcAttr), which makes its pid the
// group id, and must share the caller's console: a process started with
// DETACHED_PROCESS (DetachedSysProcAttr) has no console and cannot be
// interrupted this way, and neither can anything when the caller itself has
// no console (GenerateConsoleCtrlEvent then fails).
//
// A Go worker sees CTRL_BREAK_EVENT as os.Interrupt (os/signal). CTRL_C_EVENT
// is not used: a process started with CREATE_NEW_PROCESS_GROUP ignores
// Ctrl+C, and CTRL_C_EVENT cannot be aimed at a single group.
//
// Interrupt does not wait; fall back to Job.Terminate or os.Process.Kill if
// the process does not exit in time.
func Interrupt(pid int) error {
	if err := windows.GenerateConsoleCtrlEvent(windows.CTRL_BREAK_EVENT, uint32(pid)); err != nil {
		return fmt.Errorf("winproc: GenerateConsoleCtrlEvent(CTRL_BREAK_EVENT, %d): %w", pid, err)
	}
	return nil
}

// WorkerSysProcAttr returns the SysProcAttr for a normal (attached) worker:
// CREATE_NEW_PROCESS_GROUP, so that Interrupt can target it (and only it and
// its descendants) and so that a Ctrl+C typed at the host's console is not
// delivered to it. It shares the host's console. Use it with Job.Start to
// also tie its lifetime to the host.
func WorkerSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{CreationFlags: windows.CREATE_NEW_PROCESS_GROUP}
}

// DetachedSysProcAttr returns the SysProcAttr for a detached worker, meant to
// outlive the host: DETACHED_PROCESS (no console, so closing the host's
// console does not kill it, and Interrupt cannot reach it), and
// CREATE_NEW_PROCESS_GROUP, plus CREATE_BREAKAWAY_FROM_JOB when it is
// allowed (see BreakawayAllowed), so that it is not in the job the host may
// be in (a CI system's, a service manager's, a terminal's) and does not die
// with it.
//
// If the host is in a job without JOB_OBJECT_LIMIT_BREAKAWAY_OK, passing
// CREATE_BREAKAWAY_FROM_JOB would make CreateProcess fail with
// ERROR_ACCESS_DENIED, so the flag is left out: with
// JOB_OBJECT_LIMIT_SILENT_BREAKAWAY_OK the worker is outside the job anyway;
// otherwise it stays in that job, since nothing inside a job can get out of
// it then. If the host is not in a job, the flag is included and has no
// effect.
//
// Do not start a detached worker with Job.Start: that would put it in the
// host's kill-on-close job.
func DetachedSysProcAttr() *syscall.SysProcAttr {
	flags := uint32(windows.DETACHED_PROCESS | windows.CREATE_NEW_PROCESS_GROUP)
	if ok, err := BreakawayAllowed(); err == nil && ok {
		flags |= windows.CREATE_BREAKAWAY_FROM_JOB
	}
	return &syscall.SysProcAttr{CreationFlags: flags}
}

// BreakawayAllowed reports whether a child of the current process may be
// created with CREATE_BREAKAWAY_FROM_JOB: true if the process is in no job
// (the flag then has no effect), or if its innermost job has
// JOB_OBJECT_LIMIT_BREAKAWAY_OK. A job with only
// JOB_OBJECT_LIMIT_SILENT_BREAKAWAY_OK reports false: its children are
// outside it without the flag. With nested jobs Windows may also require the
// enclosing jobs to allow breakaway; only the innermost one is checked.
func BreakawayAllowed() (bool, error) {
	in, err := isProcessInJob(windows.CurrentProcess(), 0)
	if err != nil {
		return false, err
	}
	if !in {
		return true, nil
	}
	var info windows.JOBOBJECT_EXTENDED_LIMIT_INFORMATION
	if err := windows.QueryInformationJobObject(0, windows.JobObjectExtendedLimitInformation,
		uintptr(unsafe.Pointer(&info)), uint32(unsafe.Sizeof(info)), nil); err != nil {
		return false, fmt.Errorf("winproc: QueryInformationJobObject: %w", err)
	}
	return info.BasicLimitInformation.LimitFlags&windows.JOB_OBJECT_LIMIT_BREAKAWAY_OK != 0, nil
}
