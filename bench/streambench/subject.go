package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
)

// Req is a stream's request, the same for every subject: N items, each an
// int64 (Size 0: the items are 0, 1, ..., N-1) or Size bytes (the same
// pseudo-random bytes, bigPayloadOf(Size), every time).
type Req struct {
	N    int `json:"n" cbor:"n"`
	Size int `json:"size" cbor:"size"`
}

// wire is Req as 16 bytes (N, Size, big-endian), for the subjects without
// a serializer of their own for it: the raw floor, and gRPC and ttrpc in
// a wrapperspb.BytesValue (no protoc).
func (r Req) wire() []byte {
	b := make([]byte, 16)
	binary.BigEndian.PutUint64(b[0:8], uint64(r.N))
	binary.BigEndian.PutUint64(b[8:16], uint64(r.Size))
	return b
}

func reqFromWire(b []byte) (Req, error) {
	if len(b) != 16 {
		return Req{}, fmt.Errorf("request of %d bytes, want 16", len(b))
	}
	return Req{N: int(binary.BigEndian.Uint64(b[0:8])), Size: int(binary.BigEndian.Uint64(b[8:16]))}, nil
}

// Conn is a child that serves streams; every subject implements it. The
// host consumes each item with each, on the goroutine that called: an
// error from each ends the stream early (the stream's error is then that
// one, wrapped) and may leave the connection unusable, so it is done only
// in the last stream of a round.
type Conn interface {
	// Ints streams the int64s 0..n-1 and returns how many items came.
	Ints(ctx context.Context, n int, each func(int64) error) (int, error)
	// Bytes streams n items of size bytes and returns how many came.
	Bytes(ctx context.Context, n, size int, each func([]byte) error) (int, error)
	// Close stops the child and returns once it has been reaped.
	Close() error
}

// Subject is one of the compared implementations.
type Subject struct {
	ID, Name string
	Spawn    func(ctx context.Context) (Conn, error)
	// Window is the subject's own bound on what its host buffers for one
	// stream, described (for the memory table).
	Window string
}

// subjects lists every subject in table order.
func subjects() []Subject {
	return []Subject{
		{ID: "raw", Name: "raw (floor: length-prefixed, no flow control)", Spawn: spawnRaw,
			Window: "none in user space: the host reads a frame when it takes one; the kernel's socket buffers"},
		{ID: "grpc", Name: "go-plugin gRPC (server streaming)", Spawn: spawnGRPC,
			Window: "HTTP/2 flow control: a stream window of 64 KiB, grown by BDP estimation up to 16 MiB"},
		{ID: "ttrpc", Name: "ttrpc " + ttrpcVersion + " (server streaming)", Spawn: spawnTTRPC,
			Window: "no flow control on the wire; the client queues 64 messages per stream, then blocks the connection's reader (≤ 1 s, then ErrStreamFull)"},
		{ID: "worker-json", Name: "worker (JSON)", Spawn: spawnLib("worker-json"),
			Window: "credit: StreamWindow 16384 items, StreamWindowBytes 1 MiB"},
		{ID: "worker-binary", Name: "worker (Binary)", Spawn: spawnLib("worker-binary"),
			Window: "credit: StreamWindow 16384 items, StreamWindowBytes 1 MiB"},
	}
}

const ttrpcVersion = "v1.2.10"

func subjectIDs() []string {
	var ids []string
	for _, s := range subjects() {
		ids = append(ids, s.ID)
	}
	return ids
}

func selectSubjects(only []string) ([]Subject, error) {
	all := subjects()
	if only == nil {
		return all, nil
	}
	var out []Subject
	for _, id := range only {
		i := slices.IndexFunc(all, func(s Subject) bool { return s.ID == strings.TrimSpace(id) })
		if i < 0 {
			return nil, fmt.Errorf("unknown subject %q (have %s)", id, strings.Join(subjectIDs(), ","))
		}
		out = append(out, all[i])
	}
	return out, nil
}

// childRoles maps $STREAMBENCH_CHILD to the child's main function.
var childRoles = map[string]func(){
	"raw":           rawChild,
	"grpc":          grpcChild,
	"ttrpc":         ttrpcChild,
	"worker-json":   func() { libChild(false) },
	"worker-binary": func() { libChild(true) },
}

const (
	envRole = "STREAMBENCH_CHILD"
	envSock = "STREAMBENCH_SOCK"
)

// runChildIfRequested turns this process into a child when
// $STREAMBENCH_CHILD names a role; it runs first in main and TestMain.
func runChildIfRequested() {
	role := os.Getenv(envRole)
	if role == "" {
		return
	}
	f, ok := childRoles[role]
	if !ok {
		fatal(fmt.Errorf("unknown role %q", role))
	}
	f()
	os.Exit(0)
}

// childCmd starts this binary (the `go run` binary or the test binary) in
// a role.
func childCmd(role string, extraEnv ...string) *exec.Cmd {
	exe, err := os.Executable()
	if err != nil {
		panic(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), envRole+"="+role)
	cmd.Env = append(cmd.Env, extraEnv...)
	cmd.Stderr = os.Stderr
	return cmd
}

func fatal(err error) {
	fmt.Fprintf(os.Stderr, "streambench child %s: %v\n", os.Getenv(envRole), err)
	os.Exit(3)
}

var bigPayloadCache sync.Map

// bigPayloadOf returns the same pseudo-random bytes for every subject, in
// the host and in the children.
func bigPayloadOf(n int) []byte {
	if v, ok := bigPayloadCache.Load(n); ok {
		return v.([]byte)
	}
	r := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	bigPayloadCache.Store(n, b)
	return b
}

// listeningChild is the spawn path of the hand-made children (raw,
// ttrpc): a private directory, the child started with a socket path in
// it, one byte on its stdout once it listens, then a dial.
type listeningChild struct {
	cmd  *exec.Cmd
	dir  string
	Conn net.Conn
}

func startListeningChild(role string) (*listeningChild, error) {
	dir, err := os.MkdirTemp("", "sb")
	if err != nil {
		return nil, err
	}
	sock := filepath.Join(dir, "s")
	cmd := childCmd(role, envSock+"="+sock)
	out, err := cmd.StdoutPipe()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	fail := func(err error) (*listeningChild, error) {
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
	return &listeningChild{cmd: cmd, dir: dir, Conn: conn}, nil
}

// Close closes the connection (the child exits when it ends), reaps the
// child and removes the directory.
func (c *listeningChild) Close() error {
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

// childListen is the child's half of listeningChild: listen on
// $STREAMBENCH_SOCK, say so, accept exactly one connection.
func childListen() net.Conn {
	l, err := net.Listen("unix", os.Getenv(envSock))
	if err != nil {
		fatal(err)
	}
	if _, err := os.Stdout.Write([]byte{'R'}); err != nil {
		fatal(err)
	}
	conn, err := l.Accept()
	if err != nil {
		fatal(err)
	}
	l.Close() // also unlinks the socket file
	return conn
}

// errStopped marks a stream that the consumer ended early.
var errStopped = errors.New("stopped by the consumer")
