"""The asyncio client: the same API as baton.Client, awaited.

    client = baton.aio.Client("127.0.0.1:50051")
    async with client.lock("video:123", wait="30s") as lock:
        await transcode(fencing=lock.fencing)

Cancellation-safe: a task cancelled anywhere inside `async with
client.lock(...)` (while waiting, while holding, while releasing) never
leaves the lock held. That is why every acquire, renew and release goes
over one Session stream per client rather than its own RPC:

* A request is handed to a writer task with a non-blocking put, so once an
  operation has started its request reaches batond even if the caller is
  cancelled the next instant; nothing is ever half-sent.
* An acquire interrupted by a cancel sends SessionCancel for its id and a
  background task reads the acquire's last answer: still waiting ->
  batond dequeues it; a stream-mode lock already granted -> batond releases
  it; a lease granted before the cancel arrived -> released with its token.
  (With one Acquire RPC per lock a lease granted in the instant of a cancel
  would stay held until its TTL: the grant is lost with the cancelled read.)
* A release runs in its own task; a cancel only stops the waiting for it.

client.close() (or leaving `async with client`) waits for these background
tasks, so after it every cancelled lock is free.
"""
import asyncio
import inspect
import time

import grpc
import grpc.aio

from baton import _common as c
from baton._common import (BatonError, Busy, Description, Event, InvalidArgument, LockLost,  # noqa: F401
                           Unavailable)
from baton.v1 import lock_pb2 as pb
from baton.v1 import lock_pb2_grpc as rpc

__all__ = ["Client", "Lock", "Watch", "BatonError", "Busy", "LockLost", "Unavailable", "InvalidArgument"]

_FINAL = ("granted", "status", "renew", "release")


def _status_error(st, what, acquiring):
    """A BatonError from a SessionStatus (code as the RPC would end)."""
    try:
        code = next(s for s in grpc.StatusCode if s.value[0] == st.code)
    except StopIteration:
        code = grpc.StatusCode.UNKNOWN

    class _E:
        def code(self):
            return code

        def details(self):
            return st.message

    return c.error_from_rpc(_E(), what, acquiring)


class _Op:
    """One operation on a session: its responses, in order."""

    __slots__ = ("id", "q", "lock")

    def __init__(self, id):
        self.id = id
        self.q = asyncio.Queue()
        self.lock = None  # a stream-mode Lock held by this acquire

    async def final(self):
        """The next response that is not `queued` (None: the session broke)."""
        while True:
            r = await self.q.get()
            if r is None or r.WhichOneof("result") != "queued":
                return r


class _Session:
    def __init__(self, client, stub):
        self.client = client
        self.call = stub.Session(metadata=client._md)
        self.ops = {}
        self.next_id = 0
        self.out = asyncio.Queue()
        self.error = None  # the BatonError that ended it
        self.writer = asyncio.ensure_future(self._write())
        self.reader = asyncio.ensure_future(self._read())

    @property
    def dead(self):
        return self.error is not None

    def start(self, **op):
        """Registers an operation and queues its request (no await: once this
        returns, the request will be sent unless the session breaks)."""
        self.next_id += 1
        o = _Op(self.next_id)
        self.ops[o.id] = o
        self.out.put_nowait(pb.SessionRequest(id=o.id, **op))
        return o

    def cancel(self, o):
        if not self.dead and o.id in self.ops:
            self.out.put_nowait(pb.SessionRequest(id=o.id, cancel=pb.SessionCancel()))

    def end(self, o):
        self.ops.pop(o.id, None)

    async def _write(self):
        try:
            while True:
                req = await self.out.get()
                if req is None:
                    await self.call.done_writing()
                    return
                await self.call.write(req)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError, grpc.aio.UsageError):
            pass  # the reader reports how the call ended
        except asyncio.CancelledError:
            pass

    async def _read(self):
        err = None
        try:
            while True:
                r = await self.call.read()
                if r is grpc.aio.EOF:
                    code, details = await self.call.code(), await self.call.details()
                    err = BatonError("session ended: %s %s" % (code, details), code, details)
                    break
                o = self.ops.get(r.id)
                if o is None:
                    continue
                if o.lock is not None:
                    self.end(o)
                    o.lock._ended(r)  # a held stream-mode lock ended (released or lost)
                else:
                    o.q.put_nowait(r)
        except grpc.aio.AioRpcError as e:
            err = c.error_from_rpc(e, "session")
        except asyncio.CancelledError:
            err = Unavailable("client closed")
        except Exception as e:  # noqa: BLE001
            err = BatonError("session: %r" % (e,))
        self.error = err
        self.writer.cancel()
        ops, self.ops = list(self.ops.values()), {}
        for o in ops:
            if o.lock is not None:
                o.lock._ended(None)
            else:
                o.q.put_nowait(None)

    def close(self):
        self.out.put_nowait(None)
        self.call.cancel()


class Lock:
    """A held lock (see baton.Lock); release() and renew() are coroutines."""

    _HELD, _RELEASING, _RELEASED, _LOST = range(4)

    def __init__(self, client, sess, op, g, mode, owner, on_lost):
        self._client = client
        self._sess = sess
        self._op = op
        self.key = g.key
        self.token = g.token
        self.fencing = g.fencing
        self.device = g.device
        self.devices, self.fencings, self.device_names = c.grant_devices(g)
        self.ttl = g.ttl_ms / 1000.0
        self.mode = mode
        self.owner = owner
        self._on_lost = on_lost
        self._state = Lock._HELD
        self.lost_reason = None
        self._renewer = None
        self._env = None

    @property
    def lost(self):
        return self._state == Lock._LOST

    @property
    def held(self):
        return self._state == Lock._HELD

    def __repr__(self):
        st = ("held", "releasing", "released", "lost")[self._state]
        return "<baton.aio.Lock %s fencing=%d %s %s>" % (self.key, self.fencing, self.mode, st)

    def _mark_lost(self, reason):
        if self._state != Lock._HELD:
            return
        self._state = Lock._LOST
        self.lost_reason = reason
        self._client._held.discard(self)
        if self._renewer is not None and self._renewer is not asyncio.current_task():
            self._renewer.cancel()
        cb = self._on_lost
        if cb is not None:
            try:
                res = cb(self)
                if inspect.isawaitable(res):
                    self._client._track(asyncio.ensure_future(res))
            except Exception:
                import traceback
                traceback.print_exc()

    def _ended(self, r):
        """The reader: this stream-mode lock's acquire got its last answer."""
        if self._state != Lock._HELD:
            return  # we released it
        if r is None:
            reason = "connection to batond lost: %s" % (self._sess.error,)
        else:
            st = r.status
            reason = "%s" % (st.message or "ended with code %d" % st.code)
        self._mark_lost("lock %r lost: %s" % (self.key, reason))

    async def release(self):
        """Releases the lock; the key is free when this returns (also when
        the awaiting task is cancelled meanwhile: the release goes on)."""
        if self._state == Lock._LOST:
            self._restore_env()
            raise LockLost(self.lost_reason or "lock %r was lost" % self.key)
        if self._state != Lock._HELD:
            return
        self._state = Lock._RELEASING
        self._client._held.discard(self)
        self._restore_env()
        if self._renewer is not None:
            self._renewer.cancel()
        task = asyncio.ensure_future(self._release())
        self._client._track(task)
        await asyncio.shield(task)

    async def _release(self):
        sess = self._sess
        if sess.dead:
            self._state = Lock._RELEASED
            if self.mode == "stream":
                return  # the session's end released it
            raise Unavailable("release %s: %s" % (self.key, sess.error))
        op = sess.start(release=pb.ReleaseRequest(key=self.key, token=self.token))
        r = await op.final()
        sess.end(op)
        if r is not None and r.WhichOneof("result") == "release":
            self._state = Lock._RELEASED
            return
        if r is None:
            self._state = Lock._RELEASED
            if self.mode == "stream":
                return  # the session broke: batond released what it held
            raise Unavailable("release %s: %s" % (self.key, sess.error))
        err = _status_error(r.status, "release %s" % self.key, False)
        if self.mode == "stream" and self._op is not None:
            sess.cancel(self._op)  # whatever went wrong, the hold ends
        if isinstance(err, LockLost):
            self._state = Lock._LOST
            self.lost_reason = err.args[0]
        else:
            self._state = Lock._RELEASED
        raise err

    async def renew(self, ttl=None):
        if self._state == Lock._LOST:
            raise LockLost(self.lost_reason or "lock %r was lost" % self.key)
        if self._state != Lock._HELD:
            raise LockLost("lock %r was released" % self.key)
        ms = c.ttl_ms(ttl) if ttl is not None else int(self.ttl * 1000)
        r = await self._client._unary_op(self._sess, renew=pb.RenewRequest(key=self.key, token=self.token,
                                                                           ttl_ms=ms),
                                         what="renew %s" % self.key)
        if isinstance(r, LockLost):
            self._mark_lost(r.args[0])
        if isinstance(r, BaseException):
            raise r
        self.ttl = r.renew.ttl_ms / 1000.0
        return self.ttl

    async def _renew_loop(self):
        lost_at = time.monotonic() + self.ttl - self.ttl / c.LEASE_MARGIN
        delay = self.ttl / 3.0
        while self._state == Lock._HELD:
            await asyncio.sleep(delay)
            if self._state != Lock._HELD:
                return
            now = time.monotonic()
            sess = self._client._session_now()
            r = await self._client._unary_op(sess, renew=pb.RenewRequest(
                key=self.key, token=self.token, ttl_ms=int(self.ttl * 1000)), what="renew %s" % self.key,
                timeout=max(0.2, self.ttl / 3.0))
            if isinstance(r, LockLost):
                self._mark_lost(r.args[0])
                return
            if isinstance(r, BaseException):
                if time.monotonic() >= lost_at:
                    self._mark_lost("lease %r lost: not renewed in time (%s)" % (self.key, r.args[0]))
                    return
                delay = min(1.0, self.ttl / 10.0, max(0.0, lost_at - time.monotonic()))
                continue
            self.ttl = r.renew.ttl_ms / 1000.0
            lost_at = now + self.ttl - self.ttl / c.LEASE_MARGIN
            delay = self.ttl / 3.0

    def _restore_env(self):
        env, self._env = self._env, None
        if env is not None:
            c.swap_env("CUDA_VISIBLE_DEVICES", env[0])

    async def __aenter__(self):
        return self

    async def __aexit__(self, et, ev, tb):
        try:
            await self.release()
        except BatonError:
            if et is None:
                raise
        return False


class _Holding:
    def __init__(self, client, args, cuda=False):
        self._client = client
        self._args = args
        self._lock = None
        self._cuda = cuda

    async def __aenter__(self):
        lock = await self._client._acquire(*self._args)
        if self._cuda:
            lock._env = (c.swap_env("CUDA_VISIBLE_DEVICES", c.cuda_visible_devices(lock)),)
        self._lock = lock
        return lock

    async def __aexit__(self, et, ev, tb):
        lock, self._lock = self._lock, None
        if lock is not None:
            return await lock.__aexit__(et, ev, tb)
        return False


class Watch:
    """An async iterator of Events; close() ends it."""

    def __init__(self, call):
        self._call = call
        self._closed = False

    def __aiter__(self):
        return self

    async def __anext__(self):
        if self._closed:
            raise StopAsyncIteration
        try:
            ev = await self._call.read()
        except grpc.aio.AioRpcError as e:
            if self._closed or e.code() == grpc.StatusCode.CANCELLED:
                raise StopAsyncIteration from None
            raise c.error_from_rpc(e, "watch") from None
        except asyncio.CancelledError:
            if self._closed:
                raise StopAsyncIteration from None
            raise
        if ev is grpc.aio.EOF:
            code, details = await self._call.code(), await self._call.details()
            if code == grpc.StatusCode.OK or self._closed:
                raise StopAsyncIteration
            raise BatonError("watch: %s %s" % (code, details), code, details)
        return Event.from_pb(ev)

    def close(self):
        self._closed = True
        self._call.cancel()

    async def aclose(self):
        self.close()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        self.close()
        return False


class Client:
    """The asyncio Baton client (see baton.Client for the arguments). Use it
    from one event loop; `async with Client(...)` or `await client.close()`."""

    def __init__(self, target=c.DEFAULT_TARGET, *, owner=None, token=None, tls=None, options=None):
        self.target = target
        self.owner = owner
        self._md = c.call_metadata(token)
        self._creds = c.credentials(tls)
        self._options = list(c.KEEPALIVE_OPTIONS) + list(options or [])
        self._channel = None
        self._stub_ = None
        self._sess = None
        self._held = set()
        self._tasks = set()
        self._closed = False

    def _stub(self):
        if self._closed:
            raise BatonError("client is closed")
        if self._stub_ is None:
            if self._creds is None:
                self._channel = grpc.aio.insecure_channel(self.target, options=self._options)
            else:
                self._channel = grpc.aio.secure_channel(self.target, self._creds, options=self._options)
            self._stub_ = rpc.LockServiceStub(self._channel)
        return self._stub_

    def _session_now(self):
        s = self._sess
        if s is None or s.dead:
            s = self._sess = _Session(self, self._stub())
        return s

    def _track(self, task):
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _unary_op(self, sess, what, timeout=c.CALL_TIMEOUT, **op):
        """A renew on the session: the response message, or the error (returned)."""
        if sess.dead:
            return Unavailable("%s: %s" % (what, sess.error))
        o = sess.start(**op)
        try:
            r = await asyncio.wait_for(o.final(), timeout)
        except asyncio.TimeoutError:
            return Unavailable("%s: no answer within %.1f s" % (what, timeout))
        finally:
            sess.end(o)
        if r is None:
            return Unavailable("%s: %s" % (what, sess.error))
        if r.WhichOneof("result") == "status":
            return _status_error(r.status, what, False)
        return r

    async def _acquire(self, key, ttl, wait, mode, owner, on_lost, pool=None, devices=0, count=0, weight=0):
        owner = owner or self.owner or c.default_owner()
        req = c.acquire_request(key, owner, ttl, wait, mode, pool, devices, count, weight)
        what = "acquire %s" % (key if pool is None else "pool " + pool)
        sess = self._session_now()
        op = sess.start(acquire=req)
        try:
            r = await op.final()
        except BaseException:
            # Cancelled while waiting (or right after the grant arrived):
            # end this acquire at batond and release whatever it got.
            self._track(asyncio.ensure_future(self._abandon(sess, op, mode)))
            raise
        if r is None:
            sess.end(op)
            raise Unavailable("%s: %s" % (what, sess.error))
        if r.WhichOneof("result") != "granted":
            sess.end(op)
            raise _status_error(r.status, what, True)
        stream = mode == "stream"
        lock = Lock(self, sess, op if stream else None, r.granted, mode, owner, on_lost)
        if stream:
            op.lock = lock  # the reader reports its end
            if not op.q.empty():  # ended already (e.g. force-released at once)
                lock._ended(op.q.get_nowait())
                sess.end(op)
        else:
            sess.end(op)
            lock._renewer = asyncio.ensure_future(lock._renew_loop())
        if lock.held:
            self._held.add(lock)
        return lock

    async def _abandon(self, sess, op, mode):
        sess.cancel(op)
        while True:
            r = await op.final()
            if r is None:
                sess.end(op)
                return  # the session broke: batond ended what it held
            kind = r.WhichOneof("result")
            if kind == "granted" and mode == "lease":
                sess.end(op)  # granted before the cancel arrived: the lease stays; release it
                rel = sess.start(release=pb.ReleaseRequest(key=r.granted.key, token=r.granted.token))
                await rel.final()
                sess.end(rel)
                return
            if kind == "status":
                sess.end(op)
                return
            # a stream-mode grant: the cancel releases it and answers `status`

    # -- API -------------------------------------------------------------------
    def lock(self, key, *, ttl=None, wait=None, mode="stream", owner=None, on_lost=None):
        """`async with client.lock(key) as lock:` (see baton.Client.lock).
        on_lost(lock) may be a function or a coroutine function."""
        return _Holding(self, (key, ttl, wait, mode, owner, on_lost))

    async def acquire(self, key, *, ttl=None, wait=None, mode="stream", owner=None, on_lost=None):
        return await self._acquire(key, ttl, wait, mode, owner, on_lost)

    async def try_lock(self, key, *, ttl=None, mode="stream", owner=None, on_lost=None):
        try:
            return await self._acquire(key, ttl, 0, mode, owner, on_lost)
        except Busy:
            return None

    def gpu(self, pool, devices, *, count=1, weight=0, wait=None, ttl=None, mode="stream", owner=None,
            on_lost=None):
        return _Holding(self, (None, ttl, wait, mode, owner, on_lost, pool, devices, count, weight), cuda=True)

    def watch(self, key=None, prefix=None):
        req = c.watch_request(key, prefix)
        return Watch(self._stub().Watch(req, metadata=self._md))

    async def describe(self, key):
        c.check_key(key)
        try:
            r = await self._stub().Describe(pb.DescribeRequest(key=key), timeout=c.CALL_TIMEOUT, metadata=self._md)
        except grpc.aio.AioRpcError as e:
            raise c.error_from_rpc(e, "describe %s" % key) from None
        return Description(key, r)

    async def force_release(self, key, fencing):
        c.check_key(key)
        try:
            r = await self._stub().ForceRelease(pb.ForceReleaseRequest(key=key, fencing=int(fencing)),
                                                timeout=c.CALL_TIMEOUT, metadata=self._md)
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.FAILED_PRECONDITION:
                return False
            raise c.error_from_rpc(e, "force_release %s" % key) from None
        return r.released

    async def wait_idle(self):
        """Waits for background releases (of cancelled or released locks)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self):
        """Releases every lock still held, waits for background releases,
        closes the connection."""
        if self._closed:
            return
        for lock in list(self._held):
            try:
                await lock.release()
            except BatonError:
                pass
        await self.wait_idle()
        self._closed = True
        if self._sess is not None:
            sess, self._sess = self._sess, None
            sess.close()
            await asyncio.gather(sess.reader, sess.writer, return_exceptions=True)
        if self._channel is not None:
            await self._channel.close()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()
        return False
