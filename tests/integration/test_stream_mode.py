"""STREAM hold mode: the lock lives exactly as long as the Acquire stream."""
import os
import signal
import subprocess
import sys
import time

import grpc

import bclient as bc
import harness
from baton.v1 import lock_pb2_grpc
from bclient import pb

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from relay import Relay  # noqa: E402

ABORTED = grpc.StatusCode.ABORTED
T = pb.LockEvent


def test_cancel_of_granted_stream_releases_at_once(stub):
    key = bc.uniq("scancel")
    w = bc.WatchStream(stub, key=key)
    w.sync()
    holder = bc.AcquireStream(stub, key, "streamer", mode=bc.STREAM)
    g = holder.wait_granted()
    assert g.ttl_ms == 600000
    waiter = bc.AcquireStream(stub, key, "next", wait_ms=20000)
    waiter.wait_queued()
    time.sleep(0.2)
    assert not holder.ended, "a STREAM-mode Acquire stays open after granted: %s" % holder.summary()
    assert holder.kinds() == ["granted"]

    t0 = time.monotonic()
    holder.cancel()
    g2 = waiter.wait_granted(10.0)
    secs = waiter.granted_at - t0
    bc.record_timing("stream cancel -> waiter granted", secs)
    assert secs < 5.0, "waiter granted %.2fs after cancel (TTL was 600 s)" % secs
    assert g2.fencing > g.fencing
    rel = w.wait_event(lambda e: e.type == T.RELEASED)
    assert rel.owner == "streamer" and rel.fencing == g.fencing, \
        "a cancelled stream releases (RELEASED, not EXPIRED): %s" % bc.fmt_event(rel)
    bc.release(stub, key, g2.token)
    w.cancel()


def test_sigkill_of_holder_process_hands_lock_to_waiter(stub, batond, stubs_dir):
    key = bc.uniq("skill")
    proc = subprocess.Popen(
        [harness.PYTHON, os.path.join(harness.HERE, "holder_proc.py"), batond.target, key, "doomed-proc"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=harness.python_env(stubs_dir))
    try:
        line = proc.stdout.readline()  # blocks until granted (the script waits at most 30 s)
        assert line.startswith("GRANTED "), "holder: %r %s" % (line, proc.stderr.read() if proc.poll() else "")
        fencing = int(line.split()[1])
        d = bc.describe(stub, key)
        assert d.held and d.owner == "doomed-proc" and d.fencing == fencing

        waiter = bc.AcquireStream(stub, key, "survivor", wait_ms=30000)
        waiter.wait_queued()
        t0 = time.monotonic()
        proc.kill()
        proc.wait(10)
        g = waiter.wait_granted(10.0)
        secs = waiter.granted_at - t0
        bc.record_timing("SIGKILL of stream holder -> waiter granted", secs)
        assert secs < 5.0, "waiter granted %.2fs after the holder died (TTL 600 s)" % secs
        assert g.fencing > fencing
        bc.release(stub, key, g.token)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_stream_keeps_short_ttl_alive(stub):
    key = bc.uniq("skeep")
    w = bc.WatchStream(stub, key=key)
    w.sync()
    # 1 s: short enough to prove renewal over several TTLs, long enough that a
    # scheduling stall of a loaded 2-core CI machine does not lose the lock.
    holder = bc.AcquireStream(stub, key, "keeper", ttl_ms=1000, mode=bc.STREAM)
    g = holder.wait_granted()
    assert g.ttl_ms == 1000
    for _ in range(4):  # 4 s = 4 TTLs
        time.sleep(1.0)
        d = bc.describe(stub, key)
        assert d.held and d.owner == "keeper" and d.fencing == g.fencing, \
            "stream-held lock with TTL 1000 ms lapsed: %r" % d
        assert 0 < d.ttl_ms <= 1000
    _, code, details, _ = bc.acquire(stub, key, "prober", wait_ms=0)
    assert code == ABORTED and "keeper" in details
    assert not holder.ended, holder.summary()
    assert [e.type for e in w.events()] == [T.ACQUIRED], [bc.fmt_event(e) for e in w.events()]
    holder.cancel()
    assert bc.wait_until(lambda: not bc.describe(stub, key).held, 5.0)
    w.wait_event(lambda e: e.type == T.RELEASED)
    w.cancel()


def test_release_by_token_ends_stream_ok(stub):
    key = bc.uniq("srel")
    holder = bc.AcquireStream(stub, key, "held-by-stream", mode=bc.STREAM)
    g = holder.wait_granted()
    assert bc.release(stub, key, g.token).released
    code, details = holder.wait_end(5.0)
    assert code == bc.OK, "Release by token ends the holding stream with OK: %s %r" % (code, details)
    assert holder.kinds() == ["granted"]
    assert not bc.describe(stub, key).held
    g2 = bc.grant(stub, key, "after", wait_ms=0)
    bc.release(stub, key, g2.token)


def test_renew_of_stream_held_lock(stub):
    """Renew with the stream's token is allowed and keeps the holder."""
    key = bc.uniq("srenew")
    holder = bc.AcquireStream(stub, key, "sr", mode=bc.STREAM, ttl_ms=1000)
    g = holder.wait_granted()
    assert bc.renew(stub, key, g.token, 5000).ttl_ms == 5000
    assert bc.describe(stub, key).owner == "sr"
    holder.cancel()
    assert bc.wait_until(lambda: not bc.describe(stub, key).held, 5.0)


def test_cancel_of_waiting_stream_mode_acquire(stub):
    key = bc.uniq("swaitcancel")
    g = bc.grant(stub, key, "h")
    w = bc.AcquireStream(stub, key, "w", mode=bc.STREAM, wait_ms=20000)
    w.wait_queued()
    w.cancel()
    assert bc.wait_until(lambda: bc.describe(stub, key).waiters == 0, 5.0)
    bc.release(stub, key, g.token)
    # The cancelled waiter must not have been granted behind our back.
    g2 = bc.grant(stub, key, "after", wait_ms=0)
    bc.release(stub, key, g2.token)


def test_keepalive_releases_the_lock_of_a_frozen_holder(start_redis, start_batond, stubs_dir):
    """A holder whose machine vanishes sends no FIN: its connection stays open.
    A SIGSTOPped process is the same from the server's side (the kernel still
    ACKs TCP, but nobody answers HTTP/2 PINGs), so only batond's keepalive can
    notice. With pings every 0.5 s and a 0.5 s timeout the lock must move on in
    seconds, far below its 600 s TTL."""
    import signal as sig

    from baton.v1 import lock_pb2_grpc

    redis = start_redis()
    b = start_batond(redis.address, name="batond-keepalive",
                     extra_config="grpc:\n  keepalive_time_ms: 500\n  keepalive_timeout_ms: 500\n")
    key = bc.uniq("frozen")
    proc = subprocess.Popen(
        [harness.PYTHON, os.path.join(harness.HERE, "holder_proc.py"), b.target, key, "frozen-proc"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=harness.python_env(stubs_dir))
    with grpc.insecure_channel(b.target) as ch:
        stub = lock_pb2_grpc.LockServiceStub(ch)
        try:
            line = proc.stdout.readline()
            assert line.startswith("GRANTED "), "holder: %r" % line
            fencing = int(line.split()[1])
            waiter = bc.AcquireStream(stub, key, "survivor", wait_ms=60000)
            waiter.wait_queued()
            t0 = time.monotonic()
            os.kill(proc.pid, sig.SIGSTOP)
            g = waiter.wait_granted(30.0)
            secs = waiter.granted_at - t0
            bc.record_timing("frozen stream holder (keepalive 0.5+0.5 s) -> waiter granted", secs)
            assert secs < 15.0, "granted %.1fs after the holder froze: keepalive did not act" % secs
            assert g.fencing > fencing
            bc.release(stub, key, g.token)
        finally:
            proc.kill()  # SIGKILL also ends a stopped process
            proc.wait(10)


# The channel options the README gives Python holders (libbaton's defaults).
KEEPALIVE_OPTIONS = [("grpc.keepalive_time_ms", 1500), ("grpc.keepalive_timeout_ms", 1500),
                     ("grpc.http2.max_pings_without_data", 0)]


def test_keepalive_tells_a_holder_before_a_hung_batond_lets_go(stub, redis_server, start_batond):
    """batond freezes (SIGSTOP) under a grpcio stream holder set up as the README says. It stops
    renewing, so Redis lets the key go within the 9 s TTL and the suite's batond grants it to a
    waiter. The holder's stream must have failed first: its pings go unanswered. Without the
    options it stayed open for as long as batond was frozen."""
    key = bc.uniq("frozen")
    frozen = start_batond(redis_server.address, name="batond-frozen")
    ch = grpc.insecure_channel(frozen.target, options=KEEPALIVE_OPTIONS)
    try:
        holder = bc.AcquireStream(lock_pb2_grpc.LockServiceStub(ch), key, "frozen-holder", ttl_ms=9000, mode=bc.STREAM)
        holder.wait_granted()
        waiter = bc.AcquireStream(stub, key, "next", wait_ms=30000)
        waiter.wait_queued()
        time.sleep(6.0)  # held quietly: gRPC stops pinging after 2 pings without data unless told
        t0 = time.monotonic()
        frozen.signal(signal.SIGSTOP)
        try:
            waiter.wait_granted(15.0)
            code, details = holder.wait_end(1.0)
        finally:
            frozen.signal(signal.SIGCONT)
        bc.record_timing("batond frozen -> holder's stream failed", holder.ended_at - t0)
        bc.record_timing("batond frozen -> next holder granted", waiter.granted_at - t0)
        assert code == grpc.StatusCode.UNAVAILABLE, "holder: %s" % holder.summary()
        assert holder.ended_at < waiter.granted_at, \
            "next holder granted %.2fs after the freeze, holder told after %.2fs" % (
                waiter.granted_at - t0, holder.ended_at - t0)
        bc.release(stub, key, waiter.granted.token)
    finally:
        ch.close()


def test_pings_that_arrive_early_do_not_cost_a_quiet_holder_its_lock(stub, batond):
    """A quiet stream holder pings once a second (libbaton's minimum keepalive_ms, grpcio's
    floor) through a network that holds every other write back by 0.3 s. A ping that reaches
    batond sooner than its minimum ping interval after the last one is a strike; strikes add up
    for as long as the stream carries no data, and the third gets GOAWAY, which ends every stream
    hold of the connection. gRPC clients schedule each keepalive ping a keepalive time after the
    last ping's ack, so jitter only stretches the gaps batond sees (1.0 s and 1.3 s here) and the
    lock must live on. With batond's minimum at 1.1 s the holder was cut off ("Too many pings")."""
    key = bc.uniq("pingjitter")
    relay = Relay(batond.target, delay=0.3)
    options = [("grpc.keepalive_time_ms", 1000), ("grpc.keepalive_timeout_ms", 1500),
               ("grpc.http2.max_pings_without_data", 0)]
    ch = grpc.insecure_channel(relay.address, options=options)
    try:
        holder = bc.AcquireStream(lock_pb2_grpc.LockServiceStub(ch), key, "pinger", mode=bc.STREAM)
        g = holder.wait_granted(10.0)
        time.sleep(9.0)  # about eight pings, no data
        assert not holder.ended, "quiet holder cut off: %s" % holder.summary()
        d = stub.Describe(pb.DescribeRequest(key=key), timeout=5)
        assert d.held and d.owner == "pinger" and d.fencing == g.fencing, "lock no longer held by the pinger: %s" % d
        holder.cancel()
    finally:
        ch.close()
        relay.close()
