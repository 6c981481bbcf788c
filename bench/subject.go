package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"

	"github.com/isolated-workers/worker/bench/internal/child"
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

func fatal(err error) {
	fmt.Fprintf(os.Stderr, "bench child %s: %v\n", os.Getenv(envRole), err)
	os.Exit(3)
}
