"""grpc.health.v1.Health served by batond: Check and Watch follow "can this
batond grant locks" (Redis up and not shutting down).

The Python stubs for proto/grpc/health/v1/health.proto are generated here
(not in conftest): generated under their proto path they would be a package
named `grpc` that shadows grpcio, so this module compiles the file from its
own directory into top-level modules health_pb2 / health_pb2_grpc.
"""
import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import grpc

import harness

_STUBS = tempfile.mkdtemp(prefix="baton-it-health-")
atexit.register(shutil.rmtree, _STUBS, True)
subprocess.run(
    [shutil.which("protoc") or "/usr/bin/protoc",
     "-I", os.path.join(harness.SOURCE_DIR, "proto", "grpc", "health", "v1"),
     "--python_out=" + _STUBS, "--grpc_python_out=" + _STUBS,
     "--plugin=protoc-gen-grpc_python=" + harness.GRPC_PYTHON_PLUGIN,
     "health.proto"],
    check=True)
sys.path.insert(0, _STUBS)
import health_pb2  # noqa: E402
import health_pb2_grpc  # noqa: E402

Status = health_pb2.HealthCheckResponse
SERVING, NOT_SERVING, SERVICE_UNKNOWN = Status.SERVING, Status.NOT_SERVING, Status.SERVICE_UNKNOWN
LOCK_SERVICE = "baton.v1.LockService"


def name(status):
    return Status.ServingStatus.Name(status)


def check(stub, service=""):
    return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5.0).status


class HealthWatch:
    """One Health.Watch call read on a background thread."""

    def __init__(self, stub, service="", timeout=120.0):
        self.service = service
        self.statuses = []
        self.code = None
        self.details = None
        self.ended = False
        self.cond = threading.Condition()
        self.call = stub.Watch(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        code, details = grpc.StatusCode.OK, ""
        try:
            for resp in self.call:
                with self.cond:
                    self.statuses.append(resp.status)
                    self.cond.notify_all()
        except grpc.RpcError as e:
            code, details = e.code(), e.details()
        with self.cond:
            self.code, self.details, self.ended = code, details, True
            self.cond.notify_all()

    def summary(self):
        return "Watch(%r): %s%s" % (self.service, [name(s) for s in self.statuses],
                                    " ended %s %r" % (self.code, self.details) if self.ended else " open")

    def wait_count(self, n, timeout=15.0):
        """Waits until n statuses arrived; returns the list."""
        with self.cond:
            ok = self.cond.wait_for(lambda: len(self.statuses) >= n or self.ended, timeout)
            assert ok and len(self.statuses) >= n, "expected %d statuses: %s" % (n, self.summary())
            return list(self.statuses)

    def wait_end(self, timeout=15.0):
        with self.cond:
            assert self.cond.wait_for(lambda: self.ended, timeout), "did not end: " + self.summary()
            return self.code, self.details

    def cancel(self):
        self.call.cancel()
        self.thread.join(10.0)


def test_check_serving_and_unknown_service(batond):
    with grpc.insecure_channel(batond.target) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        assert check(stub, "") == SERVING
        assert check(stub, LOCK_SERVICE) == SERVING
        for unknown in ("baton.v1.Nope", "grpc.health.v1.Health", "baton.v1.LockService/"):
            with_error = None
            try:
                check(stub, unknown)
            except grpc.RpcError as e:
                with_error = e.code()
            assert with_error == grpc.StatusCode.NOT_FOUND, (unknown, with_error)


def test_watch_unknown_service_stays_open(batond):
    with grpc.insecure_channel(batond.target) as ch:
        w = HealthWatch(health_pb2_grpc.HealthStub(ch), "baton.v1.Nope")
        assert w.wait_count(1) == [SERVICE_UNKNOWN]
        time.sleep(0.5)
        assert not w.ended and w.statuses == [SERVICE_UNKNOWN], w.summary()
        # The same channel still serves a known Watch and Check meanwhile.
        k = HealthWatch(health_pb2_grpc.HealthStub(ch), LOCK_SERVICE)
        assert k.wait_count(1) == [SERVING]
        w.cancel()
        k.cancel()
        assert w.code == grpc.StatusCode.CANCELLED and k.code == grpc.StatusCode.CANCELLED
    # Cancelled Watch calls are released by batond (nothing left over once
    # the RECV_CLOSE of each call is handled): checked at batond's exit by
    # the session fixture (exit 0, no sanitizer report).


def test_watch_follows_redis_outage(start_redis, start_batond):
    r = start_redis()
    b = start_batond(r.address, name="batond-health-outage")
    with grpc.insecure_channel(b.target) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        whole = HealthWatch(stub, "")
        svc = HealthWatch(stub, LOCK_SERVICE)
        assert whole.wait_count(1) == [SERVING]
        assert svc.wait_count(1) == [SERVING]

        r.kill()
        assert whole.wait_count(2) == [SERVING, NOT_SERVING]
        assert svc.wait_count(2) == [SERVING, NOT_SERVING]
        assert check(stub, "") == NOT_SERVING
        assert check(stub, LOCK_SERVICE) == NOT_SERVING
        late = HealthWatch(stub, "")  # started during the outage
        assert late.wait_count(1) == [NOT_SERVING]
        # batond retries Redis every 100 ms: none of that repeats a status.
        time.sleep(1.0)
        assert whole.statuses == [SERVING, NOT_SERVING], whole.summary()

        start_redis(port=r.port)
        assert whole.wait_count(3) == [SERVING, NOT_SERVING, SERVING]
        assert svc.wait_count(3) == [SERVING, NOT_SERVING, SERVING]
        assert late.wait_count(2) == [NOT_SERVING, SERVING]
        assert check(stub, "") == SERVING
        time.sleep(0.3)
        for w in (whole, svc, late):
            assert not w.ended and len(w.statuses) == (2 if w is late else 3), w.summary()
            w.cancel()
            assert w.code == grpc.StatusCode.CANCELLED, w.summary()


def test_graceful_shutdown_ends_watch(redis_server, start_batond):
    """SIGTERM: a Watch of a served name sees NOT_SERVING, then every Watch
    ends UNAVAILABLE (like other streams at shutdown; a health client retries
    on any status but UNIMPLEMENTED) and batond exits 0."""
    b = start_batond(redis_server.address, name="batond-health-shutdown")
    ch = grpc.insecure_channel(b.target)
    try:
        stub = health_pb2_grpc.HealthStub(ch)
        known = HealthWatch(stub, "")
        unknown = HealthWatch(stub, "baton.v1.Nope")
        assert known.wait_count(1) == [SERVING]
        assert unknown.wait_count(1) == [SERVICE_UNKNOWN]

        b.signal(signal.SIGTERM)
        code, details = known.wait_end(15.0)
        assert known.statuses == [SERVING, NOT_SERVING], known.summary()
        assert code == grpc.StatusCode.UNAVAILABLE, known.summary()
        code, details = unknown.wait_end(15.0)
        assert unknown.statuses == [SERVICE_UNKNOWN], unknown.summary()
        assert code == grpc.StatusCode.UNAVAILABLE, unknown.summary()
        assert b.wait(15.0) == 0
    finally:
        ch.close()
