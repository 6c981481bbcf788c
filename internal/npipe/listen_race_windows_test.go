//go:build windows

package npipe

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/windows"
)

// TestFirstInstanceConnectable checks the platform detection that Listen
// relies on against the bug itself: a Dial with no Accept pending connects
// exactly where go-winio's first instance is connectable.
func TestFirstInstanceConnectable(t *testing.T) {
	path, _ := NewPath()
	l, _, err := listen(path, false)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	c, err := Dial(ctx, path)
	bugPresent := err == nil
	if bugPresent {
		c.Close()
	}
	if got := firstInstanceConnectable(); got != bugPresent {
		t.Fatalf("firstInstanceConnectable() = %v, but a Dial with no Accept pending connected: %v", got, bugPresent)
	}
}

// TestListenWhileClientPolls has a client poll the path, as a worker's host
// does, while Listen creates the pipe: the client may reach go-winio's first
// instance before the workaround's probe does (where that instance is
// connectable). Each round must still end with the client's connection
// served, promptly: Listen gives up a first instance taken by a client, so
// that the client's connection breaks and it dials again.
func TestListenWhileClientPolls(t *testing.T) {
	rounds := 30
	if testing.Short() {
		rounds = 5
	}
	for range rounds {
		listenWhileClientPolls(t)
	}
}

func listenWhileClientPolls(t *testing.T) {
	t.Helper()
	path, _ := NewPath()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// The client: dial as fast as it can until the pipe exists, then
	// expect an echo; a broken connection means dial again.
	type result struct {
		dials int
		err   error
	}
	client := make(chan result, 1)
	go func() {
		dials := 0
		for {
			c, err := Dial(ctx, path)
			if err != nil {
				if errors.Is(err, windows.ERROR_FILE_NOT_FOUND) {
					continue
				}
				client <- result{dials, err}
				return
			}
			dials++
			stop := context.AfterFunc(ctx, func() { c.Close() })
			_, err = c.Write([]byte("ping"))
			buf := make([]byte, 4)
			if err == nil {
				_, err = io.ReadFull(c, buf)
			}
			stop()
			c.Close()
			if err == nil && string(buf) == "pong" {
				client <- result{dials, nil}
				return
			}
			if ctx.Err() != nil {
				client <- result{dials, ctx.Err()}
				return
			}
		}
	}()

	l, err := Listen(path)
	if err != nil {
		cancel()
		<-client
		t.Fatal(err)
	}
	defer l.Close()
	served := make(chan error, 1)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				served <- err
				return
			}
			buf := make([]byte, 4)
			if _, err := io.ReadFull(c, buf); err == nil {
				c.Write([]byte("pong"))
			}
			c.Close()
		}
	}()
	r := <-client
	l.Close()
	if err := <-served; !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept: %v", err)
	}
	if r.err != nil {
		t.Fatalf("the client was not served after %d connections: %v", r.dials, r.err)
	}
}
