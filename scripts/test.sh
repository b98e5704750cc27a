#!/usr/bin/env bash
# Runs every test: unit tests, the control channel over real sockets, and integration tests
# that start real plugin processes and the real jank-supervisor and jankctl binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
swift build --build-tests
swift test --skip-build "$@"
