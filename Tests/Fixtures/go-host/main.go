// go-host: a hashicorp/go-plugin host with Jank's handshake, for interop tests. It loads
// a plugin binary, dispenses "handler", runs the calls given on the command line and
// prints one JSON line per call, then kills the plugin:
//
//	go-host <plugin-binary> [<method> <json-args>]...
//
// Output: {"method":…,"data":{…}} or {"method":…,"error":"<gRPC status message>"} per
// call, then always {"exited":true,"graceful":G,"exit_error":E,"plugin_stderr_lines":N,
// "unparsed_stderr_lines":M}: G is true when the plugin exited by itself with status 0 once
// go-plugin closed it (no "failed to exit gracefully" kill), E how it ended otherwise;
// N counts the plugin's stderr lines, M those go-plugin could not read as hclog JSON and
// re-logged verbatim (counted from the host logger's own output, see logTap; each is also
// named on stderr). The host logger writes hclog JSON to stderr at trace level. A plugin
// error is a result, not a failure: the exit code is 0 when every call ran, 2 on bad
// usage or when the plugin did not start or could not be dispensed (reason on stderr).
//
//	go-host --bench … is jank-bench's mode, see bench.go.
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

	anypb "github.com/golang/protobuf/ptypes/any"
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

// logTap counts the plugin's stderr lines and, from go-plugin's own re-logging of them,
// how many it could not parse. go-plugin 1.0.1 (client.go logStderr) reads each stderr
// line, writes it to ClientConfig.Stderr, then logs it through ClientConfig.Logger: parsed
// hclog JSON (string @message/@level, @timestamp with six fractional digits, a known level)
// is logged with its own message and fields, anything else verbatim, "@message" being the
// raw line. Both happen on one goroutine, line after line, so a logged record whose
// @message is exactly the line just written to Stderr is that line, unparsed. Lines over
// 64 KiB are never parsed (go-plugin logs them in raw pieces) and count as unparsed.
type logTap struct {
	mu       sync.Mutex
	pending  bytes.Buffer // the plugin's stderr: the line being written
	last     *string      // the last complete line, until go-plugin logs it
	logged   bytes.Buffer // the logger's output: the record being written
	total    int
	unparsed int
	forced   bool   // go-plugin had to kill the plugin: it did not exit on Shutdown
	exitErr  string // how the plugin process ended, when not with status 0
}

// stderrBufferSize is go-plugin 1.0.1's stdErrBufferSize: longer lines are never parsed.
const stderrBufferSize = 64 * 1024

// stderr is ClientConfig.Stderr: the plugin's raw stderr.
func (t *logTap) stderr() io.Writer { return writerFunc(t.writeStderr) }

// logOutput is the host logger's output (also copied to os.Stderr).
func (t *logTap) logOutput() io.Writer { return writerFunc(t.writeLog) }

func (t *logTap) writeStderr(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.pending.Write(p)
	for {
		line, err := t.pending.ReadBytes('\n')
		if err == io.EOF {
			t.pending.Write(line)
			return len(p), nil
		}
		line = bytes.TrimSuffix(line, []byte{'\n'})
		t.total++
		t.last = nil
		if len(line) >= stderrBufferSize {
			t.unparsed++
			fmt.Fprintf(os.Stderr, "go-host: plugin stderr line of %d bytes (go-plugin does not parse lines over 64 KiB)\n", len(line))
			continue
		}
		// As hclog's JSON encoding writes it: each invalid UTF-8 byte becomes U+FFFD.
		text := string([]rune(string(line)))
		t.last = &text
	}
}

func (t *logTap) writeLog(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.logged.Write(p)
	for {
		record, err := t.logged.ReadBytes('\n')
		if err == io.EOF {
			t.logged.Write(record)
			return len(p), nil
		}
		var fields struct {
			Message *string `json:"@message"`
			Error   string  `json:"error"`
		}
		if json.Unmarshal(record, &fields) != nil || fields.Message == nil {
			continue
		}
		// go-plugin's own records about the plugin's end (client.go Kill and Start).
		switch *fields.Message {
		case "plugin failed to exit gracefully":
			t.forced = true
		case "plugin process exited":
			t.exitErr = fields.Error
		}
		if t.last == nil {
			continue
		}
		if *fields.Message == *t.last {
			t.unparsed++
			t.last = nil
			fmt.Fprintf(os.Stderr, "go-host: go-plugin could not parse this plugin stderr line: %s\n", *fields.Message)
		}
	}
}

func (t *logTap) counts() (total, unparsed int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.total, t.unparsed
}

// ending tells whether the plugin exited by itself with status 0 when go-plugin closed it.
func (t *logTap) ending() (graceful bool, exitErr string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return !t.forced && t.exitErr == "", t.exitErr
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func main() {
	if len(os.Args) > 1 && os.Args[1] == "--bench" {
		bench(os.Args[2:])
		return
	}
	if len(os.Args) < 2 || len(os.Args)%2 != 0 {
		fmt.Fprintln(os.Stderr, "usage: go-host <plugin-binary> [<method> <json-args>]...")
		os.Exit(2)
	}
	// Every call's arguments are checked before the plugin starts.
	type call struct {
		method string
		args   map[string]*anypb.Any
	}
	var calls []call
	for i := 2; i+1 < len(os.Args); i += 2 {
		var args map[string]interface{}
		if err := json.Unmarshal([]byte(os.Args[i+1]), &args); err != nil {
			fmt.Fprintf(os.Stderr, "go-host: arguments of %s are not a JSON object: %v\n", os.Args[i], err)
			os.Exit(2)
		}
		packed, err := pluginpb.Pack(args)
		if err != nil {
			fmt.Fprintf(os.Stderr, "go-host: arguments of %s: %v\n", os.Args[i], err)
			os.Exit(2)
		}
		calls = append(calls, call{os.Args[i], packed})
	}

	tap := &logTap{}
	logger := hclog.New(&hclog.LoggerOptions{
		Name: "go-host", Output: io.MultiWriter(os.Stderr, tap.logOutput()), Level: hclog.Trace, JSONFormat: true,
	})
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  handshake,
		Plugins:          map[string]plugin.Plugin{"handler": handler{}},
		Cmd:              exec.Command(os.Args[1]),
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		Logger:           logger,
		Stderr:           tap.stderr(),
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
	for _, c := range calls {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		response, err := service.Execute(ctx, &pluginpb.ExecuteRequest{Method: c.method, Args: c.args})
		cancel()
		if err != nil {
			encoder.Encode(map[string]interface{}{"method": c.method, "error": status.Convert(err).Message()})
			continue
		}
		data, err := pluginpb.Unpack(response.Data)
		if err != nil {
			encoder.Encode(map[string]interface{}{"method": c.method, "error": "bad data: " + err.Error()})
			continue
		}
		encoder.Encode(map[string]interface{}{"method": c.method, "data": data})
	}
	// Kill returns once go-plugin has read (and logged) all of the plugin's stderr.
	client.Kill()
	total, unparsed := tap.counts()
	graceful, exitErr := tap.ending()
	encoder.Encode(map[string]interface{}{
		"exited": client.Exited(), "graceful": graceful, "exit_error": exitErr,
		"plugin_stderr_lines": total, "unparsed_stderr_lines": unparsed,
	})
	out.Flush()
}
