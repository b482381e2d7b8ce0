"""batond on Redis Sentinel: one primary, two replicas, three sentinels
(down-after 1 s). Clients hold and release stream and lease locks on a few
keys while the primary is SIGKILLed, then while a manual SENTINEL FAILOVER
runs. batond follows the new primary; waiters complete; with
redis.min_replicas: 1 no two holds of a key overlap (client-side intervals:
from the grant's arrival to the release's send, which lie inside the real
hold), and fencing rises in hold order across every failover."""
import random
import signal
import threading
import time

import grpc
import pytest
from baton.v1 import lock_pb2_grpc

import bclient as bc
import ha

MIN_REPLICAS = """\
  min_replicas: 1
  replica_timeout_ms: 500
"""


@pytest.fixture
def sentinels(workdir):
    # Three replicas: after a SIGKILL and a manual failover the primary still
    # has a replica that Sentinel re-pointed at once (a demoted primary takes
    # Sentinel ~15 s to bring back as a replica), so WAIT can confirm.
    s = ha.SentinelSet(workdir, replicas=3)
    yield s
    s.stop()


def start_on_sentinel(start_batond, ss, name, min_replicas=True):
    return start_batond(ss.address, name=name, redis_extra=MIN_REPLICAS if min_replicas else "")


class Workload:
    """Workers that acquire, hold briefly and release locks on a few keys,
    recording every hold as (key, fencing, granted_at, released_at)."""

    def __init__(self, target, keys, workers=4, mode=bc.LEASE):
        self.target = target
        self.keys = keys
        self.mode = mode
        self.holds = []
        self.errors = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True) for i in range(workers)]
        for t in self.threads:
            t.start()

    def run(self, i):
        rnd = random.Random(i)
        with grpc.insecure_channel(self.target) as ch:
            stub = lock_pb2_grpc.LockServiceStub(ch)
            while not self.stop.is_set():
                key = rnd.choice(self.keys)
                events, code, details, _ = bc.acquire(stub, key, "w%d" % i, ttl_ms=5000, wait_ms=20000,
                                                      timeout=30.0)
                got = time.monotonic()
                if code != bc.OK or not events or events[-1].WhichOneof("event") != "granted":
                    with self.lock:
                        self.errors.append((key, code, details))
                    time.sleep(0.05)
                    continue
                g = events[-1].granted
                time.sleep(rnd.uniform(0.005, 0.03))
                sent = time.monotonic()
                with self.lock:
                    self.holds.append((key, g.fencing, got, sent))
                try:
                    stub.Release(bc.pb.ReleaseRequest(key=key, token=g.token), timeout=10.0)
                except grpc.RpcError:
                    pass  # the lease runs out by itself

    def count(self):
        with self.lock:
            return len(self.holds)

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(60)

    def check(self):
        by_key = {}
        for key, f, got, sent in self.holds:
            by_key.setdefault(key, []).append((got, sent, f))
        for key, hs in by_key.items():
            hs.sort()
            for (g1, s1, f1), (g2, s2, f2) in zip(hs, hs[1:]):
                assert g2 >= s1, "%s: two holds overlap: fencing %d [%.3f, %.3f] and %d [%.3f, %.3f]" % (
                    key, f1, g1, s1, f2, g2, s2)
                assert f2 > f1, "%s: fencing went back: %d then %d" % (key, f1, f2)


def wait_grants(w, more, timeout):
    start = w.count()
    assert bc.wait_until(lambda: w.count() >= start + more, timeout, 0.05), (
        "no %d more grants within %ss (errors: %s)" % (more, timeout, w.errors[-5:]))


def test_follows_primary_sigkill_and_manual_failover(sentinels, start_batond):
    ss = sentinels
    b = start_on_sentinel(start_batond, ss, "batond-sentinel")
    keys = [bc.uniq("sent-%d" % i) for i in range(3)]
    with grpc.insecure_channel(b.target) as ch:
        stub = lock_pb2_grpc.LockServiceStub(ch)
        # A stream hold taken before the failovers, released at the end: it
        # must survive both (renewed on each new primary).
        held_key = bc.uniq("sent-stream")
        holder = bc.AcquireStream(stub, held_key, "stream-holder", ttl_ms=20000, wait_ms=0, mode=bc.STREAM,
                                  timeout=300.0)
        hg = holder.wait_granted(10.0)
        w = Workload(b.target, keys)
        try:
            wait_grants(w, 20, 20)
            old = ss.primary()
            t_kill = time.monotonic()
            old.kill()
            new_port = ss.wait_new_primary(old.port)
            # The first grant after the kill, as a client sees it.
            n0 = w.count()
            assert bc.wait_until(lambda: w.count() > n0, 30, 0.01), "no grant after the failover: %s" % (
                w.errors[-5:],)
            bc.record_timing("primary SIGKILL -> first grant on the new primary", time.monotonic() - t_kill)
            wait_grants(w, 20, 20)

            # A manual failover to the remaining replica.
            t0 = time.monotonic()
            n0 = w.count()
            assert ss.sentinels[0].cli("SENTINEL", "FAILOVER", ha.MASTER) == "OK"
            ss.wait_new_primary(new_port)
            assert bc.wait_until(lambda: w.count() > n0, 30, 0.01), "no grant after the failover"
            bc.record_timing("SENTINEL FAILOVER -> first grant", time.monotonic() - t0)
            wait_grants(w, 20, 30)
            bc.record_timing("SENTINEL FAILOVER -> grants flowing again", time.monotonic() - t0)
        finally:
            w.finish()
        print("workload: %d holds, %d failed acquires: %s" % (len(w.holds), len(w.errors), sorted(
            {(str(c), d) for _, c, d in w.errors})[:8]))
        w.check()
        assert not holder.ended, "the stream hold did not survive the failovers: %s" % holder.summary()
        d = bc.describe(stub, held_key)
        assert d.held and d.fencing == hg.fencing, d
        holder.cancel()
        assert bc.wait_until(lambda: not bc.describe(stub, held_key).held, 5.0)
        # A waiter queued now is served promptly (nothing forgotten).
        g = bc.grant(stub, keys[0], "after", wait_ms=10000)
        assert g.fencing > max(f for k, f, _, _ in w.holds if k == keys[0])


def test_stream_hold_the_new_primary_lost_is_reasserted(sentinels, start_batond):
    """A stream hold whose writes never reached the replicas (deleted there
    by hand, as when the primary dies before replicating them) survives the
    failover: batond sees a Redis it did not write to before and re-asserts
    its holds, with their fencing, before its waiters attempt them."""
    ss = sentinels
    b = start_on_sentinel(start_batond, ss, "batond-reassert", min_replicas=False)
    key = bc.uniq("lost-hold")
    with grpc.insecure_channel(b.target) as ch:
        stub = lock_pb2_grpc.LockServiceStub(ch)
        holder = bc.AcquireStream(stub, key, "stream-holder", ttl_ms=20000, wait_ms=0, mode=bc.STREAM,
                                  timeout=300.0)
        g = holder.wait_granted(10.0)
        old = ss.primary()
        lock = "baton:{%s}:lock" % key
        for r in ss.redis:
            if r is not old:
                assert bc.wait_until(lambda: r.cli("EXISTS", lock) == "1", 5.0)
                r.cli("CONFIG", "SET", "replica-read-only", "no")
                r.cli("DEL", lock, "baton:{%s}:hold" % key)
        waiter = bc.AcquireStream(stub, key, "waiter", ttl_ms=5000, wait_ms=60000, timeout=120.0)
        waiter.wait_queued()
        old.kill()
        new_port = ss.wait_new_primary(old.port)
        new = ss.by_port(new_port)
        assert bc.wait_until(lambda: new.cli("GET", lock) == g.token, 20.0), "the hold was not re-asserted"
        assert new.cli("HGET", "baton:{%s}:hold" % key, "fencing") == str(g.fencing)
        time.sleep(1.0)
        assert not holder.ended, holder.summary()
        assert waiter.granted is None, "the waiter was granted a held key"
        holder.cancel()
        w = waiter.wait_granted(10.0)
        assert w.fencing > g.fencing
        waiter.cancel()


def test_failover_grace_keeps_a_lost_hold_for_its_batond(sentinels, start_batond):
    """redis.failover_grace_ms (lock-delay), without min_replicas: a stream
    hold on batond A that the new primary lost (deleted on the replicas by
    hand) is not granted to batond B's waiter while A reconnects and
    re-asserts it. A is SIGSTOPped across the failover so that B reaches the
    new primary first (without the grace, B's waiter takes the key then and A's
    holder is told "lost"); B's waiter is granted after A's holder releases."""
    ss = sentinels
    grace = "  failover_grace_ms: 3000\n"
    a = start_batond(ss.address, name="batond-grace-a", redis_extra=grace)
    b = start_batond(ss.address, name="batond-grace-b", redis_extra=grace)
    key = bc.uniq("grace")
    lock, hold = "baton:{%s}:lock" % key, "baton:{%s}:hold" % key
    with grpc.insecure_channel(a.target) as cha, grpc.insecure_channel(b.target) as chb:
        sa, sb = lock_pb2_grpc.LockServiceStub(cha), lock_pb2_grpc.LockServiceStub(chb)
        # wait_ms: batonds that start within the grace of an earlier test's
        # failover keep the rest of that window (nothing free is granted).
        holder = bc.AcquireStream(sa, key, "holder", ttl_ms=20000, wait_ms=10000, mode=bc.STREAM, timeout=300.0)
        g = holder.wait_granted(10.0)
        old = ss.primary()
        for r in ss.redis:
            if r is not old:
                assert bc.wait_until(lambda: r.cli("EXISTS", lock) == "1", 5.0)
                r.cli("CONFIG", "SET", "replica-read-only", "no")
                r.cli("DEL", lock, hold)
        waiter = bc.AcquireStream(sb, key, "waiter", ttl_ms=5000, wait_ms=60000, timeout=120.0)
        waiter.wait_queued()
        mark = b.log_size()
        a.signal(signal.SIGSTOP)
        try:
            old.kill()
            new = ss.by_port(ss.wait_new_primary(old.port))
            assert bc.wait_until(lambda: "failover grace: no free key" in b.log_text(mark), 20.0), b.log_tail(40)
            # B is up on the new primary once it answers (its waiter attempted first):
            # the key is free there, yet B grants it to nobody.
            tries = []

            def try_lock():
                tries.append(bc.acquire(sb, key, "try", wait_ms=0, timeout=10.0))
                return tries[-1][1] != grpc.StatusCode.UNAVAILABLE
            assert bc.wait_until(try_lock, 20.0, 0.05), tries[-1]
            _, code, details, _ = tries[-1]
            assert code == grpc.StatusCode.ABORTED, (code, details)
            assert new.cli("EXISTS", lock) == "0"
            assert waiter.granted is None, "B granted the lost hold's key in the grace"
        finally:
            a.signal(signal.SIGCONT)
        t0 = time.monotonic()
        assert bc.wait_until(lambda: new.cli("GET", lock) == g.token, 20.0), "the hold was not re-asserted"
        bc.record_timing("SIGCONT -> hold re-asserted by batond A", time.monotonic() - t0)
        assert new.cli("HGET", hold, "fencing") == str(g.fencing)
        # B's window ends; the key is held now, so its waiter still waits.
        assert bc.wait_until(lambda: "failover grace over" in b.log_text(mark), 20.0), b.log_tail(40)
        assert not holder.ended, holder.summary()
        assert waiter.granted is None, "the waiter was granted a held key"
        holder.cancel()
        w = waiter.wait_granted(10.0)
        assert w.fencing > g.fencing
        waiter.cancel()
