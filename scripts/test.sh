#!/usr/bin/env bash
# Runs every test: unit tests, the control channel over real sockets, integration tests that
# start real plugin processes and the real jank-supervisor, jank-api and jankctl binaries,
# then the load-heavy suites on their own (chaos, a thousand restarts, Go builds and the
# benchmark smoke run) so that their load does not starve tests that check behaviour in
# time, then the OpenAPI checks (schemathesis).
#   scripts/test.sh                      every stage
#   scripts/test.sh --stage NAME         one stage: behaviour, load or openapi
#   scripts/test.sh ARGS...              ARGS go to `swift test` instead (e.g. --filter APITests)
# scripts/test-repeat.sh runs this N times and lists every failure.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
swift build --build-tests

load="ChaosTests|ProcessHygieneTests|GoInteropTests|BenchmarkSmokeTests"
stage() {
  case "$1" in
    behaviour) swift test --skip-build --skip "$load|OpenAPITests" ;;
    load) swift test --skip-build --filter "$load" ;;
    openapi) swift test --skip-build --filter OpenAPITests ;;
    *) echo "test.sh: unknown stage '$1' (behaviour, load or openapi)" >&2; exit 2 ;;
  esac
}

if [ "${1:-}" = "--stage" ]; then
  [ $# -eq 2 ] || { echo "usage: scripts/test.sh --stage behaviour|load|openapi" >&2; exit 2; }
  stage "$2"
  exit
fi
if [ $# -gt 0 ]; then
  exec swift test --skip-build "$@"
fi
stage behaviour
stage load
stage openapi
