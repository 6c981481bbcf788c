// Command error-handling shows how a handler's errors reach the host:
// coded sentinel errors matched with errors.Is, the details of a
// *worker.RemoteError, a panic recovered into an error with a stack, and a
// message type the worker does not handle.
//
//	go run ./examples/error-handling
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"os/exec"
	"strings"

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

	// 1. A successful call, for comparison.
	u, err := worker.Call(ctx, w, GetUser, GetUserRequest{ID: "1"})
	fmt.Printf("getUser(1): %+v, err=%v\n", u, err)

	// 2. A coded sentinel error, wrapped by the handler.
	_, err = worker.Call(ctx, w, GetUser, GetUserRequest{ID: "42"})
	fmt.Println("getUser(42):", err)
	fmt.Println("  errors.Is(err, ErrUserNotFound):", errors.Is(err, ErrUserNotFound))
	var re *worker.RemoteError
	if errors.As(err, &re) {
		fmt.Printf("  RemoteError: name=%q code=%q message=%q\n", re.Name, re.Code, re.Message)
	}

	// 3. A plain error: it has a message but no code, so it matches no
	// sentinel.
	err = callVoid(ctx, w, Validate, "")
	fmt.Println("validate(\"\"):", err)
	if errors.As(err, &re) {
		fmt.Printf("  RemoteError: name=%q code=%q, matches ErrUserNotFound: %v\n",
			re.Name, re.Code, errors.Is(err, ErrUserNotFound))
	}

	// 4. A panic in a handler is recovered by the worker, which keeps
	// running, and reported with the handler's stack.
	err = callVoid(ctx, w, Explode, "kaboom")
	fmt.Println("explode:", err)
	if errors.As(err, &re) {
		fmt.Printf("  RemoteError: name=%q code=%q, matches worker.ErrPanic: %v\n", re.Name, re.Code, errors.Is(err, worker.ErrPanic))
		// The stack is the worker goroutine's, as runtime/debug.Stack
		// formats it; show the frame of the handler that panicked.
		lines := strings.Split(re.Stack, "\n")
		for i, l := range lines {
			if strings.HasPrefix(l, "main.newServer") && i+1 < len(lines) {
				fmt.Printf("  stack (%d lines) has the handler's frame:\n    %s\n    %s\n",
					len(lines), l, strings.TrimSpace(lines[i+1]))
				break
			}
		}
	}

	// 5. A message type the worker has no handler for.
	_, err = worker.Call(ctx, w, Unregistered, "?")
	fmt.Println("unregistered:", err)
	fmt.Println("  errors.Is(err, worker.ErrUnknownMessage):", errors.Is(err, worker.ErrUnknownMessage))

	// The worker survived all of the above.
	u, err = worker.Call(ctx, w, GetUser, GetUserRequest{ID: "1"})
	fmt.Printf("getUser(1) again: %+v, err=%v\n", u, err)

	w.Close()
	fmt.Println("worker closed")
}

// callVoid makes a call whose result is worker.Void and returns its error.
func callVoid[P any](ctx context.Context, w *worker.Worker, m worker.MessageType[P, worker.Void], p P) error {
	_, err := worker.Call(ctx, w, m, p)
	return err
}

// newServer is the worker side.
func newServer() *worker.Server {
	users := map[string]User{"1": {ID: "1", Name: "Ada"}}
	s := worker.NewServer(nil)
	worker.Handle(s, GetUser, func(ctx context.Context, req GetUserRequest) (User, error) {
		u, ok := users[req.ID]
		if !ok {
			// Wrapping keeps the code: the host still matches ErrUserNotFound,
			// and sees this message.
			return User{}, fmt.Errorf("user %q: %w", req.ID, ErrUserNotFound)
		}
		return u, nil
	})
	worker.Handle(s, Validate, func(ctx context.Context, v string) (worker.Void, error) {
		if v == "" {
			return worker.Void{}, errors.New("value must not be empty")
		}
		return worker.Void{}, nil
	})
	worker.Handle(s, Explode, func(ctx context.Context, msg string) (worker.Void, error) {
		panic(msg)
	})
	// No handler for Unregistered.
	return s
}
