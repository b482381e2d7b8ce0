"""Acquire / Renew / Release / Describe on a plain key, and the lease-mode
stream shape."""
import re
import time

import grpc

import bclient as bc
from bclient import pb

FP = grpc.StatusCode.FAILED_PRECONDITION


def test_lease_acquire_renew_release(stub):
    key, owner = bc.uniq("basic"), "worker-3/task-42"
    a = bc.AcquireStream(stub, key, owner)
    g = a.wait_granted()
    assert a.wait_end() == (bc.OK, ""), "lease stream must end OK right after granted"
    assert a.kinds() == ["granted"], "a free key grants at once without queued: %s" % a.kinds()
    assert g.key == key
    assert re.fullmatch(r"[0-9a-f]{32}", g.token), g.token
    assert g.fencing > 0
    assert g.device == -1
    assert g.ttl_ms == 600000, "ttl_ms 0 means the default 600000"

    d = bc.describe(stub, key)
    assert d.held and d.owner == owner and d.fencing == g.fencing and d.waiters == 0
    assert 590000 < d.ttl_ms <= 600000, d.ttl_ms

    r = bc.renew(stub, key, g.token, ttl_ms=20000)
    assert r.ttl_ms == 20000
    d = bc.describe(stub, key)
    assert 15000 < d.ttl_ms <= 20000, "Renew must set the TTL: %d" % d.ttl_ms
    assert d.fencing == g.fencing, "Renew keeps the fencing token"
    r = bc.renew(stub, key, g.token)
    assert r.ttl_ms == 600000, "Renew ttl 0 means the default"

    assert bc.release(stub, key, g.token).released
    d = bc.describe(stub, key)
    assert not d.held and d.waiters == 0

    # The token is spent: a second Release / a Renew is FAILED_PRECONDITION.
    code, _ = bc.rpc_error(stub.Release, pb.ReleaseRequest(key=key, token=g.token))
    assert code == FP
    code, _ = bc.rpc_error(stub.Renew, pb.RenewRequest(key=key, token=g.token, ttl_ms=1000))
    assert code == FP

    # The next holder gets a larger fencing token and a new token.
    g2 = bc.grant(stub, key, "other")
    assert g2.fencing > g.fencing and g2.token != g.token
    bc.release(stub, key, g2.token)


def test_requested_ttl(stub):
    key = bc.uniq("ttl")
    g = bc.grant(stub, key, "t", ttl_ms=5000)
    assert g.ttl_ms == 5000
    d = bc.describe(stub, key)
    assert 0 < d.ttl_ms <= 5000
    bc.release(stub, key, g.token)


def test_describe_free_key_and_waiters(stub):
    key = bc.uniq("describe")
    d = bc.describe(stub, key)
    assert not d.held and d.owner == "" and d.waiters == 0

    g = bc.grant(stub, key, "holder-a")
    w1 = bc.AcquireStream(stub, key, "waiter-1", wait_ms=20000)
    w1.wait_queued()
    w2 = bc.AcquireStream(stub, key, "waiter-2", wait_ms=20000)
    w2.wait_queued()
    d = bc.describe(stub, key)
    assert d.held and d.owner == "holder-a" and d.fencing == g.fencing
    assert d.waiters == 2, "Describe counts queued streams: %r" % d

    # A cancelled waiter leaves the queue.
    w2.cancel()
    assert bc.wait_until(lambda: bc.describe(stub, key).waiters == 1, 5.0), bc.describe(stub, key)
    bc.release(stub, key, g.token)
    g1 = w1.wait_granted()
    bc.release(stub, key, g1.token)
    assert bc.wait_until(lambda: bc.describe(stub, key).waiters == 0, 5.0)


def test_renew_and_release_with_unknown_token_on_free_key(stub):
    key = bc.uniq("unknown")
    token = "0123456789abcdef0123456789abcdef"
    code, _ = bc.rpc_error(stub.Renew, pb.RenewRequest(key=key, token=token))
    assert code == FP
    code, _ = bc.rpc_error(stub.Release, pb.ReleaseRequest(key=key, token=token))
    assert code == FP


def test_wrong_token_leaves_holder_untouched(stub):
    key = bc.uniq("wrongtok")
    g = bc.grant(stub, key, "real-holder", ttl_ms=30000)
    other = "f" * 32
    code, details = bc.rpc_error(stub.Release, pb.ReleaseRequest(key=key, token=other))
    assert code == FP
    assert "real-holder" in details, "NOT_HOLDER names the real holder: %r" % details
    code, _ = bc.rpc_error(stub.Renew, pb.RenewRequest(key=key, token=other, ttl_ms=100))
    assert code == FP
    d = bc.describe(stub, key)
    assert d.held and d.owner == "real-holder" and d.ttl_ms > 20000, \
        "a failed Renew must not touch the holder's TTL: %r" % d
    bc.release(stub, key, g.token)


def test_concurrent_grants_on_distinct_keys_are_immediate(stub):
    keys = [bc.uniq("many") for _ in range(20)]
    streams = [bc.AcquireStream(stub, k, "o") for k in keys]
    t0 = time.monotonic()
    grants = [s.wait_granted(10.0) for s in streams]
    assert [g.key for g in grants] == keys
    for g in grants:
        bc.release(stub, g.key, g.token)
    assert time.monotonic() - t0 < 10.0
