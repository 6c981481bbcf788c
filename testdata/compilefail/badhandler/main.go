// Package main must not compile: its handler returns the wrong result
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
	s := worker.NewServer(nil)
	worker.Handle(s, Ping, func(ctx context.Context, p PingRequest) (string, error) { return "", nil })
}
