//go:build !unix && !windows

package worker_test

import "errors"

// The lifecycle tests need POSIX signals and /proc (lifecycle_unix_test.go)
// or job objects and process handles (lifecycle_windows_test.go); here only
// the lifecycle roles' hooks are stubbed.

func lcTermSelf() error { return errors.New("no SIGTERM here") }

func lcIgnoreTerm() {}
