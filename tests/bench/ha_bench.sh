#!/bin/bash
# The two A/B comparisons of docs/RESULTS.md "Redis Cluster" and "Confirmed grants", runs alternated so
# that a noisy machine hurts both sides alike; prints per-run figures, medians and B/A ratios.
#
#   tests/bench/ha_bench.sh cluster  [ROUNDS]   batond on one Redis (A: a fresh redis-server on TCP, as
#                                               the Cluster nodes are) against a 1-node Cluster (B) and
#                                               a 3-primary Cluster (C), both from baton-bench --cluster
#   tests/bench/ha_bench.sh replicas [ROUNDS]   redis.min_replicas 0 (A) against 1 (B), on a primary
#                                               with one replica (both started here, free ports)
#
# ROUNDS (default 3): each configuration once per round, the order rotating (ABC, BCA, CAB, ...).
# Results (the JSON of every run, the Redis logs, uptime before each run) stay in $OUT (default
# /tmp/ha_bench.PID). Medians and ratios against A come last.
# BENCH: the baton-bench binary [build/tests/bench/baton-bench]; DURATION: seconds per throughput cell [3].
set -euo pipefail
what=${1:?usage: ha_bench.sh cluster|replicas [ROUNDS]}
rounds=${2:-3}
here=$(cd "$(dirname "$0")" && pwd)
bench=${BENCH:-$here/../../build/tests/bench/baton-bench}
out=${OUT:-/tmp/ha_bench.$$}
duration=${DURATION:-3}
mkdir -p "$out"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# run LABEL ROUND ARGS...: one baton-bench run, its JSON in $out/LABEL-ROUND.json
run() {
    local label=$1 round=$2
    shift 2
    echo "== $label round $round: $(uptime | sed 's/.*load/load/')" | tee -a "$out/uptime.log"
    "$bench" --backends baton --json "$out/$label-$round.json" "$@" >"$out/$label-$round.txt" 2>"$out/$label-$round.err" ||
        { cat "$out/$label-$round.err" >&2; exit 1; }
}

# rotate LABEL...: each label once per round, order rotated each round; config_LABEL runs one
rotate() {
    local n=$#
    local labels=("$@")
    for r in $(seq 1 "$rounds"); do
        for i in $(seq 0 $((n - 1))); do
            local l=${labels[$(((i + r - 1) % n))]}
            "config_${l//-/_}" "$l" "$r"
        done
    done
}

# A fresh plain redis-server on a free TCP port for one run: REDIS_PORT, REDIS_PID.
start_redis() {
    REDIS_PORT=$(free_port)
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --notify-keyspace-events Ex \
        --maxclients 10000 --dir "$out" "$@" >>"$out/redis-$REDIS_PORT.log" 2>&1 &
    REDIS_PID=$!
    pids+=("$REDIS_PID")
    for _ in $(seq 100); do
        redis-cli -p "$REDIS_PORT" PING >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "redis-server on $REDIS_PORT did not start" >&2
    exit 1
}
stop_redis() { kill "$1"; wait "$1" 2>/dev/null || true; }

summary() {
    python3 - "$out" "$@" <<'EOF'
import json, glob, statistics as st, sys, os
out, a, others = sys.argv[1], sys.argv[2], sys.argv[3:]
def load(label):
    runs = []
    for f in sorted(glob.glob(f"{out}/{label}-*.json"), key=lambda p: int(p.rsplit("-", 1)[1][:-5])):
        runs.append({(r["scenario"], r["backend"], r["params"]): r for r in json.load(open(f))["results"]})
    return runs
ra = load(a)
rbs = {b: load(b) for b in others}
keys = [k for k in ra[0] if k[0] in ("uncontended", "handoff", "throughput")]
def col(runs, k, f):
    return [f(r[k]) for r in runs if k in r and f(r[k]) is not None]
med = lambda v: st.median(v) if v else float("nan")
rng = lambda v: f"[{min(v):.3g}..{max(v):.3g}]" if v else ""
print(f"medians over {len(ra)} rounds; [min..max] of the runs; ratios against {a}")
for k in keys:
    scen, backend, params = k
    if scen == "throughput":
        fields = [("cycles/s", lambda r: r.get("rate_per_s")),
                  ("batond us/cyc", lambda r: r.get("cpu_server_us_per_cycle")),
                  ("redis us/cyc", lambda r: r.get("cpu_redis_us_per_cycle")),
                  ("client us/cyc", lambda r: r.get("cpu_client_us_per_cycle"))]
    else:
        fields = [("p50 ms", lambda r: r["p50_ns"] / 1e6 if "p50_ns" in r else None),
                  ("p99 ms", lambda r: r["p99_ns"] / 1e6 if "p99_ns" in r else None)]
    for name, f in fields:
        va = col(ra, k, f)
        ma = med(va)
        line = f"{scen:11} {backend:12} {params:12} {name:14} {a}: {ma:9.3f} {rng(va):20}"
        for b, rb in rbs.items():
            vb = col(rb, k, f)
            mb = med(vb)
            line += f" {b}: {mb:9.3f} {rng(vb):20} x{mb / ma if ma else float('nan'):.2f}"
        print(line)
    if scen == "throughput":
        for label, runs in [(a, ra)] + list(rbs.items()):
            notes = [r[k]["note"] for r in runs if k in r]
            print(f"{'':11} {backend:12} {params:12} notes {label}: " + " | ".join(n.replace("cycles/s; ", "") for n in notes))
EOF
}

case $what in
cluster)
    ARGS=(--scenarios uncontended,throughput --iters 2000 --c-list 8,64 --m-list 64,1024 --duration "$duration")
    config_one_redis() {
        start_redis
        run "$1" "$2" "${ARGS[@]}" --redis "127.0.0.1:$REDIS_PORT"
        stop_redis "$REDIS_PID"
    }
    config_cluster1() { run "$1" "$2" "${ARGS[@]}" --cluster 1; }
    config_cluster3() { run "$1" "$2" "${ARGS[@]}" --cluster 3; }
    rotate one-redis cluster1 cluster3
    summary one-redis cluster1 cluster3 | tee "$out/summary.txt"
    ;;
replicas)
    start_redis
    primary=$REDIS_PORT
    start_redis --replicaof 127.0.0.1 "$primary"
    replica=$REDIS_PORT
    for _ in $(seq 100); do
        redis-cli -p "$primary" INFO replication 2>/dev/null | grep -q 'connected_slaves:1' &&
            redis-cli -p "$replica" INFO replication 2>/dev/null | grep -q 'master_link_status:up' && break
        sleep 0.1
    done
    redis-cli -p "$replica" INFO replication | grep -q 'master_link_status:up' || { echo "replica not up" >&2; exit 1; }
    printf 'redis:\n  min_replicas: 0\n' >"$out/min0.yaml"
    printf 'redis:\n  min_replicas: 1\n  replica_timeout_ms: 500\n' >"$out/min1.yaml"
    ARGS=(--redis "127.0.0.1:$primary" --scenarios uncontended,handoff --iters 2000 --k-list 1 --rounds 400
          --jitter-ms 5)
    config_min_replicas_0() { run "$1" "$2" "${ARGS[@]}" --batond-arg --config --batond-arg "$out/min0.yaml"; }
    config_min_replicas_1() { run "$1" "$2" "${ARGS[@]}" --batond-arg --config --batond-arg "$out/min1.yaml"; }
    rotate min-replicas-0 min-replicas-1
    redis-cli -p "$primary" INFO commandstats | grep -E 'cmdstat_(wait|evalsha):' >"$out/primary-commandstats.txt"
    summary min-replicas-0 min-replicas-1 | tee "$out/summary.txt"
    cat "$out/primary-commandstats.txt"
    ;;
*)
    echo "usage: ha_bench.sh cluster|replicas [ROUNDS]" >&2
    exit 2
    ;;
esac
echo "results in $out"
