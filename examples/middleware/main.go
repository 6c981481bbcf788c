// Command middleware shows middleware on both sides of a connection:
// logging the direction, type and transaction id of every message, timing
// calls, and changing payloads on the fly.
//
// Middleware runs in the order given, in both directions: on the host,
// first for the outgoing request, then for the incoming reply; on the
// worker, for the incoming request before the handler, then for the
// outgoing reply.
//
//	go run ./examples/middleware
package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/isolated-workers/worker"
)

func main() {
	worker.Main(newServer()) // in the worker: serves, then exits

	ctx := context.Background()
	exe, err := os.Executable()
	if err != nil {
		log.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Stdout = os.Stdout // the worker's trace goes to our stdout
	w, err := worker.Spawn(ctx, cmd, &worker.Options{
		Middleware: []worker.Middleware{
			logging("host"),
			addTraceID(),
			timing(),
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close()
	fmt.Println("host middleware:   logging, addTraceID, timing (in this order, both directions)")
	fmt.Println("worker middleware: logging, stampServedBy")

	for _, name := range []string{"World", "Gopher"} {
		fmt.Printf("--- Call(greet, {name: %q})\n", name)
		reply, err := worker.Call(ctx, w, Greet, GreetRequest{Name: name})
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("--- result: %+v\n", reply)
	}

	w.Close()
	fmt.Println("worker closed")
}

// logging prints every message that passes, with the side it runs on.
func logging(side string) worker.Middleware {
	return func(ctx context.Context, m *worker.Message) error {
		arrow := ">>>"
		if m.Incoming {
			arrow = "<<<"
		}
		fmt.Printf("[%s log] %s %s tx=%s payload=%s\n",
			side, arrow, m.Type, short(m.Tx), m.Payload)
		return nil
	}
}

func short(tx string) string { return tx[:min(8, len(tx))] }

// addTraceID sets the traceId field of every outgoing request that has
// none. It works on the untyped message: decode the payload, change it,
// encode it back. Since it comes after logging in the list, the log shows
// the payload before the change.
func addTraceID() worker.Middleware {
	n := 0
	var mu sync.Mutex
	return func(ctx context.Context, m *worker.Message) error {
		if m.Incoming { // on the host, what goes out is a request
			return nil
		}
		var fields map[string]any
		if err := m.Decode(&fields); err != nil || fields == nil {
			return nil // not an object: leave it alone
		}
		if _, ok := fields["traceId"]; ok {
			return nil
		}
		mu.Lock()
		n++
		fields["traceId"] = fmt.Sprintf("trace-%d", n)
		mu.Unlock()
		fmt.Printf("[host trace] set traceId=%v\n", fields["traceId"])
		return m.SetPayload(fields)
	}
}

// timing measures each call, from its request going out to its reply
// coming in, pairing them by transaction id.
func timing() worker.Middleware {
	var started sync.Map // tx -> time.Time
	return func(ctx context.Context, m *worker.Message) error {
		if !m.Incoming {
			started.Store(m.Tx, time.Now())
		} else if t, ok := started.LoadAndDelete(m.Tx); ok {
			// The duration varies from run to run; round it for the trace.
			d := time.Since(t.(time.Time))
			fmt.Printf("[host timing] %s took %s\n", strings.TrimSuffix(m.Type, "Result"), roundUp(d))
		}
		return nil
	}
}

func roundUp(d time.Duration) string {
	if d < time.Millisecond {
		return "< 1ms"
	}
	return d.Round(time.Millisecond).String()
}

// newServer is the worker side, with its own middleware.
func newServer() *worker.Server {
	s := worker.NewServer(&worker.ServerOptions{
		Middleware: []worker.Middleware{
			logging("worker"),
			stampServedBy(),
		},
	})
	worker.Handle(s, Greet, func(ctx context.Context, req GreetRequest) (GreetReply, error) {
		fmt.Printf("[worker handler] greet name=%q traceId=%q\n", req.Name, req.TraceID)
		return GreetReply{Greeting: "Hello, " + req.Name + "!", TraceID: req.TraceID}, nil
	})
	return s
}

// stampServedBy adds a servedBy field to every successful reply. It comes
// after logging, so the worker's log shows the reply before the stamp; the
// host's log shows it after.
func stampServedBy() worker.Middleware {
	return func(ctx context.Context, m *worker.Message) error {
		if m.Incoming || !strings.HasSuffix(m.Type, "Result") || m.Payload == nil {
			return nil
		}
		var fields map[string]any
		if err := m.Decode(&fields); err != nil || fields == nil {
			return nil
		}
		fields["servedBy"] = fmt.Sprintf("worker-%d", os.Getpid())
		return m.SetPayload(fields)
	}
}
