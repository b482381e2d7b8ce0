"""Redis killed (SIGKILL, data lost) and restarted on the same port while a
client waits. Uses its own redis-server and batond."""
import time

import grpc
from baton.v1 import lock_pb2_grpc

import bclient as bc
from bclient import pb

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


def test_redis_killed_and_restarted_while_waiting(start_redis, start_batond):
    r = start_redis()
    b = start_batond(r.address, name="batond-redis-outage")
    with grpc.insecure_channel(b.target) as ch:
        stub = lock_pb2_grpc.LockServiceStub(ch)
        key = bc.uniq("outage")
        old = bc.grant(stub, key, "pre-crash")
        waiter = bc.AcquireStream(stub, key, "waits-through-outage", wait_ms=120000, timeout=180.0)
        waiter.wait_queued()

        r.kill()
        # New Acquires during the outage answer UNAVAILABLE at once, even
        # with a long wait_ms, instead of hanging.
        for i in range(3):
            events, code, details, secs = bc.acquire(stub, bc.uniq("during"), "x", wait_ms=60000,
                                                     timeout=20.0)
            assert code == UNAVAILABLE, "attempt %d: %s %r" % (i, code, details)
            assert secs < 2.0, "UNAVAILABLE took %.2fs" % secs
            assert not events
            if i == 0:
                bc.record_timing("Acquire during Redis outage -> UNAVAILABLE", secs)
        for method, req in (("Describe", pb.DescribeRequest(key=key)),
                            ("Renew", pb.RenewRequest(key=key, token=old.token)),
                            ("Release", pb.ReleaseRequest(key=key, token=old.token))):
            t0 = time.monotonic()
            code, details = bc.rpc_error(getattr(stub, method), req)
            assert code == UNAVAILABLE, (method, code, details)
            assert time.monotonic() - t0 < 2.0, method
        time.sleep(0.5)
        assert not waiter.ended and waiter.granted is None, \
            "the waiting stream stays open through the outage: %s" % waiter.summary()

        t_up = time.monotonic()
        r2 = start_redis(port=r.port)
        g = waiter.wait_granted(20.0)
        bc.record_timing("Redis restarted -> waiter granted", waiter.granted_at - t_up)
        # The old lock vanished with Redis' data; fencing is re-seeded from
        # the clock, so it still rises.
        assert g.fencing > old.fencing, (g.fencing, old.fencing)
        code, details = bc.rpc_error(stub.Release, pb.ReleaseRequest(key=key, token=old.token))
        assert code == grpc.StatusCode.FAILED_PRECONDITION, (code, details)
        d = bc.describe(stub, key)
        assert d.held and d.owner == "waits-through-outage" and d.fencing == g.fencing
        assert r2.cli("EXISTS", "baton:{%s}:lock" % key) == "1"
        # New work flows again.
        k2 = bc.uniq("after")
        g2 = bc.grant(stub, k2, "after")
        bc.release(stub, k2, g2.token)
        bc.release(stub, key, g.token)


def test_stream_hold_through_redis_restart_is_never_silently_lost(start_redis, start_batond):
    """Redis loses its data while a STREAM hold is open. The server may keep
    the hold (re-asserting it) or end the stream (ABORTED / UNAVAILABLE), but
    it must never leave the stream open while the lock is free or held by
    someone else: the client would believe it holds a lock it does not."""
    r = start_redis()
    b = start_batond(r.address, name="batond-stream-outage")
    with grpc.insecure_channel(b.target) as ch:
        stub = lock_pb2_grpc.LockServiceStub(ch)
        key = bc.uniq("outage-stream")
        holder = bc.AcquireStream(stub, key, "stream-holder", mode=bc.STREAM, ttl_ms=2000, timeout=120.0)
        g = holder.wait_granted()
        r.kill()
        time.sleep(0.5)
        r2 = start_redis(port=r.port)
        # Let the server notice (reconnect 100 ms, re-check of holds on up,
        # recheck_ms 2000), then look.
        time.sleep(3.0)
        print("stream holder after the restart: %s" % holder.summary())
        if holder.ended:
            assert holder.code in (grpc.StatusCode.ABORTED, grpc.StatusCode.UNAVAILABLE), holder.summary()
        else:
            d = bc.describe(stub, key)
            assert holder.ended or (d.held and d.owner == "stream-holder"), (
                "stream still open but the lock is not held by it: %r" % d)
            _, code, details, _ = bc.acquire(stub, key, "intruder", wait_ms=0)
            assert code == grpc.StatusCode.ABORTED or holder.ended, (
                "someone else acquired %s while its STREAM holder's call is open (%s %r)" % (key, code, details))
            holder.cancel()
        assert r2.ping()
        assert g.token
