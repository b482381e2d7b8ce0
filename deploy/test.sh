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
cluster_pids=()
cleanup() {
    [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null && wait "$redis_pid" 2>/dev/null
    for p in "${cluster_pids[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${cluster_pids[@]}"; do wait "$p" 2>/dev/null; done
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

# A Redis Cluster of three primaries for the store's cluster tests
# (BATON_TEST_REDIS_CLUSTER), with a password (every connection batond makes
# to a node logs in). A cluster needs TCP ports, each with its bus port
# (+10000) free too: try random bases until three nodes start.
start_cluster() {
    local base port i ports=() cpw=baton-test-cluster
    for _ in $(seq 20); do
        base=$((20000 + RANDOM % 20000))
        ports=()
        cluster_pids=()
        for i in 0 1 2; do
            port=$((base + i))
            redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes --requirepass "$cpw" \
                --cluster-config-file "$tmp/nodes-$port.conf" --cluster-node-timeout 2000 --save '' \
                --appendonly no --dir "$tmp" --logfile "$tmp/cluster-$port.log" &
            cluster_pids+=($!)
            ports+=("$port")
        done
        sleep 0.3
        local up=1
        for port in "${ports[@]}"; do redis-cli -a "$cpw" --no-auth-warning -p "$port" PING >/dev/null 2>&1 || up=0; done
        if [ "$up" = 1 ] && redis-cli -a "$cpw" --no-auth-warning --cluster create "${ports[@]/#/127.0.0.1:}" --cluster-yes >/dev/null 2>&1; then
            for _ in $(seq 100); do
                local ok=1
                for port in "${ports[@]}"; do
                    redis-cli -a "$cpw" --no-auth-warning -p "$port" CLUSTER INFO | grep -q cluster_state:ok || ok=0
                done
                [ "$ok" = 1 ] && break
                sleep 0.1
            done
            export BATON_TEST_REDIS_CLUSTER="cluster://127.0.0.1:${ports[0]},127.0.0.1:${ports[1]}"
            export BATON_TEST_REDIS_CLUSTER_PASSWORD="$cpw"
            return 0
        fi
        for p in "${cluster_pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
        rm -f "$tmp"/nodes-*.conf
    done
    echo "test.sh: could not start a Redis Cluster" >&2
    return 1
}
start_cluster

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
