package proc

import (
	"io"
	"os"
)

// LogStderr returns a writer to this process's standard error for its log
// records: os.Stderr, since on Windows a write to a pipe whose reader is
// gone only fails.
func LogStderr() io.Writer { return os.Stderr }
