#!/usr/bin/env bash
# Benchmark (not a test): POST /api/plugin/execute against the Swift hello-world through
# jank-api -> control socket -> supervisor -> jank-frame -> plugin, with wrk (50 connections, 10 s
# by default). Prints req/s and latency percentiles. Usage: scripts/bench-http.sh [conns] [secs]
# JANK_BENCH_BIN=<dir> runs binaries built elsewhere (e.g. with other compiler flags) instead.
set -euo pipefail
cd "$(dirname "$0")/.."
connections=${1:-50}
seconds=${2:-10}
scripts/install-deps.sh
bin=${JANK_BENCH_BIN:-.build/release}
if [ -z "${JANK_BENCH_BIN:-}" ]; then
  swift build -c release --static-swift-stdlib --product jank-supervisor
  swift build -c release --static-swift-stdlib --product jank-api
  swift build -c release --static-swift-stdlib --product hello-world
fi
work=$(mktemp -d /tmp/jank-bench.XXXXXX)
trap 'kill $api $supervisor 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
# A copy of plugins/hello-world with the binary just built; it is auto_start.
mkdir -p "$work/plugins/hello-world/bin"
# Its manifest without "build": the copy runs the binary just built, never rebuilds it.
python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); m.pop("build",None); json.dump(m,open(sys.argv[2],"w"))' \
  plugins/hello-world/plugin.json "$work/plugins/hello-world/plugin.json"
cp $bin/hello-world "$work/plugins/hello-world/bin/hello-world"
$bin/jank-supervisor --plugins-dir "$work/plugins" --state-dir "$work/state" --log-level warning &
supervisor=$!
port=$((20000 + RANDOM % 20000))
$bin/jank-api --listen 127.0.0.1:$port --socket "$work/state/supervisor.sock" --log-level warning &
api=$!
url="http://127.0.0.1:$port/api/plugin/execute"
body='{"id":"dev.jank.plugins.hello-world","method":"greet","args":{"name":"bench"}}'
for _ in $(seq 1 300); do
  if curl -sf -o /dev/null --json "$body" "$url"; then break; fi
  sleep 0.1
done
curl -sf --json "$body" "$url" >/dev/null || { echo "bench: hello-world never answered through $url" >&2; exit 1; }
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo), $(uname -r)"
echo "command: wrk -t2 -c$connections -d${seconds}s -s benchmarks/wrk-execute.lua --latency $url"
wrk -t2 -c"$connections" -d"${seconds}s" -s benchmarks/wrk-execute.lua --latency "$url"
