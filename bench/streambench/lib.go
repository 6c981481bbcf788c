package main

// The library under test: worker.Spawn, worker.Stream on the host and
// worker.HandleStream in the child, with the default JSON serializer and
// with worker.Binary, the default stream window (64 items, 1 MiB). The
// stream's final result is the number of items sent, checked.

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/isolated-workers/worker"
	"github.com/isolated-workers/worker/bench/internal/child"
)

var (
	intsStream  = worker.DefineStream[Req, int64, int]("ints")
	bytesStream = worker.DefineStream[Req, []byte, int]("bytes")
)

type libConn struct{ w *worker.Worker }

func spawnLib(role string) func(context.Context) (Conn, error) {
	var opts *worker.Options
	if role == "worker-binary" {
		opts = &worker.Options{Serializer: worker.Binary}
	}
	return func(ctx context.Context) (Conn, error) {
		w, err := worker.Spawn(ctx, childCmd(role), opts)
		if err != nil {
			return nil, err
		}
		return &libConn{w: w}, nil
	}
}

// consume ranges over a stream's items and checks its final result.
func consume[I any](n int, items func(func(I, error) bool), result func() (int, error), each func(I) error) (int, error) {
	got := 0
	for it, err := range items {
		if err != nil {
			return got, err
		}
		if err := each(it); err != nil {
			return got, err // leaving the range ends the stream
		}
		got++
	}
	sent, err := result()
	if err == nil && sent != n {
		err = fmt.Errorf("the handler says it sent %d items, not %d", sent, n)
	}
	return got, err
}

func (c *libConn) Ints(ctx context.Context, n int, each func(int64) error) (int, error) {
	items, result := worker.Stream(ctx, c.w, intsStream, Req{N: n})
	return consume(n, items, result, each)
}

func (c *libConn) Bytes(ctx context.Context, n, size int, each func([]byte) error) (int, error) {
	items, result := worker.Stream(ctx, c.w, bytesStream, Req{N: n, Size: size})
	return consume(n, items, result, each)
}

func (c *libConn) Close() error { return c.w.Close() }

func libChild(binary bool) {
	var opts *worker.ServerOptions
	if binary {
		opts = &worker.ServerOptions{Serializer: worker.Binary}
	}
	srv := worker.NewServer(opts)
	worker.HandleStream(srv, intsStream, func(_ context.Context, r Req, send func(int64) error) (int, error) {
		for i := range r.N {
			if err := send(int64(i)); err != nil {
				return i, err
			}
		}
		return r.N, nil
	})
	worker.HandleStream(srv, bytesStream, func(_ context.Context, r Req, send func([]byte) error) (int, error) {
		p := child.Payload(r.Size)
		for i := range r.N {
			if err := send(p); err != nil {
				return i, err
			}
		}
		return r.N, nil
	})
	worker.Main(srv) // serves and exits when started by worker.Spawn
	fatal(errors.New("worker.Main returned: not started by worker.Spawn"))
	os.Exit(3)
}
