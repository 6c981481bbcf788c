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
// Beyond one call, one reply: a Pool runs calls on many supervised workers
// behind the same Caller; Stream (with DefineStream and HandleStream)
// returns a sequence of items with flow control; Report and WithProgress
// carry a call's progress; Host lets a handler call its host back.
//
// # Supervision
//
// A worker whose handler does not return after its call was cancelled, or
// that stops answering, is declared stuck (Options.StuckTimeout): its
// goroutines go into the *CrashError (ErrStuck) and it is killed. Done and
// Err tell when a Worker is finished and why; Options.OnEvent follows its
// life (connected, disconnected, stuck, crashed, restarted).
//
// # Lifecycle and cleanup
//
// Close stops the worker (asks, then kills its process group or job after
// a grace period), reaps it and removes its socket. A worker that is not
// Detached also ends, with the processes it started, when its host dies,
// however it dies and whatever its handlers are doing: on Unix it learns it
// through an inherited lifeline pipe and kills its own process group, on
// Windows a kill-on-close job object ends them all. Workers
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
// Spawn and Server.Serve (or Main) are sugar: a Client works over any
// net.Conn whose other end is served by Server.ServeConn, with no process
// at all. To serve a contract in-process (what the TypeScript library calls
// its worker_threads driver), give the two ends of a net.Pipe to
// Server.ServeConn and NewClient; see the example of Server.ServeConn.
// docs/architecture.md in the repository shows the packages beneath.
//
// # Performance
//
// A small call costs about 1.3 times a raw length-prefixed echo over the
// same socket, and a 1 MiB []byte under Binary about 2 times (bench/ in the
// repository measures both against the raw floor and against peers). What
// makes it so:
//
//   - Requests of a message type whose handler has been returning within
//     about ten microseconds are run one after another by the goroutine
//     that reads them, which saves a goroutine switch and a thread wake-up
//     per call. Should one of them block, the requests behind it wait about
//     two milliseconds at most, once: from then on that type's requests
//     each get a goroutine again, until it is quick again.
//   - Frames written while another write is under way (replies of
//     concurrent handlers, requests of concurrent callers) are queued and
//     go out together, in one system call.
//   - A []byte payload over 32 KiB under Binary is written after its frame's
//     head, never copied; one read into memory of its own is handed to the
//     handler or caller without a copy.
//   - Payloads of plain structs under JSON are encoded and decoded through
//     a plan made once per type, without encoding/json's allocations, and
//     a []byte's base64 without its generic scanner (3-4 times faster at
//     1 MiB).
//   - A stream's items are encoded into an open batch, with no allocation
//     per item, which the connection's writer takes as one frame when it
//     is about to write: a handler faster than the connection sends few
//     frames of many items (a stream of ints runs at about 10 million
//     items a second, 10-20 times gRPC streaming's rate), and one slower
//     than it has each item written at once.
package worker
