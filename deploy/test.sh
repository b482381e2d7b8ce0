#!/usr/bin/env bash
# Runs every Baton test: CMocka unit tests, integration tests against a real
# redis-server and batond, the Python interop test, the client library and
# CLI tests, and a benchmark smoke run; first in a normal build, then again
# with AddressSanitizer + UndefinedBehaviorSanitizer.
#
#   ./deploy/test.sh            everything (what .ci/run calls)
#   ./deploy/test.sh --quick    normal build only, no sanitizer pass
#   extra args after -- go to ctest (e.g. -- -R engine)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

quick=0
ctest_args=()
while [ $# -gt 0 ]; do
    case "$1" in
    --quick) quick=1 ;;
    --) shift; ctest_args=("$@"); break ;;
    *) echo "usage: $0 [--quick] [-- ctest args]" >&2; exit 2 ;;
    esac
    shift
done

./deploy/install-deps.sh test

tmp=$(mktemp -d /tmp/baton-test.XXXXXX)
redis_pid=""
cleanup() {
    [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null && wait "$redis_pid" 2>/dev/null
    rm -rf "$tmp"
    return 0
}
trap cleanup EXIT

# One private redis-server for the tests that take BATON_TEST_REDIS; the
# integration tests start their own redis-server and batond processes.
redis-server --port 0 --unixsocket "$tmp/redis.sock" --unixsocketperm 700 --save '' \
    --appendonly no --logfile "$tmp/redis.log" &
redis_pid=$!
for _ in $(seq 100); do [ -S "$tmp/redis.sock" ] && break; sleep 0.05; done
[ -S "$tmp/redis.sock" ] || { echo "test.sh: redis-server did not start" >&2; cat "$tmp/redis.log" >&2; exit 1; }
export BATON_TEST_REDIS="unix:$tmp/redis.sock"

run_suite() { # <build dir> <cmake args...>
    local dir=$1; shift
    echo "=== $dir: configure and build" >&2
    cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
    cmake --build "$dir" -j"$(nproc)"
    echo "=== $dir: tests" >&2
    (cd "$dir" && ctest --output-on-failure --timeout 900 "${ctest_args[@]}")
}

run_suite build
if [ "$quick" = 0 ]; then
    # No leak suppressions: every leak report fails the test that printed it
    # (the integration harness also fails on a report from batond itself).
    export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:strict_string_checks=1"
    export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
    run_suite build-asan -DBATON_SANITIZE=ON
fi
