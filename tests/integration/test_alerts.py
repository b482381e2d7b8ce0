"""alerts.long_held: a hold older than its rule is counted in
baton_long_held_locks, logged once at warn and reported once on Watch as
LONG_HELD; nothing is released."""
import re
import time

import grpc
import pytest

import bclient as bc
import harness
import promtext as pt
from bclient import pb

LONG_HELD = pb.LockEvent.LONG_HELD


@pytest.fixture(scope="module")
def ab(batond_binary, workdir, redis_server):
    port = harness.free_port()
    b = harness.Batond(batond_binary, workdir, redis_server.address, name="batond-alerts",
                       extra_config='metrics:\n  listen: "127.0.0.1:%d"\n'
                                    'alerts:\n  long_held:\n'
                                    '    - prefix: "it-lh-"\n      after_ms: 400\n'
                                    '    - prefix: "it-slow-"\n      after_ms: 600000\n' % port)
    b.metrics_port = port
    b.start()
    yield b
    b.check_clean_exit(b.stop())


@pytest.fixture(scope="module")
def astub(ab):
    from baton.v1 import lock_pb2_grpc
    ch = grpc.insecure_channel(ab.target)
    yield lock_pb2_grpc.LockServiceStub(ch)
    ch.close()


def warn_lines(b, key, start):
    return [l for l in b.log_text(start).splitlines() if " WARN " in l and "long-held lock: '%s'" % key in l]


def test_long_held_fires_once_per_hold(ab, astub):
    key = bc.uniq("lh")  # "it-lh-...": the 400 ms rule
    quiet = "it-slow-" + key  # the 10-minute rule: never within the test
    mark = ab.log_size()
    w = bc.WatchStream(astub, prefix="it-")
    w.sync()
    g = bc.grant(astub, key, owner="zombie-7")
    gq = bc.grant(astub, quiet, owner="fine")
    ev = w.wait_event(lambda e: e.type == LONG_HELD and e.key == key, timeout=5.0)
    assert ev.owner == "zombie-7" and ev.fencing == g.fencing, bc.fmt_event(ev)
    assert ev.at_unix_ms >= int(time.time() * 1000) - 10000
    # the lock is untouched
    d = bc.describe(astub, key)
    assert d.held and d.fencing == g.fencing
    # counted and logged once, with owner, fencing and age
    assert bc.wait_until(lambda: pt.value(pt.sample(ab.metrics_port), "baton_long_held_locks") == 1)
    time.sleep(1.0)  # several sweeps later: still once
    lines = warn_lines(ab, key, mark)
    assert len(lines) == 1, lines
    assert re.search(r"held by 'zombie-7' \(fencing %d\) for \d+ ms" % g.fencing, lines[0]), lines[0]
    assert "prefix 'it-lh-'" in lines[0]
    assert [e.key for e in w.events() if e.type == LONG_HELD] == [key]
    assert not warn_lines(ab, quiet, mark)

    # the hold ends: no longer counted; a new hold of the key fires again
    bc.release(astub, key, g.token)
    assert bc.wait_until(lambda: pt.value(pt.sample(ab.metrics_port), "baton_long_held_locks") == 0)
    g2 = bc.grant(astub, key, owner="zombie-8")
    w.wait_event(lambda e: e.type == LONG_HELD and e.key == key and e.fencing == g2.fencing, timeout=5.0)
    assert len(warn_lines(ab, key, mark)) == 2
    bc.release(astub, key, g2.token)
    bc.release(astub, quiet, gq.token)
    w.cancel()


def test_watch_of_another_prefix_gets_no_long_held(ab, astub):
    key = bc.uniq("lh")
    w = bc.WatchStream(astub, prefix="other-")
    w.sync()
    g = bc.grant(astub, key, owner="z")
    time.sleep(1.0)
    assert not [e for e in w.events() if e.type == LONG_HELD]
    bc.release(astub, key, g.token)
    w.cancel()
