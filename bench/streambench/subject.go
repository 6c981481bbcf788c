package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"

	"github.com/isolated-workers/worker/bench/internal/child"
)

// Req is a stream's request, the same for every subject: N items, each an
// int64 (Size 0: the items are 0, 1, ..., N-1) or Size bytes (the same
// pseudo-random bytes, child.Payload(Size), every time).
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

// The hand-made subjects' children (see child.Start).
type listeningChild = child.Listening

func startListeningChild(role string) (*listeningChild, error) {
	return child.Start(childCmd(role), envSock, role)
}

// childListen is the child's half of startListeningChild.
func childListen() net.Conn {
	conn, err := child.Listen(envSock)
	if err != nil {
		fatal(err)
	}
	return conn
}

// errStopped marks a stream that the consumer ended early.
var errStopped = errors.New("stopped by the consumer")

// recvAll receives messages of type M with recv until io.EOF, handing
// each one's value to each: the receive loop of the gRPC and ttrpc
// subjects, a new message per item as a generated client's Recv makes.
func recvAll[M, V any](recv func(any) error, value func(*M) V, each func(V) error) (int, error) {
	for got := 0; ; got++ {
		m := new(M)
		if err := recv(m); err != nil {
			if errors.Is(err, io.EOF) {
				return got, nil
			}
			return got, err
		}
		if err := each(value(m)); err != nil {
			return got, err
		}
	}
}
