"""batond on Redis Cluster (issue #16): three primaries with a replica each
(cluster.py), batond given `redis.address: cluster://H:P,H:P` seed nodes.

What must hold on a Cluster as on one Redis: no two holds of a key overlap
(client-side intervals: from the grant's arrival to the release's send, which
lie inside the real hold) and fencing rises per key, with keys spread over
every shard; FIFO waiters, try-lock refusals naming the holder, lease expiry;
Watch by prefix across shards; pools (a pool and its devices share a slot);
two batonds waking each other's waiters; and all of it while slots move
(one by hand in small batches, and a few hundred by redis-cli reshard) and
while a shard fails over (manual CLUSTER FAILOVER, SIGKILL of a primary).

Layout batond uses on a Cluster (store/redis/cluster_map.h): a name N hashes
by its TAG, N up to its first '/'; records are "baton:{TAG}REST:rec"
("baton:{video:7}:lock", "baton:{gpu}/3:lock"). The tests below pick names
whose slots land on given primaries and check that with CLUSTER KEYSLOT.

No assertion is on a duration; waits are generous for a loaded 2-core machine.
"""
import atexit
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import grpc
import pytest
from baton.v1 import lock_pb2_grpc

import bclient as bc
import cluster as rc
import harness
from bclient import pb

_PROBLEM = rc.support_problem()
pytestmark = pytest.mark.skipif(_PROBLEM is not None, reason="no Redis Cluster support: %s" % _PROBLEM)

T = pb.LockEvent
OK = grpc.StatusCode.OK
ABORTED = grpc.StatusCode.ABORTED
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE

# grpc.health.v1 stubs, compiled into top-level modules (see test_health.py
# for why not under their proto path).
_HEALTH_STUBS = tempfile.mkdtemp(prefix="baton-it-cluster-health-")
atexit.register(shutil.rmtree, _HEALTH_STUBS, True)
subprocess.run(
    [shutil.which("protoc") or "/usr/bin/protoc",
     "-I", os.path.join(harness.SOURCE_DIR, "proto", "grpc", "health", "v1"),
     "--python_out=" + _HEALTH_STUBS, "--grpc_python_out=" + _HEALTH_STUBS,
     "--plugin=protoc-gen-grpc_python=" + harness.GRPC_PYTHON_PLUGIN, "health.proto"],
    check=True)
sys.path.insert(0, _HEALTH_STUBS)
import health_pb2  # noqa: E402
import health_pb2_grpc  # noqa: E402

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


# ------------------------------------------------------------------ layout

def tag(name):
    """The part of a Baton name its slot comes from: up to the first '/'."""
    return name.split("/", 1)[0]


def name_slot(name):
    return rc.slot_of(tag(name))


def record(name, rec="lock"):
    """Redis key of record `rec` of Baton key `name` on a Cluster."""
    t = tag(name)
    return "baton:{%s}%s:%s" % (t, name[len(t):], rec)


def pick_names(rcl, label, per_primary=1, slot_ok=None):
    """{primary port: [names]}: fresh names (no '/') whose lock records live
    on each primary, `per_primary` each; slot_ok(slot) may narrow the choice.
    Checked against the cluster itself (CLUSTER KEYSLOT and CLUSTER SLOTS)."""
    owners = rcl.slot_owners()
    got = {p: [] for p in rcl.primaries()}
    base = bc.uniq(label)
    i = 0
    while any(len(v) < per_primary for v in got.values()):
        name = "%s-%d" % (base, i)
        i += 1
        assert i < 10000000, "no names found for %s" % label
        s = name_slot(name)
        if slot_ok and not slot_ok(s):
            continue
        if len(got[owners[s]]) < per_primary:
            got[owners[s]].append(name)
    for p, names in got.items():
        for n in names:
            assert rcl.key_slot(record(n)) == name_slot(n), n
            assert rcl.node_of_slot(name_slot(n)) == p, n
    return got


def prefix_keys(rcl, prefix):
    """{primary port: key}: one key starting with prefix on each primary
    (no '/' after the prefix: each key is its own tag)."""
    owners = rcl.slot_owners()
    keys = {}
    i = 0
    while len(keys) < len(set(owners)):
        k = "%sk%d" % (prefix, i)
        i += 1
        keys.setdefault(owners[name_slot(k)], k)
    for p, k in keys.items():
        assert rcl.node_of_slot(rcl.key_slot(record(k))) == p, k
    return keys


def flat(names_by_primary):
    return [n for ns in names_by_primary.values() for n in ns]


def lock_record_value(rcl, name):
    """GET of the lock record on the primary that serves its slot."""
    key = record(name)
    return rc.command(rcl.node_of_slot(rcl.key_slot(key)), "GET", key)


# ------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def rcl(workdir):
    c = rc.RedisCluster(workdir)
    yield c
    c.stop()


@pytest.fixture(scope="module")
def cbatond(batond_binary, workdir, rcl):
    b = harness.Batond(batond_binary, workdir, rcl.address(), name="batond-cluster")
    try:
        b.start(timeout=30.0)
    except Exception:
        if b.running():
            b.kill()
        raise
    yield b
    b.check_clean_exit(b.stop())


@pytest.fixture(scope="module")
def cstub(cbatond):
    ch = grpc.insecure_channel(cbatond.target)
    yield lock_pb2_grpc.LockServiceStub(ch)
    ch.close()


# ------------------------------------------------------------------ workload

class Workload:
    """Threads (each on its own channel) that acquire a random key of `keys`,
    hold it briefly and release it, recording every hold as (key, fencing,
    granted_at, release_sent_at). An Acquire answered UNAVAILABLE is retried
    (as a client would); any other failure is an error of the test."""

    def __init__(self, target, keys, workers=6, ttl_ms=10000, seed=0):
        self.target = target
        self.keys = list(keys)
        self.ttl_ms = ttl_ms
        self.holds = []
        self.unavailable = []  # (key, details) of retried acquires
        self.errors = []  # (key, code, details) of anything else
        self.release_errors = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(seed * 100 + i,), daemon=True)
                        for i in range(workers)]
        for t in self.threads:
            t.start()

    def run(self, i):
        rnd = random.Random(i)
        with grpc.insecure_channel(self.target) as ch:
            stub = lock_pb2_grpc.LockServiceStub(ch)
            while not self.stop.is_set():
                key = rnd.choice(self.keys)
                events, code, details, _ = bc.acquire(stub, key, "w%d" % i, ttl_ms=self.ttl_ms, wait_ms=40000,
                                                      timeout=60.0)
                got = time.monotonic()
                if code == UNAVAILABLE:
                    with self.lock:
                        self.unavailable.append((key, details))
                    time.sleep(0.05)
                    continue
                if code != OK or not events or events[-1].WhichOneof("event") != "granted":
                    with self.lock:
                        self.errors.append((key, code, details))
                    time.sleep(0.05)
                    continue
                g = events[-1].granted
                time.sleep(rnd.uniform(0.002, 0.02))
                sent = time.monotonic()
                with self.lock:
                    self.holds.append((key, g.fencing, got, sent))
                retried = False
                for _ in range(50):  # UNAVAILABLE: try again (else the lease runs out)
                    try:
                        stub.Release(pb.ReleaseRequest(key=key, token=g.token), timeout=10.0)
                        break
                    except grpc.RpcError as e:
                        if e.code() == UNAVAILABLE:
                            retried = True
                            time.sleep(0.1)
                            continue
                        # "not held" after an UNAVAILABLE: the first try may
                        # have released it before its answer was lost.
                        if not (retried and e.code() == grpc.StatusCode.FAILED_PRECONDITION):
                            with self.lock:
                                self.release_errors.append((key, e.code(), e.details()))
                        break

    def count(self, key=None, after=0.0):
        with self.lock:
            return sum(1 for k, _, got, _ in self.holds if (key is None or k == key) and got > after)

    def wait_grants(self, more, timeout=60.0, key=None, after=0.0):
        """Until `more` holds (of key, granted after `after`) beyond those seen now."""
        start = self.count(key, after)
        ok = bc.wait_until(lambda: self.count(key, after) >= start + more, timeout, 0.05)
        assert ok, "no %d more grants%s within %ss (unavailable: %s, errors: %s)" % (
            more, " of " + key if key else "", timeout, self.unavailable[-3:], self.errors[-3:])

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(90)
        assert not any(t.is_alive() for t in self.threads), "a worker is stuck in an Acquire"

    def max_fencing(self, before=None):
        """{key: highest fencing} of holds granted before monotonic time `before`."""
        out = {}
        with self.lock:
            for k, f, got, _ in self.holds:
                if before is None or got < before:
                    out[k] = max(out.get(k, 0), f)
        return out

    def check(self, min_holds_per_key=1):
        """No two holds of a key overlap, fencing rises in hold order, every
        failure was an UNAVAILABLE that was retried."""
        print("workload: %d holds, %d retried UNAVAILABLE (%s), errors %s, release errors %s" % (
            len(self.holds), len(self.unavailable), sorted({d for _, d in self.unavailable})[:3],
            self.errors[:5], self.release_errors[:5]))
        assert not self.errors, "acquires failed other than UNAVAILABLE: %s" % self.errors[:10]
        assert not self.release_errors, "releases failed: %s" % self.release_errors[:10]
        by_key = {}
        for key, f, got, sent in self.holds:
            by_key.setdefault(key, []).append((got, sent, f))
        for key in self.keys:
            assert len(by_key.get(key, [])) >= min_holds_per_key, "%s: %d holds" % (key, len(by_key.get(key, [])))
        for key, hs in by_key.items():
            hs.sort()
            for (g1, s1, f1), (g2, s2, f2) in zip(hs, hs[1:]):
                assert g2 >= s1, "%s: two holds overlap: fencing %d [%.3f, %.3f] and %d [%.3f, %.3f]" % (
                    key, f1, g1, s1, f2, g2, s2)
                assert f2 > f1, "%s: fencing went back: %d then %d" % (key, f1, f2)


def sync_watch(stub, w, keys, timeout=15.0):
    """Makes sure watch w is live for every key of `keys` (on any shard):
    acquires and releases each until w reports it, then forgets those events."""
    for key in keys:
        owner = "sync-" + key[-6:]
        deadline = time.monotonic() + timeout
        while True:
            g = bc.grant(stub, key, owner, wait_ms=5000)
            bc.release(stub, key, g.token)
            if w._wait(lambda: any(m.type == T.RELEASED and m.key == key and m.owner == owner
                                   for _, m, _ in w.items), 0.5):
                break
            assert not w.ended, w.summary()
            assert time.monotonic() < deadline, "%s never reported %s" % (w.what, key)
    w.clear()


# ------------------------------------------------------------------ tests

def test_mutual_exclusion_and_fencing_across_shards(rcl, cbatond, cstub):
    names = pick_names(rcl, "mutex", per_primary=2)
    assert len(names) == 3
    w = Workload(cbatond.target, flat(names), workers=10)
    try:
        w.wait_grants(300, timeout=90.0)
    finally:
        w.finish()
    w.check(min_holds_per_key=10)
    assert not w.unavailable, "UNAVAILABLE with the cluster healthy: %s" % w.unavailable[:5]
    # Every hold was released: no lock record is left on any shard.
    for n in flat(names):
        assert lock_record_value(rcl, n) is None, n
        assert not bc.describe(cstub, n).held


def test_fifo_try_lock_and_expiry(rcl, cstub):
    names = pick_names(rcl, "fifo")
    key, ekey = names[rcl.primaries()[0]][0], names[rcl.primaries()[1]][0]
    holder = bc.grant(cstub, key, "first-holder", ttl_ms=30000)
    # The lock record lives on the primary that serves the key's tag.
    assert lock_record_value(rcl, key) == holder.token
    _, code, details, _ = bc.acquire(cstub, key, "prober", wait_ms=0)
    assert code == ABORTED and "first-holder" in details, (code, details)

    waiters = []
    for i in range(4):
        s = bc.AcquireStream(cstub, key, "waiter%d" % i, ttl_ms=30000, wait_ms=60000, timeout=120.0)
        assert s.wait_queued(10.0) == i + 1, s.summary()
        waiters.append(s)
    bc.release(cstub, key, holder.token)
    last = holder.fencing
    for i, s in enumerate(waiters):
        g = s.wait_granted(20.0)
        assert g.fencing > last, (i, g.fencing, last)
        assert all(o.granted is None for o in waiters[i + 1:]), "granted out of order: %s" % [
            o.summary() for o in waiters]
        _, code, details, _ = bc.acquire(cstub, key, "prober", wait_ms=0)
        assert code == ABORTED and "waiter%d" % i in details, (code, details)
        last = g.fencing
        bc.release(cstub, key, g.token)
        s.assert_shape()

    # Lease expiry on another shard: the holder vanishes, the waiter gets it.
    w = bc.WatchStream(cstub, key=ekey)
    w.sync()
    dead = bc.grant(cstub, ekey, "crashed-worker", ttl_ms=300)
    waiter = bc.AcquireStream(cstub, ekey, "patient", wait_ms=30000)
    g = waiter.wait_granted(20.0)
    assert g.fencing > dead.fencing
    w.wait_event(lambda e: e.type == T.ACQUIRED and e.owner == "patient", 10.0)
    assert [(e.type, e.owner, e.fencing) for e in w.events()] == [
        (T.ACQUIRED, "crashed-worker", dead.fencing),
        (T.EXPIRED, "crashed-worker", dead.fencing),
        (T.ACQUIRED, "patient", g.fencing),
    ], [bc.fmt_event(e) for e in w.events()]
    bc.release(cstub, ekey, g.token)
    w.cancel()


def test_watch_by_prefix_sees_every_shard(rcl, cstub):
    prefix = bc.uniq("wall") + "-"
    keys = prefix_keys(rcl, prefix)
    outside = pick_names(rcl, "wout")
    wp = bc.WatchStream(cstub, prefix=prefix)
    sync_watch(cstub, wp, prefix_keys(rcl, prefix + "sync-").values())

    for k in flat(outside):
        g = bc.grant(cstub, k, "outsider")
        bc.release(cstub, k, g.token)
    grants = {}
    for p, k in keys.items():
        grants[k] = bc.grant(cstub, k, "owner-" + k[-2:])
        bc.release(cstub, k, grants[k].token)
    for k, g in grants.items():
        for typ in (T.ACQUIRED, T.RELEASED):
            wp.wait_event(lambda e, k=k, g=g, typ=typ: e.type == typ and e.key == k and e.fencing == g.fencing,
                          15.0)
    evs = wp.events()
    assert all(e.key.startswith(prefix) for e in evs), [bc.fmt_event(e) for e in evs]
    for k in keys.values():  # per key: exactly ACQUIRED then RELEASED
        assert [e.type for e in evs if e.key == k] == [T.ACQUIRED, T.RELEASED], [bc.fmt_event(e) for e in evs]
    assert not wp.ended, wp.summary()
    wp.cancel()


def test_pools_on_the_cluster(rcl, cstub):
    names = pick_names(rcl, "pool")
    p1, p2 = names[rcl.primaries()[0]][0], names[rcl.primaries()[1]][0]

    # Ad-hoc pool p1 of 4 devices: all granted (distinct), a fifth waits.
    streams = [bc.AcquireStream(cstub, owner="job%d" % i, pool=p1, devices=4, wait_ms=10000) for i in range(4)]
    grants = [s.wait_granted(20.0) for s in streams]
    assert sorted(g.device for g in grants) == [0, 1, 2, 3], [g.device for g in grants]
    for g in grants:
        assert g.key == "%s/%d" % (p1, g.device)
        # Devices share the pool's slot: their records live on its primary.
        assert rcl.key_slot(record(g.key)) == name_slot(p1)
        assert lock_record_value(rcl, g.key) == g.token
    fifth = bc.AcquireStream(cstub, owner="job4", pool=p1, devices=4, wait_ms=30000)
    assert fifth.wait_queued(10.0) == 1
    _, code, details, _ = bc.acquire(cstub, owner="try", pool=p1, devices=4, wait_ms=0)
    assert code == ABORTED, (code, details)
    freed = grants[2]
    bc.release(cstub, freed.key, freed.token)
    g5 = fifth.wait_granted(20.0)
    assert (g5.device, g5.key) == (freed.device, freed.key) and g5.fencing > freed.fencing
    for g in grants[:2] + grants[3:] + [g5]:
        bc.release(cstub, g.key, g.token)
    assert all(not bc.describe(cstub, "%s/%d" % (p1, d)).held for d in range(4))

    # Multi-device grants on pool p2 (another shard): all or nothing, one token.
    g3 = bc.grant(cstub, owner="train-3", pool=p2, devices=4, count=3)
    assert list(g3.devices) == [0, 1, 2] and list(g3.keys) == ["%s/%d" % (p2, d) for d in range(3)]
    for k, f in zip(g3.keys, g3.fencings):
        d = bc.describe(cstub, k)
        assert d.held and d.owner == "train-3" and d.fencing == f
    pair = bc.AcquireStream(cstub, owner="train-2", pool=p2, devices=4, count=2, wait_ms=30000)
    assert pair.wait_queued(10.0) == 1
    bc.release(cstub, g3.keys[1], g3.token)  # any key of the grant releases all of it
    g2 = pair.wait_granted(20.0)
    assert list(g2.devices) == [0, 1] and all(f > o for f, o in zip(g2.fencings, g3.fencings))
    bc.release(cstub, g2.keys[0], g2.token)
    assert all(not bc.describe(cstub, "%s/%d" % (p2, d)).held for d in range(4))

    # A configured pool with device names (mig3: MIG-aaa, MIG-bbb, GPU-ccc).
    g = bc.grant(cstub, owner="pair", pool="mig3", devices=3, count=2)
    assert list(g.devices) == [0, 1] and list(g.device_names) == ["MIG-aaa", "MIG-bbb"]
    assert rcl.key_slot(record(g.keys[1])) == name_slot("mig3")
    bc.release(cstub, g.key, g.token)


def test_two_batonds_wake_each_others_waiters(rcl, cbatond, cstub, start_batond):
    # B learns the cluster from two other nodes (replicas when it starts).
    replicas = [p for p in rcl.ports if p not in rcl.primaries()][:2]
    b = start_batond("cluster://" + ",".join("127.0.0.1:%d" % p for p in replicas), name="batond-cluster-b")
    names = pick_names(rcl, "twob")
    with grpc.insecure_channel(b.target) as ch:
        bstub = lock_pb2_grpc.LockServiceStub(ch)
        prefix = bc.uniq("twob-watch") + "-"
        wb = bc.WatchStream(bstub, prefix=prefix)
        sync_watch(cstub, wb, prefix_keys(rcl, prefix + "sync-").values())  # events of A, seen on B
        for p, (key,) in names.items():
            # A's holder releases; B's waiter is woken (pub/sub on the key's shard).
            ga = bc.grant(cstub, key, "holder-on-a", ttl_ms=30000)
            wait_b = bc.AcquireStream(bstub, key, "waiter-on-b", ttl_ms=30000, wait_ms=60000, timeout=120.0)
            wait_b.wait_queued(10.0)
            bc.release(cstub, key, ga.token)
            gb = wait_b.wait_granted(30.0)
            assert gb.fencing > ga.fencing
            # And the other way round.
            wait_a = bc.AcquireStream(cstub, key, "waiter-on-a", ttl_ms=30000, wait_ms=60000, timeout=120.0)
            wait_a.wait_queued(10.0)
            bc.release(bstub, key, gb.token)
            g = wait_a.wait_granted(30.0)
            assert g.fencing > gb.fencing
            bc.release(cstub, key, g.token)
        # Grants on A under B's watched prefix, one per shard, all reported on B.
        for k in prefix_keys(rcl, prefix).values():
            g = bc.grant(cstub, k, "on-a")
            wb.wait_event(lambda e, k=k, g=g: e.type == T.ACQUIRED and e.key == k and e.fencing == g.fencing, 15.0)
            bc.release(cstub, k, g.token)
            wb.wait_event(lambda e, k=k, g=g: e.type == T.RELEASED and e.key == k and e.fencing == g.fencing, 15.0)
        wb.cancel()


def test_reshard_under_load(rcl, cbatond, cstub):
    prim = rcl.primaries()
    a, b, c = prim
    owners = rcl.slot_owners()
    lowest_c = set(i for i, p in enumerate(owners) if p == c)
    lowest_c = set(sorted(lowest_c)[:300])  # what redis-cli reshard of 300 slots moves from c
    by_hand = pick_names(rcl, "move")[a]  # one key whose slot moves by hand from a to b
    bulk = pick_names(rcl, "bulk", per_primary=2, slot_ok=lambda s: s in lowest_c or owners[s] != c)[c]
    steady = pick_names(rcl, "steady")[b]  # a key that stays where it is
    keys = by_hand + bulk + steady
    moving_slot = name_slot(by_hand[0])
    # A stream hold and a waiter across the move, on a key of the moving slot
    # (same tag as by_hand[0]).
    held = by_hand[0] + "/held"
    assert rcl.key_slot(record(held)) == moving_slot
    holder = bc.AcquireStream(cstub, held, "stream-holder", ttl_ms=20000, mode=bc.STREAM, timeout=300.0)
    hg = holder.wait_granted(20.0)
    waiter = bc.AcquireStream(cstub, held, "waiter", ttl_ms=30000, wait_ms=120000, timeout=180.0)
    waiter.wait_queued(10.0)
    # The key of the moving slot has workers of its own: while its slot is
    # half moved its scripts (several keys each) get ASK then TRYAGAIN until
    # the move completes, so they wait, and would hold up every shared worker.
    w = Workload(cbatond.target, bulk + steady, workers=6)
    wm = Workload(cbatond.target, by_hand, workers=2, seed=7)
    try:
        w.wait_grants(30, timeout=60.0)
        wm.wait_grants(5, timeout=60.0)

        def during(moved):
            # Traffic elsewhere runs while the slot is half moved: a few
            # grants before the next batch.
            w.wait_grants(3, timeout=60.0)

        moved = rcl.move_slot(moving_slot, b, batch=1, pause=0.2, on_batch=during)
        print("slot %d moved by hand: %d Redis keys" % (moving_slot, moved))
        assert moved >= 1
        t_moved = time.monotonic()
        wm.wait_grants(10, timeout=60.0, key=by_hand[0], after=t_moved)

        rcl.reshard(c, a, 300)
        t_resharded = time.monotonic()
        assert all(rcl.slot_owners()[name_slot(k)] == a for k in bulk)
        for k in bulk:
            w.wait_grants(5, timeout=60.0, key=k, after=t_resharded)
        w.wait_grants(5, timeout=60.0, key=steady[0], after=t_resharded)
    finally:
        w.finish()
        wm.finish()
    w.check(min_holds_per_key=5)
    wm.check(min_holds_per_key=5)
    _stream_hold_kept_or_reported(cstub, held, holder, hg, [waiter])
    _waiters_complete(cstub, held, [waiter], hg.fencing)
    # The records live where the slots went.
    g = bc.grant(cstub, by_hand[0], "after-move", wait_ms=30000)
    assert rc.command(b, "GET", record(by_hand[0])) == g.token
    assert g.fencing > wm.max_fencing()[by_hand[0]]
    bc.release(cstub, by_hand[0], g.token)
    g = bc.grant(cstub, bulk[0], "after-reshard", wait_ms=30000)
    assert rc.command(a, "GET", record(bulk[0])) == g.token
    bc.release(cstub, bulk[0], g.token)


def grant_retrying(stub, key, owner, wait_ms, within=60.0):
    """bc.grant, as a client does it: UNAVAILABLE (batond has not yet read
    the new slot map: it refuses new acquires meanwhile) is tried again."""
    deadline = time.monotonic() + within
    while True:
        events, code, details, _ = bc.acquire(stub, key, owner, wait_ms=wait_ms)
        if code != UNAVAILABLE or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert code == OK and events and events[-1].WhichOneof("event") == "granted", (key, code, details)
    return events[-1].granted


def _stream_hold_kept_or_reported(stub, key, holder, hg, waiters):
    """After a failover: the stream hold is still held by its holder (same
    fencing) while its call is open, or its call ended ABORTED/UNAVAILABLE;
    never open while someone else holds the key."""
    # batond serves the key's shard again (a try-lock gets an answer that is
    # not UNAVAILABLE) before we look.
    deadline = time.monotonic() + 60
    while True:
        events, code, details, _ = bc.acquire(stub, key, "intruder", wait_ms=0)
        if code != UNAVAILABLE or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    print("stream holder after the failover: %s; try-lock: %s %r" % (holder.summary(), code, details))
    if not holder.ended:
        assert code == ABORTED and "stream-holder" in details, (
            "someone else acquired %s while its STREAM holder's call is open (%s %r)" % (key, code, details))
        d = bc.describe(stub, key)
        assert d.held and d.owner == "stream-holder" and d.fencing == hg.fencing, d
        assert all(s.granted is None for s in waiters), [s.summary() for s in waiters]
        holder.cancel()
    else:
        assert holder.code in (ABORTED, UNAVAILABLE), holder.summary()
        if code == OK:  # the hold was reported lost; the intruder got the key: give it back
            bc.release(stub, key, events[-1].granted.token)


def _waiters_complete(stub, key, waiters, above):
    for s in waiters:
        g = s.wait_granted(60.0)
        assert g.fencing > above, (g.fencing, above)
        above = g.fencing
        bc.release(stub, key, g.token)


def test_manual_failover_of_a_shard_under_load(rcl, cbatond, cstub):
    shard = rcl.primaries()[0]
    names = pick_names(rcl, "mfo", per_primary=2)
    held = names[shard][0]
    keys = [k for k in flat(names) if k != held]
    holder = bc.AcquireStream(cstub, held, "stream-holder", ttl_ms=20000, mode=bc.STREAM, timeout=300.0)
    hg = holder.wait_granted(20.0)
    waiters = [bc.AcquireStream(cstub, held, "waiter%d" % i, ttl_ms=30000, wait_ms=120000, timeout=180.0)
               for i in range(2)]
    for i, s in enumerate(waiters):
        assert s.wait_queued(10.0) == i + 1
    w = Workload(cbatond.target, keys, workers=8)
    try:
        w.wait_grants(40, timeout=60.0)
        t0 = time.monotonic()
        new = rcl.failover(shard)
        t1 = time.monotonic()
        bc.record_timing("cluster: CLUSTER FAILOVER (until all nodes agree)", t1 - t0)
        before = w.max_fencing(before=t0)
        for k in names[shard][1:]:
            w.wait_grants(5, timeout=60.0, key=k, after=t1)
        w.wait_grants(30, timeout=60.0, after=t1)
    finally:
        w.finish()
    w.check(min_holds_per_key=5)
    after = {}
    for k, f, got, _ in w.holds:
        if got > t1:
            after[k] = min(after.get(k, f), f)
    for k, f in after.items():
        assert f > before.get(k, 0), "%s: fencing %d after the failover, %d before" % (k, f, before.get(k))
    assert rc.command(new, "ROLE")[0] == "master"
    _stream_hold_kept_or_reported(cstub, held, holder, hg, waiters)
    _waiters_complete(cstub, held, waiters, hg.fencing)


def test_sigkill_of_a_primary_with_a_stream_hold(rcl, cbatond, cstub):
    """SIGKILL loses what the replica had not received. Nothing on the
    killed shard is granted in the last moment before the kill (its state is
    replicated: WAIT), so a lost write cannot fake an overlap; the workload
    runs on the other shards, which see CLUSTERDOWN while the cluster fails
    over (full coverage required) and must come through with retries only."""
    shard = rcl.primaries()[1]
    names = pick_names(rcl, "kill", per_primary=2)
    held, probe = names[shard]
    others = [k for p, ks in names.items() if p != shard for k in ks]
    holder = bc.AcquireStream(cstub, held, "stream-holder", ttl_ms=20000, mode=bc.STREAM, timeout=300.0)
    hg = holder.wait_granted(20.0)
    waiters = [bc.AcquireStream(cstub, held, "waiter%d" % i, ttl_ms=30000, wait_ms=120000, timeout=180.0)
               for i in range(2)]
    for i, s in enumerate(waiters):
        assert s.wait_queued(10.0) == i + 1
    probe_before = []
    for i in range(5):
        g = bc.grant(cstub, probe, "probe%d" % i)
        probe_before.append(g.fencing)
        bc.release(cstub, probe, g.token)
    # Everything written to the shard so far has reached its replica.
    marker = "{%s}" % tag(probe)
    rc.command(shard, "SET", marker, "1")
    assert rc.command(shard, "WAIT", 1, 5000) == 1
    w = Workload(cbatond.target, others, workers=6)
    try:
        w.wait_grants(30, timeout=60.0)
        t0 = time.monotonic()
        new = rcl.kill_primary(shard)
        t1 = time.monotonic()
        bc.record_timing("cluster: primary SIGKILL -> replica promoted (all nodes agree)", t1 - t0)
        before = w.max_fencing(before=t0)
        g = grant_retrying(cstub, probe, "probe-after", wait_ms=60000)
        assert g.fencing > max(probe_before), (g.fencing, probe_before)
        bc.release(cstub, probe, g.token)
        w.wait_grants(30, timeout=60.0, after=t1)
    finally:
        w.finish()
        if not rcl.running(shard):
            rcl.restart(shard)  # back as a replica: the next test has a whole cluster
    w.check(min_holds_per_key=3)
    for k, f, got, _ in w.holds:
        if got > t1:
            assert f > before.get(k, 0), (k, f, before.get(k))
    assert rc.command(new, "ROLE")[0] == "master"
    _stream_hold_kept_or_reported(cstub, held, holder, hg, waiters)
    _waiters_complete(cstub, held, waiters, hg.fencing)


def test_one_shard_down_the_others_serve(workdir, start_batond):
    """A primary with no replica dies, on a cluster that serves the slots it
    still has (cluster-require-full-coverage no): batond answers UNAVAILABLE
    for that shard's keys only; the other shards' keys are granted meanwhile;
    when the node is back, its keys are granted again."""
    part = rc.RedisCluster(workdir, replicas_per_primary=0,
                           extra_args=["--cluster-require-full-coverage", "no"])
    try:
        b = start_batond(part.address(), name="batond-cluster-part")
        with grpc.insecure_channel(b.target) as ch:
            stub = lock_pb2_grpc.LockServiceStub(ch)
            names = pick_names(part, "part")
            dead = part.primaries()[1]
            part.procs[dead].kill()
            part.procs[dead].wait()
            dead_key = names[dead][0]

            def dead_refused():
                events, code, _, _ = bc.acquire(stub, dead_key, "x", wait_ms=0, timeout=10.0)
                if code == OK and events and events[-1].WhichOneof("event") == "granted":
                    bc.release(stub, dead_key, events[-1].granted.token)
                return code == UNAVAILABLE

            assert bc.wait_until(dead_refused, 30.0, 0.1), b.log_tail(40)
            for port, ks in names.items():
                if port != dead:
                    g = bc.grant(stub, ks[0], "alive", wait_ms=10000)
                    assert lock_record_value(part, ks[0]) == g.token
                    bc.release(stub, ks[0], g.token)
            events, code, details, _ = bc.acquire(stub, dead_key, "x", wait_ms=0, timeout=10.0)
            assert code == UNAVAILABLE and "redis" in details.lower(), (code, details)
            part.restart(dead)
            g = grant_retrying(stub, dead_key, "back", wait_ms=10000)
            assert lock_record_value(part, dead_key) == g.token
            bc.release(stub, dead_key, g.token)
    finally:
        part.stop()


def test_seeds_down_then_cluster_comes_up(workdir, start_batond):
    later = rc.RedisCluster(workdir, start=False)
    try:
        b = start_batond(later.address(), name="batond-cluster-late", wait_ready=False)
        with grpc.insecure_channel(b.target) as ch:
            health = health_pb2_grpc.HealthStub(ch)
            stub = lock_pb2_grpc.LockServiceStub(ch)

            def status():
                try:
                    return health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5.0).status
                except grpc.RpcError:
                    return None  # not listening yet

            # batond listens and answers health checks while no seed answers.
            assert bc.wait_until(lambda: not b.running() or status() is not None, 30.0, 0.05), b.log_tail(40)
            assert b.running(), "batond exited with no seed up:\n" + b.log_tail(40)
            assert status() == NOT_SERVING
            events, code, details, _ = bc.acquire(stub, bc.uniq("nocluster"), "x", wait_ms=10000, timeout=30.0)
            assert code == UNAVAILABLE and not events, (code, details)
            low = details.lower()
            assert "redis" in low or "cluster" in low, "unclear message: %r" % details
            code, details = bc.rpc_error(stub.Describe, pb.DescribeRequest(key="k"))
            assert code == UNAVAILABLE, (code, details)

            later.start()
            assert bc.wait_until(lambda: status() == SERVING, 60.0, 0.1), b.log_tail(40)
            for k in flat(pick_names(later, "late")):
                g = bc.grant(stub, k, "late", wait_ms=10000)
                assert lock_record_value(later, k) == g.token
                bc.release(stub, k, g.token)
    finally:
        later.stop()
