package main

// go-plugin gRPC (hashicorp/go-plugin v1.8.0, as bench/goplugin.go: the
// child calls plugin.Serve, the host plugin.NewClient + Client() +
// Dispense) with a hand-written grpc.ServiceDesc — what
// protoc-gen-go-grpc would generate for
//
//	service Streams {
//	  rpc Ints(google.protobuf.BytesValue)  returns (stream google.protobuf.Int64Value);
//	  rpc Bytes(google.protobuf.BytesValue) returns (stream google.protobuf.BytesValue);
//	}
//
// The request is Req.wire() in a BytesValue; the items are the well-known
// wrapper messages, so no protoc run is needed. The host receives every
// item into a new message, as a generated client's Recv does.

import (
	"context"
	"os"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"github.com/isolated-workers/worker/bench/internal/child"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

const (
	streamServiceName = "bench.Streams"
	grpcIntsMethod    = "/bench.Streams/Ints"
	grpcBytesMethod   = "/bench.Streams/Bytes"
)

type streamService interface {
	Ints(*wrapperspb.BytesValue, grpc.ServerStream) error
	Bytes(*wrapperspb.BytesValue, grpc.ServerStream) error
}

type streamServer struct{}

func (streamServer) Ints(in *wrapperspb.BytesValue, s grpc.ServerStream) error {
	return sendInts(in, s)
}

func (streamServer) Bytes(in *wrapperspb.BytesValue, s grpc.ServerStream) error {
	return sendBytes(in, s)
}

// sender is what the producers need of a stream: grpc.ServerStream and
// ttrpc.StreamServer both have it.
type sender interface{ SendMsg(m any) error }

// sendInts and sendBytes are the producers of gRPC and ttrpc: they send
// the items back to back, each as soon as the stream takes it.
func sendInts(in *wrapperspb.BytesValue, s sender) error {
	r, err := reqFromWire(in.GetValue())
	if err != nil {
		return err
	}
	for i := range r.N {
		if err := s.SendMsg(wrapperspb.Int64(int64(i))); err != nil {
			return err
		}
	}
	return nil
}

func sendBytes(in *wrapperspb.BytesValue, s sender) error {
	r, err := reqFromWire(in.GetValue())
	if err != nil {
		return err
	}
	p := child.Payload(r.Size)
	for range r.N {
		if err := s.SendMsg(wrapperspb.Bytes(p)); err != nil {
			return err
		}
	}
	return nil
}

func streamHandler(call func(streamService, *wrapperspb.BytesValue, grpc.ServerStream) error) grpc.StreamHandler {
	return func(srv any, s grpc.ServerStream) error {
		in := new(wrapperspb.BytesValue)
		if err := s.RecvMsg(in); err != nil {
			return err
		}
		return call(srv.(streamService), in, s)
	}
}

var streamServiceDesc = grpc.ServiceDesc{
	ServiceName: streamServiceName,
	HandlerType: (*streamService)(nil),
	Streams: []grpc.StreamDesc{
		{StreamName: "Ints", ServerStreams: true, Handler: streamHandler(streamService.Ints)},
		{StreamName: "Bytes", ServerStreams: true, Handler: streamHandler(streamService.Bytes)},
	},
	Metadata: "streams.proto",
}

var pluginHandshake = plugin.HandshakeConfig{
	ProtocolVersion:  1,
	MagicCookieKey:   "STREAMBENCH_PLUGIN_COOKIE",
	MagicCookieValue: "isolated-workers-streambench",
}

type grpcPlugin struct{ plugin.NetRPCUnsupportedPlugin }

func (grpcPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	s.RegisterService(&streamServiceDesc, streamServer{})
	return nil
}

func (grpcPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, cc *grpc.ClientConn) (any, error) {
	return cc, nil
}

type grpcConn struct {
	pc *plugin.Client
	cc *grpc.ClientConn
}

func spawnGRPC(context.Context) (Conn, error) {
	cmd := childCmd("grpc")
	cmd.Stderr = nil // go-plugin captures the child's stderr itself
	pc := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  pluginHandshake,
		Plugins:          plugin.PluginSet{"streams": grpcPlugin{}},
		Cmd:              cmd,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		Logger:           hclog.NewNullLogger(),
	})
	cp, err := pc.Client()
	if err != nil {
		pc.Kill()
		return nil, err
	}
	raw, err := cp.Dispense("streams")
	if err != nil {
		pc.Kill()
		return nil, err
	}
	return &grpcConn{pc: pc, cc: raw.(*grpc.ClientConn)}, nil
}

// open starts a server stream of method with the request r.
func (c *grpcConn) open(ctx context.Context, desc int, method string, r Req) (grpc.ClientStream, error) {
	cs, err := c.cc.NewStream(ctx, &streamServiceDesc.Streams[desc], method)
	if err != nil {
		return nil, err
	}
	if err := cs.SendMsg(wrapperspb.Bytes(r.wire())); err != nil {
		return nil, err
	}
	return cs, cs.CloseSend()
}

func (c *grpcConn) Ints(ctx context.Context, n int, each func(int64) error) (int, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the stream if it is left early
	cs, err := c.open(ctx, 0, grpcIntsMethod, Req{N: n})
	if err != nil {
		return 0, err
	}
	return recvAll(cs.RecvMsg, (*wrapperspb.Int64Value).GetValue, each)
}

func (c *grpcConn) Bytes(ctx context.Context, n, size int, each func([]byte) error) (int, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cs, err := c.open(ctx, 1, grpcBytesMethod, Req{N: n, Size: size})
	if err != nil {
		return 0, err
	}
	return recvAll(cs.RecvMsg, (*wrapperspb.BytesValue).GetValue, each)
}

func (c *grpcConn) Close() error { c.pc.Kill(); return nil }

func grpcChild() {
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: pluginHandshake,
		Plugins:         plugin.PluginSet{"streams": grpcPlugin{}},
		GRPCServer:      plugin.DefaultGRPCServer,
		Logger:          hclog.NewNullLogger(),
	})
	os.Exit(0) // the host killed the plugin
}
