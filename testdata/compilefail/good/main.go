// Package main compiles: the control case of
// TestContractIsCheckedByTheCompiler, so that a broken build setup cannot
// pass for a type error.
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
	worker.Handle(s, Ping, func(ctx context.Context, p PingRequest) (PingReply, error) { return PingReply{}, nil })
	var w *worker.Worker
	var r PingReply
	r, _ = worker.Call(context.Background(), w, Ping, PingRequest{})
	_ = r
}
