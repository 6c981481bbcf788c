// Package main must not compile: it calls a message with the wrong
// payload type. TestContractIsCheckedByTheCompiler builds it.
package main

import (
	"context"

	"github.com/isolated-workers/worker"
)

type PingRequest struct{ Message string }
type PingReply struct{ Message string }

var Ping = worker.Define[PingRequest, PingReply]("ping")

func main() {
	var w *worker.Worker
	_, _ = worker.Call(context.Background(), w, Ping, "not a PingRequest")
}
