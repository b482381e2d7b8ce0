"""The Redis Cluster harness (cluster.py) by itself, without batond: a
cluster comes up consistent; a slot moved by hand (in batches) and slots
moved by redis-cli reshard take their keys along; a manual failover and a
SIGKILL of a primary promote its replica, and the data survives."""
import time

import pytest

import cluster as rc

_PROBLEM = rc.support_problem()
pytestmark = pytest.mark.skipif(_PROBLEM is not None, reason="no Redis Cluster support: %s" % _PROBLEM)


@pytest.fixture(scope="module")
def rcl(workdir):
    c = rc.RedisCluster(workdir)
    print("cluster created in %.1f s" % c.create_seconds)
    yield c
    c.stop()


def _get(c, key):
    """GET key on the primary that serves it (no redirect followed)."""
    return rc.command(c.node_of_key(key), "GET", key)


def test_created_three_primaries_each_with_a_replica(rcl):
    prim = rcl.primaries()
    assert len(prim) == 3 and len(rcl.ports) == 6
    for p in prim:
        assert len(rcl.replicas_of(p)) == 1, p
        assert rc.command(p, "ROLE")[0] == "master"
    owners = rcl.slot_owners()
    assert None not in owners and set(owners) == set(prim)
    assert rcl.address() == "cluster://127.0.0.1:%d,127.0.0.1:%d" % tuple(rcl.ports[:2])
    for p in rcl.ports:
        assert rc.command(p, "CLUSTER", "INFO").count("cluster_state:ok") == 1
        assert rc.command(p, "CONFIG", "GET", "save")[1] == ""
    # The local CRC16 agrees with CLUSTER KEYSLOT, hash tags included.
    for key in ("baton:{video:7}:lock", "baton:{gpu}/3:lock", "baton:pool{gpu}:q", "123456789", "{}x", "a{b}c{d}"):
        assert rc.slot_of(key) == rcl.key_slot(key), key
    assert rc.slot_of("123456789") == 0x31C3 % 16384
    assert rcl.key_slot("baton:{gpu}/3:lock") == rcl.key_slot("baton:{gpu}/0:lock") == rcl.key_slot("gpu")
    # redis-cli agrees about who serves a key (it follows no redirect: the
    # node asked is the right one, or this would be a MOVED error).
    rcl.cli(rcl.node_of_key("probe"), "SET", "probe", "1")
    assert rcl.cli(rcl.node_of_key("probe"), "GET", "probe") == "1"
    with pytest.raises(RuntimeError, match="MOVED"):
        wrong = next(p for p in rcl.primaries() if p != rcl.node_of_key("probe"))
        rcl.cli(wrong, "GET", "probe")


def test_move_one_slot_by_hand_in_batches(rcl):
    tag = "harness-move"
    keys = ["{%s}:k%d" % (tag, i) for i in range(7)]
    slot = rcl.key_slot(keys[0])
    src = rcl.node_of_slot(slot)
    for k in keys:
        rc.command(src, "SET", k, k.upper())
    dst = next(p for p in rcl.primaries() if p != src)
    seen = []
    asked = []

    def during(moved):
        seen.append(moved)
        # Half moved: the source still has some keys; asking it for a moved
        # key gets ASK to the target, which answers after ASKING.
        if moved < len(keys):
            left = rcl.keys_in_slot(src, slot)
            gone = next(k for k in keys if k not in left)
            r = rc.command(src, "GET", gone, raise_error=False)
            assert isinstance(r, rc.RedisError) and str(r).startswith("ASK %d 127.0.0.1:%d" % (slot, dst)), r
            asked.append(gone)

    moved = rcl.move_slot(slot, dst, batch=3, pause=0.05, on_batch=during)
    assert moved == len(keys) and seen == [3, 6, 7], seen
    assert asked
    assert rcl.node_of_slot(slot) == dst
    for p in rcl.live_ports():  # every node now routes the slot to dst
        assert rcl.slot_owners(p)[slot] == dst, p
    assert rc.command(src, "CLUSTER", "COUNTKEYSINSLOT", slot) == 0
    for k in keys:
        assert rc.command(dst, "GET", k) == k.upper()
        r = rc.command(src, "GET", k, raise_error=False)
        assert str(r) == "MOVED %d 127.0.0.1:%d" % (slot, dst), r
    # And back, all at once.
    assert rcl.move_slot(slot, src, batch=100, pause=0) == len(keys)
    assert [_get(rcl, k) for k in keys] == [k.upper() for k in keys]


def test_redis_cli_reshard(rcl):
    a, b = rcl.primaries()[:2]
    first = rcl.slot_owners().index(a)  # reshard moves the source's lowest slots
    key = next("reshard-%d" % i for i in range(100000) if rc.slot_of("reshard-%d" % i) == first)
    rc.command(a, "SET", key, "v")
    before = rcl.slot_owners().count(b)
    rcl.reshard(a, b, 200)
    owners = rcl.slot_owners()
    assert owners.count(b) == before + 200 and owners[first] == b
    assert rc.command(b, "GET", key) == "v"
    rcl.reshard(b, a, 200)  # b's lowest 200 are the ones it got (a's were lower)
    assert rcl.slot_owners()[first] == a and _get(rcl, key) == "v"


def test_manual_failover_keeps_data(rcl):
    p = rcl.primaries()[0]
    key = next("fo-%d" % i for i in range(100000) if rcl.slot_owners()[rc.slot_of("fo-%d" % i)] == p)
    rc.command(p, "SET", key, "before")
    rc.command(p, "WAIT", 1, 2000)
    replica = rcl.replicas_of(p)[0]
    t0 = time.monotonic()
    new = rcl.failover(p)
    print("manual failover: %.2f s" % (time.monotonic() - t0))
    assert new == replica and p not in rcl.primaries() and new in rcl.primaries()
    assert rc.command(new, "GET", key) == "before"
    assert rcl.replicas_of(new) == [p]
    rcl.failover(new)  # and back: the layout is as it was
    assert p in rcl.primaries()


def test_sigkill_of_primary_promotes_replica_and_restart_rejoins(rcl):
    p = rcl.primaries()[1]
    key = next("kill-%d" % i for i in range(100000) if rcl.slot_owners()[rc.slot_of("kill-%d" % i)] == p)
    rc.command(p, "SET", key, "survives")
    assert rc.command(p, "WAIT", 1, 2000) == 1
    t0 = time.monotonic()
    new = rcl.kill_primary(p)
    print("SIGKILL -> replica promoted everywhere: %.2f s" % (time.monotonic() - t0))
    assert not rcl.running(p) and p not in rcl.primaries()
    assert rc.command(new, "GET", key) == "survives"
    rcl.restart(p)
    assert rcl.running(p) and rcl.replicas_of(new) == [p]
    assert rc.command(p, "ROLE")[0] == "slave"


def test_cluster_created_later_on_chosen_ports(workdir):
    """start=False: the address is known before anything listens."""
    c = rc.RedisCluster(workdir, start=False)
    try:
        host, port = c.address(seeds=1)[len("cluster://"):].split(":")
        assert rc._try(int(port), "PING") is None
        c.start()
        assert rc.command(int(port), "PING") == "PONG"
        assert c.consistent_problem() is None
    finally:
        c.stop()
    assert all(p.poll() is not None for p in c.procs.values())
