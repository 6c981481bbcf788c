package worker

import (
	"context"
	"log/slog"
	"runtime"
	"time"
)

// logger writes the library's records to a user's *slog.Logger. It is
// silent when there is none, and it never lets a panicking handler reach
// the caller: logging must not break a call.
type logger struct {
	h     slog.Handler
	level slog.Leveler
}

func newLogger(l *slog.Logger, level slog.Leveler) *logger {
	lg := &logger{level: orDefault[slog.Leveler](level, slog.LevelInfo)}
	if l != nil {
		lg.h = l.Handler()
	}
	return lg
}

func (l *logger) enabled(level slog.Level) bool {
	return l != nil && l.h != nil && level >= l.level.Level()
}

func (l *logger) log(level slog.Level, msg string, args ...any) {
	if !l.enabled(level) {
		return
	}
	defer func() { _ = recover() }() // a broken logger must not break a call
	ctx := context.Background()
	if !l.h.Enabled(ctx, level) {
		return
	}
	var pcs [1]uintptr
	runtime.Callers(3, pcs[:])
	r := slog.NewRecord(time.Now(), level, msg, pcs[0])
	r.Add(args...)
	_ = l.h.Handle(ctx, r)
}

func (l *logger) debug(msg string, args ...any) { l.log(slog.LevelDebug, msg, args...) }
func (l *logger) info(msg string, args ...any)  { l.log(slog.LevelInfo, msg, args...) }
func (l *logger) warn(msg string, args ...any)  { l.log(slog.LevelWarn, msg, args...) }
