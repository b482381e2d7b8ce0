"""baton.Client (sync) against a real batond and redis-server."""
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import grpc
import pytest

import baton

HERE = os.path.dirname(os.path.abspath(__file__))


def wait_for(pred, timeout, step=0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


def test_lock_block_holds_and_releases_before_it_returns(client, other, key):
    with client.lock(key) as lock:
        assert lock.key == key and len(lock.token) == 32 and lock.fencing > 0 and lock.device == -1
        assert lock.mode == "stream" and not lock.lost
        d = other.describe(key)
        assert d.held and d.fencing == lock.fencing and d.owner == "%s/%d" % (socket.gethostname(), os.getpid())
        assert other.try_lock(key) is None
    # Released before the block returned: another client gets it at once.
    again = other.try_lock(key)
    assert again is not None and again.fencing > lock.fencing
    again.release()
    assert not other.describe(key).held


@pytest.mark.parametrize("mode", ["stream", "lease"])
def test_released_in_every_mode_even_when_the_block_raises(client, other, key, mode):
    with pytest.raises(ZeroDivisionError):
        with client.lock(key, mode=mode, ttl="1m"):
            1 / 0
    lk = other.try_lock(key)
    assert lk is not None, other.describe(key)
    lk.release()


def test_try_lock_and_busy_names_the_holder(client, other, key):
    lock = client.acquire(key, owner="encoder-7")
    t = time.monotonic()
    assert other.try_lock(key) is None
    with pytest.raises(baton.Busy) as e:
        other.acquire(key, wait=0)
    assert time.monotonic() - t < 1.0
    assert e.value.holder == "encoder-7" and e.value.holder_fencing == lock.fencing
    assert isinstance(e.value, baton.BatonError) and e.value.code == grpc.StatusCode.ABORTED
    lock.release()


def test_wait_timeout_raises_busy_with_holder(client, other, key):
    with client.lock(key, owner="slow-holder") as lock:
        t = time.monotonic()
        with pytest.raises(baton.Busy) as e:
            with other.lock(key, wait="300ms"):
                pytest.fail("granted while held")
        took = time.monotonic() - t
    assert 0.25 <= took < 3.0, took
    assert e.value.holder == "slow-holder" and e.value.holder_fencing == lock.fencing


def test_waiter_is_granted_on_release_and_waiters_are_fifo(client, batond, key):
    holder = client.acquire(key)
    order = []
    clients = [baton.Client(batond.target, owner="w%d" % i) for i in range(4)]
    threads = []
    try:
        for i, c in enumerate(clients):
            def run(c=c, i=i):
                with c.lock(key, wait="20s") as lk:
                    order.append((i, lk.fencing))
                    time.sleep(0.02)
            t = threading.Thread(target=run)
            t.start()
            threads.append(t)
            # queue them in a known order
            assert wait_for(lambda: client.describe(key).waiters == i + 1, 5), client.describe(key)
        holder.release()
        for t in threads:
            t.join(20)
        assert [i for i, _ in order] == [0, 1, 2, 3]
        fencings = [f for _, f in order]
        assert fencings == sorted(fencings) and fencings[0] > holder.fencing
    finally:
        for c in clients:
            c.close()


def test_mutual_exclusion_across_threads_of_one_client(client, key):
    counter = {"n": 0, "inside": 0, "max": 0}

    def work():
        for _ in range(25):
            with client.lock(key, wait="30s"):
                counter["inside"] += 1
                counter["max"] = max(counter["max"], counter["inside"])
                n = counter["n"]
                time.sleep(0.0005)
                counter["n"] = n + 1
                counter["inside"] -= 1

    ts = [threading.Thread(target=work) for _ in range(6)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert counter == {"n": 150, "inside": 0, "max": 1}


def test_force_released_lock_is_reported_lost(client, other, key):
    lost = []
    ev = threading.Event()
    with pytest.raises(baton.LockLost):
        with client.lock(key, on_lost=lambda lk: (lost.append(lk), ev.set())) as lock:
            assert other.force_release(key, lock.fencing + 1) is False  # not the holder we looked at
            assert other.describe(key).held
            assert other.force_release(key, lock.fencing) is True
            assert ev.wait(3), "on_lost not called"
            assert lock.lost and lost == [lock] and "force-released" in lock.lost_reason
            with pytest.raises(baton.LockLost):
                lock.renew()
    # leaving the block raised LockLost: the work inside was not protected


def test_lease_lock_renews_in_the_background(client, other, key):
    with client.lock(key, mode="lease", ttl="600ms") as lock:
        assert lock.mode == "lease" and lock.ttl == pytest.approx(0.6)
        time.sleep(1.5)  # more than twice the TTL
        d = other.describe(key)
        assert d.held and d.fencing == lock.fencing and not lock.lost
    assert not other.describe(key).held


def test_lease_force_released_is_reported_lost(client, other, key):
    ev = threading.Event()
    lock = client.acquire(key, mode="lease", ttl="600ms", on_lost=lambda lk: ev.set())
    assert other.force_release(key, lock.fencing)
    assert ev.wait(3) and lock.lost
    with pytest.raises(baton.LockLost):
        lock.release()


def test_lease_outlives_its_client_stream_does_not(batond, other, key):
    c = baton.Client(batond.target)
    c.acquire(key + "-lease", mode="lease", ttl="30s")
    c.acquire(key + "-stream")
    # Dropping the connection without releasing: close() would release both,
    # so close the channel underneath.
    c._channel.close()
    assert wait_for(lambda: not other.describe(key + "-stream").held, 3)
    d = other.describe(key + "-lease")
    assert d.held and d.ttl > 20
    other.force_release(key + "-lease", d.fencing)


def test_renew_and_release_twice(client, other, key):
    lock = client.acquire(key, mode="lease", ttl="10s")
    assert lock.renew("1m") == pytest.approx(60)
    assert other.describe(key).ttl > 50
    lock.release()
    lock.release()  # no-op
    with pytest.raises(baton.LockLost):
        lock.renew()


def test_durations():
    s = baton.seconds
    assert s(2) == 2.0 and s(0.25) == 0.25 and s("500ms") == 0.5 and s("5s") == 5.0
    assert s("2m") == 120.0 and s("1h") == 3600.0 and s("1.5s") == 1.5 and s("3") == 3.0
    for bad in ("5x", "-1s", "", "ms", -1, True, None, "1 h m"):
        with pytest.raises(baton.InvalidArgument):
            s(bad)


def test_ttl_and_wait_take_durations(client, other, key):
    with client.lock(key, ttl="2m") as lock:
        assert lock.ttl == 120.0
        assert 100 < other.describe(key).ttl <= 120
        t = time.monotonic()
        with pytest.raises(baton.Busy):
            other.acquire(key, wait="200ms")
        assert time.monotonic() - t >= 0.15
    with pytest.raises(baton.InvalidArgument):
        client.lock(key, ttl="soon").__enter__()
    with pytest.raises(baton.InvalidArgument):
        client.lock(key, mode="forever").__enter__()


def test_invalid_key_is_invalid_argument(client):
    with pytest.raises(baton.InvalidArgument) as e:
        client.try_lock("has space")
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT and "key" in str(e.value)


def test_unavailable_fails_fast():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with baton.Client("127.0.0.1:%d" % port) as c:
        t = time.monotonic()
        with pytest.raises(baton.Unavailable):
            c.try_lock("k")
        with pytest.raises(baton.Unavailable):
            c.describe("k")
        assert time.monotonic() - t < 5


def test_gpu_pool_sets_cuda_visible_devices(client, other):
    os.environ["CUDA_VISIBLE_DEVICES"] = "before"
    try:
        seen = []
        with client.gpu("node7", 4) as a:
            assert os.environ["CUDA_VISIBLE_DEVICES"] == str(a.device)
            assert a.key == "node7/%d" % a.device and 0 <= a.device < 4
            with client.gpu("node7", 4) as b:
                assert os.environ["CUDA_VISIBLE_DEVICES"] == str(b.device) and b.device != a.device
                seen = [a.device, b.device]
                for d in seen:
                    assert other.describe("node7/%d" % d).held
            assert os.environ["CUDA_VISIBLE_DEVICES"] == str(a.device)
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "before"
        assert not any(other.describe("node7/%d" % d).held for d in seen)
    finally:
        del os.environ["CUDA_VISIBLE_DEVICES"]
    with client.gpu("node7", 4):
        pass
    assert "CUDA_VISIBLE_DEVICES" not in os.environ


def test_gpu_pool_busy_when_all_devices_held(client, other):
    ctxs = [client.gpu("node7", 4) for _ in range(4)]
    locks = [cm.__enter__() for cm in ctxs]
    try:
        assert sorted(lk.device for lk in locks) == [0, 1, 2, 3]
        t = time.monotonic()
        with pytest.raises(baton.Busy):
            with other.gpu("node7", 4, wait="200ms"):
                pass
        assert time.monotonic() - t >= 0.15
        # a waiter gets the device that is freed
        got = []
        th = threading.Thread(target=lambda: got.append(other.gpu("node7", 4, wait="10s").__enter__()))
        th.start()
        time.sleep(0.3)
        assert th.is_alive() and not got
        victim = next(i for i, lk in enumerate(locks) if lk.device == 2)
        ctxs[victim].__exit__(None, None, None)
        th.join(10)
        assert got and got[0].device == 2
        got[0].release()
    finally:
        for cm, lk in zip(ctxs, locks):
            if lk.held:
                cm.__exit__(None, None, None)
    os.environ.pop("CUDA_VISIBLE_DEVICES", None)


def test_watch_reports_events_and_closes(client, other, key):
    events = []
    w = other.watch(prefix=key)
    th = threading.Thread(target=lambda: events.extend(w))
    th.start()
    time.sleep(0.3)  # a watch reports what happens after batond registered it
    with client.lock(key + ":a", owner="watched") as a:
        pass
    b = client.acquire(key + ":b", owner="watched")
    other.force_release(key + ":b", b.fencing)
    assert wait_for(lambda: len(events) >= 4, 5), events
    w.close()
    th.join(5)
    assert not th.is_alive(), "close() did not end the iteration"
    assert [(e.type, e.key) for e in events[:4]] == [
        ("ACQUIRED", key + ":a"), ("RELEASED", key + ":a"),
        ("ACQUIRED", key + ":b"), ("FORCE_RELEASED", key + ":b")]
    assert events[0].owner == "watched" and events[0].fencing == a.fencing
    assert abs(events[0].at - time.time()) < 60
    with pytest.raises(baton.InvalidArgument):
        other.watch()
    with other.watch(key=key) as w2:
        pass
    assert list(w2) == []


def test_describe_shows_waiters_and_ttl(client, other, key):
    assert not other.describe(key).held
    with client.lock(key, ttl="30s", owner="me"):
        d = other.describe(key)
        assert d.held and d.owner == "me" and 25 < d.ttl <= 30 and d.waiters == 0


def test_stream_lock_released_when_holding_process_is_killed(batond, client, key):
    code = ("import sys, time, baton\n"
            "c = baton.Client(sys.argv[1], owner='doomed')\n"
            "l = c.acquire(sys.argv[2])\n"
            "print('GRANTED', l.fencing, flush=True)\n"
            "time.sleep(600)\n")
    p = subprocess.Popen([sys.executable, "-c", code, batond.target, key], stdout=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        assert line.startswith("GRANTED"), line
        assert client.describe(key).owner == "doomed"
        os.kill(p.pid, signal.SIGKILL)
        p.wait(10)
        t = time.monotonic()
        lk = wait_for(lambda: client.try_lock(key), 3, step=0.005)
        assert lk is not None, "the killed process's lock was not released"
        print("released %.1f ms after SIGKILL" % ((time.monotonic() - t) * 1000))
        lk.release()
    finally:
        p.kill()
        p.wait()


def test_stream_lock_lost_when_batond_is_killed(private_batond, key):
    b = private_batond()
    c = baton.Client(b.target)
    ev = threading.Event()
    lease_ev = threading.Event()
    lock = c.acquire(key, on_lost=lambda lk: ev.set())
    lease = c.acquire(key + "-l", mode="lease", ttl="1500ms", on_lost=lambda lk: lease_ev.set())
    b.kill()
    t = time.monotonic()
    assert ev.wait(3), "stream lock not reported lost after batond was killed"
    assert lock.lost and "connection" in lock.lost_reason
    # a lease is lost when it could not be renewed a fifth of its TTL before it runs out
    assert lease_ev.wait(3) and lease.lost
    assert time.monotonic() - t < 1.5
    with pytest.raises(baton.LockLost):
        lock.release()
    c.close()


def test_keepalive_notices_a_frozen_batond_within_3s(private_batond, key):
    b = private_batond()
    c = baton.Client(b.target)
    ev = threading.Event()
    lock = c.acquire(key, on_lost=lambda lk: ev.set())
    time.sleep(0.2)
    b.signal(signal.SIGSTOP)
    t = time.monotonic()
    try:
        assert ev.wait(5), "a silent connection was not noticed"
        took = time.monotonic() - t
        assert took < 3.5, took
        print("frozen batond noticed after %.2f s" % took)
        assert lock.lost
    finally:
        b.signal(signal.SIGCONT)
    c.close()


def test_client_closes_releasing_its_locks(batond, other, key):
    with baton.Client(batond.target) as c:
        c.acquire(key + "-s")
        c.acquire(key + "-l", mode="lease", ttl="1m")
    assert not other.describe(key + "-s").held and not other.describe(key + "-l").held
    with pytest.raises(baton.BatonError):
        c.try_lock(key)


def test_owner_override(batond, other, key):
    with baton.Client(batond.target, owner="svc-a") as c:
        with c.lock(key):
            assert other.describe(key).owner == "svc-a"
        with c.lock(key, owner="task-9"):
            assert other.describe(key).owner == "task-9"


class _Recorder(grpc.GenericRpcHandler):
    """A stand-in server that records each call's metadata and answers
    Describe (batond's side of auth is not built yet)."""

    def __init__(self):
        self.metadata = []

    def service(self, details):
        if details.method != "/baton.v1.LockService/Describe":
            return None
        from baton.v1 import lock_pb2 as pb

        def describe(req, ctx):
            self.metadata.append(dict(ctx.invocation_metadata()))
            return pb.DescribeResponse(held=True, owner="fake", fencing=7)

        return grpc.unary_unary_rpc_method_handler(describe, pb.DescribeRequest.FromString,
                                                   pb.DescribeResponse.SerializeToString)


def test_token_is_sent_as_bearer_metadata():
    from concurrent import futures
    rec = _Recorder()
    server = grpc.server(futures.ThreadPoolExecutor(2), handlers=[rec])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with baton.Client("127.0.0.1:%d" % port, token="s3cret") as c:
            assert c.describe("k").owner == "fake"
        with baton.Client("127.0.0.1:%d" % port) as c:
            c.describe("k")
        assert rec.metadata[0].get("authorization") == "Bearer s3cret"
        assert "authorization" not in rec.metadata[1]
    finally:
        server.stop(0)


def test_tls_parameter(batond, tmp_path):
    with pytest.raises(baton.InvalidArgument):
        baton.Client(batond.target, tls=42)
    with pytest.raises(OSError):
        baton.Client(batond.target, tls=str(tmp_path / "missing-ca.pem"))
    # TLS against batond's plaintext port: the handshake fails, Unavailable.
    with baton.Client(batond.target, tls=True) as c:
        with pytest.raises(baton.Unavailable):
            c.describe("k")
    creds = grpc.ssl_channel_credentials()
    with baton.Client(batond.target, tls=creds) as c:
        with pytest.raises(baton.Unavailable):
            c.describe("k")


def test_gpu_count_holds_devices_together(client, other):
    """count=2: two devices in one grant (all or none), every one on the Lock
    and in CUDA_VISIBLE_DEVICES; leaving the block frees both."""
    with client.gpu("node7", 4, count=2) as g:
        assert g.devices == [0, 1] and g.device == 0 and len(g.fencings) == 2
        assert g.device_names == []
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1"
        assert other.describe("node7/1").held
        assert other.try_lock("node7/1") is None
        with pytest.raises(baton.Busy):
            with client.gpu("node7", 4, count=3, wait=0):
                pass
        assert not other.describe("node7/2").held  # the refused request took nothing
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    assert not other.describe("node7/0").held and not other.describe("node7/1").held
    with pytest.raises(baton.InvalidArgument):
        with client.gpu("node7", 4, count=5):
            pass


# -- the Session lane (baton/_lane.py): stream-mode locks of a Client ride one
# Session stream driven on the caller's thread ---------------------------------

def test_stream_locks_ride_the_clients_session(batond, other, key):
    """The fast path is in use: a grpcio whose internals changed would make
    every lock fall back to a call of its own (slower, still correct)."""
    with baton.Client(batond.target) as c:
        a = c.acquire(key)
        b = c.acquire(key + "-2")
        assert a._session is not None and a._session is b._session, \
            "stream locks are not held on the client's Session (grpcio internals changed?)"
        assert a._call is None
        a.release()
        b.release()
        assert other.try_lock(key) is not None


def test_long_hold_on_one_thread_while_another_cycles(batond, other, key):
    """A lock held past the monitor delay makes a monitor drive the Session;
    meanwhile other threads' locks take their own calls, and the held lock's
    loss is still reported; once it is gone the Session is the fast path again."""
    with baton.Client(batond.target) as c:
        lost = threading.Event()
        long = c.acquire(key, on_lost=lambda lk: lost.set())
        assert long._session is not None
        time.sleep(0.3)  # handed to a monitor, which now polls the Session
        s = long._session
        assert wait_for(lambda: s.lane.locked(), 2), "no monitor drives the Session"
        for i in range(20):
            with c.lock(key + "-short") as lk:
                assert lk._session is None  # the lane is the monitor's: a call of its own
                assert other.try_lock(key + "-short") is None
        free = other.try_lock(key + "-short")
        assert free is not None
        free.release()
        assert other.force_release(key, long.fencing)
        assert lost.wait(3), "the force-released lock held on the Session was not reported lost"
        assert long.lost and "lost" in long.lost_reason
        with pytest.raises(baton.LockLost):
            long.release()
        assert wait_for(lambda: not s.lane.locked(), 2), "the monitor did not let go of the Session"
        with c.lock(key + "-3") as lk:
            assert lk._session is s


def test_long_held_lock_released_while_a_monitor_drives(batond, other, key):
    with baton.Client(batond.target) as c:
        lk = c.acquire(key)
        time.sleep(0.3)
        assert wait_for(lambda: lk._session.lane.locked(), 2)
        lk.release()  # a unary Release: the monitor has the lane
        assert other.try_lock(key) is not None
        assert not lk.lost
        assert wait_for(lambda: not lk._session.lane.locked(), 2)


def test_an_exception_inside_the_session_abandons_it(batond, other, key, monkeypatch):
    """If the thread driving the Session is interrupted (a signal handler's
    KeyboardInterrupt, say), the Session is cancelled: batond releases what it
    held, its locks are reported lost, and the next lock opens a new one."""
    from baton import _lane
    with baton.Client(batond.target) as c:
        lost = threading.Event()
        held = c.acquire(key + "-held", on_lost=lambda lk: lost.set())
        s = held._session
        assert s is not None
        real = _lane.Session._dispatch
        calls = []

        def interrupted(self, r):
            calls.append(r.id)
            raise KeyboardInterrupt

        monkeypatch.setattr(_lane.Session, "_dispatch", interrupted)
        with pytest.raises(KeyboardInterrupt):
            c.try_lock(key)
        monkeypatch.setattr(_lane.Session, "_dispatch", real)
        assert calls and not s.alive
        assert lost.wait(3) and held.lost
        got = wait_for(lambda: other.try_lock(key + "-held"), 3)
        assert got is not None, "batond kept the abandoned Session's lock"
        got.release()
        assert wait_for(lambda: not other.describe(key).held, 3), "the interrupted try-lock left a lock behind"
        with c.lock(key) as lk:
            assert lk._session is not None and lk._session is not s
