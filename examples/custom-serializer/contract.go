package main

import "github.com/isolated-workers/worker"

// The message contract.
//
// When the host and the worker are separate programs, put the contract in a
// package of its own that both import (say, example.com/app/contract), so
// that both compile against the same types. A custom serializer belongs
// there too: both sides must use the same one. This example is a single
// binary that plays both roles, so package main is that shared package.

// StatsRequest asks for statistics over some numbers.
type StatsRequest struct {
	Values []float64 `json:"values" cbor:"values"`
}

// Stats is the result of StatsRequest.
type Stats struct {
	Count int     `json:"count" cbor:"count"`
	Sum   float64 `json:"sum" cbor:"sum"`
	Mean  float64 `json:"mean" cbor:"mean"`
}

// Checksum is the result of a checksum request.
type Checksum struct {
	Bytes int    `json:"bytes" cbor:"bytes"`
	CRC32 uint32 `json:"crc32" cbor:"crc32"`
}

var (
	// ComputeStats works with any serializer.
	ComputeStats = worker.Define[StatsRequest, Stats]("computeStats")
	// ComputeChecksum takes raw bytes: with worker.Binary they travel as
	// they are, without the base64 that JSON needs.
	ComputeChecksum = worker.Define[[]byte, Checksum]("computeChecksum")
)
