"""Using Baton from Python, the plain way (copy this into your service).

Generate the stubs from the repository's proto/ directory:

    protoc -I proto --python_out=. --grpc_python_out=. \
        --plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin baton/v1/lock.proto

This file uses only those stubs and grpcio; the `batond` fixture only says
where the server listens.
"""
import threading
import time
import uuid

import grpc
from baton.v1 import lock_pb2, lock_pb2_grpc


def test_acquire_renew_release_watch(batond):
    channel = grpc.insecure_channel(batond.target)
    stub = lock_pb2_grpc.LockServiceStub(channel)
    key = "video:interop-" + uuid.uuid4().hex

    # Watch the key in the background (a monitor would do this).
    seen = []
    watch = stub.Watch(lock_pb2.WatchRequest(key=key))

    def follow():
        try:
            for event in watch:
                seen.append((lock_pb2.LockEvent.Type.Name(event.type), event.owner, event.fencing))
        except grpc.RpcError:
            pass  # cancelled below

    threading.Thread(target=follow, daemon=True).start()
    # A Watch only reports what happens after it is registered; give it a moment.
    grpc.channel_ready_future(channel).result(timeout=5)
    time.sleep(0.3)

    # Acquire: wait up to 10 s, keep the lock 60 s unless renewed.
    granted = None
    try:
        for event in stub.Acquire(lock_pb2.AcquireRequest(
                key=key, owner="encoder-1", ttl_ms=60000, wait_ms=10000), timeout=15):
            if event.HasField("queued"):
                print("waiting, position", event.queued.position)
            elif event.HasField("granted"):
                granted = event.granted
    except grpc.RpcError as e:
        if e.code() == grpc.StatusCode.ABORTED:
            raise AssertionError("someone else holds it: " + e.details())
        raise
    assert granted is not None
    print("holding %s with fencing token %d" % (granted.key, granted.fencing))
    # ... do the work, passing granted.fencing to the storage you write to ...

    renewed = stub.Renew(lock_pb2.RenewRequest(key=key, token=granted.token, ttl_ms=60000), timeout=5)
    assert renewed.ttl_ms == 60000

    released = stub.Release(lock_pb2.ReleaseRequest(key=key, token=granted.token), timeout=5)
    assert released.released

    for _ in range(100):
        if len(seen) >= 2:
            break
        time.sleep(0.05)
    watch.cancel()
    channel.close()
    assert seen == [("ACQUIRED", "encoder-1", granted.fencing), ("RELEASED", "encoder-1", granted.fencing)]


def test_hold_while_stream_open(batond):
    """STREAM mode: the lock is held exactly as long as this call is open,
    so a crashed process never leaves a lock behind."""
    with grpc.insecure_channel(batond.target) as channel:
        stub = lock_pb2_grpc.LockServiceStub(channel)
        call = stub.Acquire(lock_pb2.AcquireRequest(
            key="gpu_lock:interop-" + uuid.uuid4().hex, owner="trainer-7",
            wait_ms=10000, mode=lock_pb2.HOLD_MODE_STREAM))
        first = next(call)  # queued events come first when someone else holds it
        while first.HasField("queued"):
            first = next(call)
        assert first.HasField("granted")
        # ... work while holding ...
        call.cancel()  # releases the lock at once
