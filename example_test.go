package worker_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"strings"

	"github.com/isolated-workers/worker"
)

// The examples that spawn a worker re-execute this test binary, which
// TestMain (main_test.go) turns into a worker serving the contract declared
// there: Ping, Add, Fail and the others. A program does the same with
// worker.Main at the top of its main function.

// exampleWorkerCmd returns the command that runs this test binary as a
// worker.
func exampleWorkerCmd() *exec.Cmd {
	exe, err := os.Executable()
	if err != nil {
		log.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	// The race detector's runtime waits 1s at exit by default.
	cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
	return cmd
}

// A host spawns a worker process and calls it. The contract (main_test.go)
// declares, for both sides:
//
//	var Ping = worker.Define[PingReq, PingRes]("ping")
func ExampleSpawn() {
	ctx := context.Background()
	w, err := worker.Spawn(ctx, exampleWorkerCmd(), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close()

	res, err := worker.Call(ctx, w, Ping, PingReq{Message: "hello"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(res.Message)
	// Output: pong: hello
}

// Call is type-checked against the contract, and safe to use from many
// goroutines at once.
func ExampleCall() {
	ctx := context.Background()
	w, err := worker.Spawn(ctx, exampleWorkerCmd(), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close()

	sums := make([]int, 3)
	errs := make(chan error, len(sums))
	for i := range sums {
		go func() {
			res, err := worker.Call(ctx, w, Add, AddReq{A: i, B: 10})
			sums[i] = res.Sum
			errs <- err
		}()
	}
	for range sums {
		if err := <-errs; err != nil {
			log.Fatal(err)
		}
	}
	fmt.Println(sums)

	// A message with no result: its type is worker.Void.
	_, err = worker.Call(ctx, w, Notify, PingReq{Message: "fire"})
	fmt.Println("notify:", err)
	// Output:
	// [10 11 12]
	// notify: <nil>
}

// Messages are declared with Define, once, in a package that both the host
// and the worker import. Here the worker is served in-process.
func ExampleDefine() {
	type Point struct{ X, Y int }
	// In a shared package: var Scale = worker.Define[...]("scale")
	Scale := worker.Define[Point, Point]("scale")
	fmt.Println("message:", Scale.Name())

	s := worker.NewServer(nil)
	worker.Handle(s, Scale, func(ctx context.Context, p Point) (Point, error) {
		return Point{p.X * 10, p.Y * 10}, nil
	})

	hostEnd, workerEnd := net.Pipe()
	served := make(chan error, 1)
	go func() { served <- s.ServeConn(context.Background(), workerEnd) }()
	c, err := worker.NewClient(context.Background(), hostEnd, nil)
	if err != nil {
		log.Fatal(err)
	}
	p, err := worker.Call(context.Background(), c, Scale, Point{1, 2})
	fmt.Println(p, err)

	c.Close()
	fmt.Println("served:", <-served)
	// Output:
	// message: scale
	// {10 20} <nil>
	// served: <nil>
}

// A Server can serve any net.Conn, not only the socket of a worker
// process: here one end of a net.Pipe, with a Client on the other end.
func ExampleServer_ServeConn() {
	s := worker.NewServer(nil)
	worker.Handle(s, Ping, func(ctx context.Context, p PingReq) (PingRes, error) {
		return PingRes{Message: "pong: " + p.Message}, nil
	})

	hostEnd, workerEnd := net.Pipe()
	served := make(chan error, 1)
	go func() { served <- s.ServeConn(context.Background(), workerEnd) }()

	c, err := worker.NewClient(context.Background(), hostEnd, nil)
	if err != nil {
		log.Fatal(err)
	}
	res, err := worker.Call(context.Background(), c, Ping, PingReq{Message: "in-process"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(res.Message)

	// The server has no handler for this message type.
	_, err = worker.Call(context.Background(), c, Unknown, "?")
	fmt.Println(errors.Is(err, worker.ErrUnknownMessage))

	c.Close() // ServeConn returns nil when the client closes the connection
	fmt.Println("ServeConn returned:", <-served)
	// Output:
	// pong: in-process
	// true
	// ServeConn returned: <nil>
}

// Handle registers a handler for a message type. A handler returning an
// error, or panicking, fails only its own call.
func ExampleHandle() {
	s := worker.NewServer(nil)
	worker.Handle(s, Add, func(ctx context.Context, p AddReq) (AddRes, error) {
		if p.A < 0 || p.B < 0 {
			return AddRes{}, errors.New("negative numbers are not supported")
		}
		return AddRes{Sum: p.A + p.B}, nil
	})
	worker.Handle(s, Panic, func(ctx context.Context, msg string) (worker.Void, error) {
		panic(msg)
	})

	hostEnd, workerEnd := net.Pipe()
	served := make(chan error, 1)
	go func() { served <- s.ServeConn(context.Background(), workerEnd) }()
	c, err := worker.NewClient(context.Background(), hostEnd, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer func() { c.Close(); <-served }()

	ctx := context.Background()
	res, err := worker.Call(ctx, c, Add, AddReq{A: 2, B: 3})
	fmt.Println(res.Sum, err)
	_, err = worker.Call(ctx, c, Add, AddReq{A: -1, B: 3})
	fmt.Println(err)
	_, err = worker.Call(ctx, c, Panic, "oops")
	var re *worker.RemoteError
	if errors.As(err, &re) {
		fmt.Println(re.Name, re.Code, re.Message, strings.Contains(re.Stack, "goroutine"))
	}
	// Output:
	// 5 <nil>
	// worker: add: negative numbers are not supported
	// Panic E_PANIC panic in handler "panic": oops true
}

// Sentinel errors declared with NewError travel between processes: the
// worker returns one (here wrapped), and the host matches the
// *worker.RemoteError it receives with errors.Is, by code. The contract
// (main_test.go) declares:
//
//	var ErrNotFound = worker.NewError("E_NOT_FOUND", "not found")
func ExampleNewError() {
	ctx := context.Background()
	w, err := worker.Spawn(ctx, exampleWorkerCmd(), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close()

	// The handler returns fmt.Errorf("looking up %q: %w", p.Message, ErrNotFound).
	_, err = worker.Call(ctx, w, Fail, FailReq{Message: "bob", Code: "E_NOT_FOUND"})
	fmt.Println(err)
	fmt.Println(errors.Is(err, ErrNotFound))

	var re *worker.RemoteError
	if errors.As(err, &re) {
		fmt.Printf("code=%s message=%q\n", re.Code, re.Message)
	}
	// Output:
	// worker: fail: looking up "bob": not found [E_NOT_FOUND]
	// true
	// code=E_NOT_FOUND message="looking up \"bob\": not found"
}

// Middleware sees every message as an untyped worker.Message. This one
// logs, and the second one rewrites the payload of outgoing pings.
func ExampleMiddleware() {
	logging := func(ctx context.Context, m *worker.Message) error {
		fmt.Printf("incoming=%v %s tx=%s %s\n", m.Incoming, m.Type, m.Tx, m.Payload)
		return nil
	}
	shout := func(ctx context.Context, m *worker.Message) error {
		if m.Incoming || m.Type != Ping.Name() {
			return nil
		}
		var p PingReq
		if err := m.Decode(&p); err != nil {
			return err
		}
		p.Message = strings.ToUpper(p.Message)
		return m.SetPayload(p)
	}
	n := 0
	opts := &worker.Options{
		Middleware: []worker.Middleware{shout, logging}, // run in this order
		// Transaction ids are random UUIDs by default; fixed ones here keep
		// the output stable.
		NewTx: func(*worker.Message) string { n++; return fmt.Sprintf("tx-%d", n) },
	}

	s := worker.NewServer(nil)
	worker.Handle(s, Ping, func(ctx context.Context, p PingReq) (PingRes, error) {
		return PingRes{Message: "pong: " + p.Message}, nil
	})
	hostEnd, workerEnd := net.Pipe()
	served := make(chan error, 1)
	go func() { served <- s.ServeConn(context.Background(), workerEnd) }()
	c, err := worker.NewClient(context.Background(), hostEnd, opts)
	if err != nil {
		log.Fatal(err)
	}
	defer func() { c.Close(); <-served }()

	res, err := worker.Call(context.Background(), c, Ping, PingReq{Message: "hello"})
	fmt.Println(res.Message, err)
	// Output:
	// incoming=false ping tx=tx-1 {"message":"HELLO"}
	// incoming=true pingResult tx=tx-1 {"message":"pong: HELLO"}
	// pong: HELLO <nil>
}
