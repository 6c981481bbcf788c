package main

// ttrpc (containerd/ttrpc): the child registers the service by hand with
// ttrpc.NewServer + Register(name, map[string]ttrpc.Method); ttrpc's codec
// only needs proto.Message values, so the messages are the well-known
// wrapperspb types (same wire form as a one-field generated message). The
// child serves the single accepted connection and exits when it closes,
// like the other hand-made children; Close is ttrpc.Client.Close + reap.

import (
	"context"
	"os"

	"github.com/containerd/ttrpc"
	"github.com/isolated-workers/worker/bench/internal/child"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

type ttrpcClient struct {
	lc *listeningChild
	c  *ttrpc.Client
}

func spawnTTRPC(ctx context.Context) (Client, error) {
	lc, err := startListeningChild("ttrpc")
	if err != nil {
		return nil, err
	}
	return &ttrpcClient{lc: lc, c: ttrpc.NewClient(lc.Conn)}, nil
}

func (c *ttrpcClient) Ping(ctx context.Context) error {
	res := new(wrapperspb.StringValue)
	if err := c.c.Call(ctx, benchServiceName, "Ping", wrapperspb.String(pingMessage), res); err != nil {
		return err
	}
	return checkPing(res.GetValue())
}

func (c *ttrpcClient) Echo(ctx context.Context, p []byte) ([]byte, error) {
	res := new(wrapperspb.BytesValue)
	if err := c.c.Call(ctx, benchServiceName, "Echo", wrapperspb.Bytes(p), res); err != nil {
		return nil, err
	}
	return res.GetValue(), nil
}

func (c *ttrpcClient) Close() error {
	c.c.Close() // closes the connection
	return c.lc.Close()
}

func ttrpcChild() {
	s, err := ttrpc.NewServer()
	if err != nil {
		fatal(err)
	}
	impl := benchServer{}
	s.Register(benchServiceName, map[string]ttrpc.Method{
		"Ping": func(ctx context.Context, unmarshal func(any) error) (any, error) {
			in := new(wrapperspb.StringValue)
			if err := unmarshal(in); err != nil {
				return nil, err
			}
			return impl.Ping(ctx, in)
		},
		"Echo": func(ctx context.Context, unmarshal func(any) error) (any, error) {
			in := new(wrapperspb.BytesValue)
			if err := unmarshal(in); err != nil {
				return nil, err
			}
			return impl.Echo(ctx, in)
		},
	})
	done := make(chan struct{})
	go s.Serve(context.Background(), child.OneConn(childListen(), done))
	<-done
	os.Exit(0)
}
