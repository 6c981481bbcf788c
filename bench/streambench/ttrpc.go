package main

// ttrpc (containerd/ttrpc v1.2.10) server streaming: the child registers
// the service by hand with ttrpc.NewServer + RegisterService(name,
// &ttrpc.ServiceDesc{Streams: ...}) (StreamingServer, not StreamingClient:
// the request is the stream's first message); the host opens each stream
// with Client.NewStream and reads it with RecvMsg until io.EOF. The
// messages are the wrapperspb ones of grpc.go (ttrpc's codec takes any
// proto.Message). The child serves its one connection and exits when it
// ends, as bench/ttrpc.go does.
//
// ttrpc has no flow control on the wire: the server writes each message as
// soon as it is sent. Its client queues up to 64 messages per stream
// (streamRecvBufferSize); with that queue full, the connection's receive
// loop waits for the consumer, up to one second, then fails the stream
// with ErrStreamFull.

import (
	"context"
	"os"

	"github.com/containerd/ttrpc"
	"github.com/isolated-workers/worker/bench/internal/child"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

type ttrpcConn struct {
	lc *listeningChild
	c  *ttrpc.Client
}

func spawnTTRPC(context.Context) (Conn, error) {
	lc, err := startListeningChild("ttrpc")
	if err != nil {
		return nil, err
	}
	return &ttrpcConn{lc: lc, c: ttrpc.NewClient(lc.Conn)}, nil
}

var ttrpcServerStream = &ttrpc.StreamDesc{StreamingServer: true}

func (c *ttrpcConn) Ints(ctx context.Context, n int, each func(int64) error) (int, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cs, err := c.c.NewStream(ctx, ttrpcServerStream, streamServiceName, "Ints", wrapperspb.Bytes(Req{N: n}.wire()))
	if err != nil {
		return 0, err
	}
	return recvAll(cs.RecvMsg, (*wrapperspb.Int64Value).GetValue, each)
}

func (c *ttrpcConn) Bytes(ctx context.Context, n, size int, each func([]byte) error) (int, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cs, err := c.c.NewStream(ctx, ttrpcServerStream, streamServiceName, "Bytes", wrapperspb.Bytes(Req{N: n, Size: size}.wire()))
	if err != nil {
		return 0, err
	}
	return recvAll(cs.RecvMsg, (*wrapperspb.BytesValue).GetValue, each)
}

func (c *ttrpcConn) Close() error {
	c.c.Close() // closes the connection
	return c.lc.Close()
}

// ttrpcStream makes a ttrpc server stream of a producer: the request is
// the stream's first message.
func ttrpcStream(produce func(*wrapperspb.BytesValue, sender) error) ttrpc.Stream {
	return ttrpc.Stream{StreamingServer: true, Handler: func(_ context.Context, ss ttrpc.StreamServer) (any, error) {
		in := new(wrapperspb.BytesValue)
		if err := ss.RecvMsg(in); err != nil {
			return nil, err
		}
		return nil, produce(in, ss)
	}}
}

func ttrpcChild() {
	s, err := ttrpc.NewServer()
	if err != nil {
		fatal(err)
	}
	s.RegisterService(streamServiceName, &ttrpc.ServiceDesc{Streams: map[string]ttrpc.Stream{
		"Ints":  ttrpcStream(sendInts),
		"Bytes": ttrpcStream(sendBytes),
	}})
	done := make(chan struct{})
	go s.Serve(context.Background(), child.OneConn(childListen(), done))
	<-done
	os.Exit(0)
}
