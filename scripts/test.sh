#!/usr/bin/env bash
# Runs every test: unit tests, the control channel over real sockets, integration tests that
# start real plugin processes and the real jank-supervisor, jank-api and jankctl binaries,
# then the load-heavy suites on their own (chaos, a thousand restarts, Go builds and the
# benchmark smoke run) so that their load does not starve tests that check behaviour in
# time, then the OpenAPI checks (schemathesis).
# Arguments, if any, go to `swift test` instead (e.g. --filter APITests).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
swift build --build-tests
if [ $# -gt 0 ]; then
  exec swift test --skip-build "$@"
fi
load="ChaosTests|ProcessHygieneTests|GoInteropTests|BenchmarkSmokeTests"
swift test --skip-build --skip "$load|OpenAPITests"
swift test --skip-build --filter "$load"
swift test --skip-build --filter OpenAPITests
