// Package main must not compile: it takes a message's result as the wrong
// type. TestContractIsCheckedByTheCompiler builds it.
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
	var s string
	s, _ = worker.Call(context.Background(), w, Ping, PingRequest{})
	_ = s
}
