#!/usr/bin/env bash
# Runs the README's test command (or one stage of it) N times in a row and lists every
# failure with its test name and message, to prove that the suite passes every time.
#   scripts/test-repeat.sh [-n N] [--stage behaviour|hostile|load|openapi] [--hog] [--fresh-clone]
#     -n N           runs (default 10)
#     --stage NAME   one stage of scripts/test.sh instead of all of them
#     --hog          a busy loop per core beside the tests, for the whole run
#     --fresh-clone  clone this checkout's HEAD into a temporary folder and run there
#                    (what CI does), instead of in this tree
# JANK_TEST_STALL_PROBE=1 in the environment has the test process write every thread's stack
# to /tmp/jank-stall-PID-N.txt when its cooperative pool or an event loop stalls.
# Each run's whole output is kept in the log folder it prints; the summary at the end says
# which runs failed and how long each took. Exit status: 0 only if every run passed.
set -uo pipefail
cd "$(dirname "$0")/.."

runs=10 stage="" hog=0 fresh=0
while [ $# -gt 0 ]; do
  case "$1" in
    -n) runs="$2"; shift 2 ;;
    --stage) stage="$2"; shift 2 ;;
    --hog) hog=1; shift ;;
    --fresh-clone) fresh=1; shift ;;
    *) echo "test-repeat.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done

logs=$(mktemp -d /tmp/jank-test-repeat.XXXXXX)
if [ "$fresh" = 1 ]; then
  git clone -q . "$logs/clone" || exit 1
  cd "$logs/clone"
fi
echo "test-repeat: $runs runs of ${stage:-every stage} in $(pwd), logs in $logs"

hogs=()
stop_hogs() { [ ${#hogs[@]} -gt 0 ] && kill "${hogs[@]}" 2>/dev/null; wait 2>/dev/null; }
trap stop_hogs EXIT
if [ "$hog" = 1 ]; then
  for _ in $(seq "$(nproc)"); do
    # A lowest-priority hog would hardly compete; this one runs at the tests' own priority.
    bash -c 'while :; do :; done' &
    hogs+=($!)
  done
  echo "test-repeat: ${#hogs[@]} busy loops running beside the tests"
fi

# The build once, so that each run times the tests only.
{ scripts/install-deps.sh && swift build --build-tests; } >"$logs/build.log" 2>&1 || { echo "build failed: $logs/build.log"; tail -30 "$logs/build.log"; exit 1; }

failed=0
for run in $(seq "$runs"); do
  log="$logs/run-$run.log"
  begin=$(date +%s)
  if [ -n "$stage" ]; then scripts/test.sh --stage "$stage" >"$log" 2>&1; else scripts/test.sh >"$log" 2>&1; fi
  status=$?
  took=$(( $(date +%s) - begin ))
  if [ $status -eq 0 ]; then
    echo "run $run: passed in ${took}s"
  else
    failed=$((failed + 1))
    echo "run $run: FAILED (exit $status) in ${took}s, $log"
    # Swift Testing: "✘ Test name(...) recorded an issue at File.swift:N:M: message" and the
    # lines of the message that follow; XCTest: "error: ... failed".
    grep -aE "✘ Test .*(recorded an issue|failed after)|error: .*failed|Fatal error|Test crashed|signal code|\(signal" "$log" \
      | grep -av "passed after" | head -40 | sed 's/^/    /'
  fi
done
echo "test-repeat: $((runs - failed)) of $runs runs passed$([ "$hog" = 1 ] && echo ' with a busy loop per core beside them')"
[ $failed -eq 0 ]
