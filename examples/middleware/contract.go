package main

import "github.com/isolated-workers/worker"

// The message contract.
//
// When the host and the worker are separate programs, put the contract in a
// package of its own that both import (say, example.com/app/contract), so
// that both compile against the same types. This example is a single binary
// that plays both roles, so package main is that shared package.

// GreetRequest is the payload of a greeting. TraceID is not set by the
// caller: the host's middleware adds it on the way out.
type GreetRequest struct {
	Name    string `json:"name"`
	TraceID string `json:"traceId,omitempty"`
}

// GreetReply is the result. ServedBy is not set by the handler: the
// worker's middleware adds it on the way out.
type GreetReply struct {
	Greeting string `json:"greeting"`
	TraceID  string `json:"traceId,omitempty"`
	ServedBy string `json:"servedBy,omitempty"`
}

// Greet is sent by the host.
var Greet = worker.Define[GreetRequest, GreetReply]("greet")
