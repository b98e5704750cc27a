// hello-world-go: the Swift hello-world's methods, as a hashicorp/go-plugin gRPC plugin
// with the Jank handshake. Built offline from Debian's Go packages by build.sh.
package main

import (
	"context"
	"errors"

	plugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"jank.dev/hello-world-go/pluginpb"
)

// Handshake is Jank's: a host that does not set JANK_PLUGIN=jank-plugin is refused.
var Handshake = plugin.HandshakeConfig{ProtocolVersion: 1, MagicCookieKey: "JANK_PLUGIN", MagicCookieValue: "jank-plugin"}

func execute(method string, args map[string]interface{}) (map[string]interface{}, error) {
	switch method {
	case "greet":
		name, _ := args["name"].(string)
		if name == "" {
			return nil, errors.New("name is required")
		}
		return map[string]interface{}{"message": "Hello, " + name + "!"}, nil
	case "echo":
		return args, nil
	case "info":
		return map[string]interface{}{
			"id": "dev.jank.plugins.hello-world-go", "name": "Hello World Plugin (Go)",
			"version": "1.0.0", "status": "running",
		}, nil
	default:
		return nil, errors.New("unknown method: " + method)
	}
}

type server struct{}

func (server) Execute(ctx context.Context, request *pluginpb.ExecuteRequest) (*pluginpb.ExecuteResponse, error) {
	args, err := pluginpb.Unpack(request.Args)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	data, err := execute(request.Method, args)
	if err != nil {
		// As the Swift SDK does: a plugin error is status Unknown with the error's text.
		return nil, status.Error(codes.Unknown, err.Error())
	}
	packed, err := pluginpb.Pack(data)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &pluginpb.ExecuteResponse{Data: packed}, nil
}

func (server) HealthCheck(context.Context, *pluginpb.HealthCheckRequest) (*pluginpb.HealthCheckResponse, error) {
	return &pluginpb.HealthCheckResponse{Status: "healthy"}, nil
}

// handler is the plugin type hosts dispense ("handler").
type handler struct{ plugin.NetRPCUnsupportedPlugin }

func (handler) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	pluginpb.RegisterPluginServiceServer(s, server{})
	return nil
}

func (handler) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (interface{}, error) {
	return pluginpb.NewPluginServiceClient(c), nil
}

func main() {
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: Handshake,
		Plugins:         map[string]plugin.Plugin{"handler": handler{}},
		GRPCServer:      plugin.DefaultGRPCServer,
	})
}
