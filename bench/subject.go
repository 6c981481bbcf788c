package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
)

// Message shapes shared by every subject. The payloads are identical across
// subjects: the small call always carries the string "hello" (as
// {"message":"hello"} for JSON-based subjects, as proto field 1 for the
// protobuf-based ones, gob for net/rpc, raw bytes for the floor), and the big
// call always carries the same bigPayload bytes.
type PingReq struct {
	Message string `json:"message"`
}

type PingRes struct {
	Message string `json:"message"`
}

const pingMessage = "hello"

// pingJSON is the small payload of the raw floor: the bytes a JSON peer
// would put on the wire for PingReq{"hello"}.
var pingJSON = []byte(`{"message":"hello"}`)

// Client is what the harness drives; every subject implements it.
type Client interface {
	// Ping sends the small request and checks the echoed reply.
	Ping(ctx context.Context) error
	// Echo sends p and returns what the child sent back.
	Echo(ctx context.Context, p []byte) ([]byte, error)
	// Close stops the child and returns only once it has been reaped.
	Close() error
}

type Subject struct {
	Name string // as shown in the table
	ID   string // for -subjects and Benchmark names
	// Spawn starts a child and returns a client for it. The harness's
	// spawn metric is Spawn + the first Ping.
	Spawn func(ctx context.Context) (Client, error)
	// NoConcurrent / NoBig mark metrics the subject cannot do sensibly.
	NoConcurrent bool
	NoBig        bool
}

// subjects lists every subject in table order; lib.go appends the
// library's subjects in an init function (excluded with -tags noworker).
var subjects = []Subject{
	{Name: "raw", ID: "raw", Spawn: spawnRaw},
	{Name: "stdlib-child", ID: "stdlib", Spawn: spawnStdlib, NoConcurrent: true, NoBig: true},
	{Name: "naive-ndjson", ID: "naive", Spawn: spawnNaive},
	{Name: "go-plugin net/rpc", ID: "goplugin-netrpc", Spawn: spawnPluginNetRPC},
	{Name: "go-plugin gRPC", ID: "goplugin-grpc", Spawn: spawnPluginGRPC},
	{Name: "ttrpc", ID: "ttrpc", Spawn: spawnTTRPC},
}

// childRoles maps $BENCH_CHILD to the child's main function.
var childRoles = map[string]func(){
	"raw":             rawChild,
	"stdlib":          stdlibChild,
	"naive":           naiveChild,
	"goplugin-netrpc": pluginNetRPCChild,
	"goplugin-grpc":   pluginGRPCChild,
	"ttrpc":           ttrpcChild,
	"noop":            func() {}, // for measuring the helper's own start-up
}

// runChildIfRequested turns this process into a child when $BENCH_CHILD
// names a role; it must run first in main and TestMain.
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

var errBadReply = errors.New("bad reply")

func checkPing(msg string) error {
	if msg != pingMessage {
		return fmt.Errorf("%w: %q", errBadReply, msg)
	}
	return nil
}

func checkPingBytes(b []byte) error {
	if !bytes.Equal(b, pingJSON) {
		return fmt.Errorf("%w: %q", errBadReply, b)
	}
	return nil
}

// helperExe is the binary every child runs: this very program (the bench
// binary under `go run .`, the test binary under `go test`), which selects
// its role from $BENCH_CHILD before doing anything else.
func helperExe() string {
	exe, err := os.Executable()
	if err != nil {
		panic(err)
	}
	return exe
}

const (
	envRole = "BENCH_CHILD"
	envSock = "BENCH_SOCK"
)

func childCmd(role string, extraEnv ...string) *exec.Cmd {
	cmd := exec.Command(helperExe())
	cmd.Env = append(os.Environ(), envRole+"="+role)
	cmd.Env = append(cmd.Env, extraEnv...)
	cmd.Stderr = os.Stderr
	return cmd
}

// listeningChild is the spawn path shared by the hand-made subjects (raw,
// stdlib-child, naive-ndjson, ttrpc): make a private directory, start the
// child with a socket path in it, wait for the child to say (one byte on
// its stdout) that it is listening, then dial it.
type listeningChild struct {
	cmd  *exec.Cmd
	dir  string
	Conn net.Conn
}

func startListeningChild(role string) (*listeningChild, error) {
	dir, err := os.MkdirTemp("", "wb")
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
	var b [1]byte
	if _, err := out.Read(b[:]); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		os.RemoveAll(dir)
		return nil, fmt.Errorf("%s child did not get ready: %w", role, err)
	}
	conn, err := net.Dial("unix", sock)
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		os.RemoveAll(dir)
		return nil, err
	}
	return &listeningChild{cmd: cmd, dir: dir, Conn: conn}, nil
}

// Close closes the connection (the child exits on EOF), reaps the child
// and removes the directory.
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

// childListen is the child half of listeningChild: listen on $BENCH_SOCK,
// tell the parent, accept exactly one connection.
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

func fatal(err error) {
	fmt.Fprintf(os.Stderr, "bench child %s: %v\n", os.Getenv(envRole), err)
	os.Exit(3)
}
