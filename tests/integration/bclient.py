"""Small client helpers for the integration tests: an Acquire stream and a
Watch stream that run on background threads and record what arrived and
when, plus one-line wrappers for the unary RPCs.

Every blocking wait has a timeout, so a hung server fails a test instead of
hanging the suite.
"""
import threading
import time
import uuid

import grpc
from baton.v1 import lock_pb2 as pb

LEASE = pb.HOLD_MODE_LEASE
STREAM = pb.HOLD_MODE_STREAM
OK = grpc.StatusCode.OK

# (name, seconds) measured by tests; printed in the terminal summary.
TIMINGS = []


def record_timing(name, seconds):
    TIMINGS.append((name, seconds))
    print("%s: %.1f ms" % (name, seconds * 1000.0))


def uniq(name):
    """A key (or prefix) no other test uses: tests share one Redis."""
    return "it-%s-%s" % (name, uuid.uuid4().hex[:10])


def acquire_request(key="", owner="", ttl_ms=0, wait_ms=0, mode=LEASE, pool=None, devices=0, count=0,
                    weight=0):
    req = pb.AcquireRequest(key=key, owner=owner, ttl_ms=ttl_ms, wait_ms=wait_ms, mode=mode)
    if pool is not None:
        req.pool.name = pool
        req.pool.devices = devices
        req.pool.count = count
        req.pool.weight = weight
    return req


class _Recorder:
    """A list of items appended by a reader thread, with waiting helpers."""

    def __init__(self):
        self.cond = threading.Condition()
        self.items = []  # (kind, message, monotonic time)
        self.code = None
        self.details = None
        self.ended_at = None

    def _add(self, kind, msg):
        with self.cond:
            self.items.append((kind, msg, time.monotonic()))
            self.cond.notify_all()

    def _end(self, code, details):
        with self.cond:
            self.code = code
            self.details = details or ""
            self.ended_at = time.monotonic()
            self.cond.notify_all()

    def _wait(self, pred, timeout):
        """Waits until pred() (called under the lock) is true or the stream
        ended; returns pred()'s last value."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                v = pred()
                if v or self.code is not None:
                    return v
                left = deadline - time.monotonic()
                if left <= 0:
                    return v
                self.cond.wait(left)

    @property
    def ended(self):
        return self.code is not None

    def wait_end(self, timeout=5.0):
        """Returns (code, details); fails if the stream is still open."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.code is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("%s still open after %.1fs; got %s"
                                         % (self.what, timeout, self.summary()))
                self.cond.wait(left)
            return self.code, self.details

    def summary(self):
        with self.cond:
            return "[%s] end=%s %r" % (", ".join(k for k, _, _ in self.items), self.code, self.details)


class AcquireStream(_Recorder):
    """One Acquire call read on a background thread."""

    def __init__(self, stub, key="", owner="", ttl_ms=0, wait_ms=0, mode=LEASE, pool=None, devices=0,
                 timeout=60.0, request=None, count=0):
        super().__init__()
        self.req = request if request is not None else acquire_request(
            key, owner, ttl_ms, wait_ms, mode, pool, devices, count)
        self.what = "Acquire(%s%s)" % (self.req.key or "pool " + self.req.pool.name, "/" + owner if owner else "")
        self.started_at = time.monotonic()
        self.call = stub.Acquire(self.req, timeout=timeout)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            for ev in self.call:
                self._add(ev.WhichOneof("event"), ev)
            self._end(OK, "")
        except grpc.RpcError as e:
            self._end(e.code(), e.details())

    def kinds(self):
        with self.cond:
            return [k for k, _, _ in self.items]

    def queued_positions(self):
        with self.cond:
            return [m.queued.position for k, m, _ in self.items if k == "queued"]

    @property
    def granted(self):
        with self.cond:
            for k, m, _ in self.items:
                if k == "granted":
                    return m.granted
        return None

    @property
    def granted_at(self):
        with self.cond:
            for k, _, t in self.items:
                if k == "granted":
                    return t
        return None

    def wait_queued(self, timeout=5.0):
        """First queued position; fails if none arrived."""
        ok = self._wait(lambda: any(k == "queued" for k, _, _ in self.items), timeout)
        assert ok, "%s: no queued event within %.1fs; got %s" % (self.what, timeout, self.summary())
        return self.queued_positions()[0]

    def wait_granted(self, timeout=5.0):
        ok = self._wait(lambda: any(k == "granted" for k, _, _ in self.items), timeout)
        assert ok, "%s: not granted within %.1fs; got %s" % (self.what, timeout, self.summary())
        return self.granted

    def assert_shape(self):
        """Zero or more queued, then at most one granted, nothing after it."""
        kinds = self.kinds()
        assert all(k in ("queued", "granted") for k in kinds), kinds
        assert kinds.count("granted") <= 1, kinds
        if "granted" in kinds:
            assert kinds[-1] == "granted", kinds

    def cancel(self):
        self.call.cancel()


class WatchStream(_Recorder):
    """One Watch call read on a background thread."""

    def __init__(self, stub, key="", prefix="", timeout=60.0):
        super().__init__()
        self.stub = stub
        self.key = key
        self.prefix = prefix
        self.what = "Watch(%s)" % (key or prefix + "*")
        self.call = stub.Watch(pb.WatchRequest(key=key, prefix=prefix), timeout=timeout)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            for ev in self.call:
                self._add("event", ev)
            self._end(OK, "")
        except grpc.RpcError as e:
            self._end(e.code(), e.details())

    def events(self):
        with self.cond:
            return [m for _, m, _ in self.items]

    def clear(self):
        with self.cond:
            self.items = []

    def wait_event(self, pred, timeout=5.0):
        """The first recorded event with pred(event) true, else fail."""
        def find():
            for _, m, _ in self.items:
                if pred(m):
                    return m
            return None
        ev = self._wait(find, timeout)
        assert ev is not None, "%s: expected event not seen within %.1fs; got %s" % (
            self.what, timeout, [fmt_event(e) for e in self.events()])
        return ev

    def sync(self, timeout=10.0):
        """Makes sure the watch is live in the server: acquires and releases
        a key it covers until the watch reports it, then forgets those events.
        The key (or prefix + "sync") must be free."""
        key = self.key or self.prefix + "sync"
        owner = "sync-" + uuid.uuid4().hex[:8]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            g = grant(self.stub, key, owner, wait_ms=5000)
            release(self.stub, key, g.token)
            seen = self._wait(lambda: any(m.type == pb.LockEvent.RELEASED and m.owner == owner
                                          for _, m, _ in self.items), 0.5)
            if seen:
                self.clear()
                return
            assert not self.ended, "%s ended: %s" % (self.what, self.summary())
        raise AssertionError("%s never reported events for %s" % (self.what, key))

    def cancel(self):
        self.call.cancel()


def fmt_event(ev):
    return "%s %s owner=%r f=%d" % (pb.LockEvent.Type.Name(ev.type), ev.key, ev.owner, ev.fencing)


def acquire(stub, key="", owner="", ttl_ms=0, wait_ms=0, mode=LEASE, pool=None, devices=0,
            timeout=30.0, request=None, count=0):
    """A LEASE Acquire run to its end. Returns (events, code, details, seconds)."""
    req = request if request is not None else acquire_request(key, owner, ttl_ms, wait_ms, mode, pool, devices,
                                                              count)
    t0 = time.monotonic()
    events = []
    try:
        for ev in stub.Acquire(req, timeout=timeout):
            events.append(ev)
        code, details = OK, ""
    except grpc.RpcError as e:
        code, details = e.code(), e.details() or ""
    return events, code, details, time.monotonic() - t0


def grant(stub, key="", owner="", ttl_ms=0, wait_ms=0, pool=None, devices=0, count=0):
    """A LEASE Acquire that must succeed; returns the Granted message."""
    events, code, details, _ = acquire(stub, key, owner, ttl_ms, wait_ms, LEASE, pool, devices, count=count)
    assert code == OK, "Acquire(%s) -> %s %r" % (key or pool, code, details)
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds and kinds[-1] == "granted" and kinds.count("granted") == 1, kinds
    return events[-1].granted


def rpc_error(fn, *args, **kwargs):
    """Runs a unary RPC that must fail; returns (code, details)."""
    try:
        resp = fn(*args, timeout=10.0, **kwargs)
    except grpc.RpcError as e:
        return e.code(), e.details() or ""
    raise AssertionError("expected an error, got %r" % (resp,))


def release(stub, key, token):
    resp = stub.Release(pb.ReleaseRequest(key=key, token=token), timeout=10.0)
    assert resp.released, "Release(%s) -> %r" % (key, resp)
    return resp


def renew(stub, key, token, ttl_ms=0):
    return stub.Renew(pb.RenewRequest(key=key, token=token, ttl_ms=ttl_ms), timeout=10.0)


def describe(stub, key):
    return stub.Describe(pb.DescribeRequest(key=key), timeout=10.0)


def wait_until(pred, timeout=5.0, interval=0.02):
    """Polls pred() until true; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)
