// go-host: a hashicorp/go-plugin host with Jank's handshake, for interop tests. It loads
// a plugin binary, dispenses "handler", runs the calls given on the command line and
// prints one JSON line per call, then kills the plugin:
//
//	go-host <plugin-binary> [<method> <json-args>]...
//
// Output: {"method":…,"data":{…}} or {"method":…,"error":"…"} per call, then
// {"exited":true,"plugin_stderr_lines":N,"unparsed_stderr_lines":M}, where unparsed counts
// the plugin's stderr lines that go-plugin could not read as hclog JSON (it then logs
// them as plain text). Exit code 0 when every call ran, 2 when the plugin did not load.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	plugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"jank.dev/hello-world-go/pluginpb"
)

var handshake = plugin.HandshakeConfig{ProtocolVersion: 1, MagicCookieKey: "JANK_PLUGIN", MagicCookieValue: "jank-plugin"}

type handler struct{ plugin.NetRPCUnsupportedPlugin }

func (handler) GRPCServer(*plugin.GRPCBroker, *grpc.Server) error { return nil }

func (handler) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (interface{}, error) {
	return pluginpb.NewPluginServiceClient(c), nil
}

// stderrLines receives the plugin's raw stderr (go-plugin's ClientConfig.Stderr) and counts
// the lines that go-plugin's own parser (log_entry.go parseJSON) would reject.
type stderrLines struct {
	mu       sync.Mutex
	pending  bytes.Buffer
	total    int
	unparsed int
}

func (s *stderrLines) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pending.Write(p)
	for {
		line, err := s.pending.ReadBytes('\n')
		if err == io.EOF {
			s.pending.Write(line)
			return len(p), nil
		}
		line = bytes.TrimRight(line, "\n")
		if len(line) == 0 {
			continue
		}
		s.total++
		if !parsesAsHCLog(line) {
			s.unparsed++
			fmt.Fprintf(os.Stderr, "go-host: unparsed plugin stderr line: %s\n", line)
		}
	}
}

// parsesAsHCLog mirrors go-plugin 1.0.1's parseJSON: a JSON object whose @message and
// @level are strings and whose @timestamp has exactly six fractional digits.
func parsesAsHCLog(line []byte) bool {
	var raw map[string]interface{}
	if json.Unmarshal(line, &raw) != nil {
		return false
	}
	for _, key := range []string{"@message", "@level"} {
		if v, ok := raw[key]; ok {
			if _, isString := v.(string); !isString {
				return false
			}
		}
	}
	if v, ok := raw["@timestamp"]; ok {
		text, isString := v.(string)
		if !isString {
			return false
		}
		if _, err := time.Parse("2006-01-02T15:04:05.000000Z07:00", text); err != nil {
			return false
		}
	}
	return true
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "--bench" {
		bench(os.Args[2:])
		return
	}
	if len(os.Args) < 2 || len(os.Args)%2 != 0 {
		fmt.Fprintln(os.Stderr, "usage: go-host <plugin-binary> [<method> <json-args>]...")
		os.Exit(2)
	}
	lines := &stderrLines{}
	logger := hclog.New(&hclog.LoggerOptions{Name: "go-host", Output: os.Stderr, Level: hclog.Debug, JSONFormat: true})
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  handshake,
		Plugins:          map[string]plugin.Plugin{"handler": handler{}},
		Cmd:              exec.Command(os.Args[1]),
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		Logger:           logger,
		Stderr:           lines,
	})
	rpcClient, err := client.Client()
	if err != nil {
		client.Kill()
		fmt.Fprintf(os.Stderr, "go-host: the plugin did not load: %v\n", err)
		os.Exit(2)
	}
	raw, err := rpcClient.Dispense("handler")
	if err != nil {
		client.Kill()
		fmt.Fprintf(os.Stderr, "go-host: cannot dispense handler: %v\n", err)
		os.Exit(2)
	}
	service := raw.(pluginpb.PluginServiceClient)
	out := bufio.NewWriter(os.Stdout)
	encoder := json.NewEncoder(out)
	for i := 2; i+1 < len(os.Args); i += 2 {
		method := os.Args[i]
		var args map[string]interface{}
		if err := json.Unmarshal([]byte(os.Args[i+1]), &args); err != nil {
			fmt.Fprintf(os.Stderr, "go-host: arguments of %s are not a JSON object: %v\n", method, err)
			os.Exit(2)
		}
		packed, err := pluginpb.Pack(args)
		if err != nil {
			fmt.Fprintf(os.Stderr, "go-host: %v\n", err)
			os.Exit(2)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		response, err := service.Execute(ctx, &pluginpb.ExecuteRequest{Method: method, Args: packed})
		cancel()
		if err != nil {
			encoder.Encode(map[string]interface{}{"method": method, "error": status.Convert(err).Message()})
			continue
		}
		data, err := pluginpb.Unpack(response.Data)
		if err != nil {
			encoder.Encode(map[string]interface{}{"method": method, "error": "bad data: " + err.Error()})
			continue
		}
		encoder.Encode(map[string]interface{}{"method": method, "data": data})
	}
	client.Kill()
	lines.mu.Lock()
	encoder.Encode(map[string]interface{}{"exited": client.Exited(), "plugin_stderr_lines": lines.total, "unparsed_stderr_lines": lines.unparsed})
	lines.mu.Unlock()
	out.Flush()
}
