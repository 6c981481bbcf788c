//go:build windows

package npipe

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/windows"
)

// The test binary re-executes itself as the client process, the way os/exec's
// tests do; the environment selects the role.
const (
	envChild = "NPIPE_TEST_CHILD"
	envPath  = "NPIPE_TEST_PATH"
)

func TestMain(m *testing.M) {
	switch os.Getenv(envChild) {
	case "":
		os.Exit(m.Run())
	case "echo-client":
		os.Exit(echoClient(os.Getenv(envPath)))
	default:
		fmt.Fprintf(os.Stderr, "unknown %s=%q\n", envChild, os.Getenv(envChild))
		os.Exit(2)
	}
}

// echoClient dials path, sends one line naming its pid, and expects the
// server to send it back upper-cased.
func echoClient(path string) int {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := Dial(ctx, path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "dial:", err)
		return 3
	}
	defer c.Close()
	msg := fmt.Sprintf("hello from pid %d\n", os.Getpid())
	if _, err := io.WriteString(c, msg); err != nil {
		fmt.Fprintln(os.Stderr, "write:", err)
		return 4
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		fmt.Fprintln(os.Stderr, "read:", err)
		return 5
	}
	if got != strings.ToUpper(msg) {
		fmt.Fprintf(os.Stderr, "got %q, want %q\n", got, strings.ToUpper(msg))
		return 6
	}
	return 0
}

// waitTimeout bounds how long any single step may block before the test
// fails instead of hanging. It is a failure deadline, not synchronization.
const waitTimeout = 30 * time.Second

func newListener(t *testing.T) (net.Listener, string) {
	t.Helper()
	path, err := NewPath()
	if err != nil {
		t.Fatal(err)
	}
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, path
}

type acceptResult struct {
	c   net.Conn
	err error
}

func acceptAsync(l net.Listener) <-chan acceptResult {
	ch := make(chan acceptResult, 1)
	go func() {
		c, err := l.Accept()
		ch <- acceptResult{c, err}
	}()
	return ch
}

func awaitAccept(t *testing.T, ch <-chan acceptResult) net.Conn {
	t.Helper()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("Accept: %v", r.err)
		}
		t.Cleanup(func() { r.c.Close() })
		return r.c
	case <-time.After(waitTimeout):
		t.Fatalf("Accept did not complete within %v", waitTimeout)
		return nil
	}
}

func dial(t *testing.T, path string) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	c, err := Dial(ctx, path)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestNewPath(t *testing.T) {
	a, err := NewPath()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewPath()
	if a == b {
		t.Fatalf("two calls returned the same path %q", a)
	}
	if !strings.HasPrefix(a, PathPrefix) || len(a) != len(PathPrefix)+36 {
		t.Fatalf("bad path %q", a)
	}
	t.Log(a)
}

func currentUserSID(t *testing.T) *windows.SID {
	t.Helper()
	tu, err := windows.GetCurrentProcessToken().GetTokenUser()
	if err != nil {
		t.Fatal(err)
	}
	return tu.User.Sid
}

// checkOnlyCurrentUser asserts that sd's DACL is present, protected, and
// holds exactly one ACE, an allow ACE for the current user.
func checkOnlyCurrentUser(t *testing.T, sd *windows.SECURITY_DESCRIPTOR) {
	t.Helper()
	user := currentUserSID(t)
	t.Logf("SD: %s (user %s)", sd.String(), user)
	if owner, _, err := sd.Owner(); err == nil && owner != nil && !owner.Equals(user) {
		t.Errorf("owner is %s, want %s", owner, user)
	}
	dacl, _, err := sd.DACL()
	if err != nil {
		t.Fatalf("DACL: %v", err)
	}
	if dacl == nil {
		t.Fatal("NULL DACL (grants everyone full access)")
	}
	if control, _, err := sd.Control(); err != nil {
		t.Fatal(err)
	} else if control&windows.SE_DACL_PROTECTED == 0 {
		t.Errorf("DACL is not protected (control %#x)", control)
	}
	if dacl.AceCount != 1 {
		t.Errorf("DACL has %d ACEs, want 1", dacl.AceCount)
	}
	for i := uint32(0); i < uint32(dacl.AceCount); i++ {
		var ace *windows.ACCESS_ALLOWED_ACE
		if err := windows.GetAce(dacl, i, &ace); err != nil {
			t.Fatalf("GetAce(%d): %v", i, err)
		}
		sid := (*windows.SID)(unsafe.Pointer(&ace.SidStart))
		if ace.Header.AceType != windows.ACCESS_ALLOWED_ACE_TYPE {
			t.Errorf("ACE %d: type %d for %s, want an allow ACE", i, ace.Header.AceType, sid)
		}
		if !sid.Equals(user) {
			t.Errorf("ACE %d admits %s, want only the current user %s", i, sid, user)
		}
	}
}

func TestCurrentUserSDDL(t *testing.T) {
	sddl, err := CurrentUserSDDL()
	if err != nil {
		t.Fatal(err)
	}
	t.Log(sddl)
	sd, err := windows.SecurityDescriptorFromString(sddl)
	if err != nil {
		t.Fatalf("SDDL %q does not parse: %v", sddl, err)
	}
	checkOnlyCurrentUser(t, sd)
}

// TestSecurityDescriptorOnPipe reads the security descriptor back from the
// live pipe, through both the server's and the client's handle.
func TestSecurityDescriptorOnPipe(t *testing.T) {
	l, path := newListener(t)
	acc := acceptAsync(l)
	client := dial(t, path)
	server := awaitAccept(t, acc)
	for _, side := range []struct {
		name string
		c    net.Conn
	}{{"server", server}, {"client", client}} {
		t.Run(side.name, func(t *testing.T) {
			f, ok := side.c.(interface{ Fd() uintptr })
			if !ok {
				t.Fatalf("%T has no Fd method", side.c)
			}
			sd, err := windows.GetSecurityInfo(windows.Handle(f.Fd()), windows.SE_KERNEL_OBJECT,
				windows.OWNER_SECURITY_INFORMATION|windows.DACL_SECURITY_INFORMATION)
			if err != nil {
				t.Skipf("cannot read the security descriptor back from the pipe handle: %v", err)
			}
			checkOnlyCurrentUser(t, sd)
		})
	}
}

// TestFirstInstanceWorkaround shows the go-winio bug and that the workaround
// detects exactly it. Without the workaround, where the bug exists (Wine,
// Windows 7), a Dial succeeds with no Accept pending (it lands on
// go-winio's idle first instance, which nobody will ever serve). With it, on
// every platform, a Dial with no Accept pending finds all instances busy
// and waits until its context ends.
func TestFirstInstanceWorkaround(t *testing.T) {
	path, _ := NewPath()
	l, _, err := listen(path, false)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	c, err := Dial(ctx, path)
	cancel()
	bugPresent := err == nil
	if bugPresent {
		c.Close()
	} else if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Dial without Accept, without workaround: %v", err)
	}
	l.Close()
	t.Logf("first instance connectable without the workaround (go-winio #173/#313 present): %v", bugPresent)

	path, _ = NewPath()
	l, claimed, err := listen(path, true)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if claimed != bugPresent {
		t.Errorf("workaround probe connected = %v, but bug present = %v", claimed, bugPresent)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	c, err = Dial(ctx, path)
	if err == nil {
		c.Close()
		t.Fatal("with the workaround, Dial with no Accept pending connected to something")
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Dial with no Accept pending: got %v, want context.DeadlineExceeded", err)
	}

	// And the first real Accept completes.
	acc := acceptAsync(l)
	client := dial(t, path)
	server := awaitAccept(t, acc)
	roundTrip(t, client, server, []byte("first"))
}

func roundTrip(t *testing.T, a, b net.Conn, msg []byte) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		_, err := a.Write(msg)
		errc <- err
	}()
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(b, got); err != nil {
		t.Fatalf("read: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("write: %v", err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("got %q, want %q", got, msg)
	}
}

func TestDataBothWays(t *testing.T) {
	l, path := newListener(t)
	acc := acceptAsync(l)
	client := dial(t, path)
	server := awaitAccept(t, acc)
	roundTrip(t, client, server, []byte("ping"))
	roundTrip(t, server, client, []byte("pong"))

	// Larger than any pipe buffer, in both directions at once.
	big1, big2 := make([]byte, 1<<20), make([]byte, 1<<20)
	rand.Read(big1)
	rand.Read(big2)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); roundTrip(t, client, server, big1) }()
	go func() { defer wg.Done(); roundTrip(t, server, client, big2) }()
	wg.Wait()

	// Closing one end is seen as EOF by the other.
	client.Close()
	if n, err := server.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("read after peer close: n=%d err=%v, want EOF", n, err)
	}
}

// TestConcurrentConnections runs many clients at once against one listener;
// each streams random data that the server echoes back.
func TestConcurrentConnections(t *testing.T) {
	const (
		clients = 32
		size    = 256 << 10
	)
	l, path := newListener(t)

	var srv sync.WaitGroup
	srv.Add(1)
	go func() {
		defer srv.Done()
		var conns sync.WaitGroup
		defer conns.Wait()
		for {
			c, err := l.Accept()
			if err != nil {
				return // listener closed
			}
			conns.Add(1)
			go func() {
				defer conns.Done()
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	errc := make(chan error, clients)
	for i := 0; i < clients; i++ {
		go func() {
			errc <- func() error {
				c, err := Dial(ctx, path)
				if err != nil {
					return fmt.Errorf("client %d: dial: %w", i, err)
				}
				defer c.Close()
				payload := make([]byte, size)
				rand.Read(payload)
				werr := make(chan error, 1)
				go func() {
					_, err := c.Write(payload)
					werr <- err
				}()
				got := make([]byte, size)
				if _, err := io.ReadFull(c, got); err != nil {
					return fmt.Errorf("client %d: read: %w", i, err)
				}
				if err := <-werr; err != nil {
					return fmt.Errorf("client %d: write: %w", i, err)
				}
				if !bytes.Equal(got, payload) {
					return fmt.Errorf("client %d: echoed data differs", i)
				}
				return nil
			}()
		}()
	}
	for i := 0; i < clients; i++ {
		select {
		case err := <-errc:
			if err != nil {
				t.Error(err)
			}
		case <-time.After(2 * time.Minute):
			t.Fatal("clients did not finish")
		}
	}
	l.Close()
	srv.Wait()
}

func TestCrossProcess(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	l, path := newListener(t)
	const children = 4
	cmds := make([]*exec.Cmd, children)
	for i := range cmds {
		cmd := exec.Command(exe)
		cmd.Env = append(os.Environ(), envChild+"=echo-client", envPath+"="+path)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds[i] = cmd
	}
	for i := 0; i < children; i++ {
		c := awaitAccept(t, acceptAsync(l))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			t.Fatalf("reading from child: %v", err)
		}
		t.Logf("server got %q", line)
		if _, err := io.WriteString(c, strings.ToUpper(line)); err != nil {
			t.Fatal(err)
		}
	}
	for i, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Errorf("child %d: %v", i, err)
		}
	}
}

func TestDialCancelledContext(t *testing.T) {
	_, path := newListener(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	c, err := Dial(ctx, path)
	if err == nil {
		c.Close()
		t.Fatal("Dial with a cancelled context succeeded")
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
}

// TestDialCancelWhileWaiting cancels a Dial that is waiting for a busy pipe.
func TestDialCancelWhileWaiting(t *testing.T) {
	_, path := newListener(t) // no Accept: every instance is busy
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		c, err := Dial(ctx, path)
		if c != nil {
			c.Close()
		}
		errc <- err
	}()
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want context.Canceled", err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("Dial did not return after cancel")
	}
}

func TestDialMissingPipe(t *testing.T) {
	path, _ := NewPath()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	_, err := Dial(ctx, path)
	if !errors.Is(err, windows.ERROR_FILE_NOT_FOUND) {
		t.Fatalf("got %v, want ERROR_FILE_NOT_FOUND", err)
	}
}

// isWine reports whether the test runs under Wine (whose ntdll exports
// wine_get_version), for the few documented differences from Windows.
func isWine() bool {
	return windows.NewLazySystemDLL("ntdll.dll").NewProc("wine_get_version").Find() == nil
}

func TestListenTwice(t *testing.T) {
	_, path := newListener(t)
	l2, err := Listen(path)
	if err == nil {
		l2.Close()
		if isWine() {
			t.Skip("Wine does not enforce FILE_CREATE for named pipes: a second ListenPipe on an existing name succeeds")
		}
		t.Fatal("second Listen on the same path succeeded")
	}
	t.Log(err)
}

func TestCloseUnblocksAccept(t *testing.T) {
	l, _ := newListener(t)
	acc := acceptAsync(l)
	l.Close()
	select {
	case r := <-acc:
		if !errors.Is(r.err, net.ErrClosed) {
			t.Fatalf("Accept after Close: %v, want net.ErrClosed", r.err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("Accept did not return after Close")
	}
}

// TestCloseWrite checks the CloseWrite contract: either the connection
// really half-closes (the peer reads EOF and can still write back), or
// CloseWrite returns errors.ErrUnsupported. On Windows, byte-mode pipes do
// the latter on both sides. Under Wine the client side of go-winio's pipes
// is a message-mode connection (see the package documentation) and does the
// former.
func TestCloseWrite(t *testing.T) {
	l, path := newListener(t)
	acc := acceptAsync(l)
	client := dial(t, path)
	server := awaitAccept(t, acc)
	for _, pair := range []struct {
		name       string
		this, peer net.Conn
	}{{"server", server, client}, {"client", client, server}} {
		t.Run(pair.name, func(t *testing.T) {
			errc := make(chan error, 1)
			go func() { errc <- CloseWrite(pair.this) }()
			_, isCW := pair.this.(interface{ CloseWrite() error })
			if !isCW {
				if err := <-errc; !errors.Is(err, errors.ErrUnsupported) {
					t.Fatalf("CloseWrite(%T) = %v, want errors.ErrUnsupported", pair.this, err)
				}
				t.Logf("%T: half-close unsupported", pair.this)
				return
			}
			// CloseWrite flushes, i.e. waits for the peer to read.
			if n, err := pair.peer.Read(make([]byte, 1)); err != io.EOF {
				t.Fatalf("peer read after CloseWrite: n=%d err=%v, want EOF", n, err)
			}
			if err := <-errc; err != nil {
				t.Fatalf("CloseWrite(%T): %v", pair.this, err)
			}
			roundTrip(t, pair.peer, pair.this, []byte("still open"))
			t.Logf("%T: half-close works", pair.this)
		})
	}
}
