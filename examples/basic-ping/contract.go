package main

import "github.com/isolated-workers/worker"

// The message contract: the messages the host may send and the types of
// their payloads and results.
//
// When the host and the worker are separate programs, put the contract in a
// package of its own that both import (say, example.com/app/contract): both
// sides then compile against the same declarations, and a change to a
// payload type breaks the build instead of the protocol. This example is a
// single binary that plays both roles, so package main is that shared
// package.

// PingRequest is the payload of a ping.
type PingRequest struct {
	Message string `json:"message"`
}

// PingReply is the result of a ping.
type PingReply struct {
	Message string `json:"message"`
}

// Ping is sent by the host; the worker answers "pong: " + the message.
var Ping = worker.Define[PingRequest, PingReply]("ping")
