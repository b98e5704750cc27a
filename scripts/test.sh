#!/usr/bin/env bash
# Runs every test: unit tests, the control channel over real sockets, integration tests that
# start real plugin processes and the real jank-supervisor, jank-api and jankctl binaries,
# the OpenAPI checks (schemathesis), then the load-heavy suites (chaos, a thousand restarts)
# on their own, so that their load does not starve the tests that check behaviour in time.
# Arguments, if any, go to `swift test` instead (e.g. --filter APITests).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
swift build --build-tests
if [ $# -gt 0 ]; then
  exec swift test --skip-build "$@"
fi
heavy="ChaosTests|ProcessHygieneTests|OpenAPITests"
swift test --skip-build --skip "$heavy"
swift test --skip-build --filter "ChaosTests|ProcessHygieneTests"
swift test --skip-build --filter OpenAPITests
