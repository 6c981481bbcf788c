//go:build !unix

package worker_test

// lifecycleRole has no extra roles here: the lifecycle tests of
// lifecycle_test.go use POSIX signals and /proc, and run on Unix only.
func lifecycleRole() {}
