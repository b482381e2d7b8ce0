"""The sync client's fast path: one Session stream per Client, driven on
the caller's own thread.

Why (measured on the 2-vCPU VM, docs/RESULTS.md): from Python, most of a
lock cycle's cost is grpc core creating a call (a new completion queue,
stream, metadata; about 40 raw clock_gettime syscalls per cycle here). On
an already-open Session stream an acquire or a release is one message each
way, with no new call: the uncontended `with client.lock()` cycle takes
about 30% less time and 40% less client CPU.

grpcio's public API can only drive a bidi stream through a request-iterator
thread and read it through its polling thread (two thread wakes per
operation, more than a new call costs). So the Session is opened with
`segregated_call`, the grpcio-internal call that its own
SingleThreadedUnaryStream option uses: a call with its own completion queue
that the thread calling `next_event` polls. That API is not public: if it is
missing or its signature changed, `open_session` returns None and the client
uses the public per-call path (an Acquire stream per lock) for every call.

The Session is a *lane* that one thread at a time drives (`lane`, a
non-blocking lock): the thread that holds it sends its request and polls
the completion queue until its answer comes, dispatching any other message
on the way (the end of another session-held lock: lost). A thread that
finds the lane busy does not wait for it: it uses the public per-call path.
Only acquires that do not wait go through the lane (wait_ms 0; the caller
waits on an Acquire stream of its own when the key is busy), so the lane is
never held for long.

Session-held locks (HOLD_MODE_STREAM acquired on the Session) live while
the Session does: when the process dies, or its connection does (keepalive),
batond releases them. One held longer than MONITOR_DELAY is `watched`: a
monitor thread then takes the lane and polls the Session until no watched
lock is left, so a lost lock (force-released, expired, batond gone, the
keepalive timed out) is reported within the same bounds as before.

If an exception escapes while a thread drives the lane (a signal handler's
KeyboardInterrupt, say), the Session's state can no longer be trusted: it is
cancelled, which makes batond release whatever it holds, and its locks are
reported lost.
"""
import threading

import grpc

try:
    from grpc._cython import cygrpc as _cygrpc
except ImportError:  # pragma: no cover - a grpcio without it: public path only
    _cygrpc = None

from baton import _common as c
from baton.v1 import lock_pb2 as pb

_METHOD = b"/baton.v1.LockService/Session"
_CODES = {sc.value[0]: sc for sc in grpc.StatusCode}

# False: Clients created from then on use only the public per-call path
# (the tests and the benchmark run both).
ENABLED = True


class SessionEnded(Exception):
    """The Session ended before the operation was answered."""


class _Status:
    """A SessionStatus (or the Session's own end) as error_from_rpc wants it."""

    def __init__(self, code, details):
        self._code = code
        self._details = details

    def code(self):
        return self._code

    def details(self):
        return self._details


def status_of(st):
    return _Status(_CODES.get(st.code, grpc.StatusCode.UNKNOWN), st.message)


def open_session(channel, metadata):
    """A Session on `channel` (a grpc.Channel), or None where this grpcio
    cannot drive one on the caller's thread."""
    if _cygrpc is None:
        return None
    try:
        return Session(channel, metadata)
    except (AttributeError, TypeError):
        return None


class Session:
    __slots__ = ("lane", "alive", "_mu", "_call", "_id", "_due", "_replies", "held", "watched",
                 "closing", "end_reason", "on_lost", "__weakref__")

    def __init__(self, channel, metadata):
        self.lane = threading.Lock()
        self._mu = threading.Lock()  # held, watched, alive (read by other threads)
        cch = channel._channel
        ops = (((_cygrpc.SendInitialMetadataOperation(metadata, 0),), "open"),
               ((_cygrpc.ReceiveInitialMetadataOperation(0),), "md"),
               ((_cygrpc.ReceiveStatusOnClientOperation(0),), "status"))
        args = (0, _METHOD, None, None, metadata, None, ops, _cygrpc.build_census_context())
        try:
            self._call = cch.segregated_call(*args)
        except TypeError:  # grpcio >= 1.62 adds a registered-call handle
            self._call = cch.segregated_call(*args, None)
        # Completions still to come, by tag: "open", "md", "status", and at
        # most one of "recv" (a message read), "sendrecv" (a request sent and
        # a message read, one batch: one completion instead of two).
        self._due = {"open", "md", "status"}
        self._id = 0
        self._replies = {}  # op id -> SessionResponse, for the lane holder
        self.held = {}  # op id -> Lock held by this session
        self.watched = 0  # held locks a monitor must watch
        self.alive = True
        self.closing = False
        self.end_reason = None
        self.on_lost = None  # fn(lock, reason): set by the client

    # -- driving (lane held) -------------------------------------------------
    # A message is read only while someone waits for one (a request's
    # answer, or a monitor): each read armed costs grpc core work, and an
    # answer's batch carries its request.
    def _arm_recv(self):
        if "recv" in self._due or "sendrecv" in self._due:
            return
        if self._call.operate((_cygrpc.ReceiveMessageOperation(0),), "recv"):
            self._due.add("recv")
        else:
            self._end(grpc.StatusCode.UNAVAILABLE, "session closed")

    def _send(self, data):
        while ("send" in self._due or "sendrecv" in self._due) and self.alive:
            self._pump()  # one message in flight at a time (grpc's rule)
        if self.alive:
            if "recv" in self._due:
                ops, tag = (_cygrpc.SendMessageOperation(data, 0),), "send"
            else:
                ops, tag = (_cygrpc.SendMessageOperation(data, 0), _cygrpc.ReceiveMessageOperation(0)), "sendrecv"
            if self._call.operate(ops, tag):
                self._due.add(tag)
            else:
                self._end(grpc.StatusCode.UNAVAILABLE, "session closed")
        if not self.alive:
            self._ended()

    def _ended(self):
        self._drain()
        raise SessionEnded(self.end_reason)

    def _pump(self):
        """Waits for one completion and handles it."""
        ev = self._call.next_event()
        tag = ev.tag
        self._due.discard(tag)
        if tag == "recv" or tag == "sendrecv":
            data = ev.batch_operations[-1].message() if ev.success else None
            if data is None:
                return  # the stream ended: the status follows
            self._dispatch(pb.SessionResponse.FromString(data))
        elif tag == "status":
            op = ev.batch_operations[0]
            self._end(_CODES.get(op.code(), grpc.StatusCode.UNKNOWN), op.details() or "")

    def _dispatch(self, r):
        with self._mu:
            lock = self.held.pop(r.id, None)
            if lock is not None and lock._watched:
                self.watched -= 1
        if lock is not None:
            # The end of a session-held lock we did not release here.
            st = r.status
            if st.code == 0:
                reason = "released by its token elsewhere"
            else:
                reason = "%s: %s" % (_CODES.get(st.code, grpc.StatusCode.UNKNOWN).name, st.message)
            self.on_lost(lock, "lock %r lost: %s" % (lock.key, reason))
        elif r.WhichOneof("result") != "queued":
            self._replies[r.id] = r  # stale ones (a released lock's end) are dropped by request()

    def _end(self, code, details):
        """The Session is over: its locks are gone (batond released them)."""
        with self._mu:
            if not self.alive:
                return
            self.alive = False
            held, self.held = list(self.held.values()), {}
            self.watched = 0
        if code == grpc.StatusCode.UNAVAILABLE:
            self.end_reason = "connection to batond lost: " + details
        else:
            self.end_reason = "%s: %s" % (getattr(code, "name", code), details)
        if not self.closing:
            for lock in held:
                self.on_lost(lock, "lock %r lost: %s" % (lock.key, self.end_reason))

    def _drain(self):
        """After the end: takes the completions still due, so grpcio frees
        the call and its completion queue."""
        while self._due:
            self._pump()

    def request(self, req):
        """Sends req (a SessionRequest without id) and returns (id, the
        answer). Raises SessionEnded."""
        self._id += 1
        sid = req.id = self._id
        self._replies.clear()
        self._send(req.SerializeToString())
        while sid not in self._replies:
            if not self.alive:
                self._ended()
            self._arm_recv()
            self._pump()
        return sid, self._replies.pop(sid)

    def hold(self, sid, lock):
        with self._mu:
            if self.alive:
                self.held[sid] = lock
                return True
        return False

    # -- any thread ------------------------------------------------------------
    def unhold(self, lock):
        """lock is being released by us: its end is no loss."""
        with self._mu:
            if self.held.pop(lock._sid, None) is not None and lock._watched:
                self.watched -= 1

    def watch(self, lock):
        """On a monitor thread: lock has been held a while; poll the Session
        while such locks are held (unless another thread drives it: that one
        hands over when it is done, see leave())."""
        with self._mu:
            if self.held.get(lock._sid) is not lock or lock._watched:
                return
            lock._watched = True
            self.watched += 1
        self.monitor()

    def monitor(self):
        while self.watched > 0 and self.alive and self.lane.acquire(blocking=False):
            try:
                while self.watched > 0 and self.alive:
                    self._arm_recv()
                    self._pump()
                if not self.alive:
                    self._drain()
            except BaseException:
                self.abandon()
                return
            finally:
                self.lane.release()

    def leave(self, submit):
        """Releases the lane; hands it to a monitor if a watched lock needs one."""
        self.lane.release()
        if self.watched > 0 and self.alive:
            submit(self.monitor)

    def abandon(self):
        """An exception escaped while the lane was driven: the state is not to
        be trusted. Cancelling makes batond release what the Session holds.
        Its completions are not taken (an exception from next_event means
        grpcio has already freed the call; otherwise the channel's close does)."""
        self._due = set()
        try:
            self._call.cancel(_cygrpc.StatusCode.cancelled, "abandoned")
        except Exception:
            pass
        self._end(grpc.StatusCode.CANCELLED, "the session was interrupted")

    def close(self):
        """Ends the Session (its locks are released by batond); the caller
        has released its locks first."""
        self.closing = True
        try:
            self._call.cancel(_cygrpc.StatusCode.cancelled, "client closed")
        except Exception:
            return
        if self.lane.acquire(blocking=False):
            try:
                self._drain()
            except BaseException:
                pass
            finally:
                self.lane.release()
        # else a monitor drives it: it sees the end and drains.


def busy_error(r, what):
    return c.error_from_rpc(status_of(r.status), what, acquiring=True)
