//go:build !unix && !windows

package worker_test

// lifecycleRole has no extra roles here: the lifecycle tests use POSIX
// signals and /proc (lifecycle_test.go, Unix) or job objects and process
// handles (lifecycle_windows_test.go, Windows).
func lifecycleRole() {}
