// Command basic-ping spawns a worker process, sends it a ping and prints the
// pong.
//
// The binary is both the host and the worker: worker.Main returns at once in
// the host, and serves (then exits) in the copy of the binary that the host
// spawns.
//
//	go run ./examples/basic-ping
package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"os/exec"

	"github.com/isolated-workers/worker"
)

func main() {
	worker.Main(newServer()) // in the worker: serves, then exits

	ctx := context.Background()
	exe, err := os.Executable()
	if err != nil {
		log.Fatal(err)
	}
	w, err := worker.Spawn(ctx, exec.Command(exe), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close()
	fmt.Printf("spawned worker (pid %d)\n", w.Pid())

	reply, err := worker.Call(ctx, w, Ping, PingRequest{Message: "hello"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(reply.Message)

	w.Close()
	fmt.Println("worker closed")
}

// newServer is the worker side: one handler per message of the contract.
func newServer() *worker.Server {
	s := worker.NewServer(nil)
	worker.Handle(s, Ping, func(ctx context.Context, req PingRequest) (PingReply, error) {
		return PingReply{Message: "pong: " + req.Message}, nil
	})
	return s
}
