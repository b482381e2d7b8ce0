#!/usr/bin/env bash
# Runs batond in the foreground on 127.0.0.1:50051 (or --listen ADDR).
#
#   ./deploy/run.sh [batond flags...]
#
# Installs missing Debian packages, builds (Release) into build-run/, and,
# unless a Redis is configured (--redis ADDR, BATON_REDIS=ADDR, or redis.address
# in a --config FILE), starts a private redis-server on a unix socket in a temp
# dir that lives as long as batond. Configuration: deploy/batond.yaml unless
# --config FILE is given. BATOND=path runs that batond binary instead of
# building one (the tests of this script do).
#
# Ctrl-C, SIGTERM, SIGHUP and SIGQUIT stop batond gracefully (one SIGTERM; it
# runs in its own process group, so a terminal's Ctrl-C does not reach it
# twice: batond takes a second signal as "exit at once").
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

if [ -n "${BATOND:-}" ]; then
    batond=$BATOND
else
    ./deploy/install-deps.sh build
    cmake -S . -B build-run -DCMAKE_BUILD_TYPE=Release -DBATON_BUILD_TESTS=OFF >/dev/null
    cmake --build build-run --target batond -j"$(nproc)" >/dev/null
    batond=./build-run/server/batond
fi

args=("$@")
have() { local f; for f in "${args[@]}"; do [ "$f" = "$1" ] || [[ "$f" == "$1="* ]] && return 0; done; return 1; }

# Whether the user's flags and --config FILE choose a Redis: batond answers
# itself (--check-config says where each setting came from), so every YAML
# form it accepts counts. An invalid configuration stops here, with batond's
# message and status. (--help / --version print and leave no redis: line.)
checked=$("$batond" "${args[@]}" --check-config) || exit $?
redis_from=$(awk '/^redis:/ {r = 1; next} /^[^ ]/ {r = 0}
                  r && /^  address: / {sub(/.*# /, ""); print}' <<<"$checked")
have --config || args=(--config "$root/deploy/batond.yaml" "${args[@]}")

tmp=""
redis_pid=""
cleanup() {
    [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null && wait "$redis_pid" 2>/dev/null
    [ -n "$tmp" ] && rm -rf "$tmp"
    return 0
}
trap cleanup EXIT

if [ "$redis_from" = default ]; then
    if [ -n "${BATON_REDIS:-}" ]; then
        args+=(--redis "$BATON_REDIS")
    else
        tmp=$(mktemp -d /tmp/baton-run.XXXXXX)
        redis-server --port 0 --unixsocket "$tmp/redis.sock" --unixsocketperm 700 \
            --save '' --appendonly no --notify-keyspace-events Ex --logfile "$tmp/redis.log" &
        redis_pid=$!
        for _ in $(seq 100); do [ -S "$tmp/redis.sock" ] && break; sleep 0.05; done
        [ -S "$tmp/redis.sock" ] || { echo "run.sh: private redis-server did not start" >&2; cat "$tmp/redis.log" >&2; exit 1; }
        echo "run.sh: private redis-server at unix:$tmp/redis.sock (data is lost on exit)" >&2
        args+=(--redis "unix:$tmp/redis.sock")
    fi
fi

# Not exec: the trap must stop the private redis-server after batond exits.
# batond gets its own process group (set -m), so signals reach it only
# through the trap below, once.
set -m
"$batond" "${args[@]}" &
batond_pid=$!
set +m
trap 'kill -TERM "$batond_pid" 2>/dev/null' TERM INT HUP QUIT
# wait returns early when a trapped signal arrives: wait until batond has
# exited, then take its status (bash keeps it for a later wait).
while kill -0 "$batond_pid" 2>/dev/null; do wait "$batond_pid" || true; done
status=0
wait "$batond_pid" || status=$?
exit "$status"
