#!/usr/bin/env python3
"""Python lock clients side by side, in one run: the `baton` package (sync
and asyncio), redis-py's Lock and etcd's v3lock (Lock/Unlock through stubs
generated from tests/bench/proto), each against a private server started
here: redis-server, etcd and this build tree's batond.

    python3 tests/bench/py_bench.py                  # full run (~1-2 min)
    python3 tests/bench/py_bench.py --smoke          # ctest python_bench_smoke
    python3 tests/bench/py_bench.py --cycles 3000 --rounds 6 --json r.json

Rows (one client, one thread, own key):
  uncontended  acquire + release of a free key (`with client.lock(key)`;
               redis-py `Lock.acquire()` + `release()`; etcd Lock + Unlock)
  busy try     a try-lock of a key someone else holds (`client.try_lock`;
               redis-py `acquire(blocking=False)`); etcd's v3lock has none
"per-call path": the sync client with its Session lane turned off (an
Acquire stream per lock: what it does where grpcio cannot drive a Session
on the caller's thread), for the before/after in one run.
The backends take turns: --rounds rounds of --cycles cycles each, so drift
of a noisy VM reaches every backend alike. p50/p90/p99 are over all
samples; "round p50s" shows the spread of the per-round medians.
No figure is asserted: the smoke run only checks every row has samples.
Needs python3-grpcio, python3-redis, etcd-server, the baton package
installed (tests/python/install.sh) and batond ($BATOND or build/).
"""
import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_tcp(port, proc, what, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("%s exited with %s" % (what, proc.returncode))
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("%s did not listen on %d" % (what, port))


class Servers:
    def __init__(self, batond, with_etcd):
        self.dir = tempfile.mkdtemp(prefix="baton-pybench-")
        self.procs = []
        self.redis_port = free_port()
        self._spawn("redis", ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no", "--dir", self.dir], self.redis_port)
        self.batond_port = free_port()
        cfg = os.path.join(self.dir, "batond.yaml")
        with open(cfg, "w") as f:
            f.write('listen: "127.0.0.1:%d"\nlog_level: warn\nredis:\n  address: "127.0.0.1:%d"\n'
                    % (self.batond_port, self.redis_port))
        self._spawn("batond", [batond, "--config", cfg], self.batond_port)
        self.etcd_port = None
        if with_etcd:
            self.etcd_port, peer = free_port(), free_port()
            c, p = "http://127.0.0.1:%d" % self.etcd_port, "http://127.0.0.1:%d" % peer
            self._spawn("etcd", ["etcd", "--name", "default", "--data-dir", os.path.join(self.dir, "etcd"),
                                 "--listen-client-urls", c, "--advertise-client-urls", c,
                                 "--listen-peer-urls", p, "--initial-advertise-peer-urls", p,
                                 "--initial-cluster", "default=" + p], self.etcd_port)

    def _spawn(self, what, argv, port):
        log = open(os.path.join(self.dir, what + ".log"), "wb")
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.procs.append(p)
        wait_tcp(port, p, what)

    def stop(self):
        for p in reversed(self.procs):
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(self.dir, True)


def etcd_stubs(out):
    protoc = shutil.which("protoc") or "/usr/bin/protoc"
    subprocess.run([protoc, "-I", os.path.join(HERE, "proto"), "--python_out=" + out, "--grpc_python_out=" + out,
                    "--plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin",
                    "etcdserverpb/rpc.proto", "v3lockpb/v3lock.proto"], check=True)
    sys.path.insert(0, out)


# -- one cycle per backend: setup() returns (cycle, teardown) --------------------
def baton_sync(srv, mode, session=True):
    """session=False: the public per-call path only (an Acquire stream per
    lock, as before the Session lane; what a grpcio without it gets)."""
    import baton
    from baton import _lane
    _lane.ENABLED = session
    try:
        c = baton.Client("127.0.0.1:%d" % srv.batond_port)
    finally:
        _lane.ENABLED = True
    key = "pyb-%s-%d" % (mode, os.getpid())

    def cycle():
        with c.lock(key, mode=mode):
            pass
    return cycle, c.close


def baton_busy(srv, session=True):
    import baton
    from baton import _lane
    _lane.ENABLED = session
    try:
        c = baton.Client("127.0.0.1:%d" % srv.batond_port)
    finally:
        _lane.ENABLED = True
    holder = baton.Client("127.0.0.1:%d" % srv.batond_port)
    key = "pyb-busy-%d" % os.getpid()
    held = holder.acquire(key)

    def cycle():
        assert c.try_lock(key) is None

    def done():
        held.release()
        holder.close()
        c.close()
    return cycle, done


def redis_lock(srv):
    import redis
    r = redis.Redis(host="127.0.0.1", port=srv.redis_port)
    lk = r.lock("pyb-redis-%d" % os.getpid(), timeout=600)

    def cycle():
        lk.acquire()
        lk.release()
    return cycle, r.close


def redis_busy(srv):
    import redis
    r = redis.Redis(host="127.0.0.1", port=srv.redis_port)
    name = "pyb-redis-busy-%d" % os.getpid()
    holder = r.lock(name, timeout=600)
    holder.acquire()
    lk = r.lock(name, timeout=600)

    def cycle():
        assert not lk.acquire(blocking=False)

    def done():
        holder.release()
        r.close()
    return cycle, done


def etcd_lock(srv):
    import grpc
    from etcdserverpb import rpc_pb2, rpc_pb2_grpc
    from v3lockpb import v3lock_pb2, v3lock_pb2_grpc
    ch = grpc.insecure_channel("127.0.0.1:%d" % srv.etcd_port)
    lease = rpc_pb2_grpc.LeaseStub(ch).LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=600), timeout=10).ID
    stub = v3lock_pb2_grpc.LockStub(ch)
    name = ("pyb-etcd-%d" % os.getpid()).encode()

    def cycle():
        k = stub.Lock(v3lock_pb2.LockRequest(name=name, lease=lease)).key
        stub.Unlock(v3lock_pb2.UnlockRequest(key=k))
    return cycle, ch.close


def baton_aio(srv):
    """asyncio: a cycle is run_until_complete of `async with` on a loop kept
    for the whole row (the loop's own cost is part of the figure)."""
    import baton.aio
    loop = asyncio.new_event_loop()
    c = loop.run_until_complete(_aio_client(srv))
    key = "pyb-aio-%d" % os.getpid()

    async def one():
        async with c.lock(key):
            pass

    def cycle():
        loop.run_until_complete(one())

    def done():
        loop.run_until_complete(c.close())
        loop.close()
    return cycle, done


async def _aio_client(srv):
    import baton.aio
    return baton.aio.Client("127.0.0.1:%d" % srv.batond_port)


ROWS = [
    # (row, backend, setup)
    ("uncontended acquire+release", "baton stream (sync)", lambda s: baton_sync(s, "stream")),
    ("uncontended acquire+release", "baton stream (sync, per-call path)", lambda s: baton_sync(s, "stream", False)),
    ("uncontended acquire+release", "baton lease (sync)", lambda s: baton_sync(s, "lease")),
    ("uncontended acquire+release", "baton stream (asyncio)", baton_aio),
    ("uncontended acquire+release", "redis-py Lock", redis_lock),
    ("uncontended acquire+release", "etcd v3lock", etcd_lock),
    ("busy try-lock", "baton try_lock (sync)", baton_busy),
    ("busy try-lock", "baton try_lock (sync, per-call path)", lambda s: baton_busy(s, False)),
    ("busy try-lock", "redis-py acquire(blocking=False)", redis_busy),
]


def pct(xs, p):
    return xs[min(len(xs) - 1, int(p / 100.0 * len(xs)))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cycles", type=int, default=2000, help="cycles per round and backend")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--smoke", action="store_true", help="a tiny run that only checks every row works")
    ap.add_argument("--no-etcd", action="store_true")
    ap.add_argument("--batond", default=os.environ.get("BATOND"))
    ap.add_argument("--json")
    a = ap.parse_args()
    if a.smoke:
        a.cycles, a.rounds, a.warmup = 30, 2, 5
    import harness
    batond = a.batond or harness.find_batond()
    if not batond:
        sys.exit("py_bench: no batond (set BATOND or build it)")
    with_etcd = not a.no_etcd and shutil.which("etcd") is not None
    rows = [r for r in ROWS if with_etcd or "etcd" not in r[1]]
    stubs = tempfile.mkdtemp(prefix="baton-pybench-stubs-")
    srv = Servers(batond, with_etcd)
    try:
        if with_etcd:
            etcd_stubs(stubs)
        samples = {r[1]: [] for r in rows}
        round_p50 = {r[1]: [] for r in rows}
        for rnd in range(a.rounds):
            order = rows if rnd % 2 == 0 else list(reversed(rows))  # alternate A/B order
            for _, name, setup in order:
                cycle, done = setup(srv)
                try:
                    for _ in range(a.warmup):
                        cycle()
                    xs = []
                    for _ in range(a.cycles):
                        t = time.perf_counter()
                        cycle()
                        xs.append(time.perf_counter() - t)
                finally:
                    done()
                samples[name] += xs
                round_p50[name].append(statistics.median(xs))
        out = []
        print("| row | client | p50 ms | p90 ms | p99 ms | round p50s ms |")
        print("| --- | --- | --- | --- | --- | --- |")
        for row, name, _ in rows:
            xs = sorted(samples[name])
            if not xs:
                sys.exit("py_bench: no samples for " + name)
            r = {"row": row, "client": name, "n": len(xs), "p50_ms": pct(xs, 50) * 1e3,
                 "p90_ms": pct(xs, 90) * 1e3, "p99_ms": pct(xs, 99) * 1e3,
                 "round_p50_ms": [x * 1e3 for x in round_p50[name]]}
            out.append(r)
            print("| %s | %s | %.3f | %.3f | %.3f | %s |" % (
                row, name, r["p50_ms"], r["p90_ms"], r["p99_ms"],
                " ".join("%.2f" % x for x in r["round_p50_ms"])))
        print("(%d rounds x %d cycles per client, warm-up %d; %s)" % (
            a.rounds, a.cycles, a.warmup, "no etcd" if not with_etcd else "etcd " + srv.dir))
        if a.json:
            with open(a.json, "w") as f:
                json.dump(out, f, indent=1)
    finally:
        srv.stop()
        shutil.rmtree(stubs, True)


if __name__ == "__main__":
    main()
