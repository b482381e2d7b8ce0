#!/bin/sh
# with_batond.sh CMD [ARGS...]
#
# Starts a private redis-server (unix socket in a temp dir, no persistence)
# and a batond on a free 127.0.0.1 port, runs CMD with
#   BATON_TEST_TARGET=127.0.0.1:PORT       batond's address
#   BATON_TEST_REDIS_SOCK=/tmp/.../redis.sock  for tests that poke Redis directly
#   BATON_TEST_PREFIX=baton:               the Redis key prefix
# exported (with BATON_TEST_SECURE=1 also: batond serves TLS with certificates
# made by make_certs.sh, requires mTLS and bearer tokens, and
#   BATON_TEST_CERTS=DIR  (ca.pem, client.pem/.key, other-*)
#   BATON_TEST_TOKEN=...  token "cli": prefixes cli/ and admin
#   BATON_TEST_TOKEN_OTHER=...  token "other": prefix other/),
# then stops batond with SIGTERM and exits with CMD's status, or 1
# if batond did not exit 0 or printed a sanitizer report (its leaks and UB
# count as failures of the test too). batond: $BATOND (ctest sets it).
set -u

BATOND=${BATOND:-}
if [ -z "$BATOND" ] || [ ! -x "$BATOND" ]; then
    echo "with_batond.sh: BATOND is not set to an executable batond" >&2
    exit 1
fi
if ! command -v redis-server >/dev/null 2>&1; then
    echo "with_batond.sh: redis-server not found" >&2
    exit 1
fi
[ $# -ge 1 ] || { echo "usage: with_batond.sh CMD [ARGS...]" >&2; exit 2; }

dir=$(mktemp -d "${TMPDIR:-/tmp}/with_batond.XXXXXX") || exit 1
redis_pid=
batond_pid=

cleanup() {
    if [ -n "$batond_pid" ]; then
        kill -TERM "$batond_pid" 2>/dev/null
        i=0
        while kill -0 "$batond_pid" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
        kill -KILL "$batond_pid" 2>/dev/null
        wait "$batond_pid" 2>/dev/null
    fi
    if [ -n "$redis_pid" ]; then
        kill -TERM "$redis_pid" 2>/dev/null
        wait "$redis_pid" 2>/dev/null
    fi
    rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

sock=$dir/redis.sock
redis-server --port 0 --unixsocket "$sock" --unixsocketperm 700 --save '' --appendonly no \
    --dir "$dir" --daemonize no >"$dir/redis.log" 2>&1 &
redis_pid=$!
i=0
until [ -S "$sock" ] && redis-cli -s "$sock" ping >/dev/null 2>&1; do
    i=$((i + 1))
    if [ $i -gt 200 ] || ! kill -0 "$redis_pid" 2>/dev/null; then
        echo "with_batond.sh: redis-server did not start" >&2
        cat "$dir/redis.log" >&2
        exit 1
    fi
    sleep 0.05
done

cat >"$dir/batond.yaml" <<YAML
listen: "127.0.0.1:0"
log_level: ${BATON_TEST_LOG_LEVEL:-info}
redis:
  address: "unix:$sock"
  reconnect_ms: 100
locks:
  min_ttl_ms: 50
  recheck_ms: 2000
  waiter_liveness_ms: 1500
pools:
  - name: cli-mig
    devices: 3
    device_names: [MIG-a, MIG-b, GPU-c]
  - name: cli-cap
    devices: 2
    capacity: 80
YAML
if [ "${BATON_TEST_SECURE:-0}" = 1 ]; then
    certs=$dir/certs
    "$(dirname "$0")/make_certs.sh" "$certs" || exit 1
    BATON_TEST_TOKEN=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
    BATON_TEST_TOKEN_OTHER=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
    sha() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }
    cat >>"$dir/batond.yaml" <<YAML
tls:
  cert_file: "$certs/server.pem"
  key_file: "$certs/server.key"
  client_ca_file: "$certs/ca.pem"
  require_client_cert: true
auth:
  tokens:
    - {name: cli, sha256: "$(sha "$BATON_TEST_TOKEN")", prefixes: ["cli/"], admin: true}
    - {name: other, sha256: "$(sha "$BATON_TEST_TOKEN_OTHER")", prefixes: ["other/"]}
YAML
    BATON_TEST_CERTS=$certs
    export BATON_TEST_CERTS BATON_TEST_TOKEN BATON_TEST_TOKEN_OTHER
fi
"$BATOND" --config "$dir/batond.yaml" >"$dir/batond.log" 2>&1 &
batond_pid=$!
# batond logs "batond listening on 127.0.0.1:PORT" once it serves, and
# "store up" once Redis is connected (before that, Acquire is UNAVAILABLE).
port=
i=0
while [ -z "$port" ]; do
    grep -q "store up" "$dir/batond.log" &&
        port=$(sed -n 's/.*batond listening on 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$dir/batond.log" | head -n 1)
    [ -n "$port" ] && break
    i=$((i + 1))
    if [ $i -gt 400 ] || ! kill -0 "$batond_pid" 2>/dev/null; then
        echo "with_batond.sh: batond did not start" >&2
        cat "$dir/batond.log" >&2
        exit 1
    fi
    sleep 0.05
done

BATON_TEST_TARGET=127.0.0.1:$port
BATON_TEST_REDIS_SOCK=$sock
BATON_TEST_PREFIX="baton:"
export BATON_TEST_TARGET BATON_TEST_REDIS_SOCK BATON_TEST_PREFIX

"$@"
status=$?

kill -TERM "$batond_pid" 2>/dev/null
i=0
while kill -0 "$batond_pid" 2>/dev/null && [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
if kill -0 "$batond_pid" 2>/dev/null; then
    echo "with_batond.sh: batond did not exit within 10 s of SIGTERM" >&2
    kill -KILL "$batond_pid" 2>/dev/null
    batond_status=137
    wait "$batond_pid" 2>/dev/null
else
    wait "$batond_pid"
    batond_status=$?
fi
batond_pid=
if [ $batond_status -ne 0 ] || grep -qE 'Sanitizer|runtime error:' "$dir/batond.log"; then
    echo "with_batond.sh: batond exited $batond_status or reported a sanitizer error" >&2
    [ $status -eq 0 ] && status=1
fi
if [ $status -ne 0 ]; then
    echo "with_batond.sh: '$*' exited $status; batond log tail:" >&2
    tail -n 60 "$dir/batond.log" >&2
fi
exit $status
