//go:build unix

package transport

import (
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// unixPair returns both ends of a fresh Unix socket connection.
func unixPair(t *testing.T) (ours, peer *net.UnixConn) {
	t.Helper()
	ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "s"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	c, err := net.Dial("unix", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-accepted
	if s == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return s.(*net.UnixConn), c.(*net.UnixConn)
}

// readEOF reads conn to its end of input.
func readEOF(t *testing.T, conn net.Conn) {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := conn.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("read %d bytes, %v; want the end of input", n, err)
	}
	conn.SetReadDeadline(time.Time{})
}

// A peer that shuts down only its writing is half-closed; it can still
// read what this end writes; once it closes too, AwaitHangup returns.
func TestHalfClosedThenHangup(t *testing.T) {
	ours, peer := unixPair(t)
	if err := peer.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	readEOF(t, ours)
	if !HalfClosed(ours) {
		t.Fatal("HalfClosed is false after the peer's CloseWrite")
	}
	if _, err := ours.Write([]byte("reply")); err != nil {
		t.Fatalf("writing to a half-closed peer: %v", err)
	}
	hangup := make(chan error, 1)
	go func() { hangup <- AwaitHangup(ours) }()
	got := make([]byte, 5)
	if _, err := io.ReadFull(peer, got); err != nil || string(got) != "reply" {
		t.Fatalf("the peer read %q, %v", got, err)
	}
	select {
	case err := <-hangup:
		t.Fatalf("AwaitHangup returned %v while the peer still reads", err)
	default:
	}
	peer.Close()
	select {
	case err := <-hangup:
		if err != nil {
			t.Fatalf("AwaitHangup: %v; want nil once the peer closed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("AwaitHangup did not return when the peer closed")
	}
}

// A peer that closes the connection, or dies, is not half-closed.
func TestClosedIsNotHalfClosed(t *testing.T) {
	ours, peer := unixPair(t)
	peer.Close()
	readEOF(t, ours)
	if HalfClosed(ours) {
		t.Fatal("HalfClosed is true after the peer closed the connection")
	}
	hangup := make(chan error, 1)
	go func() { hangup <- AwaitHangup(ours) }()
	select {
	case err := <-hangup:
		if err != nil {
			t.Fatalf("AwaitHangup on a closed peer: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("AwaitHangup did not return on a closed peer")
	}
	ours.Close()
	if HalfClosed(ours) {
		t.Fatal("HalfClosed is true on a connection closed here")
	}
	a, b := net.Pipe()
	defer b.Close()
	a.Close()
	if HalfClosed(a) {
		t.Fatal("HalfClosed is true on a net.Pipe, which cannot half-close")
	}
}

// AwaitHangup ends when its connection is closed, or its read deadline
// passes.
func TestAwaitHangupStops(t *testing.T) {
	for _, stop := range []string{"deadline", "close"} {
		t.Run(stop, func(t *testing.T) {
			ours, peer := unixPair(t)
			peer.CloseWrite()
			readEOF(t, ours)
			hangup := make(chan error, 1)
			go func() { hangup <- AwaitHangup(ours) }()
			if stop == "deadline" {
				ours.SetReadDeadline(time.Unix(1, 0))
			} else {
				ours.Close()
			}
			select {
			case err := <-hangup:
				if err == nil || (stop == "deadline") != errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatalf("AwaitHangup: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("AwaitHangup did not return")
			}
		})
	}
}
