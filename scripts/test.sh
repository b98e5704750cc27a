#!/usr/bin/env bash
# Runs every test: unit tests, the control channel over real sockets, integration tests that
# start real plugin processes and the real jank-supervisor, jank-api and jankctl binaries,
# then the hostile-input suites, then the load-heavy suites (chaos, a thousand restarts, Go
# builds, huge inputs and the benchmark smoke run), each stage on its own so that one's load
# does not starve another's tests that check behaviour in time, then the OpenAPI checks
# (schemathesis).
#   scripts/test.sh                      every stage
#   scripts/test.sh --stage NAME         one stage: behaviour, hostile, load or openapi
#   scripts/test.sh ARGS...              ARGS go to `swift test` instead (e.g. --filter APITests)
# scripts/test-repeat.sh runs this N times and lists every failure.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
swift build --build-tests

# Swift Testing captures a backtrace at every `throw` in the test process, and the product runs
# in it (in-process supervisors): with a debug build that unwinding took most of the test
# process's CPU time, and a stall probe caught an event loop inside it for over 700 ms. The
# product never pays for it outside tests; a failed expectation still says where it failed.
export SWT_SWIFT_ERROR_BACKTRACING_ENABLED="${SWT_SWIFT_ERROR_BACKTRACING_ENABLED:-0}"

load="ChaosTests|ProcessHygieneTests|GoInteropTests|BenchmarkSmokeTests|HostileInputsTests"
# The hostile-input suites check that the supervisor answers within a second after each
# attack; beside the behaviour stage's 160 tests on two cores, that second measured the
# suite's load, not the product.
hostile="HostileClientsTests|HostileFolderTests|HostileOutputTests|HostilePluginTests|HostileBuildTests"
run_stage() {
  case "$1" in
    behaviour) swift test --skip-build --skip "$load|$hostile|OpenAPITests" ;;
    hostile) swift test --skip-build --filter "$hostile" ;;
    load) swift test --skip-build --filter "$load" ;;
    openapi) swift test --skip-build --filter OpenAPITests ;;
    *) echo "test.sh: unknown stage '$1' (behaviour, hostile, load or openapi)" >&2; exit 2 ;;
  esac
}
# A stage's output is thousands of lines; when it fails, its failures are repeated at the
# end so that the tail of a CI log names them.
stage() {
  local log status
  log=$(mktemp /tmp/jank-test-stage.XXXXXX)
  run_stage "$1" 2>&1 | tee "$log"
  status=${PIPESTATUS[0]}
  if [ "$status" -ne 0 ]; then
    echo "==== stage '$1' failed (exit $status); its failures:"
    grep -aE -A6 "✘ Test .*recorded an issue|error: .*failed|Fatal error|Test crashed" "$log" | head -80
    grep -aE "✘ Test .*failed after" "$log" | head -20
    rm -f "$log"
    exit "$status"
  fi
  rm -f "$log"
}

if [ "${1:-}" = "--stage" ]; then
  [ $# -eq 2 ] || { echo "usage: scripts/test.sh --stage behaviour|hostile|load|openapi" >&2; exit 2; }
  stage "$2"
  exit
fi
if [ $# -gt 0 ]; then
  exec swift test --skip-build "$@"
fi
stage behaviour
stage hostile
stage load
stage openapi
