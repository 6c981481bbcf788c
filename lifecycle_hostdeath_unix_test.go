//go:build unix

package worker_test

import (
	"bytes"
	"context"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/isolated-workers/worker"
)

// lcDeath is a way for a host to die.
type lcDeath struct {
	name string
	sig  os.Signal
}

// lcHostDeaths: SIGKILL, and the default actions of SIGTERM and SIGINT
// (the host role handles neither).
var lcHostDeaths = []lcDeath{{"SIGKILL", syscall.SIGKILL}, {"SIGTERM", syscall.SIGTERM}, {"SIGINT", syscall.SIGINT}}

// lcDirLeft reports whether the directory of a socket is still there.
func lcDirLeft(addr string) bool {
	_, err := os.Lstat(filepath.Dir(addr))
	return err == nil
}

// lcLeftInGroups lists the live processes in the process groups, through
// /proc (none where there is no /proc).
func lcLeftInGroups(groups []int) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')') // the command name may hold anything
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:])) // state, ppid, pgrp, ...
		if len(f) < 3 || f[0] == "Z" || f[0] == "X" {
			continue
		}
		if pgrp, _ := strconv.Atoi(f[2]); slices.Contains(groups, pgrp) {
			out = append(out, pid)
		}
	}
	return out
}

// LCTermSeen, in an lc worker started with envLCSignals set, waits for a
// SIGWINCH, then reports whether a SIGTERM came before it.
var LCTermSeen = worker.Define[worker.Void, bool]("lcTermSeen")

// envLCSignals set: the lc worker records SIGTERM and SIGWINCH from its
// start, for LCTermSeen.
const envLCSignals = "IW_LC_SIGNALS"

// lcRegisterSignals adds LCTermSeen to an lc worker.
func lcRegisterSignals(s *worker.Server) {
	term, winch := make(chan os.Signal, 1), make(chan os.Signal, 1)
	if os.Getenv(envLCSignals) != "" {
		signal.Notify(term, syscall.SIGTERM)
		signal.Notify(winch, syscall.SIGWINCH)
	}
	worker.Handle(s, LCTermSeen, func(ctx context.Context, _ worker.Void) (bool, error) {
		select {
		case <-winch:
		case <-ctx.Done():
			return false, ctx.Err()
		}
		select {
		case <-term:
			return true, nil
		default:
			return false, nil
		}
	})
}
