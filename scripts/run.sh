#!/usr/bin/env bash
# Runs Jank from a fresh checkout: builds the binaries (release), then starts the supervisor
# with the example plugins on its embedded defaults. It builds and starts every auto_start
# plugin under plugins/ itself. Ctrl-C stops the supervisor and every plugin.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
swift build -c release
socket="$PWD/.jank/supervisor.sock"
cat <<MSG
Jank supervisor starting; control socket: $socket
In another terminal:
  .build/release/jankctl list
  .build/release/jankctl exec dev.jank.plugins.hello-world greet --args '{"name":"Ada"}'
MSG
exec .build/release/jank-supervisor --plugins-dir plugins --state-dir .jank "$@"
