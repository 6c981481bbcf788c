package main

// go-plugin subjects (hashicorp/go-plugin): the child calls plugin.Serve,
// the parent uses plugin.NewClient + Client() + Dispense, exactly as the
// library's examples do. go-plugin picks a Unix socket in a temp dir on
// Linux. Close is plugin.Client.Kill(), which asks the plugin to exit,
// waits for the process to be reaped (up to 2 s, then kills) and removes
// the socket dir.
//
//   - net/rpc mode: a plugin.Plugin whose Server returns an RPC receiver
//     (gob encoding over a yamux stream).
//   - gRPC mode: a plugin.GRPCPlugin registering a hand-written
//     grpc.ServiceDesc (see grpcsvc.go): no protoc, messages are the
//     well-known wrapperspb.StringValue / BytesValue, whose wire form is
//     the same as `message PingReq { string message = 1; }`.

import (
	"context"
	"net/rpc"
	"os"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

var pluginHandshake = plugin.HandshakeConfig{
	ProtocolVersion:  1,
	MagicCookieKey:   "BENCH_PLUGIN_COOKIE",
	MagicCookieValue: "isolated-workers-bench",
}

// ---- net/rpc ----

// BenchRPC is the net/rpc receiver served in the child.
type BenchRPC struct{}

func (BenchRPC) Ping(req PingReq, res *PingRes) error { res.Message = req.Message; return nil }
func (BenchRPC) Echo(req []byte, res *[]byte) error   { *res = req; return nil }

type netRPCPlugin struct{}

func (netRPCPlugin) Server(*plugin.MuxBroker) (interface{}, error) { return BenchRPC{}, nil }
func (netRPCPlugin) Client(_ *plugin.MuxBroker, c *rpc.Client) (interface{}, error) {
	return c, nil
}

type pluginNetRPCClient struct {
	pc  *plugin.Client
	rpc *rpc.Client
}

func newPluginClient(role string, set plugin.PluginSet, proto plugin.Protocol) (*plugin.Client, interface{}, error) {
	cmd := childCmd(role)
	cmd.Stderr = nil // go-plugin captures the child's stderr itself (its std log output goes to the null logger)
	pc := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  pluginHandshake,
		Plugins:          set,
		Cmd:              cmd,
		AllowedProtocols: []plugin.Protocol{proto},
		Logger:           hclog.NewNullLogger(),
	})
	cp, err := pc.Client()
	if err != nil {
		pc.Kill()
		return nil, nil, err
	}
	raw, err := cp.Dispense("bench")
	if err != nil {
		pc.Kill()
		return nil, nil, err
	}
	return pc, raw, nil
}

func spawnPluginNetRPC(ctx context.Context) (Client, error) {
	pc, raw, err := newPluginClient("goplugin-netrpc", plugin.PluginSet{"bench": netRPCPlugin{}}, plugin.ProtocolNetRPC)
	if err != nil {
		return nil, err
	}
	return &pluginNetRPCClient{pc: pc, rpc: raw.(*rpc.Client)}, nil
}

func (c *pluginNetRPCClient) Ping(ctx context.Context) error {
	var res PingRes
	if err := c.rpc.Call("Plugin.Ping", PingReq{Message: pingMessage}, &res); err != nil {
		return err
	}
	return checkPing(res.Message)
}

func (c *pluginNetRPCClient) Echo(ctx context.Context, p []byte) ([]byte, error) {
	var res []byte
	err := c.rpc.Call("Plugin.Echo", p, &res)
	return res, err
}

func (c *pluginNetRPCClient) Close() error { c.pc.Kill(); return nil }

func pluginNetRPCChild() {
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: pluginHandshake,
		Plugins:         plugin.PluginSet{"bench": netRPCPlugin{}},
		Logger:          hclog.NewNullLogger(),
	})
	os.Exit(0)
}

// ---- gRPC ----

type grpcPlugin struct{ plugin.NetRPCUnsupportedPlugin }

func (grpcPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	s.RegisterService(&benchServiceDesc, benchServer{})
	return nil
}

func (grpcPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, cc *grpc.ClientConn) (interface{}, error) {
	return cc, nil
}

type pluginGRPCClient struct {
	pc *plugin.Client
	cc *grpc.ClientConn
}

func spawnPluginGRPC(ctx context.Context) (Client, error) {
	pc, raw, err := newPluginClient("goplugin-grpc", plugin.PluginSet{"bench": grpcPlugin{}}, plugin.ProtocolGRPC)
	if err != nil {
		return nil, err
	}
	return &pluginGRPCClient{pc: pc, cc: raw.(*grpc.ClientConn)}, nil
}

func (c *pluginGRPCClient) Ping(ctx context.Context) error {
	res := new(wrapperspb.StringValue)
	if err := c.cc.Invoke(ctx, benchPingMethod, wrapperspb.String(pingMessage), res); err != nil {
		return err
	}
	return checkPing(res.GetValue())
}

func (c *pluginGRPCClient) Echo(ctx context.Context, p []byte) ([]byte, error) {
	res := new(wrapperspb.BytesValue)
	if err := c.cc.Invoke(ctx, benchEchoMethod, wrapperspb.Bytes(p), res); err != nil {
		return nil, err
	}
	return res.GetValue(), nil
}

func (c *pluginGRPCClient) Close() error { c.pc.Kill(); return nil }

func pluginGRPCChild() {
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: pluginHandshake,
		Plugins:         plugin.PluginSet{"bench": grpcPlugin{}},
		GRPCServer:      plugin.DefaultGRPCServer,
		Logger:          hclog.NewNullLogger(),
	})
	os.Exit(0)
}
