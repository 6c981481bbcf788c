package main

import "github.com/isolated-workers/worker"

// The message contract.
//
// When the host and the worker are separate programs, put the contract in a
// package of its own that both import (say, example.com/app/contract), so
// that both compile against the same types. This example is a single binary
// that plays both roles, so package main is that shared package.

// Job is a unit of work. The worker crashes the first time it sees a job
// with a given MarkerDir (it leaves a file there to remember), and handles
// the job on later attempts.
type Job struct {
	MarkerDir string `json:"markerDir"`
	Input     string `json:"input"`
}

// Output is the result of a job, with the pid of the process that did it.
type Output struct {
	Result string `json:"result"`
	Pid    int    `json:"pid"`
}

// Process runs a job.
var Process = worker.Define[Job, Output]("process")
