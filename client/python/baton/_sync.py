"""The thread-safe, blocking client.

Why it is built this way (measured on a 2-vCPU VM, see docs/RESULTS.md):
every call runs on the caller's own thread; a thread wake between the
caller and the wire costs more here than anything else a lock cycle does.

A stream-mode lock (the default) is held on the client's Session stream
(_lane.py): acquire and release are one message each way on a stream that
is already open, sent and read by the caller itself, not a new gRPC call
each (about 30% less time per `with client.lock()` cycle, 40% less client
CPU). The Session is a lane one thread drives at a time; only acquires that
do not wait use it (a busy key is then waited for on an Acquire stream of
the caller's own), and a thread that finds the lane taken uses the public
per-call path below instead of waiting for it. A lock held longer than
MONITOR_DELAY gets a monitor thread that polls the Session to report a loss.

The public per-call path (also all of it where grpcio's internal
segregated call is missing): Acquire, a server stream, runs on the caller's
thread because the channel is opened with grpcio's
SingleThreadedUnaryStream option (the caller reads its own completion queue
instead of waiting for grpcio's polling thread to wake it). After the grant
of a stream-mode lock a monitor thread (from a small pool of idle ones)
reads the stream's end: released by us (nothing to report), or lost
(force-released, expired, batond gone, keepalive timed out) -> .lost and
on_lost. Releasing sends Release with the token first, so the key is free
when release() returns, then the stream ends by itself.

A lease is renewed by one renewer thread per client at a third of its TTL,
and reported lost when the server says the token no longer holds it, or a
fifth of its TTL before it runs out while renewals keep failing.
"""
import heapq
import threading
import time

import grpc
import grpc.experimental

from baton import _common as c
from baton import _lane
from baton._common import BatonError, Busy, LockLost, Unavailable, InvalidArgument  # noqa: F401
from baton.v1 import lock_pb2 as pb
from baton.v1 import lock_pb2_grpc as rpc

_OK = grpc.StatusCode.OK
_CANCELLED = grpc.StatusCode.CANCELLED


class _Pool:
    """Idle daemon threads that run one function each. Daemon threads never
    hold up interpreter exit (a monitor may sit on a held lock forever)."""

    def __init__(self, name):
        self._name = name
        self._mu = threading.Lock()
        self._idle = []  # [threading.Event, slot]

    def submit(self, fn):
        with self._mu:
            w = self._idle.pop() if self._idle else None
        if w is None:
            w = [threading.Event(), None]
            t = threading.Thread(target=self._run, args=(w,), name=self._name, daemon=True)
            w[1] = fn
            t.start()
            return
        w[1] = fn
        w[0].set()

    def _run(self, w):
        while True:
            fn, w[1] = w[1], None
            try:
                fn()
            except BaseException:  # a monitor never raises; nothing to do if one did
                pass
            w[0].clear()
            with self._mu:
                if len(self._idle) >= 64:
                    return
                self._idle.append(w)
            w[0].wait()


_monitors = _Pool("baton-monitor")

# A stream-mode lock gets a monitor thread once it has been held this long
# (checked every MONITOR_TICK): a lock held for less never wakes a second
# thread, which on a 2-vCPU machine is a good part of a short hold's cost.
# Lost-lock reports come at most this much later (still well within 3 s).
MONITOR_DELAY = 0.1
MONITOR_TICK = 0.05


class _Ticker:
    """Hands stream-mode locks held longer than MONITOR_DELAY to monitors."""

    def __init__(self):
        self._mu = threading.Lock()
        self._pending = {}  # id(lock) -> lock
        self._running = False

    def add(self, lock):
        lock._since = time.monotonic()
        with self._mu:
            self._pending[id(lock)] = lock
            if self._running:
                return
            self._running = True
        threading.Thread(target=self._run, name="baton-ticker", daemon=True).start()

    def remove(self, lock):
        """True if lock had no monitor yet (the caller owns its call)."""
        with self._mu:
            return self._pending.pop(id(lock), None) is not None

    def _run(self):
        idle = 0.0
        while True:
            time.sleep(MONITOR_TICK)
            due = []
            now = time.monotonic()
            with self._mu:
                for k, lock in list(self._pending.items()):
                    if now - lock._since >= MONITOR_DELAY:
                        due.append(self._pending.pop(k))
                if self._pending or due:
                    idle = 0.0
                else:
                    idle += MONITOR_TICK
                    if idle >= 5.0:  # nothing to watch for 5 s: the thread ends
                        self._running = False
                        return
            for lock in due:
                _monitors.submit(lock._monitor)


_ticker = _Ticker()


def _call_on_lost(lock):
    cb = lock._on_lost
    if cb is None:
        return
    try:
        cb(lock)
    except Exception:
        import traceback
        traceback.print_exc()


class Lock:
    """A held lock. .key, .token, .fencing (pass it to what you write to),
    .device (pool device index, else -1), .devices, .fencings, .device_names
    (every device of a pool grant: Pool.count of them; names when the pool has
    them), .ttl (seconds), .mode, .owner,
    .lost (bool), .lost_reason. A context manager: leaving releases."""

    __slots__ = ("_client", "key", "token", "fencing", "device", "devices", "fencings", "device_names", "ttl",
                 "mode", "owner", "_call", "_session", "_sid", "_watched", "_mu",
                 "_state", "lost_reason", "_on_lost", "_renew_at", "_lost_at", "_env", "_since", "__weakref__")

    _HELD, _RELEASING, _RELEASED, _LOST = range(4)

    def __init__(self, client, g, mode, owner, call, on_lost, session=None, sid=0):
        self._client = client
        self.key = g.key
        self.token = g.token
        self.fencing = g.fencing
        self.device = g.device
        self.devices, self.fencings, self.device_names = c.grant_devices(g)
        self.ttl = g.ttl_ms / 1000.0
        self.mode = mode
        self.owner = owner
        self._call = call
        self._session = session  # held by the client's Session (sid: its acquire's id), not a call
        self._sid = sid
        self._watched = False
        self._mu = threading.Lock()
        self._state = Lock._HELD
        self.lost_reason = None
        self._on_lost = on_lost
        self._env = None

    @property
    def lost(self):
        return self._state == Lock._LOST

    @property
    def held(self):
        return self._state == Lock._HELD

    def __repr__(self):
        st = ("held", "releasing", "released", "lost")[self._state]
        return "<baton.Lock %s fencing=%d %s %s>" % (self.key, self.fencing, self.mode, st)

    def _mark_lost(self, reason):
        """True if this call marked it lost (the caller then reports it)."""
        with self._mu:
            if self._state != Lock._HELD:
                return False
            self._state = Lock._LOST
            self.lost_reason = reason
        self._client._forget(self)
        return True

    # -- stream mode -------------------------------------------------------
    def _monitor(self):
        """On a monitor thread: waits for the Acquire stream's end (or, for a
        session-held lock, polls the Session while it is held)."""
        if self._session is not None:
            self._session.watch(self)
            return
        call = self._call
        try:
            for _ in call:
                pass
            code, details = _OK, ""
        except grpc.RpcError as e:
            code, details = e.code(), e.details() or ""
        except Exception as e:  # a closed channel
            code, details = None, str(e)
        if self._state != Lock._HELD:
            return  # released (or being released) by us
        if code == _OK:
            reason = "released by its token elsewhere"
        elif code == grpc.StatusCode.UNAVAILABLE:
            reason = "connection to batond lost: " + details
        else:
            reason = "%s: %s" % (code.name if code else "error", details)
        if self._mark_lost("lock %r lost: %s" % (self.key, reason)):
            _call_on_lost(self)

    # -- API -----------------------------------------------------------------
    def release(self):
        """Releases the lock; the key is free when this returns. Raises
        LockLost if it had been lost (or the token no longer holds it), and
        Unavailable if batond cannot be reached (a stream-mode lock is then
        released by batond when it sees the stream end). Releasing twice is
        a no-op."""
        with self._mu:
            st = self._state
            if st == Lock._HELD:
                self._state = Lock._RELEASING
        if st == Lock._LOST:
            self._restore_env()
            raise LockLost(self.lost_reason or "lock %r was lost" % self.key)
        if st != Lock._HELD:
            return
        client = self._client
        client._forget(self)
        unwatched = self._call is not None and _ticker.remove(self)
        s = self._session
        if s is not None:
            _ticker.remove(self)
            s.unhold(self)
            if s.lane.acquire(blocking=False):
                try:
                    self._release_on(s)
                    return
                except _lane.SessionEnded:
                    pass  # batond released it with the Session, or the unary call below says so
                finally:
                    s.leave(_monitors.submit)
        try:
            client._stub().Release(pb.ReleaseRequest(key=self.key, token=self.token),
                                   timeout=c.CALL_TIMEOUT, metadata=client._md)
        except grpc.RpcError as e:
            err = c.error_from_rpc(e, "release %s" % self.key)
            if self._call is not None:
                self._call.cancel()  # the end of the stream releases it, whatever happened
            with self._mu:
                if isinstance(err, LockLost):
                    self._state = Lock._LOST
                    self.lost_reason = err.args[0]
                else:
                    self._state = Lock._RELEASED
            raise err
        finally:
            self._restore_env()
        self._state = Lock._RELEASED
        if unwatched:
            self._drain()

    def _release_on(self, s):
        """Releases through the Session (its lane held); raises SessionEnded."""
        try:
            _, r = s.request(pb.SessionRequest(release=pb.ReleaseRequest(key=self.key, token=self.token)))
        except _lane.SessionEnded:
            raise
        except BaseException:
            s.abandon()  # batond releases what the Session held: this lock too
            self._state = Lock._RELEASED
            self._restore_env()
            raise
        self._restore_env()
        if r.HasField("status"):
            err = c.error_from_rpc(_lane.status_of(r.status), "release %s" % self.key)
            with self._mu:
                if isinstance(err, LockLost):
                    self._state = Lock._LOST
                    self.lost_reason = err.args[0]
                else:
                    self._state = Lock._RELEASED
            raise err
        self._state = Lock._RELEASED

    def _drain(self):
        """Reads the end of a stream no monitor reads (batond ends it when
        the lock is released); a lost end is for lost locks to report."""
        try:
            for _ in self._call:
                pass
        except grpc.RpcError:
            pass

    def renew(self, ttl=None):
        """Extends the lock's TTL (default: the TTL it was granted with) and
        returns the new TTL in seconds. Raises LockLost if no longer held."""
        if self._state == Lock._LOST:
            raise LockLost(self.lost_reason or "lock %r was lost" % self.key)
        if self._state != Lock._HELD:
            raise LockLost("lock %r was released" % self.key)
        ms = c.ttl_ms(ttl) if ttl is not None else int(self.ttl * 1000)
        client = self._client
        try:
            r = client._stub().Renew(pb.RenewRequest(key=self.key, token=self.token, ttl_ms=ms),
                                     timeout=c.CALL_TIMEOUT, metadata=client._md)
        except grpc.RpcError as e:
            err = c.error_from_rpc(e, "renew %s" % self.key)
            if isinstance(err, LockLost) and self._mark_lost(err.args[0]):
                _call_on_lost(self)
            raise err
        self.ttl = r.ttl_ms / 1000.0
        if self.mode == "lease":
            client._renewer().schedule(self)
        return self.ttl

    def _restore_env(self):
        env, self._env = self._env, None
        if env is not None:
            c.swap_env("CUDA_VISIBLE_DEVICES", env[0])

    def __enter__(self):
        return self

    def __exit__(self, et, ev, tb):
        try:
            self.release()
        except BatonError:
            if et is None:
                raise
        return False


class _Renewer:
    """One thread per client renewing its leases at a third of their TTL."""

    def __init__(self, client):
        self._client = client
        self._cv = threading.Condition()
        self._heap = []
        self._seq = 0
        self._closed = False
        threading.Thread(target=self._run, name="baton-renewer", daemon=True).start()

    def schedule(self, lock, first=False):
        now = time.monotonic()
        with self._cv:
            if first:
                lock._lost_at = now + lock.ttl - lock.ttl / c.LEASE_MARGIN
            lock._renew_at = now + lock.ttl / 3.0
            self._seq += 1
            heapq.heappush(self._heap, (lock._renew_at, self._seq, lock))
            self._cv.notify()

    def close(self):
        with self._cv:
            self._closed = True
            self._heap.clear()
            self._cv.notify()

    def _run(self):
        while True:
            with self._cv:
                while not self._closed and (not self._heap or self._heap[0][0] > time.monotonic()):
                    self._cv.wait(None if not self._heap else self._heap[0][0] - time.monotonic())
                if self._closed:
                    return
                due, _, lock = heapq.heappop(self._heap)
            if lock._state != Lock._HELD or due != lock._renew_at:
                continue  # released, lost, or rescheduled since
            self._renew(lock)

    def _renew(self, lock):
        client = self._client
        now = time.monotonic()
        try:
            r = client._stub().Renew(pb.RenewRequest(key=lock.key, token=lock.token, ttl_ms=int(lock.ttl * 1000)),
                                     timeout=max(0.2, min(c.CALL_TIMEOUT, lock.ttl / 3.0)), metadata=client._md)
        except (grpc.RpcError, ValueError) as e:  # ValueError: the channel was closed
            err = c.error_from_rpc(e, "renew %s" % lock.key) if isinstance(e, grpc.RpcError) \
                else Unavailable("renew %s: %s" % (lock.key, e))
            if isinstance(err, LockLost):
                self._lost(lock, err.args[0])
                return
            if time.monotonic() >= lock._lost_at:
                self._lost(lock, "lease %r lost: not renewed in time (%s)" % (lock.key, err.args[0]))
                return
            retry = min(1.0, lock.ttl / 10.0)
            with self._cv:
                lock._renew_at = min(time.monotonic() + retry, lock._lost_at)
                self._seq += 1
                heapq.heappush(self._heap, (lock._renew_at, self._seq, lock))
            return
        lock.ttl = r.ttl_ms / 1000.0
        lock._lost_at = now + lock.ttl - lock.ttl / c.LEASE_MARGIN
        with self._cv:
            lock._renew_at = now + lock.ttl / 3.0
            self._seq += 1
            heapq.heappush(self._heap, (lock._renew_at, self._seq, lock))

    def _lost(self, lock, reason):
        if lock._mark_lost(reason) and lock._on_lost is not None:
            threading.Thread(target=_call_on_lost, args=(lock,), name="baton-on-lost", daemon=True).start()


class _Holding:
    """What client.lock() / client.gpu() return: a context manager that
    acquires on entry and releases on exit."""

    __slots__ = ("_client", "_args", "_lock", "_cuda")

    def __init__(self, client, args, cuda=False):
        self._client = client
        self._args = args
        self._lock = None
        self._cuda = cuda

    def __enter__(self):
        lock = self._client._acquire(*self._args)
        if self._cuda:
            lock._env = (c.swap_env("CUDA_VISIBLE_DEVICES", c.cuda_visible_devices(lock)),)
        self._lock = lock
        return lock

    def __exit__(self, et, ev, tb):
        lock, self._lock = self._lock, None
        if lock is not None:
            return lock.__exit__(et, ev, tb)
        return False


class Watch:
    """An iterator of Events for a key or prefix; close() (or leaving a
    `with` block) ends it. Only what happens after the server registered
    the watch is reported."""

    def __init__(self, call):
        self._call = call
        self._closed = False

    def __iter__(self):
        return self

    def __next__(self):
        if self._closed:
            raise StopIteration
        try:
            return c.Event.from_pb(next(self._call))
        except grpc.RpcError as e:
            if self._closed or e.code() == _CANCELLED:
                raise StopIteration from None
            raise c.error_from_rpc(e, "watch") from None

    def close(self):
        self._closed = True
        self._call.cancel()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class Client:
    """A Baton client: thread-safe, a context manager (closing releases
    every lock it still holds).

    target: "host:port" (or any gRPC target, e.g. "unix:/run/batond.sock").
    owner: shown to others as the holder; default "host/pid".
    token: sent as "authorization: Bearer <token>" on every call.
    tls: None (plaintext), True (system roots), a CA file path, PEM bytes,
         or grpc.ChannelCredentials.
    """

    def __init__(self, target=c.DEFAULT_TARGET, *, owner=None, token=None, tls=None, options=None):
        self.target = target
        self.owner = owner
        self._md = c.call_metadata(token)
        self._creds = c.credentials(tls)
        self._options = list(c.KEEPALIVE_OPTIONS) + [
            (grpc.experimental.ChannelOptions.SingleThreadedUnaryStream, 1)] + list(options or [])
        self._mu = threading.Lock()
        self._held = {}  # id(lock) -> lock, for close()
        self._renew = None
        self._closed = False
        self._gen = None
        self._channel = None
        self._stub_ = None
        self._session_ = None
        self._lane_ok = _lane.ENABLED  # False: never (or this grpcio cannot drive a Session)
        self._stub()

    # -- plumbing --------------------------------------------------------------
    def _stub(self):
        stub = self._stub_
        if stub is not None and self._gen == c.fork_generation:
            return stub
        with self._mu:
            if self._closed:
                raise BatonError("client is closed")
            if self._stub_ is None or self._gen != c.fork_generation:
                # First use, or a forked child (the parent's channel is not
                # usable there). gRPC does not support using it after fork
                # once it has connected: make a Client in each process
                # (baton.celery does so for prefork workers).
                if self._creds is None:
                    self._channel = grpc.insecure_channel(self.target, options=self._options)
                else:
                    self._channel = grpc.secure_channel(self.target, self._creds, options=self._options)
                self._stub_ = rpc.LockServiceStub(self._channel)
                if self._gen is not None:
                    self._held = {}
                    self._renew = None
                self._session_ = None  # a forked child never touches its parent's
                self._gen = c.fork_generation
            return self._stub_

    def _session(self):
        """The client's Session with its lane held by the caller (release it
        with leave()), or None: busy, or not usable (public path then)."""
        self._stub()
        s = self._session_
        if s is None or not s.alive:
            if not self._lane_ok:
                return None
            with self._mu:
                s = self._session_
                if s is None or not s.alive:
                    s = _lane.open_session(self._channel, self._md)
                    if s is None:
                        self._lane_ok = False
                        return None
                    s.on_lost = self._session_lost
                    self._session_ = s
        if not s.lane.acquire(blocking=False):
            return None
        if not s.alive:
            s.lane.release()
            return None
        return s

    @staticmethod
    def _session_lost(lock, reason):
        if lock._mark_lost(reason):
            _monitors.submit(lambda: _call_on_lost(lock))

    def _acquire_on(self, s, req, mode, owner, on_lost, what):
        """A stream-mode acquire through the Session (its lane held), as a
        try: the Lock, or None if busy (Busy raised when the caller would
        not wait anyway). Raises SessionEnded."""
        wait = req.wait_ms
        req.wait_ms = 0
        sid = 0
        try:
            sid, r = s.request(pb.SessionRequest(acquire=req))
            if r.HasField("granted"):
                lock = Lock(self, r.granted, mode, owner, None, on_lost, s, sid)
                if not s.hold(sid, lock):
                    raise _lane.SessionEnded(s.end_reason)
                return lock
        except _lane.SessionEnded:
            raise
        except BaseException:
            s.abandon()  # batond ends the acquire (and a grant) with the Session
            raise
        finally:
            req.wait_ms = wait
        err = c.error_from_rpc(_lane.status_of(r.status), what, acquiring=True)
        if isinstance(err, Busy) and wait != 0:
            return None  # the caller waits on an Acquire stream
        raise err

    def _renewer(self):
        with self._mu:
            if self._renew is None:
                self._renew = _Renewer(self)
            return self._renew

    def _forget(self, lock):
        with self._mu:
            self._held.pop(id(lock), None)

    def _acquire(self, key, ttl, wait, mode, owner, on_lost, pool=None, devices=0, count=0, weight=0):
        owner = owner or self.owner or c.default_owner()
        req = c.acquire_request(key, owner, ttl, wait, mode, pool, devices, count, weight)
        stub = self._stub()
        stream = req.mode == pb.HOLD_MODE_STREAM
        what = "acquire %s" % (key if pool is None else "pool " + pool)
        s = self._session() if stream else None
        if s is not None:
            try:
                lock = self._acquire_on(s, req, mode, owner, on_lost, what)
            except _lane.SessionEnded:
                lock = None  # tried again below, on a call of its own
            finally:
                s.leave(_monitors.submit)
            if lock is not None:
                with self._mu:
                    self._held[id(lock)] = lock
                _ticker.add(lock)
                return lock
        call = stub.Acquire(req, metadata=self._md)
        g = None
        try:
            for ev in call:
                if ev.HasField("granted"):
                    g = ev.granted
                    break
        except grpc.RpcError as e:
            raise c.error_from_rpc(e, what, acquiring=True) from None
        except BaseException:
            call.cancel()  # interrupted while waiting: leave the queue (or release)
            raise
        if g is None:
            raise BatonError("%s: the stream ended without a grant" % what)
        lock = Lock(self, g, mode, owner, call if stream else None, on_lost)
        with self._mu:
            self._held[id(lock)] = lock
        if stream:
            _ticker.add(lock)
        else:
            for _ in call:  # the stream's OK end follows the grant at once
                pass
            self._renewer().schedule(lock, first=True)
        return lock

    # -- API -------------------------------------------------------------------
    def lock(self, key, *, ttl=None, wait=None, mode="stream", owner=None, on_lost=None):
        """A context manager holding `key` while the block runs:

            with client.lock("video:123", wait="30s") as lock:
                transcode(fencing=lock.fencing)

        wait: None = up to the server's maximum, 0 = try once; raises Busy.
        mode: "stream" (held while the block runs; dies with the process) or
        "lease" (lives for ttl, renewed in the background at ttl/3).
        on_lost(lock) is called (on another thread) if the lock is lost."""
        return _Holding(self, (key, ttl, wait, mode, owner, on_lost))

    def acquire(self, key, *, ttl=None, wait=None, mode="stream", owner=None, on_lost=None):
        """Acquires and returns a Lock (release it, or use it in `with`)."""
        return self._acquire(key, ttl, wait, mode, owner, on_lost)

    def try_lock(self, key, *, ttl=None, mode="stream", owner=None, on_lost=None):
        """The Lock if `key` was free, else None (never waits)."""
        try:
            return self._acquire(key, ttl, 0, mode, owner, on_lost)
        except Busy:
            return None

    def gpu(self, pool, devices, *, count=1, weight=0, wait=None, ttl=None, mode="stream", owner=None,
            on_lost=None):
        """A context manager holding one free device of `pool` (of
        `devices`), yielding its Lock (.device is the index), with
        CUDA_VISIBLE_DEVICES set to it for the block (the previous value is
        restored after; the environment is process-wide). count=2: two
        devices at once, all or none (.devices; CUDA_VISIBLE_DEVICES "1,3", or
        the devices' configured names). weight=24: a share of each device's
        capacity (pools configured with one)."""
        return _Holding(self, (None, ttl, wait, mode, owner, on_lost, pool, devices, count, weight), cuda=True)

    def watch(self, key=None, prefix=None):
        """Events (ACQUIRED, RELEASED, EXPIRED, FORCE_RELEASED) for a key or
        a prefix, as an iterator; close() it when done."""
        req = c.watch_request(key, prefix)
        return Watch(self._stub().Watch(req, metadata=self._md))

    def describe(self, key):
        c.check_key(key)
        try:
            r = self._stub().Describe(pb.DescribeRequest(key=key), timeout=c.CALL_TIMEOUT, metadata=self._md)
        except grpc.RpcError as e:
            raise c.error_from_rpc(e, "describe %s" % key) from None
        return c.Description(key, r)

    def force_release(self, key, fencing):
        """Releases `key` only if its holder has this fencing token (the one
        you looked at). True if released, False if someone else (or nobody)
        holds it now."""
        c.check_key(key)
        try:
            r = self._stub().ForceRelease(pb.ForceReleaseRequest(key=key, fencing=int(fencing)),
                                          timeout=c.CALL_TIMEOUT, metadata=self._md)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.FAILED_PRECONDITION:
                return False
            raise c.error_from_rpc(e, "force_release %s" % key) from None
        return r.released

    def close(self):
        """Releases every lock still held, then closes the connection."""
        with self._mu:
            if self._closed:
                return
            held = list(self._held.values()) if self._gen == c.fork_generation else []
        for lock in held:
            try:
                lock.release()
            except BatonError:
                pass
        with self._mu:
            self._closed = True
            self._stub_ = None
            renew, self._renew = self._renew, None
            ch = self._channel if self._gen == c.fork_generation else None
            session, self._session_ = self._session_ if ch is not None else None, None
        if renew is not None:
            renew.close()
        if session is not None:
            session.close()
        if ch is not None:
            ch.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
