// Package child holds what the hand-made subjects of the bench programs
// (bench, streambench) share: a child process that listens on a Unix
// socket in a private directory and is dialled once, and the payload that
// every subject sends.
package child

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
)

// Listening is a child started with a socket path in a private
// directory, dialled once it said that it listens.
type Listening struct {
	cmd  *exec.Cmd
	dir  string
	Conn net.Conn
}

// Start adds env=<a socket path in a fresh directory> to cmd's
// environment, starts it, waits for the byte on its stdout that says it
// listens (see Listen), and dials it; role names the child in errors.
func Start(cmd *exec.Cmd, env, role string) (*Listening, error) {
	dir, err := os.MkdirTemp("", "bench")
	if err != nil {
		return nil, err
	}
	sock := filepath.Join(dir, "s")
	cmd.Env = append(cmd.Env, env+"="+sock)
	out, err := cmd.StdoutPipe()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	fail := func(err error) (*Listening, error) {
		cmd.Process.Kill()
		cmd.Wait()
		os.RemoveAll(dir)
		return nil, err
	}
	var b [1]byte
	if _, err := out.Read(b[:]); err != nil {
		return fail(fmt.Errorf("%s child did not get ready: %w", role, err))
	}
	conn, err := net.Dial("unix", sock)
	if err != nil {
		return fail(err)
	}
	return &Listening{cmd: cmd, dir: dir, Conn: conn}, nil
}

// Close closes the connection (the child exits when it ends), reaps the
// child and removes the directory.
func (c *Listening) Close() error {
	err := c.Conn.Close()
	if errors.Is(err, net.ErrClosed) { // already closed by the peer library
		err = nil
	}
	if werr := c.cmd.Wait(); err == nil {
		err = werr
	}
	os.RemoveAll(c.dir)
	return err
}

// Listen is the child's half of Start: listen on the socket path in
// $env, say so on stdout, accept exactly one connection.
func Listen(env string) (net.Conn, error) {
	l, err := net.Listen("unix", os.Getenv(env))
	if err != nil {
		return nil, err
	}
	defer l.Close() // also unlinks the socket file
	if _, err := os.Stdout.Write([]byte{'R'}); err != nil {
		return nil, err
	}
	return l.Accept()
}

var payloads sync.Map

// Payload returns the same n pseudo-random bytes in every process, for
// every subject.
func Payload(n int) []byte {
	if v, ok := payloads.Load(n); ok {
		return v.([]byte)
	}
	r := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	payloads.Store(n, b)
	return b
}

// OneConn is a net.Listener for a server's Serve loop (ttrpc's) that
// hands it conn, then blocks: conn's first read error (EOF when the host
// closes) closes done, on which the child exits.
func OneConn(conn net.Conn, done chan struct{}) net.Listener {
	return &oneConnListener{conn: conn, done: done}
}

type oneConnListener struct {
	conn net.Conn
	once sync.Once
	done chan struct{}
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	var c net.Conn
	l.once.Do(func() { c = &exitOnEOFConn{Conn: l.conn, done: l.done} })
	if c != nil {
		return c, nil
	}
	select {} // never another connection; the process exits via done
}
func (l *oneConnListener) Close() error   { return nil }
func (l *oneConnListener) Addr() net.Addr { return l.conn.LocalAddr() }

type exitOnEOFConn struct {
	net.Conn
	done chan struct{}
	once sync.Once
}

func (c *exitOnEOFConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil {
		c.once.Do(func() { close(c.done) })
	}
	return n, err
}
