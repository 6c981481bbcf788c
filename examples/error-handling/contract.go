package main

import "github.com/isolated-workers/worker"

// The message contract, with the errors that are part of it.
//
// When the host and the worker are separate programs, put the contract in a
// package of its own that both import (say, example.com/app/contract), so
// that both compile against the same types and the same sentinel errors.
// This example is a single binary that plays both roles, so package main is
// that shared package.

// User is what the worker knows about a user.
type User struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// GetUserRequest asks for one user.
type GetUserRequest struct {
	ID string `json:"id"`
}

var (
	// GetUser looks a user up; it fails with ErrUserNotFound.
	GetUser = worker.Define[GetUserRequest, User]("getUser")
	// Validate rejects an empty string with a plain error (no code).
	Validate = worker.Define[string, worker.Void]("validate")
	// Explode makes the handler panic.
	Explode = worker.Define[string, worker.Void]("explode")
	// Unregistered is part of the contract, but this worker has no handler
	// for it (say, the worker binary is older than the host).
	Unregistered = worker.Define[string, string]("unregistered")
)

// ErrUserNotFound is a sentinel error with a stable code. The worker returns
// it (usually wrapped); the host matches the *worker.RemoteError it receives
// with errors.Is, because both carry the code E_USER_NOT_FOUND.
var ErrUserNotFound = worker.NewError("E_USER_NOT_FOUND", "user not found")
