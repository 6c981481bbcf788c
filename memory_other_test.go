//go:build !linux

package worker_test

import "testing"

// TestMemoryWorkerBigRequest is Linux-only (memory_linux_test.go): it
// reads the worker's peak RSS in /proc.
func TestMemoryWorkerBigRequest(t *testing.T) {
	skipRole(t, "mem-worker", "the peak RSS is read in /proc")
}
