package main

// A hand-written gRPC service descriptor — what protoc-gen-go-grpc would
// generate for
//
//	service Bench {
//	  rpc Ping(google.protobuf.StringValue) returns (google.protobuf.StringValue);
//	  rpc Echo(google.protobuf.BytesValue)  returns (google.protobuf.BytesValue);
//	}
//
// The messages are protobuf's well-known wrapper types, so the standard
// proto codec is used and no protoc run is needed. ttrpc.go reuses the
// same handlers.

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

const (
	benchServiceName = "bench.Bench"
	benchPingMethod  = "/bench.Bench/Ping"
	benchEchoMethod  = "/bench.Bench/Echo"
)

type benchService interface {
	Ping(context.Context, *wrapperspb.StringValue) (*wrapperspb.StringValue, error)
	Echo(context.Context, *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error)
}

type benchServer struct{}

func (benchServer) Ping(_ context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	return &wrapperspb.StringValue{Value: in.GetValue()}, nil
}

func (benchServer) Echo(_ context.Context, in *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error) {
	return &wrapperspb.BytesValue{Value: in.GetValue()}, nil
}

func benchPingHandler(srv any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
	in := new(wrapperspb.StringValue)
	if err := dec(in); err != nil {
		return nil, err
	}
	if icpt == nil {
		return srv.(benchService).Ping(ctx, in)
	}
	info := &grpc.UnaryServerInfo{Server: srv, FullMethod: benchPingMethod}
	return icpt(ctx, in, info, func(ctx context.Context, req any) (any, error) {
		return srv.(benchService).Ping(ctx, req.(*wrapperspb.StringValue))
	})
}

func benchEchoHandler(srv any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
	in := new(wrapperspb.BytesValue)
	if err := dec(in); err != nil {
		return nil, err
	}
	if icpt == nil {
		return srv.(benchService).Echo(ctx, in)
	}
	info := &grpc.UnaryServerInfo{Server: srv, FullMethod: benchEchoMethod}
	return icpt(ctx, in, info, func(ctx context.Context, req any) (any, error) {
		return srv.(benchService).Echo(ctx, req.(*wrapperspb.BytesValue))
	})
}

var benchServiceDesc = grpc.ServiceDesc{
	ServiceName: benchServiceName,
	HandlerType: (*benchService)(nil),
	Methods: []grpc.MethodDesc{
		{MethodName: "Ping", Handler: benchPingHandler},
		{MethodName: "Echo", Handler: benchEchoHandler},
	},
	Metadata: "bench.proto",
}
