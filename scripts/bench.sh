#!/usr/bin/env bash
# Benchmarks (not tests), side by side in one run: jank-bench (supervisor -> Swift plugin over
# jank-frame and gRPC, allocations per call, the control channel, spawn and crash recovery) beside a hashicorp/go-plugin Go host
# -> Go plugin pair built from Debian's packages, then the HTTP hop with wrk against jank-api
# (scripts/bench-http.sh). Arguments go to jank-bench (e.g. --calls 10000 --spawns 50
# --crashes 20). The scale figures come from a second, fresh jank-bench process
# (JANK_BENCH_SCALE, default 100,500,1000; JANK_BENCH_IDLE_SECONDS, default 30).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
swift build -c release --static-swift-stdlib --product jank-bench
swift build -c release --static-swift-stdlib --product hello-world
(cd plugins/hello-world-go && sh build.sh)
work=$(mktemp -d /tmp/jank-bench-go.XXXXXX)
trap 'rm -rf "$work"' EXIT
sh Tests/Fixtures/go-host/build.sh "$work/go-host"
.build/release/jank-bench --swift-plugin .build/release/hello-world \
  --go-plugin plugins/hello-world-go/bin/hello-world-go --go-host "$work/go-host" "$@"
echo
echo "Scale: a fresh supervisor holding 100, 500 and 1000 copies of hello-world"
.build/release/jank-bench --swift-plugin .build/release/hello-world --scale-only \
  --scale "${JANK_BENCH_SCALE:-100,500,1000}" --idle-seconds "${JANK_BENCH_IDLE_SECONDS:-30}"
echo
echo "HTTP: jank-api -> control channel -> supervisor -> plugin"
scripts/bench-http.sh 50 10 | grep -E "^(machine|command|requests|latency)"
