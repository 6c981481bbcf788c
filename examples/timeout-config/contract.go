package main

import "github.com/isolated-workers/worker"

// The message contract.
//
// When the host and the worker are separate programs, put the contract in a
// package of its own that both import (say, example.com/app/contract), so
// that both compile against the same types. This example is a single binary
// that plays both roles, so package main is that shared package.

// WorkRequest asks the worker to work for Ms milliseconds. ID names the
// call in the worker's reports.
type WorkRequest struct {
	ID string `json:"id"`
	Ms int    `json:"ms"`
}

// WorkResult is the result of finished work.
type WorkResult struct {
	ID string `json:"id"`
}

// Observation is what a handler saw when its context ended.
type Observation struct {
	ID          string `json:"id"`
	CtxErr      string `json:"ctxErr"`
	HadDeadline bool   `json:"hadDeadline"`
}

var (
	// Work works for a while, or until its context ends.
	Work = worker.Define[WorkRequest, WorkResult]("work")
	// Report is the same kind of work, but a slow one by nature: the host
	// gives it a longer timeout than the others.
	Report = worker.Define[WorkRequest, WorkResult]("report")
	// AwaitStarted returns once the work call with the given ID has begun.
	AwaitStarted = worker.Define[string, worker.Void]("awaitStarted")
	// LastCancellation returns what the next interrupted handler saw.
	LastCancellation = worker.Define[worker.Void, Observation]("lastCancellation")
)
