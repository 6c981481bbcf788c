// Package transport is the local socket between a host and its worker: a
// Unix domain socket in a directory that only the current user can enter,
// or on Windows a named pipe that only the current user can open (through
// internal/npipe). It makes the address, listens, dials, removes what a dead
// worker left, and checks who is at the other end of a connection.
//
// It knows nothing of the protocol spoken over the connections.
package transport

import "errors"

// ErrOtherUser is returned by CheckPeer for a peer that runs as another
// user than this process.
var ErrOtherUser = errors.New("the peer runs as another user")
