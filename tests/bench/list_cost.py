"""List page cost with N held locks in Redis (issue #18's figure).

  python3 tests/bench/list_cost.py --batond build/server/batond --locks 1000000

Starts a private redis-server and batond (metrics on), writes N held locks in
batond's Redis layout straight into Redis with redis-cli --pipe (P{K}:lock
with a TTL, P{K}:hold, P{K}:fence: what a grant leaves), then times List
through gRPC: pages of limit 100 and 1000 over everything, and a prefix that
matches 1% of the keys. Prints a table; the Redis-side script time comes from
batond's own baton_redis_script_seconds{script="list"}.
"""
import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import harness  # noqa: E402


def resp(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


def populate(redis, n, prefix="baton:"):
    now = int(time.time() * 1000)
    chunks = []
    for i in range(n):
        key = "bench:%07d" % i if i % 100 else "rare:%07d" % i
        base = "%s{%s}" % (prefix, key)
        chunks.append(resp("SET", base + ":lock", "%032x" % i, "PX", 3600000))
        chunks.append(resp("HSET", base + ":hold", "token", "%032x" % i, "owner", "w%d" % (i % 97),
                           "fencing", 1000 + i, "at", now - i % 100000))
        chunks.append(resp("SET", base + ":fence", 1000 + i))
    data = b"".join(chunks)
    r = subprocess.run(["redis-cli", "-p", str(redis.port), "--pipe"], input=data, capture_output=True)
    assert r.returncode == 0, r.stderr


def walk(stub, pb, prefix, limit):
    times, n, pages, token = [], 0, 0, ""
    while True:
        t0 = time.perf_counter()
        r = stub.List(pb.ListRequest(prefix=prefix, limit=limit, page_token=token), timeout=60)
        times.append(time.perf_counter() - t0)
        n += len(r.locks)
        pages += 1
        token = r.next_page_token
        if not token:
            return n, pages, times


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batond", required=True)
    ap.add_argument("--locks", type=int, nargs="+", default=[10000])
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="baton-listcost-")
    stubs = os.path.join(work, "stubs")
    os.makedirs(stubs)
    harness.generate_stubs(stubs)
    sys.path.insert(0, stubs)
    import grpc
    from baton.v1 import lock_pb2 as pb, lock_pb2_grpc
    import promtext as pt
    print("| locks in Redis | listing | pages | locks listed | page p50 / max (ms) | whole walk (s) | Lua script, mean (batond histogram) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for n in args.locks:
        redis = harness.RedisServer(work).start()
        mport = harness.free_port()
        b = harness.Batond(args.batond, work, redis.address, name="listcost",
                           extra_config='metrics:\n  listen: "127.0.0.1:%d"\n' % mport)
        try:
            t0 = time.monotonic()
            populate(redis, n)
            fill = time.monotonic() - t0
            b.start()
            stub = lock_pb2_grpc.LockServiceStub(grpc.insecure_channel(b.target))
            for prefix, limit in (("", 100), ("", 1000), ("rare:", 100)):
                before = pt.sample(mport)
                t0 = time.monotonic()
                listed, pages, times = walk(stub, pb, prefix, limit)
                total = time.monotonic() - t0
                after = pt.sample(mport)
                cnt = pt.value(after, "baton_redis_script_seconds_count", script="list") - \
                    pt.value(before, "baton_redis_script_seconds_count", script="list")
                ssum = pt.value(after, "baton_redis_script_seconds_sum", script="list") - \
                    pt.value(before, "baton_redis_script_seconds_sum", script="list")
                print("| %d | prefix %r, limit %d | %d | %d | %.2f / %.2f | %.1f | %.2f ms |" % (
                    n, prefix, limit, pages, listed, statistics.median(times) * 1000, max(times) * 1000, total,
                    ssum / cnt * 1000 if cnt else 0), flush=True)
            print("(filled %d locks in %.1f s)" % (n, fill), file=sys.stderr)
        finally:
            b.stop()
            redis.stop()
    shutil.rmtree(work, True)


if __name__ == "__main__":
    main()
