// Command detached starts a detached worker from one host process and uses
// it from another, after the first has exited.
//
// Running it starts three roles of this one binary, one after the other:
//
//   - host 1 spawns a detached, keep-alive worker, calls it, prints the
//     token that lets another process attach, disconnects and exits;
//   - the worker keeps running on its own, in its own session;
//   - host 2, started with the token as an argument, attaches, calls the
//     worker (which remembers host 1's call) and closes it, which stops it.
//
// The process that `go run` starts only runs host 1 and then host 2, and
// checks at the end that the worker is gone.
//
//	go run ./examples/detached
package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"

	"github.com/isolated-workers/worker"
)

func main() {
	worker.Main(newServer()) // in the worker: serves, then exits

	switch {
	case len(os.Args) == 1:
		run()
	case os.Args[1] == "host1":
		host1()
	case os.Args[1] == "host2" && len(os.Args) == 3:
		host2(os.Args[2])
	default:
		log.Fatalf("usage: %s [host1 | host2 TOKEN]", os.Args[0])
	}
}

// run plays host 1, then host 2, each in its own process.
func run() {
	out, err := runHost("host 1", "host1")
	token := out["token"]
	if err != nil || token == "" {
		log.Fatalf("host 1 failed: %v", err)
	}
	fmt.Println("host 1 has exited; the worker runs on")

	if _, err := runHost("host 2", "host2", token); err != nil {
		stop(token) // do not leave the worker behind
		log.Fatalf("host 2 failed: %v", err)
	}

	// Nothing listens at the worker's address any more.
	_, err = worker.Attach(context.Background(), token, &worker.Options{ConnectAttempts: 1})
	if err == nil {
		stop(token)
		log.Fatal("the worker outlived host 2's Close")
	}
	fmt.Println("host 2 has exited; attaching again fails, the worker is gone:")
	fmt.Printf("  %v\n", err)
}

// stop stops the worker behind token, if it still runs.
func stop(token string) {
	if w, err := worker.Attach(context.Background(), token, nil); err == nil {
		w.Close()
	}
}

// runHost runs this binary with args, prefixes its output with name, and
// returns the "key: value" lines it printed.
func runHost(name string, args ...string) (map[string]string, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, args...)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	values := make(map[string]string)
	sc := bufio.NewScanner(stdout)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		fmt.Printf("[%s] %s\n", name, line)
		if k, v, ok := strings.Cut(line, ": "); ok {
			values[k] = v
		}
	}
	io.Copy(io.Discard, stdout)
	return values, cmd.Wait()
}

// host1 spawns a detached worker and leaves it running.
func host1() {
	ctx := context.Background()
	exe, err := os.Executable()
	if err != nil {
		log.Fatal(err)
	}
	w, err := worker.Spawn(ctx, exec.Command(exe), &worker.Options{Detached: true})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("worker pid: %d\n", w.Pid())
	reply, err := worker.Call(ctx, w, SayHello, Hello{From: "host 1"})
	if err != nil {
		w.Close()
		log.Fatal(err)
	}
	fmt.Printf("reply: %s (calls served: %d)\n", reply.Message, reply.Calls)
	// The token is a credential: whoever holds it can use the worker.
	// Hand it over by a private channel; here, our parent reads our stdout.
	fmt.Printf("token: %s\n", w.Token())
	if err := w.Disconnect(); err != nil {
		w.Close()
		log.Fatal(err)
	}
	fmt.Println("disconnected; exiting and leaving the worker running")
}

// host2 attaches to the worker, uses it and stops it.
func host2(token string) {
	ctx := context.Background()
	w, err := worker.Attach(ctx, token, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close()
	fmt.Printf("attached to worker %d\n", w.Pid())
	reply, err := worker.Call(ctx, w, SayHello, Hello{From: "host 2"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("reply: %s (calls served: %d)\n", reply.Message, reply.Calls)
	w.Close() // asks the worker to exit
	fmt.Println("closed the worker")
}

// newServer is the worker side. It is keep-alive: it keeps running when
// host 1 disconnects, waiting for the next host.
func newServer() *worker.Server {
	s := worker.NewServer(&worker.ServerOptions{KeepAlive: true})
	var calls atomic.Int64
	worker.Handle(s, SayHello, func(ctx context.Context, h Hello) (HelloReply, error) {
		return HelloReply{
			Message: fmt.Sprintf("hello, %s!", h.From),
			Calls:   int(calls.Add(1)),
			Pid:     os.Getpid(),
		}, nil
	})
	return s
}
