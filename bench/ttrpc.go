package main

// ttrpc (containerd/ttrpc): the child registers the service by hand with
// ttrpc.NewServer + Register(name, map[string]ttrpc.Method); ttrpc's codec
// only needs proto.Message values, so the messages are the well-known
// wrapperspb types (same wire form as a one-field generated message). The
// child serves the single accepted connection and exits when it closes,
// like the other hand-made children; Close is ttrpc.Client.Close + reap.

import (
	"context"
	"net"
	"os"
	"sync"

	"github.com/containerd/ttrpc"
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

// oneConnListener hands ttrpc's Serve loop the one accepted connection,
// wrapped so that the first read error (EOF when the parent closes) ends
// the process, then blocks.
type oneConnListener struct {
	conn net.Conn
	once sync.Once
	done chan struct{}
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	var c net.Conn
	l.once.Do(func() { c = &exitOnEOFConn{Conn: l.conn, done: l.done} })
	if c != nil {
		return c, nil
	}
	select {} // never another connection; the process exits via done
}
func (l *oneConnListener) Close() error   { return nil }
func (l *oneConnListener) Addr() net.Addr { return l.conn.LocalAddr() }

type exitOnEOFConn struct {
	net.Conn
	done chan struct{}
	once sync.Once
}

func (c *exitOnEOFConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil {
		c.once.Do(func() { close(c.done) })
	}
	return n, err
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
	go s.Serve(context.Background(), &oneConnListener{conn: childListen(), done: done})
	<-done
	os.Exit(0)
}
