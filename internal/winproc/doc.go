// Package winproc holds the Windows process-control pieces used by the
// worker host: Job Objects (so that a worker and everything it spawns can be
// killed as a tree, and die with the host), CTRL_BREAK delivery as a
// graceful-stop request, and the process-creation flags for normal and
// detached workers.
//
// Everything except this file is built only on Windows; on other platforms
// the package is empty.
package winproc
