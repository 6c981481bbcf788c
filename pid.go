package worker

import "os"

var pid = os.Getpid()
