//go:build !linux

package worker_test

import "testing"

// TestSecurityOtherUIDRefused is Linux-only (security_linux_test.go): it
// needs SO_PEERCRED and ambient capabilities.
func TestSecurityOtherUIDRefused(t *testing.T) {
	skipRole(t, "peercred-dial", "SO_PEERCRED and ambient capabilities are Linux-only")
}
