#!/usr/bin/env bash
# Runs Jank from a fresh checkout: builds the binaries (release), starts the supervisor with
# the example plugins on its embedded defaults (it builds and starts every auto_start plugin
# under plugins/ itself) and jank-api on 127.0.0.1:8080 next to it. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
swift build -c release --static-swift-stdlib
socket="$PWD/.jank/supervisor.sock"
cat <<MSG
Jank starting: supervisor (control socket $socket) and jank-api on http://127.0.0.1:8080
jank-api has no token here, so it answers local programs only: a loopback Host and Origin, and
POST bodies sent as Content-Type: application/json (curl --json), never a web page's form.
Try, in another terminal:
  curl -s localhost:8080/api/plugin/list
  curl -s localhost:8080/api/plugin/execute --json '{"id":"dev.jank.plugins.hello-world","method":"greet","args":{"name":"Ada"}}'
  .build/release/jankctl list
MSG
# The example hello-world builds through this repository's package (its output is ../../.build/…),
# more than its own folder: it is let build in place, as the user running this script.
.build/release/jank-supervisor --plugins-dir plugins --state-dir .jank --build-in-place dev.jank.plugins.hello-world "$@" &
supervisor=$!
.build/release/jank-api --socket "$socket" &
api=$!
trap 'kill -TERM $api $supervisor 2>/dev/null || true; wait' INT TERM EXIT
# Either one ending ends the run (the trap stops the other).
wait -n
