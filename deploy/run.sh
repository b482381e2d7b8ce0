#!/usr/bin/env bash
# Runs batond in the foreground on 127.0.0.1:50051 (or --listen ADDR).
#
#   ./deploy/run.sh [batond flags...]
#
# Installs missing Debian packages, builds (Release) into build-run/, and,
# unless a Redis is configured (--redis ADDR, BATON_REDIS=ADDR, or redis.address
# in a --config FILE), starts a private redis-server on a unix socket in a temp
# dir that lives as long as batond. Configuration: deploy/batond.yaml unless
# --config FILE is given.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

./deploy/install-deps.sh build
cmake -S . -B build-run -DCMAKE_BUILD_TYPE=Release -DBATON_BUILD_TESTS=OFF >/dev/null
cmake --build build-run --target batond -j"$(nproc)" >/dev/null

args=("$@")
have() { local f; for f in "${args[@]}"; do [ "$f" = "$1" ] || [[ "$f" == "$1="* ]] && return 0; done; return 1; }
# The value of flag $1 ("--flag VALUE" or "--flag=VALUE"), if given.
value_of() {
    local i
    for ((i = 0; i < ${#args[@]}; i++)); do
        case "${args[i]}" in
        "$1") echo "${args[i + 1]:-}"; return ;;
        "$1="*) echo "${args[i]#*=}"; return ;;
        esac
    done
}
# 1 if the YAML file $1 sets redis.address (an uncommented key in the redis: block).
config_sets_redis() {
    [ -r "$1" ] && awk '/^redis:/ {in_redis = 1; next}
                        /^[^[:space:]#]/ {in_redis = 0}
                        in_redis && /^[[:space:]]+address:/ {found = 1}
                        END {exit !found}' "$1"
}
user_config=$(value_of --config)
have --config || args=(--config "$root/deploy/batond.yaml" "${args[@]}")

tmp=""
redis_pid=""
cleanup() {
    [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null && wait "$redis_pid" 2>/dev/null
    [ -n "$tmp" ] && rm -rf "$tmp"
    return 0
}
trap cleanup EXIT

if ! have --redis && ! { [ -n "$user_config" ] && config_sets_redis "$user_config"; }; then
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
# Forward SIGTERM/SIGINT to batond so it shuts down gracefully.
./build-run/server/batond "${args[@]}" &
batond_pid=$!
trap 'kill -TERM "$batond_pid" 2>/dev/null' TERM INT
status=0
wait "$batond_pid" || status=$?
# wait returns early when a trapped signal arrives; wait again for the exit.
if kill -0 "$batond_pid" 2>/dev/null; then wait "$batond_pid" || status=$?; fi
exit "$status"
