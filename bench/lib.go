//go:build !noworker

package main

// The library under test (github.com/isolated-workers/worker), once with
// its default JSON serializer and once with its Binary serializer. The
// child is this same binary: it registers the two handlers and calls
// worker.Main, which serves when the process was started by worker.Spawn.
// Build with -tags noworker to leave these subjects out.

import (
	"context"
	"errors"
	"os"

	"github.com/isolated-workers/worker"
)

var (
	libPing = worker.Define[PingReq, PingRes]("ping")
	libEcho = worker.Define[[]byte, []byte]("echo")
)

func init() {
	subjects = append(subjects,
		Subject{Name: "worker (JSON)", ID: "worker-json", Spawn: func(ctx context.Context) (Client, error) {
			return spawnLib(ctx, "worker-json", nil)
		}},
		Subject{Name: "worker (Binary)", ID: "worker-binary", Spawn: func(ctx context.Context) (Client, error) {
			return spawnLib(ctx, "worker-binary", &worker.Options{Serializer: worker.Binary})
		}},
	)
	childRoles["worker-json"] = func() { libChild(nil) }
	childRoles["worker-binary"] = func() { libChild(&worker.ServerOptions{Serializer: worker.Binary}) }
}

type libClient struct{ w *worker.Worker }

func spawnLib(ctx context.Context, role string, opts *worker.Options) (Client, error) {
	w, err := worker.Spawn(ctx, childCmd(role), opts)
	if err != nil {
		return nil, err
	}
	return &libClient{w: w}, nil
}

func (c *libClient) Ping(ctx context.Context) error {
	res, err := worker.Call(ctx, c.w, libPing, PingReq{Message: pingMessage})
	if err != nil {
		return err
	}
	return checkPing(res.Message)
}

func (c *libClient) Echo(ctx context.Context, p []byte) ([]byte, error) {
	return worker.Call(ctx, c.w, libEcho, p)
}

func (c *libClient) Close() error { return c.w.Close() }

func libChild(opts *worker.ServerOptions) {
	srv := worker.NewServer(opts)
	worker.Handle(srv, libPing, func(_ context.Context, p PingReq) (PingRes, error) {
		return PingRes{Message: p.Message}, nil
	})
	worker.Handle(srv, libEcho, func(_ context.Context, p []byte) ([]byte, error) {
		return p, nil
	})
	worker.Main(srv) // serves and exits when started by worker.Spawn
	fatal(errors.New("worker.Main returned: not started by worker.Spawn"))
	os.Exit(3)
}
