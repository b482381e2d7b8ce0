"""Graceful shutdown (SIGTERM) of a batond with a waiting stream, a
stream-held lock and a lease. Uses its own batond on the session Redis."""
import signal

import grpc
from baton.v1 import lock_pb2_grpc

import bclient as bc

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


def test_sigterm_releases_stream_holds_and_fails_waiters(redis_server, start_batond):
    b = start_batond(redis_server.address, name="batond-shutdown")
    k_stream, k_lease = bc.uniq("sd-stream"), bc.uniq("sd-lease")
    ch = grpc.insecure_channel(b.target)
    try:
        stub = lock_pb2_grpc.LockServiceStub(ch)
        holder = bc.AcquireStream(stub, k_stream, "stream-holder", mode=bc.STREAM)
        holder.wait_granted()
        lease = bc.grant(stub, k_lease, "lease-holder")
        waiter = bc.AcquireStream(stub, k_lease, "waiter", wait_ms=60000)
        waiter.wait_queued()
        watch = bc.WatchStream(stub, key=k_stream)
        assert redis_server.cli("EXISTS", "baton:{%s}:lock" % k_stream) == "1"
        assert redis_server.cli("ZCARD", "baton:{%s}:q" % k_lease) == "1"

        b.signal(signal.SIGTERM)
        code, details = waiter.wait_end(10.0)
        assert code == UNAVAILABLE, "a waiting stream ends UNAVAILABLE at shutdown: %s %r" % (code, details)
        code, details = holder.wait_end(10.0)
        assert code == UNAVAILABLE, "a stream hold ends UNAVAILABLE at shutdown: %s %r" % (code, details)
        watch.wait_end(10.0)
        rc = b.wait(15.0)
        assert rc == 0, "batond exit code %s after SIGTERM" % rc
    finally:
        ch.close()

    # In Redis: the stream hold is released, the waiter dequeued, the lease kept.
    assert redis_server.cli("EXISTS", "baton:{%s}:lock" % k_stream) == "0"
    assert redis_server.cli("EXISTS", "baton:{%s}:hold" % k_stream) == "0"
    assert redis_server.cli("ZCARD", "baton:{%s}:q" % k_lease) == "0"
    assert redis_server.cli("GET", "baton:{%s}:lock" % k_lease) == lease.token

    # A new batond on the same Redis agrees.
    b2 = start_batond(redis_server.address, name="batond-after-shutdown")
    with grpc.insecure_channel(b2.target) as ch2:
        stub2 = lock_pb2_grpc.LockServiceStub(ch2)
        assert not bc.describe(stub2, k_stream).held
        d = bc.describe(stub2, k_lease)
        assert d.held and d.owner == "lease-holder" and d.waiters == 0
        bc.release(stub2, k_lease, lease.token)
