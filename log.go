package worker

import (
	"bytes"
	"context"
	"encoding/json"
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
	return l != nil && l.h != nil && level >= l.level.Level() && l.handlerEnabled(level)
}

func (l *logger) handlerEnabled(level slog.Level) bool {
	defer func() { _ = recover() }() // a broken logger must not break a call
	return l.h.Enabled(context.Background(), level)
}

func (l *logger) log(level slog.Level, msg string, args ...any) {
	if !l.enabled(level) {
		return
	}
	var pcs [1]uintptr
	runtime.Callers(3, pcs[:])
	r := slog.NewRecord(time.Now(), level, msg, pcs[0])
	r.Add(args...)
	l.handle(r)
}

func (l *logger) handle(r slog.Record) {
	defer func() { _ = recover() }()
	_ = l.h.Handle(context.Background(), r)
}

func (l *logger) debug(msg string, args ...any) { l.log(slog.LevelDebug, msg, args...) }
func (l *logger) info(msg string, args ...any)  { l.log(slog.LevelInfo, msg, args...) }
func (l *logger) warn(msg string, args ...any)  { l.log(slog.LevelWarn, msg, args...) }

// at logs at level: for records whose level is read from elsewhere.
func (l *logger) at(level slog.Level, msg string, args ...any) { l.log(level, msg, args...) }

// forward logs a record that another process made (a worker's).
func (l *logger) forward(r slog.Record) {
	if l.enabled(r.Level) {
		l.handle(r)
	}
}

// parseRecord parses line as a record written by slog's JSON handler: one
// JSON object with a "time" (RFC 3339), a "level" (as slog.Level writes
// it) and a "msg", all strings; its other keys are the record's
// attributes, in order (objects are groups), after first. Anything else,
// JSON or not, is not a record.
func parseRecord(line []byte, first ...slog.Attr) (slog.Record, bool) {
	var r slog.Record
	if len(line) == 0 || line[0] != '{' || !json.Valid(line) {
		return r, false
	}
	d := json.NewDecoder(bytes.NewReader(line))
	d.UseNumber()
	d.Token() // {
	var t time.Time
	var level slog.Level
	var msg string
	attrs := first[:len(first):len(first)] // appending copies
	const haveTime, haveLevel, haveMsg = 1, 2, 4
	have := 0
	for d.More() {
		a := jsonAttr(d)
		s, isString := a.Value.Any().(string)
		var err error
		switch {
		case a.Key == "time" && have&haveTime == 0:
			t, err = time.Parse(time.RFC3339Nano, s)
			have |= haveTime
		case a.Key == "level" && have&haveLevel == 0:
			err = level.UnmarshalText([]byte(s))
			have |= haveLevel
		case a.Key == "msg" && have&haveMsg == 0:
			msg = s
			have |= haveMsg
		default:
			attrs = append(attrs, a)
			continue
		}
		if !isString || err != nil {
			return r, false
		}
	}
	if have != haveTime|haveLevel|haveMsg {
		return r, false
	}
	r = slog.NewRecord(t, level, msg, 0)
	r.AddAttrs(attrs...)
	return r, true
}

// jsonAttr reads the next key and value of an object from d, which holds
// valid JSON, as an attribute: an object is a group (its keys in order), a
// whole number an int64, another number a float64, an array or null what
// encoding/json makes of it.
func jsonAttr(d *json.Decoder) slog.Attr {
	k, _ := d.Token()
	key, _ := k.(string)
	tok, _ := d.Token()
	switch v := tok.(type) {
	case json.Delim:
		if v == '{' {
			var group []slog.Attr
			for d.More() {
				group = append(group, jsonAttr(d))
			}
			d.Token() // }
			return slog.Attr{Key: key, Value: slog.GroupValue(group...)}
		}
		list := []any{}
		for d.More() {
			var x any
			d.Decode(&x)
			list = append(list, x)
		}
		d.Token() // ]
		return slog.Any(key, list)
	case json.Number:
		if i, err := v.Int64(); err == nil {
			return slog.Int64(key, i)
		}
		f, _ := v.Float64()
		return slog.Float64(key, f)
	case string:
		return slog.String(key, v)
	case bool:
		return slog.Bool(key, v)
	}
	return slog.Any(key, nil)
}

// lineLevel returns the level of a line that slog's default logger wrote
// through package log with its standard flags ("2026/11/29 08:00:00 WARN
// msg k=v"), or slog's text handler ("time=… level=WARN msg=…"); info for
// any other line.
func lineLevel(line []byte) slog.Level {
	f := bytes.SplitN(line, []byte(" "), 4)
	var word []byte
	switch {
	case len(f) >= 3 && bytes.HasPrefix(f[0], []byte("time=")) && bytes.HasPrefix(f[1], []byte("level=")):
		word = f[1][len("level="):]
	case len(f) >= 4 && stamp(f[0], "dddd/dd/dd") && (stamp(f[1], "dd:dd:dd") || stamp(f[1], "dd:dd:dd.dddddd")):
		word = f[2]
	}
	var level slog.Level
	if len(word) == 0 || !bytes.Equal(word, bytes.ToUpper(word)) || level.UnmarshalText(word) != nil {
		return slog.LevelInfo
	}
	return level
}

// stamp reports whether b has the shape of pattern, where d stands for a
// digit.
func stamp(b []byte, pattern string) bool {
	if len(b) != len(pattern) {
		return false
	}
	for i, c := range b {
		if p := pattern[i]; (p == 'd' && (c < '0' || c > '9')) || (p != 'd' && c != p) {
			return false
		}
	}
	return true
}
