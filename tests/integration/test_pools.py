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


# ---------------------------------------------------------------- Pool.count

def test_count_grants_devices_together_under_one_token(stub):
    """count devices in one grant, one token: Renew and Release naming any of
    its keys act on all; every device has its own fencing and Watch events."""
    assert _pool_free(stub)
    wp = bc.WatchStream(stub, prefix="node7/")
    wp.sync()
    g = bc.grant(stub, owner="train-2", pool="node7", devices=4, count=2)
    assert list(g.devices) == [0, 1], g
    assert list(g.keys) == ["node7/0", "node7/1"]
    assert (g.device, g.key, g.fencing) == (0, "node7/0", g.fencings[0])
    assert len(g.fencings) == 2 and not g.device_names  # node7 has no names
    for key, f in zip(g.keys, g.fencings):
        d = bc.describe(stub, key)
        assert d.held and d.owner == "train-2" and d.fencing == f
        wp.wait_event(lambda e, key=key, f=f: e.type == T.ACQUIRED and e.key == key and e.fencing == f)
    assert not bc.describe(stub, "node7/2").held

    assert bc.renew(stub, "node7/1", g.token, 30000).ttl_ms == 30000
    for key in g.keys:
        assert 20000 < bc.describe(stub, key).ttl_ms <= 30000, key
    bc.release(stub, "node7/1", g.token)  # the second key releases the whole grant
    for key, f in zip(g.keys, g.fencings):
        wp.wait_event(lambda e, key=key, f=f: e.type == T.RELEASED and e.key == key and e.fencing == f)
        assert not bc.describe(stub, key).held
    code, details = bc.rpc_error(stub.Release, pb.ReleaseRequest(key="node7/0", token=g.token))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "not held" in details, (code, details)

    g2 = bc.grant(stub, owner="train-3", pool="node7", devices=4, count=3)
    assert list(g2.devices) == [0, 1, 2]
    assert g2.fencings[0] > g.fencings[0] and g2.fencings[1] > g.fencings[1]
    bc.release(stub, g2.keys[2], g2.token)
    assert _pool_free(stub)
    wp.cancel()


def test_count_is_all_or_nothing(stub):
    """A request for more devices than are free takes none of them."""
    assert _pool_free(stub)
    g = bc.grant(stub, owner="two", pool="node7", devices=4, count=2)
    _, code, details, _ = bc.acquire(stub, owner="three", pool="node7", devices=4, count=3, wait_ms=0)
    assert code == ABORTED, (code, details)
    assert "fewer than 3 of the 4 devices of pool 'node7' are free" in details, details
    assert not bc.describe(stub, "node7/2").held and not bc.describe(stub, "node7/3").held
    bc.release(stub, g.key, g.token)


def test_count_out_of_range_is_invalid(stub):
    for count in (5, -1):
        events, code, details, _ = bc.acquire(stub, owner="x", pool="node7", devices=4, count=count)
        assert code == INVALID, (count, code, details)
        assert details.startswith("pool.count: must be between 0 and pool.devices (4)"), details
        assert not events


def test_sigkill_of_multi_device_stream_holder_frees_every_device(stub, batond, stubs_dir):
    """A crashed holder of 3 devices frees all of them in one step: a waiter
    for all 4 is granted at once, each fencing above the dead holder's."""
    import os
    import subprocess
    import harness
    name = bc.uniq("kill3")
    code = ("import sys, grpc\n"
            "from baton.v1 import lock_pb2 as pb, lock_pb2_grpc as pg\n"
            "stub = pg.LockServiceStub(grpc.insecure_channel(sys.argv[1]))\n"
            "req = pb.AcquireRequest(owner='doomed', ttl_ms=600000, wait_ms=30000, mode=pb.HOLD_MODE_STREAM,\n"
            "                        pool=pb.Pool(name=sys.argv[2], devices=4, count=3))\n"
            "for ev in stub.Acquire(req):\n"
            "    g = ev.granted\n"
            "    print('GRANTED', ' '.join('%d:%d' % (d, f) for d, f in zip(g.devices, g.fencings)), flush=True)\n")
    proc = subprocess.Popen([harness.PYTHON, "-c", code, batond.target, name], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=harness.python_env(stubs_dir))
    try:
        line = proc.stdout.readline()
        assert line.startswith("GRANTED "), "holder: %r" % line
        held = dict(tuple(int(x) for x in p.split(":")) for p in line.split()[1:])
        assert sorted(held) == [0, 1, 2]
        waiter = bc.AcquireStream(stub, owner="all4", pool=name, devices=4, count=4, wait_ms=30000)
        waiter.wait_queued()
        t0 = time.monotonic()
        proc.kill()
        proc.wait(10)
        g = waiter.wait_granted(10.0)
        secs = waiter.granted_at - t0
        bc.record_timing("SIGKILL of a 3-device stream holder -> 4-device waiter granted", secs)
        assert secs < 5.0, secs
        assert list(g.devices) == [0, 1, 2, 3]
        for d, f in zip(g.devices, g.fencings):
            assert f > held.get(d, 0), (d, f, held)
        bc.release(stub, g.key, g.token)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_four_device_waiter_is_not_starved_by_single_device_requests(stub):
    """Strict FIFO per pool: a steady stream of 1-device requests (each held
    ~40 ms, then asked for again at once) keeps some device busy at every
    moment; a 4-device waiter that joins is granted within the longest hold,
    and no 1-device request that came after it is granted before it."""
    import threading
    name = bc.uniq("starve")
    stop = threading.Event()
    log = []  # (asked_at, granted_at) of every 1-device grant
    lock = threading.Lock()
    errors = []

    def feeder(i):
        while not stop.is_set():
            asked = time.monotonic()
            events, code, details, _ = bc.acquire(stub, owner="small%d" % i, pool=name, devices=4,
                                                  wait_ms=20000)
            if code != bc.OK:
                errors.append((code, details))
                return
            got = time.monotonic()
            with lock:
                log.append((asked, got))
            time.sleep(0.04)
            bc.release(stub, events[-1].granted.key, events[-1].granted.token)

    threads = [threading.Thread(target=feeder, args=(i,), daemon=True) for i in range(6)]
    for t in threads:
        t.start()
    time.sleep(0.5)  # the stream runs: 6 requesters on 4 devices, always some queued
    big = bc.AcquireStream(stub, owner="big", pool=name, devices=4, count=4, wait_ms=20000)
    joined = time.monotonic()
    g = big.wait_granted(10.0)
    secs = big.granted_at - joined
    stop.set()
    bc.release(stub, g.key, g.token)
    for t in threads:
        t.join(30)
    bc.record_timing("4-device waiter behind a stream of 1-device requests -> granted", secs)
    assert not errors, errors
    assert list(g.devices) == [0, 1, 2, 3]
    assert secs < 2.0, "4-device waiter granted only after %.2fs" % secs
    # Nobody who asked after the 4-device waiter was queued was served first
    # (a small margin for requests already on their way).
    passed = [(a, t) for a, t in log if a > joined + 0.05 and t < big.granted_at]
    assert not passed, passed


def test_device_names_in_granted(stub):
    """A pool configured with device_names reports them for every device of
    the grant (mig3: MIG-aaa, MIG-bbb, GPU-ccc)."""
    one = bc.grant(stub, owner="first", pool="mig3", devices=3)
    assert list(one.device_names) == ["MIG-aaa"] and list(one.devices) == [0]
    g = bc.grant(stub, owner="pair", pool="mig3", devices=3, count=2)
    assert list(g.devices) == [1, 2]
    assert list(g.device_names) == ["MIG-bbb", "GPU-ccc"]
    bc.release(stub, one.key, one.token)
    bc.release(stub, g.key, g.token)


def _shared_req(owner, weight, count=0, wait_ms=0, mode=bc.LEASE):
    return bc.acquire_request(owner=owner, pool="gpu80", devices=2, count=count, weight=weight, wait_ms=wait_ms,
                              mode=mode)


def test_weights_share_devices_up_to_capacity(stub):
    """gpu80: 2 devices of capacity 80. Holders of 24 each: three fit on one
    device, the fourth goes to the next; a whole-device request waits until
    a device has no share left; Describe and Watch see each share."""
    wp = bc.WatchStream(stub, prefix="gpu80/")
    wp.sync()
    grants = []
    for i in range(4):
        events, code, details, _ = bc.acquire(stub, request=_shared_req("inf%d" % i, 24))
        assert code == bc.OK, (code, details)
        grants.append(events[-1].granted)
    assert [g.device for g in grants] == [0, 0, 0, 1], [g.device for g in grants]
    assert grants[0].fencing < grants[1].fencing < grants[2].fencing
    for g in grants:
        wp.wait_event(lambda e, g=g: e.type == T.ACQUIRED and e.key == g.key and e.fencing == g.fencing)
    d = bc.describe(stub, "gpu80/0")
    assert d.held and d.owner == "inf2" and d.fencing == grants[2].fencing
    _, code, details, _ = bc.acquire(stub, request=_shared_req("whole", 0))
    assert code == ABORTED, (code, details)
    _, code, details, _ = bc.acquire(stub, request=_shared_req("big", 60))
    assert code == ABORTED and "have 60 of 80 free" in details, (code, details)

    whole = bc.AcquireStream(stub, request=_shared_req("whole", 0, wait_ms=10000))
    whole.wait_queued()
    bc.release(stub, grants[3].key, grants[3].token)  # gpu80/1 has no share left
    g = whole.wait_granted(5.0)
    assert g.device == 1 and g.fencing > grants[3].fencing
    # Renew and release one share: the others stay.
    assert bc.renew(stub, grants[0].key, grants[0].token, 30000).ttl_ms == 30000
    bc.release(stub, grants[1].key, grants[1].token)
    wp.wait_event(lambda e: e.type == T.RELEASED and e.fencing == grants[1].fencing)
    assert bc.describe(stub, "gpu80/0").held
    for x in (grants[0], grants[2], g):
        bc.release(stub, x.key, x.token)
    assert not bc.describe(stub, "gpu80/0").held and not bc.describe(stub, "gpu80/1").held
    wp.cancel()


def test_weight_rules(stub):
    for req, want in ((_shared_req("x", 81), "pool.weight: must be at most the capacity of pool 'gpu80' (80), got 81"),
                      (bc.acquire_request(owner="x", pool="node7", devices=4, weight=2),
                       "pool.weight: must be at most the capacity of pool 'node7' (1), got 2"),
                      (bc.acquire_request(owner="x", pool=bc.uniq("adhoc-w"), devices=2, weight=1),
                       "is not configured in batond; a weight needs the pool's capacity")):
        events, code, details, _ = bc.acquire(stub, request=req)
        assert code == INVALID and want in details, (code, details)
        assert not events


def test_stream_share_of_two_devices_ends_in_one_step(stub):
    """count 2, weight 40: one share on each device under one token; the
    stream's end frees both shares at once."""
    s = bc.AcquireStream(stub, request=_shared_req("pair", 40, count=2, mode=bc.STREAM))
    g = s.wait_granted()
    assert list(g.devices) == [0, 1]
    events, code, _, _ = bc.acquire(stub, request=_shared_req("fits", 40, count=2))
    assert code == bc.OK  # 40 + 40 = 80 on each
    fits = events[-1].granted
    _, code, _, _ = bc.acquire(stub, request=_shared_req("full", 1))
    assert code == ABORTED
    s.cancel()
    assert s.wait_end()[0] == grpc.StatusCode.CANCELLED
    assert bc.wait_until(lambda: bc.describe(stub, "gpu80/0").owner == "fits"
                         and bc.describe(stub, "gpu80/1").owner == "fits", 5.0)
    events, code, _, _ = bc.acquire(stub, request=_shared_req("again", 40, count=2))
    assert code == bc.OK, "the stream's shares of both devices were freed"
    bc.release(stub, fits.key, fits.token)
    bc.release(stub, events[-1].granted.keys[1], events[-1].granted.token)
    assert not bc.describe(stub, "gpu80/0").held and not bc.describe(stub, "gpu80/1").held
