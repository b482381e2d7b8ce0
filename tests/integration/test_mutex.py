"""Mutual exclusion under contention: many client threads on a few keys,
through one batond and through two batonds sharing one Redis."""
import collections
import random
import threading
import time

import grpc
from baton.v1 import lock_pb2_grpc

import bclient as bc
from bclient import pb


def run_contention(targets, threads, nkeys, seconds, name):
    """Each thread loops acquire(wait) -> hold 1-4 ms -> release on a random
    key. Per key, the client-side intervals [grant received, release sent]
    must never overlap and fencing must rise in grant order."""
    keys = [bc.uniq("%s%d" % (name, i)) for i in range(nkeys)]
    stop_at = time.monotonic() + seconds
    records = collections.defaultdict(list)  # key -> [(t_grant, t_release, fencing, thread)]
    errors = []
    lock = threading.Lock()
    # A few channels (HTTP/2 connections) per server, as several client processes would have.
    channels = [grpc.insecure_channel(t) for t in targets for _ in range(3)]
    stubs = [lock_pb2_grpc.LockServiceStub(ch) for ch in channels]

    def fail(msg):
        with lock:
            errors.append(msg)

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
                return fail("t%d Acquire(%s): %s %s" % (n, key, e.code(), e.details()))
            if granted is None:
                return fail("t%d Acquire(%s) ended OK without granted" % (n, key))
            time.sleep(rng.uniform(0.001, 0.004))
            t_release = time.monotonic()
            try:
                r = stub.Release(pb.ReleaseRequest(key=key, token=granted.token), timeout=10.0)
                if not r.released:
                    fail("t%d Release(%s) released=false" % (n, key))
            except grpc.RpcError as e:
                fail("t%d Release(%s): %s %s" % (n, key, e.code(), e.details()))
            with lock:
                records[key].append((t_grant, t_release, granted.fencing, n))

    workers = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(seconds + 60.0)
    assert not any(t.is_alive() for t in workers), "worker threads hung"
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
    bc.record_timing("%s: %d grants in %.1fs, mean cycle" % (name, total, seconds), seconds / max(total, 1))
    # Nothing left held or queued.
    for key in keys:
        d = bc.describe(stubs[0], key)
        assert not d.held and d.waiters == 0, (key, d)
    for ch in channels:
        ch.close()


def test_mutual_exclusion_and_fencing_under_contention(batond):
    run_contention([batond.target], threads=50, nkeys=3, seconds=4.0, name="mutex")


def test_mutual_exclusion_across_two_batonds(batond, redis_server, start_batond):
    """Waiters on one server are woken by releases on the other (pub/sub)."""
    other = start_batond(redis_server.address, name="batond-second")
    run_contention([batond.target, other.target], threads=30, nkeys=2, seconds=2.5, name="mutex2")


def test_release_does_not_pass_over_a_waiter_of_another_batond(batond, redis_server, start_batond):
    """A release hands its key straight to the first waiter of the same batond
    (direct handoff) only when that waiter heads the queue in Redis. Here the
    head waits on another batond: it must be granted first, and the local
    waiter behind it only after it released."""
    other = start_batond(redis_server.address, name="batond-handoff")
    ch = grpc.insecure_channel(other.target)
    try:
        stub1 = lock_pb2_grpc.LockServiceStub(grpc.insecure_channel(batond.target))
        stub2 = lock_pb2_grpc.LockServiceStub(ch)
        key = bc.uniq("handoff")
        holder = bc.grant(stub1, key, "holder")
        remote = bc.AcquireStream(stub2, key, "remote", wait_ms=30000)
        assert remote.wait_queued() == 1
        local = bc.AcquireStream(stub1, key, "local", wait_ms=30000)
        assert local.wait_queued() == 2

        bc.release(stub1, key, holder.token)
        g = remote.wait_granted(10.0)
        assert g.fencing > holder.fencing
        time.sleep(0.2)
        assert local.granted is None, "the local waiter passed over the head: %s" % local.summary()
        d = bc.describe(stub1, key)
        assert d.owner == "remote" and d.waiters == 1, d

        bc.release(stub2, key, g.token)
        g2 = local.wait_granted(10.0)
        assert g2.fencing > g.fencing
        # Then a local successor: handed over by the release itself.
        nxt = bc.AcquireStream(stub1, key, "next", wait_ms=30000)
        assert nxt.wait_queued() == 1
        bc.release(stub1, key, g2.token)
        g3 = nxt.wait_granted(10.0)
        assert g3.fencing > g2.fencing
        for s in (remote, local, nxt):
            assert s.wait_end() == (bc.OK, "")
            s.assert_shape()
        bc.release(stub1, key, g3.token)
        d = bc.describe(stub2, key)
        assert not d.held and d.waiters == 0, d
    finally:
        ch.close()
