// Package npipe is the Windows named-pipe transport used between a host and
// its workers.
//
// It is a thin layer over github.com/Microsoft/go-winio that adds what the
// worker protocol needs:
//
//   - [Listen] creates a byte-stream pipe whose security descriptor admits only
//     the user of the current process (built from the process token's user
//     SID), and works around a go-winio listener bug that shows up on Wine
//     and on Windows 7 / Server 2008 R2 (see Listen).
//   - [Dial] connects with context cancellation.
//   - [NewPath] makes a fresh, unguessable pipe path of the form
//     \\.\pipe\worker-<uuid>.
//
// # Differences under Wine
//
// The tests run under Wine 8.0 in CI. Besides the go-winio listener bug that
// Listen works around, Wine differs from Windows in ways callers should not
// rely on either way:
//
//   - Under Wine go-winio's pipes come out message-type: a client's
//     GetNamedPipeInfo reports PIPE_TYPE_MESSAGE although go-winio asks for
//     a byte-type pipe (apparently Wine takes the
//     FILE_PIPE_REJECT_REMOTE_CLIENTS bit, which go-winio always passes in
//     the pipe-type argument, for the message-type bit). Reads are still in
//     byte mode and data still flows as a byte stream. Consequences: the
//     client side's connection is go-winio's message-mode type, which has a
//     working CloseWrite (on Windows neither side has one); and a zero-length
//     Write by the server is delivered as an empty message that the client
//     reads as io.EOF, for good. (What a zero-length WriteFile does on a
//     byte-mode pipe on Windows is not verified here.) So: never Write zero
//     bytes, and do not depend on CloseWrite.
//   - Wine does not refuse a second Listen on an existing pipe name.
//
// Everything except this file is built only on Windows; on other platforms
// the package is empty.
package npipe
