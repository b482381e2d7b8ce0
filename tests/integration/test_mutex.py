"""Mutual exclusion under contention: many client threads on a few keys."""
import collections
import random
import threading
import time

import grpc
from baton.v1 import lock_pb2_grpc

import bclient as bc
from bclient import pb

THREADS = 50
KEYS = 3
SECONDS = 4.0


def test_mutual_exclusion_and_fencing_under_contention(batond):
    keys = [bc.uniq("mutex%d" % i) for i in range(KEYS)]
    stop_at = time.monotonic() + SECONDS
    records = collections.defaultdict(list)  # key -> [(t_grant, t_release, fencing, thread)]
    errors = []
    lock = threading.Lock()
    # A few channels (HTTP/2 connections), as several client processes would have.
    channels = [grpc.insecure_channel(batond.target) for _ in range(5)]
    stubs = [lock_pb2_grpc.LockServiceStub(ch) for ch in channels]

    def worker(n):
        rng = random.Random(n)
        stub = stubs[n % len(stubs)]
        while time.monotonic() < stop_at:
            key = rng.choice(keys)
            granted, t_grant = None, None
            try:
                for ev in stub.Acquire(pb.AcquireRequest(key=key, owner="t%d" % n, ttl_ms=30000,
                                                         wait_ms=30000), timeout=40.0):
                    if ev.WhichOneof("event") == "granted":
                        t_grant = time.monotonic()
                        granted = ev.granted
            except grpc.RpcError as e:
                with lock:
                    errors.append("t%d Acquire(%s): %s %s" % (n, key, e.code(), e.details()))
                return
            if granted is None:
                with lock:
                    errors.append("t%d Acquire(%s) ended OK without granted" % (n, key))
                return
            time.sleep(rng.uniform(0.001, 0.004))
            t_release = time.monotonic()
            try:
                r = stub.Release(pb.ReleaseRequest(key=key, token=granted.token), timeout=10.0)
                if not r.released:
                    with lock:
                        errors.append("t%d Release(%s) released=false" % (n, key))
            except grpc.RpcError as e:
                with lock:
                    errors.append("t%d Release(%s): %s %s" % (n, key, e.code(), e.details()))
            with lock:
                records[key].append((t_grant, t_release, granted.fencing, n))

    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(SECONDS + 60.0)
    for ch in channels:
        ch.close()
    assert not any(t.is_alive() for t in threads), "worker threads hung"
    assert not errors, "\n".join(errors[:20])

    total = 0
    for key in keys:
        recs = sorted(records[key])
        total += len(recs)
        assert len(recs) >= 10, "too few grants on %s (%d) for the test to mean anything" % (key, len(recs))
        for prev, cur in zip(recs, recs[1:]):
            assert cur[0] > prev[1], (
                "two holders of %s at once: t%d granted at %.6f before t%d released at %.6f"
                % (key, cur[3], cur[0], prev[3], prev[1]))
            assert cur[2] > prev[2], (
                "fencing not increasing on %s: t%d got %d after t%d had %d"
                % (key, cur[3], cur[2], prev[3], prev[2]))
    bc.record_timing("mutex: %d grants in %.0fs, mean cycle" % (total, SECONDS), SECONDS / max(total, 1))
    # Nothing left held or queued.
    with grpc.insecure_channel(batond.target) as ch:
        stub = lock_pb2_grpc.LockServiceStub(ch)
        for key in keys:
            d = bc.describe(stub, key)
            assert not d.held and d.waiters == 0, (key, d)
