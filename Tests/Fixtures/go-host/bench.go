package main

// Benchmark mode, for jank-bench (the go-plugin side of its side-by-side figures):
//
//	go-host --bench <plugin-binary> <calls> <concurrency> <spawns>
//
// prints one JSON object: sequential or concurrent greet calls (latency percentiles and
// calls/s) and the median spawn -> ready time (process start, handshake, gRPC connection
// and health, dispense) over <spawns> launches.

import (
	"context"
	"encoding/json"
	"fmt"
	"io/ioutil"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"sync"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	plugin "github.com/hashicorp/go-plugin"

	"jank.dev/hello-world-go/pluginpb"
)

func launch(binary string) (*plugin.Client, pluginpb.PluginServiceClient, error) {
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  handshake,
		Plugins:          map[string]plugin.Plugin{"handler": handler{}},
		Cmd:              exec.Command(binary),
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		Logger:           hclog.New(&hclog.LoggerOptions{Output: ioutil.Discard, Level: hclog.Error}),
		Stderr:           ioutil.Discard,
	})
	rpcClient, err := client.Client()
	if err != nil {
		client.Kill()
		return nil, nil, err
	}
	// go-plugin 1.0.1's Client() dials without waiting for the connection, and Dispense
	// makes no call: Ping (grpc.health.v1 Check for "plugin") is the health step that the
	// supervisor's spawn -> ready includes, so both sides measure the same thing.
	if err := rpcClient.Ping(); err != nil {
		client.Kill()
		return nil, nil, err
	}
	raw, err := rpcClient.Dispense("handler")
	if err != nil {
		client.Kill()
		return nil, nil, err
	}
	return client, raw.(pluginpb.PluginServiceClient), nil
}

func percentile(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	index := int(p * float64(len(sorted)-1))
	return float64(sorted[index].Microseconds())
}

func bench(args []string) {
	if len(args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: go-host --bench <plugin-binary> <calls> <concurrency> <spawns>")
		os.Exit(2)
	}
	binary := args[0]
	calls, _ := strconv.Atoi(args[1])
	concurrency, _ := strconv.Atoi(args[2])
	spawns, _ := strconv.Atoi(args[3])
	result := map[string]interface{}{}

	client, service, err := launch(binary)
	if err != nil {
		fmt.Fprintf(os.Stderr, "go-host: %v\n", err)
		os.Exit(2)
	}
	greetArgs, _ := pluginpb.Pack(map[string]interface{}{"name": "bench"})
	request := &pluginpb.ExecuteRequest{Method: "greet", Args: greetArgs}
	for i := 0; i < 200 && i < calls; i++ { // warm up
		service.Execute(context.Background(), request)
	}
	latencies := make([]time.Duration, calls)
	var next int64
	var mu sync.Mutex
	var wg sync.WaitGroup
	begin := time.Now()
	for w := 0; w < concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if int(i) >= calls {
					return
				}
				start := time.Now()
				if _, err := service.Execute(context.Background(), request); err != nil {
					fmt.Fprintf(os.Stderr, "go-host: call failed: %v\n", err)
					os.Exit(1)
				}
				latencies[i] = time.Since(start)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(begin)
	client.Kill()
	sort.Slice(latencies, func(a, b int) bool { return latencies[a] < latencies[b] })
	var total time.Duration
	for _, l := range latencies {
		total += l
	}
	if calls > 0 {
		result["calls"] = calls
		result["concurrency"] = concurrency
		result["calls_per_s"] = float64(calls) / elapsed.Seconds()
		result["mean_us"] = float64(total.Microseconds()) / float64(calls)
		result["p50_us"] = percentile(latencies, 0.50)
		result["p99_us"] = percentile(latencies, 0.99)
	}

	spawnTimes := make([]time.Duration, 0, spawns)
	for i := 0; i < spawns; i++ {
		start := time.Now()
		c, _, err := launch(binary)
		if err != nil {
			fmt.Fprintf(os.Stderr, "go-host: %v\n", err)
			os.Exit(2)
		}
		spawnTimes = append(spawnTimes, time.Since(start))
		c.Kill()
	}
	sort.Slice(spawnTimes, func(a, b int) bool { return spawnTimes[a] < spawnTimes[b] })
	if spawns > 0 {
		result["spawn_median_ms"] = float64(spawnTimes[len(spawnTimes)/2].Microseconds()) / 1000
	}
	json.NewEncoder(os.Stdout).Encode(result)
}
