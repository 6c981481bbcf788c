// Package worker runs code in isolated worker processes and talks to them
// with type-safe request/response messages over a local socket: a Unix
// domain socket, or a named pipe on Windows.
//
// A contract, declared once in a package that both sides import, names
// each message with its payload and result types:
//
//	var Ping = worker.Define[PingRequest, PingReply]("ping")
//
// The worker registers a handler per message and serves:
//
//	srv := worker.NewServer(nil)
//	worker.Handle(srv, Ping, func(ctx context.Context, p PingRequest) (PingReply, error) {
//		return PingReply{Message: "pong: " + p.Message}, nil
//	})
//	worker.Main(srv) // serves and exits if a host started this process
//
// The host spawns it, with exec.Cmd semantics, and calls it:
//
//	w, err := worker.Spawn(ctx, exec.Command("./my-worker"), nil)
//	...
//	defer w.Close()
//	reply, err := worker.Call(ctx, w, Ping, PingRequest{Message: "hello"})
//
// Calls from many goroutines share one connection; the worker runs them
// concurrently and replies in completion order. A handler's error reaches
// the caller as a *RemoteError (match coded sentinels with errors.Is, see
// NewError); a worker that dies fails the calls in flight at once with a
// *CrashError, or they are retried on a fresh worker (CrashPolicy).
// Cancelling a call's context cancels the handler's context in the worker.
//
// # Lifecycle and cleanup
//
// Close stops the worker (asks, then kills its process group or job after
// a grace period), reaps it and removes its socket. A worker that is not
// Detached also exits by itself when its host dies, however it dies: on
// Linux by a parent-death signal, on every Unix through an inherited
// lifeline pipe, on Windows through a kill-on-close job object. Workers
// started with Options.Detached outlive their host; another process can
// Attach to them with the Worker's Token.
//
// # Wire protocol
//
// The default serializer, JSON, speaks the wire protocol of the TypeScript
// library isolated-workers: newline-delimited JSON objects
// {"type","tx","payload"}, replies typed "<type>Result" or "<type>Error",
// and the ISOLATED_WORKERS_STARTUP_DATA environment variable. A Go host can
// drive a Node worker and the reverse. Extensions (a handshake that checks
// the serializer and a per-spawn secret, cancellation, deadlines, graceful
// shutdown) are negotiated, so a peer that speaks only the base protocol
// keeps working. Binary is a faster, length-prefixed serializer for
// Go-to-Go use.
//
// # Layers
//
// Spawn and Serve (or Main) are sugar: a Client works over any net.Conn
// whose other end is served by Server.ServeConn, with no process at all.
package worker
