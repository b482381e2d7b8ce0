"""Waiting: try-lock (wait_ms = 0), wait timeout, FIFO order of waiters."""
import grpc

import bclient as bc

ABORTED = grpc.StatusCode.ABORTED


def test_try_lock_on_held_key_aborts_at_once_naming_holder(stub):
    key = bc.uniq("try")
    g = bc.grant(stub, key, "alice@gpu-box")
    events, code, details, secs = bc.acquire(stub, key, "bob", wait_ms=0)
    assert code == ABORTED, (code, details)
    assert "alice@gpu-box" in details, "ABORTED names the holder: %r" % details
    assert not any(e.WhichOneof("event") == "granted" for e in events)
    assert secs < 2.0, "wait_ms=0 must not wait (%.2fs)" % secs
    d = bc.describe(stub, key)
    assert d.held and d.owner == "alice@gpu-box" and d.waiters == 0, \
        "a try-lock must not stay queued: %r" % d
    bc.release(stub, key, g.token)
    # Free again: a try-lock succeeds.
    g2 = bc.grant(stub, key, "bob", wait_ms=0)
    bc.release(stub, key, g2.token)


def test_wait_timeout_aborts_after_wait_ms(stub):
    key = bc.uniq("waitto")
    g = bc.grant(stub, key, "slow-holder")
    a = bc.AcquireStream(stub, key, "impatient", wait_ms=300)
    code, details = a.wait_end(10.0)
    secs = a.ended_at - a.started_at
    assert code == ABORTED, (code, details)
    assert "slow-holder" in details, details
    assert a.granted is None
    a.assert_shape()
    assert 0.25 <= secs < 5.0, "ABORTED after %.3fs, wait_ms was 0.3s" % secs
    bc.record_timing("wait_ms=300 -> ABORTED", secs)
    # The timed-out waiter leaves the queue (else it would block the FIFO).
    assert bc.wait_until(lambda: bc.describe(stub, key).waiters == 0, 5.0), bc.describe(stub, key)
    bc.release(stub, key, g.token)
    g2 = bc.grant(stub, key, "next", wait_ms=0)
    bc.release(stub, key, g2.token)


def test_fifo_order_of_waiters(stub):
    key = bc.uniq("fifo")
    holder = bc.grant(stub, key, "holder")
    waiters = []
    for i in range(5):
        w = bc.AcquireStream(stub, key, "w%d" % i, wait_ms=30000)
        pos = w.wait_queued()
        assert pos == i + 1, "waiter %d queued at position %d" % (i, pos)
        waiters.append(w)

    token = holder.token
    last_fencing = holder.fencing
    for i, w in enumerate(waiters):
        bc.release(stub, key, token)
        g = w.wait_granted(10.0)
        # Nobody behind it was granted meanwhile.
        for later in waiters[i + 1:]:
            assert later.granted is None, "w%d granted before w%d" % (waiters.index(later), i)
        assert w.wait_end() == (bc.OK, "")
        w.assert_shape()
        assert g.fencing > last_fencing
        d = bc.describe(stub, key)
        assert d.owner == "w%d" % i and d.waiters == 4 - i, d
        token, last_fencing = g.token, g.fencing
    bc.release(stub, key, token)
