package main

import "github.com/isolated-workers/worker"

// The message contract.
//
// When the host and the worker are separate programs, put the contract in a
// package of its own that both import (say, example.com/app/contract), so
// that both compile against the same types. Here one binary plays the
// worker and both hosts, so package main is that shared package.

// Hello is what a host says.
type Hello struct {
	From string `json:"from"`
}

// HelloReply is the worker's answer, with what it remembers.
type HelloReply struct {
	Message string `json:"message"`
	Calls   int    `json:"calls"` // calls served so far, by any host
	Pid     int    `json:"pid"`
}

// SayHello greets the worker.
var SayHello = worker.Define[Hello, HelloReply]("sayHello")
