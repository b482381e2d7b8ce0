"""Pools: any one free device of a pool. batond runs with pool node7 of 4
devices configured (harness.CONFIG_TEMPLATE); only this module uses it."""
import time

import grpc

import bclient as bc
from bclient import pb

INVALID = grpc.StatusCode.INVALID_ARGUMENT
ABORTED = grpc.StatusCode.ABORTED
T = pb.LockEvent


def _pool_free(stub, name="node7", devices=4):
    return all(not bc.describe(stub, "%s/%d" % (name, i)).held for i in range(devices))


def test_configured_pool_grants_distinct_devices_then_queues(stub):
    assert _pool_free(stub), "node7 not free at start"
    streams = [bc.AcquireStream(stub, owner="job%d" % i, pool="node7", devices=4, wait_ms=5000)
               for i in range(4)]
    grants = [s.wait_granted(10.0) for s in streams]
    assert sorted(g.device for g in grants) == [0, 1, 2, 3], [g.device for g in grants]
    for g in grants:
        assert g.key == "node7/%d" % g.device
        assert g.ttl_ms == 600000
    for s in streams:
        assert s.wait_end() == (bc.OK, "")
    # Each device key is an ordinary held key.
    owners = {bc.describe(stub, g.key).owner for g in grants}
    assert owners == {"job0", "job1", "job2", "job3"}
    fencing_by_dev = {g.device: g.fencing for g in grants}

    fifth = bc.AcquireStream(stub, owner="job4", pool="node7", devices=4, wait_ms=20000)
    assert fifth.wait_queued() == 1
    _, code, details, _ = bc.acquire(stub, owner="try", pool="node7", devices=4, wait_ms=0)
    assert code == ABORTED, (code, details)

    freed = grants[2]
    bc.release(stub, freed.key, freed.token)
    g5 = fifth.wait_granted(10.0)
    assert g5.device == freed.device and g5.key == freed.key, (g5.device, freed.device)
    assert g5.fencing > fencing_by_dev[freed.device]
    for g in grants[:2] + grants[3:] + [g5]:
        bc.release(stub, g.key, g.token)
    assert _pool_free(stub)


def test_device_key_renew_release_watch(stub):
    assert _pool_free(stub)
    w = bc.WatchStream(stub, key="node7/0")
    w.sync()
    wp = bc.WatchStream(stub, prefix="node7/")
    wp.sync()
    g = bc.grant(stub, owner="gpu-user", pool="node7", devices=4)
    assert g.device == 0 and g.key == "node7/0", "all free: the lowest device is granted"
    ev = w.wait_event(lambda e: e.type == T.ACQUIRED)
    assert ev.key == "node7/0" and ev.owner == "gpu-user" and ev.fencing == g.fencing
    assert bc.renew(stub, g.key, g.token, 30000).ttl_ms == 30000
    assert 20000 < bc.describe(stub, g.key).ttl_ms <= 30000
    bc.release(stub, g.key, g.token)
    w.wait_event(lambda e: e.type == T.RELEASED and e.owner == "gpu-user")
    wp.wait_event(lambda e: e.type == T.RELEASED and e.owner == "gpu-user" and e.key == "node7/0")
    w.cancel()
    wp.cancel()


def test_pool_device_directly_held_is_skipped(stub):
    """A device locked by its own key is not handed out by the pool."""
    assert _pool_free(stub)
    direct = bc.grant(stub, "node7/0", "direct-user")
    g = bc.grant(stub, owner="pool-user", pool="node7", devices=4)
    assert g.device == 1, g.device
    bc.release(stub, g.key, g.token)
    bc.release(stub, "node7/0", direct.token)


def test_stream_mode_pool_cancel_frees_device(stub):
    assert _pool_free(stub)
    holders = [bc.AcquireStream(stub, owner="s%d" % i, pool="node7", devices=4, mode=bc.STREAM)
               for i in range(4)]
    grants = [h.wait_granted(10.0) for h in holders]
    assert sorted(g.device for g in grants) == [0, 1, 2, 3]
    waiter = bc.AcquireStream(stub, owner="w", pool="node7", devices=4, wait_ms=20000)
    waiter.wait_queued()
    holders[1].cancel()
    g = waiter.wait_granted(5.0)
    assert g.device == grants[1].device
    for h in holders:
        h.cancel()
    bc.release(stub, g.key, g.token)
    assert bc.wait_until(lambda: _pool_free(stub), 5.0)


def test_configured_pool_with_wrong_device_count_is_invalid(stub):
    for devices in (8, 3):
        events, code, details, _ = bc.acquire(stub, owner="x", pool="node7", devices=devices)
        assert code == INVALID, (devices, code, details)
        assert "devices" in details.lower() or "pool" in details.lower(), details
        assert not events


def test_adhoc_pool_waiters_fix_its_device_count(stub):
    """A waiter that asked for 1 device heads the pool's queue and can use
    none of the free ones; a request for 4 behind it would wait with 3
    devices free. While such a waiter waits, another count is refused."""
    name = bc.uniq("adhoc-count")
    held = bc.grant(stub, owner="holder", pool=name, devices=1)
    waiter = bc.AcquireStream(stub, owner="waiter", pool=name, devices=1, wait_ms=20000)
    waiter.wait_queued()
    t0 = time.monotonic()
    events, code, details, _ = bc.acquire(stub, owner="wide", pool=name, devices=4, wait_ms=5000)
    assert code == INVALID, (code, details, events)
    assert "use 1 devices" in details, details
    assert time.monotonic() - t0 < 2.0  # refused, not left to time out
    bc.release(stub, held.key, held.token)
    assert waiter.wait_granted().key == name + "/0"
    # Nobody waits now: another count is served again, from the free devices.
    g = bc.grant(stub, owner="wide", pool=name, devices=4)
    assert g.device == 1, g
    bc.release(stub, g.key, g.token)
    bc.release(stub, waiter.granted.key, waiter.granted.token)


def test_adhoc_pool(stub):
    name = bc.uniq("adhoc")
    g0 = bc.grant(stub, owner="a", pool=name, devices=2)
    g1 = bc.grant(stub, owner="b", pool=name, devices=2)
    assert (g0.device, g0.key, g1.device, g1.key) == (0, name + "/0", 1, name + "/1")
    _, code, details, _ = bc.acquire(stub, owner="c", pool=name, devices=2, wait_ms=0)
    assert code == ABORTED, (code, details)
    bc.release(stub, g0.key, g0.token)
    bc.release(stub, g1.key, g1.token)

    # max_pool_devices (default 64) is allowed, one more is not.
    big = bc.uniq("adhoc64")
    g = bc.grant(stub, owner="d", pool=big, devices=64)
    assert g.device == 0
    bc.release(stub, g.key, g.token)
    _, code, details, _ = bc.acquire(stub, owner="d", pool=bc.uniq("adhoc65"), devices=65)
    assert code == INVALID, (code, details)
