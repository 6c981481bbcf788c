//go:build windows

package npipe

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/Microsoft/go-winio"
	"golang.org/x/sys/windows"
)

// PathPrefix is the prefix of every path returned by NewPath.
const PathPrefix = `\\.\pipe\worker-`

// NewPath returns a fresh pipe path `\\.\pipe\worker-<uuid>` with a random
// (version 4) UUID. The randomness is what keeps other processes from
// pre-creating or squatting on the name; the security descriptor set by
// Listen is what keeps other users out.
func NewPath() (string, error) {
	var u [16]byte
	if _, err := rand.Read(u[:]); err != nil {
		return "", fmt.Errorf("npipe: generating pipe name: %w", err)
	}
	u[6] = u[6]&0x0f | 0x40 // version 4
	u[8] = u[8]&0x3f | 0x80 // RFC 4122 variant
	return fmt.Sprintf("%s%x-%x-%x-%x-%x", PathPrefix, u[0:4], u[4:6], u[6:8], u[8:10], u[10:16]), nil
}

// CurrentUserSDDL returns the SDDL of the security descriptor that Listen
// puts on its pipes: owner = the current process token's user SID, and a
// protected DACL with a single ACE granting GENERIC_ALL to that same SID.
//
// Nobody else is admitted: not other users, not Administrators, not SYSTEM,
// not the anonymous logon (the default named-pipe DACL would grant Everyone
// and Anonymous read access). The owner is set explicitly because for an
// elevated administrator the token's default owner is BUILTIN\Administrators,
// and an owner may always rewrite the DACL.
func CurrentUserSDDL() (string, error) {
	tu, err := windows.GetCurrentProcessToken().GetTokenUser()
	if err != nil {
		return "", fmt.Errorf("npipe: reading process token user: %w", err)
	}
	sid := tu.User.Sid.String()
	if sid == "" {
		return "", errors.New("npipe: cannot format the process token user SID")
	}
	return "O:" + sid + "D:P(A;;GA;;;" + sid + ")", nil
}

// Listen creates a named pipe listener at path, which must be of the form
// \\.\pipe\<name> and must not exist yet (as returned by NewPath).
//
// The pipe is in byte mode (go-winio's MessageMode is off), rejects remote
// clients (go-winio always sets FILE_PIPE_REJECT_REMOTE_CLIENTS) and carries
// the security descriptor from CurrentUserSDDL.
//
// The returned listener is go-winio's own; the connections it accepts are
// go-winio's connections, unwrapped, so any optional method they have (such
// as CloseWrite on message-mode pipes) stays reachable by type assertion. In
// byte mode go-winio's connections do not implement CloseWrite; see
// CloseWrite in this package.
//
// Call Listen before handing path to any client if you can (see
// claimFirstInstance).
//
// A client that dials path while Listen runs (as a worker's host does: it
// polls a path it published before the worker listens) may reach the first
// instance before the workaround's probe does, on the platforms where that
// instance is connectable (see claimFirstInstance). Listen then closes the
// listener, which breaks that client's connection so that it dials again,
// and listens again.
func Listen(path string) (net.Listener, error) {
	for attempt := 1; ; attempt++ {
		l, claimed, err := listen(path, true)
		if err != nil || claimed || attempt == maxListenAttempts || !firstInstanceConnectable() {
			return l, err
		}
		l.Close() // a client holds the first instance, which nobody would serve
	}
}

// maxListenAttempts bounds Listen's attempts to claim the first instance.
const maxListenAttempts = 10

var (
	connectableOnce sync.Once
	connectable     bool
)

// firstInstanceConnectable reports whether go-winio's first instance is
// connectable here (Wine, Windows 7: the bug that claimFirstInstance works
// around). It finds out once per process, with a pipe of its own that no
// client knows of: there, the probe connects exactly when it is.
func firstInstanceConnectable() bool {
	connectableOnce.Do(func() {
		path, err := NewPath()
		if err != nil {
			return
		}
		l, claimed, err := listen(path, true)
		if err != nil {
			return
		}
		l.Close()
		connectable = claimed
	})
	return connectable
}

// listen is Listen with the workaround optional (the tests turn it off to
// show the bug); it also reports whether the workaround's probe connected.
func listen(path string, claim bool) (l net.Listener, claimed bool, err error) {
	sddl, err := CurrentUserSDDL()
	if err != nil {
		return nil, false, err
	}
	l, err = winio.ListenPipe(path, &winio.PipeConfig{
		SecurityDescriptor: sddl,
		MessageMode:        false,
	})
	if err != nil {
		return nil, false, fmt.Errorf("npipe: listen %s: %w", path, err)
	}
	if claim {
		claimed = claimFirstInstance(path)
	}
	return l, claimed, nil
}

// claimFirstInstance works around go-winio issues #173 and #313, which also
// happen under Wine.
//
// winio.ListenPipe creates the first pipe instance (the one that owns the
// name and the security descriptor) with SYNCHRONIZE access only. On current
// Windows the named-pipe file system keeps such an instance in a state that
// no client can connect to, so every client reaches one of the instances
// that go-winio's listener goroutine creates (one per Accept) and waits on
// with ConnectNamedPipe. Windows 7 / Server 2008 R2 and Wine do not have
// that special case: the idle first instance is a listening instance like
// any other, so the first client opens *it*, its CreateFile succeeds, and
// then nothing ever reads what it writes while the server's first Accept
// blocks forever on the instance nobody reached.
//
// The fix is to connect to the pipe once ourselves, right after ListenPipe
// and before any real client knows the (fresh, random) path, and to close
// that connection at once:
//
//   - Where the first instance is connectable (Wine, Windows 7), our probe is
//     the client that lands on it. Closing the probe leaves that instance in
//     the "closing" state, which no later client can connect to, so later
//     clients reach the instances that Accept waits on. go-winio keeps the
//     first instance's handle open until the listener is closed (it owns the
//     name), so the instance is never reused.
//   - Where it is not connectable (Windows 8 and later), CreateFile fails
//     (with ERROR_PIPE_BUSY, there being no other instance yet) and we do
//     nothing at all, so behaviour there is exactly go-winio's. Any error is
//     ignored for the same reason: the probe can only change state when it
//     succeeds, and it only succeeds where the bug exists.
//
// The probe asks for no data access (desired access 0) and anonymous
// impersonation, so the server side learns nothing and grants nothing; it
// is subject to the pipe's DACL like any other client, which admits the
// current user, i.e. us.
//
// The only race is with a genuine client that connects between ListenPipe
// and the probe. It cannot know the path yet if Listen is called before the
// path is published; but a worker listens on a path its host published
// before starting it, and the host polls it, so Listen detects a lost race
// and listens again (see Listen).
//
// It reports whether the probe connected, i.e. whether the workaround was
// needed.
func claimFirstInstance(path string) bool {
	p, err := windows.UTF16PtrFromString(path)
	if err != nil {
		return false
	}
	h, err := windows.CreateFile(p,
		0, // no read/write access needed to occupy the instance
		0,
		nil,
		windows.OPEN_EXISTING,
		windows.SECURITY_SQOS_PRESENT|windows.SECURITY_ANONYMOUS,
		0)
	if err != nil {
		return false
	}
	windows.CloseHandle(h)
	return true
}

// Dial connects to the pipe at path. While all instances of the pipe are
// busy (the server is between two Accept calls) it retries until ctx is done,
// as go-winio's DialPipeContext does; if the pipe does not exist it fails at
// once with an error wrapping ERROR_FILE_NOT_FOUND. If ctx is done, the error
// is ctx.Err() itself (so errors.Is(err, context.Canceled) and
// errors.Is(err, context.DeadlineExceeded) work).
func Dial(ctx context.Context, path string) (net.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c, err := winio.DialPipeContext(ctx, path)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil && errors.Is(err, ctxErr) {
			return nil, ctxErr
		}
		return nil, err
	}
	return c, nil
}

// CloseWrite half-closes c if it supports that (it has a CloseWrite() error
// method, as go-winio's message-mode pipe connections and *net.TCPConn do)
// and returns errors.ErrUnsupported otherwise. Connections from Listen and
// Dial are byte-mode pipes, on which go-winio has no CloseWrite: a byte-mode
// named pipe has no way to signal end-of-stream other than closing the
// handle, so a protocol over it must frame its own end of stream.
func CloseWrite(c net.Conn) error {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}
