"""Watch events, TTL expiry, stale tokens and ForceRelease."""
import time

import grpc

import bclient as bc
from bclient import pb

FP = grpc.StatusCode.FAILED_PRECONDITION
ABORTED = grpc.StatusCode.ABORTED
T = pb.LockEvent


def _now_ms():
    return int(time.time() * 1000)


def test_key_and_prefix_watch(stub):
    prefix = bc.uniq("wp") + "/"
    key = prefix + "a"
    other = bc.uniq("wother")  # outside the prefix
    wk = bc.WatchStream(stub, key=key)
    wp = bc.WatchStream(stub, prefix=prefix)
    wk.sync()
    wp.sync()

    g = bc.grant(stub, key, "owner-1")
    bc.release(stub, key, g.token)
    go = bc.grant(stub, other, "owner-x")
    bc.release(stub, other, go.token)
    g2 = bc.grant(stub, key, "owner-2")  # a marker after the other key's events

    for w in (wk, wp):
        w.wait_event(lambda e: e.type == T.ACQUIRED and e.owner == "owner-2")
        evs = w.events()
        assert [(e.type, e.key, e.owner, e.fencing) for e in evs] == [
            (T.ACQUIRED, key, "owner-1", g.fencing),
            (T.RELEASED, key, "owner-1", g.fencing),
            (T.ACQUIRED, key, "owner-2", g2.fencing),
        ], [bc.fmt_event(e) for e in evs]
        for e in evs:
            assert abs(e.at_unix_ms - _now_ms()) < 60000, "at_unix_ms is wall-clock ms: %d" % e.at_unix_ms
        assert evs[0].at_unix_ms <= evs[1].at_unix_ms <= evs[2].at_unix_ms
        assert not w.ended, w.summary()
    bc.release(stub, key, g2.token)
    wk.cancel()
    wp.cancel()


def test_watch_owner_with_spaces(stub):
    key = bc.uniq("wspace")
    w = bc.WatchStream(stub, key=key)
    w.sync()
    owner = "job 17 on host a (retry 2) \u00e9"
    g = bc.grant(stub, key, owner)
    ev = w.wait_event(lambda e: e.type == T.ACQUIRED)
    assert ev.owner == owner and ev.key == key
    bc.release(stub, key, g.token)
    w.cancel()


def test_ttl_expiry_wakes_waiter_and_watch_reports_expired(stub):
    key = bc.uniq("expire")
    w = bc.WatchStream(stub, key=key)
    w.sync()
    dead = bc.grant(stub, key, "crashed-worker", ttl_ms=300)  # never released
    waiter = bc.AcquireStream(stub, key, "patient", wait_ms=20000)
    g = waiter.wait_granted(10.0)
    secs = waiter.granted_at - waiter.started_at
    assert secs < 5.0, "waiter granted %.2fs after a 300 ms TTL" % secs
    bc.record_timing("TTL 300 ms expiry -> waiter granted", secs)
    assert g.fencing > dead.fencing

    w.wait_event(lambda e: e.type == T.ACQUIRED and e.owner == "patient")
    evs = [(e.type, e.owner, e.fencing) for e in w.events()]
    assert evs == [
        (T.ACQUIRED, "crashed-worker", dead.fencing),
        (T.EXPIRED, "crashed-worker", dead.fencing),
        (T.ACQUIRED, "patient", g.fencing),
    ], [bc.fmt_event(e) for e in w.events()]
    bc.release(stub, key, g.token)
    w.cancel()


def test_expiry_without_waiter_is_reported(stub):
    """Nobody waits and nobody touches the key: the EXPIRED event still comes
    (keyspace notifications or the re-check), naming the holder."""
    key = bc.uniq("expire-alone")
    w = bc.WatchStream(stub, key=key)
    w.sync()
    g = bc.grant(stub, key, "lonely", ttl_ms=200)
    ev = w.wait_event(lambda e: e.type == T.EXPIRED, timeout=10.0)
    assert ev.owner == "lonely" and ev.fencing == g.fencing and ev.key == key
    assert not bc.describe(stub, key).held
    w.cancel()


def test_stale_token_after_expiry(stub):
    key = bc.uniq("stale")
    old = bc.grant(stub, key, "old-holder", ttl_ms=150)
    assert bc.wait_until(lambda: not bc.describe(stub, key).held, 5.0), "lease did not expire"
    # Expired, nobody else yet: the token no longer holds the key.
    code, _ = bc.rpc_error(stub.Renew, pb.RenewRequest(key=key, token=old.token, ttl_ms=10000))
    assert code == FP, "Renew of an expired lease must not revive it"
    assert not bc.describe(stub, key).held

    new = bc.grant(stub, key, "new-holder", ttl_ms=30000, wait_ms=5000)
    assert new.fencing > old.fencing
    code, details = bc.rpc_error(stub.Renew, pb.RenewRequest(key=key, token=old.token, ttl_ms=10000))
    assert code == FP and "new-holder" in details, (code, details)
    code, details = bc.rpc_error(stub.Release, pb.ReleaseRequest(key=key, token=old.token))
    assert code == FP and "new-holder" in details, (code, details)

    d = bc.describe(stub, key)
    assert d.held and d.owner == "new-holder" and d.fencing == new.fencing and d.ttl_ms > 20000, d
    _, code, details, _ = bc.acquire(stub, key, "prober", wait_ms=0)
    assert code == ABORTED and "new-holder" in details, (code, details)
    bc.release(stub, key, new.token)


def test_force_release(stub):
    key = bc.uniq("force")
    w = bc.WatchStream(stub, key=key)
    w.sync()
    g = bc.grant(stub, key, "stuck-job")

    for wrong in (g.fencing + 1, g.fencing - 1):
        code, details = bc.rpc_error(stub.ForceRelease, pb.ForceReleaseRequest(key=key, fencing=wrong))
        assert code == FP, (wrong, code, details)
    d = bc.describe(stub, key)
    assert d.held and d.fencing == g.fencing, "wrong fencing must not release: %r" % d

    r = stub.ForceRelease(pb.ForceReleaseRequest(key=key, fencing=g.fencing), timeout=10.0)
    assert r.released
    assert not bc.describe(stub, key).held
    ev = w.wait_event(lambda e: e.type == T.FORCE_RELEASED)
    assert ev.owner == "stuck-job" and ev.fencing == g.fencing and ev.key == key
    assert [e.type for e in w.events()] == [T.ACQUIRED, T.FORCE_RELEASED]

    # The old holder's token is dead; the same fencing cannot be forced twice.
    code, _ = bc.rpc_error(stub.Release, pb.ReleaseRequest(key=key, token=g.token))
    assert code == FP
    code, _ = bc.rpc_error(stub.ForceRelease, pb.ForceReleaseRequest(key=key, fencing=g.fencing))
    assert code == FP
    g2 = bc.grant(stub, key, "next", wait_ms=0)
    assert g2.fencing > g.fencing
    bc.release(stub, key, g2.token)
    w.cancel()


def test_force_release_wakes_waiter(stub):
    key = bc.uniq("force-wake")
    g = bc.grant(stub, key, "stuck")
    waiter = bc.AcquireStream(stub, key, "waiting", wait_ms=20000)
    waiter.wait_queued()
    stub.ForceRelease(pb.ForceReleaseRequest(key=key, fencing=g.fencing), timeout=10.0)
    g2 = waiter.wait_granted(5.0)
    bc.release(stub, key, g2.token)
