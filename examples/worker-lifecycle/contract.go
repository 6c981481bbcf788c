package main

import "github.com/isolated-workers/worker"

// The message contract.
//
// When the host and the worker are separate programs, put the contract in a
// package of its own that both import (say, example.com/app/contract), so
// that both compile against the same types. This example is a single binary
// that plays both roles, so package main is that shared package.

var (
	// Count increments a counter kept in the worker's memory and returns it.
	Count = worker.Define[worker.Void, int]("count")
	// Work works for the given number of milliseconds and says so.
	Work = worker.Define[int, string]("work")
	// AwaitWork returns once a Work call has begun.
	AwaitWork = worker.Define[worker.Void, worker.Void]("awaitWork")
)
