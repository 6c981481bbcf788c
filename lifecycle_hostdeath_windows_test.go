//go:build windows

package worker_test

import (
	"os"

	"github.com/isolated-workers/worker"
)

// lcDeath is a way for a host to die.
type lcDeath struct {
	name string
	sig  os.Signal
}

// lcHostDeaths: TerminateProcess, which is all there is.
var lcHostDeaths = []lcDeath{{"TerminateProcess", os.Kill}}

// lcDirLeft: a named pipe has no directory.
func lcDirLeft(string) bool { return false }

// lcLeftInGroups: the job, which the test cannot see once it is gone,
// is the group; every process of the test is watched by handle.
func lcLeftInGroups([]int) []int { return nil }

// lcRegisterSignals: there are no signals to watch on Windows.
func lcRegisterSignals(*worker.Server) {}
