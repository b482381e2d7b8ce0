"""The `limits:` section: every limit refuses RESOURCE_EXHAUSTED with its
name while other callers are served, and the abuse probe of issue #17 (tens
of thousands of Watch streams from one client) leaves batond's memory
bounded while a second client acquires and releases normally."""
import hashlib
import os
import threading
import time

import grpc
import pytest
from baton.v1 import lock_pb2 as pb
from baton.v1 import lock_pb2_grpc

import bclient as bc

RE = grpc.StatusCode.RESOURCE_EXHAUSTED


def sha(tok):
    return hashlib.sha256(tok.encode()).hexdigest()


SMALL = """\
limits:
  max_streams: 40
  max_streams_per_connection: 30
  max_streams_per_tenant: 25
  max_waiting: 8
  max_waiting_per_tenant: 6
  max_waiters_per_key: 3
  max_watches: 7
  max_watches_per_tenant: 5
auth:
  tokens:
    - {name: hog, sha256: "%s", prefixes: [""]}
    - {name: calm, sha256: "%s", prefixes: [""]}
    - {name: third, sha256: "%s", prefixes: [""]}
""" % (sha("hog-token"), sha("calm-token"), sha("third-token"))


def md(tok):
    return (("authorization", "Bearer " + tok),)


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def acquire_error(stub, key, tok):
    """An Acquire that must be refused: (code, details)."""
    try:
        for _ in stub.Acquire(bc.acquire_request(key, "w", wait_ms=20000), metadata=md(tok), timeout=10):
            pass
    except grpc.RpcError as e:
        return e.code(), e.details()
    raise AssertionError("Acquire of %s was not refused" % key)


def open_watch(stub, prefix, meta):
    """A Watch stream; returns (call, None) once it is live, or (None, (code, details))."""
    call = stub.Watch(pb.WatchRequest(prefix=prefix), metadata=meta, timeout=60)
    call.initial_metadata()  # sent at once by a live watch, with the status by a refused one
    done = threading.Event()
    threading.Thread(target=lambda: (call.code(), done.set()), daemon=True).start()
    if done.wait(0.2):
        return None, (call.code(), call.details())
    return call, None


@pytest.fixture
def small(start_redis, start_batond):
    r = start_redis()
    b = start_batond(r.address, name="batond-limits", extra_config=SMALL, probe_metadata=md("third-token"))
    chans = []

    def stub(tok=None):
        ch = grpc.insecure_channel(b.target)
        chans.append(ch)
        s = lock_pb2_grpc.LockServiceStub(ch)
        return s

    yield b, stub
    for ch in chans:
        ch.close()


def test_watch_limits_per_tenant_and_in_all(small):
    b, stub = small
    s = stub()
    hog = []
    for i in range(5):
        call, err = open_watch(s, "w/", md("hog-token"))
        assert err is None, err
        hog.append(call)
    call, err = open_watch(s, "w/", md("hog-token"))
    assert call is None and err[0] == RE and 'limits.max_watches_per_tenant (5) reached by "hog"' in err[1], err
    # Another tenant is still served, up to the total.
    calm = []
    for i in range(2):
        call, err = open_watch(s, "w/", md("calm-token"))
        assert err is None, err
        calm.append(call)
    call, err = open_watch(s, "w/", md("calm-token"))
    assert call is None and err[0] == RE and "limits.max_watches (7) reached" in err[1], err
    # A refused watch costs nothing: once one ends, the next is accepted.
    hog.pop().cancel()
    time.sleep(0.2)
    call, err = open_watch(s, "w/", md("calm-token"))
    assert err is None, err
    calm.append(call)
    for c in hog + calm:
        c.cancel()


def test_waiting_limits(small):
    b, stub = small
    s = stub()
    g = s.Acquire(bc.acquire_request("k1", "holder"), metadata=md("calm-token"), timeout=10)
    grant = [e for e in g][0].granted
    calls = []

    def wait_on(key, tok):
        c = s.Acquire(bc.acquire_request(key, "w", wait_ms=20000), metadata=md(tok), timeout=30)
        ev = next(iter(c))  # queued
        assert ev.HasField("queued")
        calls.append(c)

    for i in range(3):
        wait_on("k1", "hog-token")
    code, msg = acquire_error(s, "k1", "calm-token")
    assert code == RE and msg == 'limits.max_waiters_per_key (3) reached on "k1"', msg
    # Per tenant: hog may wait on 6 in all.
    h2 = s.Acquire(bc.acquire_request("k2", "holder"), metadata=md("calm-token"), timeout=10)
    grant2 = [e for e in h2][0].granted
    for i in range(3):
        wait_on("k2", "hog-token")
    code, msg = acquire_error(s, "k3", "hog-token")
    assert code == RE and 'limits.max_waiting_per_tenant (6) reached by "hog"' in msg, msg
    # In all: 8; calm's two more reach it, the third is refused.
    h3 = s.Acquire(bc.acquire_request("k3", "holder"), metadata=md("third-token"), timeout=10)
    grant3 = [e for e in h3][0].granted
    wait_on("k3", "calm-token")
    wait_on("k3", "calm-token")
    code, msg = acquire_error(s, "k3", "third-token")
    assert code == RE and "limits.max_waiting (8) reached" in msg, msg
    # A session acquire counts the same way.
    sess = s.Session(iter([pb.SessionRequest(id=1, acquire=bc.acquire_request("k3", "w", wait_ms=20000))]),
                     metadata=md("third-token"), timeout=10)
    r = next(iter(sess))
    assert r.status.code == RE.value[0] and "limits.max_waiting (8) reached" in r.status.message, r
    sess.cancel()
    # Once the waiters leave, acquires are served again.
    for c in calls:
        c.cancel()
    time.sleep(0.3)
    g4 = [e for e in s.Acquire(bc.acquire_request("k4", "after"), metadata=md("third-token"), timeout=10)]
    assert g4[-1].HasField("granted")
    for k, gr in (("k1", grant), ("k2", grant2), ("k3", grant3), ("k4", g4[-1].granted)):
        s.Release(pb.ReleaseRequest(key=k, token=gr.token), metadata=md("calm-token"), timeout=5)


def test_stream_limits(small):
    b, stub = small
    s1 = stub()
    calls = []
    # Health Watch streams need no token: their tenant is the peer address
    # without its port. 25 of them reach its share of streams.
    ch = grpc.insecure_channel(b.target)
    watch = ch.unary_stream("/grpc.health.v1.Health/Watch", request_serializer=lambda x: b"",
                            response_deserializer=lambda b_: b_)
    opened = []
    for i in range(25):
        c = watch(b"", timeout=30)
        next(iter(c))
        opened.append(c)
    c = watch(b"", timeout=30)
    with pytest.raises(grpc.RpcError) as e:
        next(iter(c))
    assert e.value.code() == RE and 'limits.max_streams_per_tenant (25) reached by "ipv4:127.0.0.1"' in \
        e.value.details(), e.value.details()
    # Another tenant (a token) on another connection still gets its calls.
    assert s1.Describe(pb.DescribeRequest(key="x"), metadata=md("calm-token"), timeout=5).held is False
    for c in opened:
        c.cancel()
    ch.close()


def test_streams_per_connection_and_in_all(small):
    b, stub = small
    ch = grpc.insecure_channel(b.target)
    s = lock_pb2_grpc.LockServiceStub(ch)
    opened = []
    # Tokens spread the tenant shares (25 each) so the connection's 30 is hit first.
    toks = ["hog-token", "calm-token", "third-token"]
    n = 0
    err = None
    while n < 40:
        c = s.Acquire(bc.acquire_request("conn-" + str(n), "w", mode=bc.STREAM), metadata=md(toks[n % 3]),
                      timeout=30)
        try:
            next(iter(c))
        except grpc.RpcError as e:
            err = (e.code(), e.details())
            break
        opened.append(c)
        n += 1
    assert n == 30 and err[0] == RE and "limits.max_streams_per_connection (30) reached" in err[1], (n, err)
    # A second connection (its own subchannel pool: grpcio would otherwise
    # share the first one's) reaches the total of 40.
    ch2 = grpc.insecure_channel(b.target, options=[("grpc.use_local_subchannel_pool", 1)])
    s2 = lock_pb2_grpc.LockServiceStub(ch2)
    while n < 60:
        c = s2.Acquire(bc.acquire_request("conn-" + str(n), "w", mode=bc.STREAM), metadata=md(toks[n % 3]),
                       timeout=30)
        try:
            next(iter(c))
        except grpc.RpcError as e:
            err = (e.code(), e.details())
            break
        opened.append(c)
        n += 1
    assert n == 40 and err[0] == RE and "limits.max_streams (40) reached" in err[1], (n, err)
    for c in opened:
        c.cancel()
    time.sleep(0.3)
    assert s2.Describe(pb.DescribeRequest(key="x"), metadata=md("calm-token"), timeout=5).held is False
    ch.close()
    ch2.close()


ABUSE = """\
limits:
  max_streams: 12000
  max_streams_per_connection: 12000
  max_streams_per_tenant: 12000
  max_watches: 10000
  max_watches_per_tenant: 10000
"""


def test_abuse_probe_watch_flood_stays_bounded(start_redis, start_batond):
    """Issue #17's probe: one client opens WATCHES Watch streams over eight
    connections (60,000 in the issue; BATON_ABUSE_WATCHES overrides). With
    max_watches 10,000 the rest are refused, batond stays under 200 MiB, and
    a second client acquires and releases normally meanwhile."""
    total = int(os.environ.get("BATON_ABUSE_WATCHES", "20000"))
    r = start_redis()
    b = start_batond(r.address, name="batond-abuse", extra_config=ABUSE)
    rss0 = rss_kib(b.proc.pid)
    chans = [grpc.insecure_channel(b.target, options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(8)]
    stubs = [lock_pb2_grpc.LockServiceStub(c) for c in chans]
    calls = []
    t0 = time.monotonic()
    for i in range(total):
        calls.append(stubs[i % 8].Watch(pb.WatchRequest(prefix="abuse/"), timeout=300))
    # The well-behaved client, on its own connection, meanwhile.
    with grpc.insecure_channel(b.target, options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
        good = lock_pb2_grpc.LockServiceStub(ch)
        lat = []
        for i in range(20):
            s = time.monotonic()
            g = bc.grant(good, "good/%d" % i, "good")
            bc.release(good, g.key, g.token)
            lat.append(time.monotonic() - s)
    refused = 0
    deadline = time.monotonic() + 120
    for c in calls:
        if time.monotonic() > deadline:
            break
        try:
            c.initial_metadata()
        except grpc.RpcError:
            pass
    # Let the refusals finish and count them.
    for c in calls:
        if c.done() and c.code() == RE:
            refused += 1
    rss = rss_kib(b.proc.pid)
    bc.record_timing("abuse probe: %d watches, %d refused, RSS %d -> %d KiB; good acquire+release median"
                     % (total, refused, rss0, rss), sorted(lat)[len(lat) // 2])
    print("abuse probe: %d watch streams opened in %.1f s; %d refused RESOURCE_EXHAUSTED; batond RSS %.1f -> %.1f MiB"
          % (total, time.monotonic() - t0, refused, rss0 / 1024, rss / 1024))
    assert refused >= total - 10000 - 5, refused
    import harness
    if not harness.sanitized(b.binary):  # ASan's shadow memory and quarantine inflate RSS
        assert rss < 200 * 1024, "batond RSS %d KiB with %d watches attempted" % (rss, total)
    assert max(lat) < 2.0, lat
    for c in calls:
        c.cancel()
    for c in chans:
        c.close()


def test_slow_watch_readers_share_the_backlog(start_redis, start_batond):
    """limits.max_watch_backlog: watches that do not read are cut off once
    their share of the backlog (here 40 / 2 = 20 events, beyond what the
    connection's flow control window holds) is queued, with the limit named;
    a reading watch is unaffected."""
    r = start_redis()
    b = start_batond(r.address, name="batond-backlog", extra_config="limits:\n  max_watch_backlog: 40\n")
    # No BDP probing: the stalled stream's window stays at 64 KiB.
    stalled_ch = grpc.insecure_channel(b.target, options=[("grpc.use_local_subchannel_pool", 1),
                                                          ("grpc.http2.bdp_probe", 0)])
    stalled = lock_pb2_grpc.LockServiceStub(stalled_ch).Watch(pb.WatchRequest(prefix="bl/"), timeout=60)
    stalled.initial_metadata()
    with grpc.insecure_channel(b.target, options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
        stub = lock_pb2_grpc.LockServiceStub(ch)
        reader = bc.WatchStream(stub, prefix="bl/")
        time.sleep(0.3)
        cycles = 1500  # 3,000 events of ~300 bytes: far beyond the stalled stream's flow control window
        for n in range(cycles):
            g = bc.grant(stub, "bl/%d" % (n % 7), "x" * 200)
            bc.release(stub, g.key, g.token)
        # Reading now: what gRPC buffered before the window closed, then the
        # status (a stream cut off keeps nothing more queued at batond).
        got, status = 0, None
        try:
            for _ in stalled:
                got += 1
        except grpc.RpcError as e:
            status = (e.code(), e.details())
        assert status and status[0] == RE and "limits.max_watch_backlog" in status[1], (got, status)
        assert got < 2 * cycles, got
        key = "bl/last"
        g = bc.grant(stub, key, "last")
        bc.release(stub, key, g.token)
        reader.wait_event(lambda e: e.key == key and e.type == pb.LockEvent.RELEASED, timeout=10)
        reader.cancel()
    stalled_ch.close()
