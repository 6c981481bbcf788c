//go:build windows

package winproc

import (
	"errors"
	"fmt"
	"os/exec"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/windows"
)

// Job is a Windows Job Object created with JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE:
// when the last handle to it is closed (by Close, or by the system when the
// host process exits or crashes) every process in it is terminated. On
// Windows 8 and later, processes started by a process in the job are in the
// job too (unless they break away, which this job does not allow), so the
// job covers the whole process tree of a worker.
//
// The job handle is not inheritable, so children cannot keep the job alive.
//
// A Job is safe for concurrent use.
type Job struct {
	mu sync.Mutex
	h  windows.Handle // 0 once closed
}

// ErrJobClosed is returned by the methods of a Job after Close.
var ErrJobClosed = errors.New("winproc: job is closed")

// NewJob creates an unnamed job object with JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
// (and no other limits; in particular breakaway is not allowed).
func NewJob() (*Job, error) {
	h, err := windows.CreateJobObject(nil, nil)
	if err != nil {
		return nil, fmt.Errorf("winproc: CreateJobObject: %w", err)
	}
	var info windows.JOBOBJECT_EXTENDED_LIMIT_INFORMATION
	info.BasicLimitInformation.LimitFlags = windows.JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
	if _, err := windows.SetInformationJobObject(h, windows.JobObjectExtendedLimitInformation,
		uintptr(unsafe.Pointer(&info)), uint32(unsafe.Sizeof(info))); err != nil {
		windows.CloseHandle(h)
		return nil, fmt.Errorf("winproc: SetInformationJobObject(KILL_ON_JOB_CLOSE): %w", err)
	}
	return &Job{h: h}, nil
}

// Handle returns the job's handle (0 after Close). It stays owned by the
// Job: do not close it.
func (j *Job) Handle() windows.Handle {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.h
}

// AssignHandle puts the process with the given handle (which needs
// PROCESS_SET_QUOTA and PROCESS_TERMINATE access) into the job.
//
// For a process that is already running this races with the process: any
// child it started before the call is not in the job. Job.Start avoids that.
func (j *Job) AssignHandle(process windows.Handle) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.h == 0 {
		return ErrJobClosed
	}
	if err := windows.AssignProcessToJobObject(j.h, process); err != nil {
		return fmt.Errorf("winproc: AssignProcessToJobObject: %w", err)
	}
	return nil
}

// AssignPID puts the process with the given id into the job (see
// AssignHandle for the race with a running process). It is safe against
// pid reuse as long as the caller holds a handle to the process, as an
// *os.Process does until Wait (or Release) returns.
func (j *Job) AssignPID(pid int) error {
	h, err := windows.OpenProcess(windows.PROCESS_SET_QUOTA|windows.PROCESS_TERMINATE, false, uint32(pid))
	if err != nil {
		return fmt.Errorf("winproc: OpenProcess(%d): %w", pid, err)
	}
	defer windows.CloseHandle(h)
	return j.AssignHandle(h)
}

// Start starts cmd with its initial thread suspended, assigns the new
// process to the job, then resumes it, so the process is in the job before
// it runs a single instruction and therefore before it can start children
// (which then inherit the job).
//
// exec.Cmd passes SysProcAttr.CreationFlags straight to CreateProcess, so
// CREATE_SUSPENDED can be requested through it; what exec.Cmd does not give
// back is the main thread's handle (os.StartProcess closes it), so Start
// resumes the process by enumerating its threads with a Toolhelp32 snapshot
// and calling ResumeThread on each (a suspended new process has exactly one).
// Between cmd.Start and the resume, the process cannot run, so it cannot
// exit and its pid cannot be reused; the *os.Process also holds a handle.
//
// cmd.SysProcAttr is left as the caller set it (Start uses a copy with
// CREATE_SUSPENDED added). If the caller's own flags already contain
// CREATE_SUSPENDED, the process is left suspended for the caller to resume.
//
// If assigning or resuming fails, the process is killed and waited for
// (cmd.Wait), and the error is returned.
func (j *Job) Start(cmd *exec.Cmd) error {
	if j.Handle() == 0 {
		return ErrJobClosed
	}
	orig := cmd.SysProcAttr
	attr := new(syscall.SysProcAttr)
	if orig != nil {
		*attr = *orig
	}
	callerSuspends := attr.CreationFlags&windows.CREATE_SUSPENDED != 0
	attr.CreationFlags |= windows.CREATE_SUSPENDED
	cmd.SysProcAttr = attr
	err := cmd.Start()
	cmd.SysProcAttr = orig
	if err != nil {
		return err
	}
	pid := cmd.Process.Pid
	err = j.AssignPID(pid)
	if err == nil && !callerSuspends {
		err = resumeProcess(uint32(pid))
	}
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return err
	}
	return nil
}

// resumeProcess resumes every thread of process pid.
func resumeProcess(pid uint32) error {
	snap, err := windows.CreateToolhelp32Snapshot(windows.TH32CS_SNAPTHREAD, 0)
	if err != nil {
		return fmt.Errorf("winproc: CreateToolhelp32Snapshot: %w", err)
	}
	defer windows.CloseHandle(snap)
	te := windows.ThreadEntry32{Size: uint32(unsafe.Sizeof(windows.ThreadEntry32{}))}
	resumed := 0
	for err = windows.Thread32First(snap, &te); err == nil; err = windows.Thread32Next(snap, &te) {
		if te.OwnerProcessID != pid {
			continue
		}
		th, err := windows.OpenThread(windows.THREAD_SUSPEND_RESUME, false, te.ThreadID)
		if err != nil {
			return fmt.Errorf("winproc: OpenThread(%d): %w", te.ThreadID, err)
		}
		_, err = windows.ResumeThread(th)
		windows.CloseHandle(th)
		if err != nil {
			return fmt.Errorf("winproc: ResumeThread(%d): %w", te.ThreadID, err)
		}
		resumed++
	}
	if !errors.Is(err, windows.ERROR_NO_MORE_FILES) {
		return fmt.Errorf("winproc: enumerating threads: %w", err)
	}
	if resumed == 0 {
		return fmt.Errorf("winproc: no thread of process %d found to resume", pid)
	}
	return nil
}

// Terminate kills every process in the job (the whole tree of a worker
// started with Start) with the given exit code. The job stays usable.
// TerminateJobObject returns once termination has been initiated; wait for
// the processes themselves (cmd.Wait) to know they are gone.
func (j *Job) Terminate(exitCode uint32) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.h == 0 {
		return ErrJobClosed
	}
	if err := windows.TerminateJobObject(j.h, exitCode); err != nil {
		return fmt.Errorf("winproc: TerminateJobObject: %w", err)
	}
	return nil
}

// Close closes the job handle. Because of JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE,
// this kills every process still in the job, unless another handle to the
// job is open somewhere. Closing twice returns ErrJobClosed.
func (j *Job) Close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.h == 0 {
		return ErrJobClosed
	}
	err := windows.CloseHandle(j.h)
	j.h = 0
	return err
}

var procIsProcessInJob = windows.NewLazySystemDLL("kernel32.dll").NewProc("IsProcessInJob")

// isProcessInJob reports whether process is in job; with job 0, whether it
// is in any job. (golang.org/x/sys/windows has no wrapper for it.)
func isProcessInJob(process, job windows.Handle) (bool, error) {
	if err := procIsProcessInJob.Find(); err != nil {
		return false, err
	}
	var result int32
	r, _, err := procIsProcessInJob.Call(uintptr(process), uintptr(job), uintptr(unsafe.Pointer(&result)))
	if r == 0 {
		return false, fmt.Errorf("winproc: IsProcessInJob: %w", err)
	}
	return result != 0, nil
}
