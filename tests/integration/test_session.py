"""Session: many Acquire / Renew / Release operations over one bidi stream.

Each operation must behave as its own RPC would, and the end of a session
must dequeue its waiters and release what it holds by the session, while
lease grants that reached the client stay."""
import queue
import threading
import time

import grpc

import bclient as bc
from bclient import pb

OK = grpc.StatusCode.OK
CANCELLED = grpc.StatusCode.CANCELLED
INVALID = grpc.StatusCode.INVALID_ARGUMENT
T = pb.LockEvent
FINAL = ("granted", "status", "renew", "release")


class Session:
    """A Session stream: requests go through a queue, a reader thread
    records every response per id."""

    def __init__(self, stub, channel=None, raw=False):
        self.q = queue.Queue()
        self.cond = threading.Condition()
        self.resp = {}  # id -> [(kind, message, monotonic time)]
        self.code = None
        self.details = None

        def requests():
            while True:
                r = self.q.get()
                if r is None:
                    return
                yield r

        if raw:
            method = channel.stream_stream("/baton.v1.LockService/Session", request_serializer=lambda b: b,
                                           response_deserializer=pb.SessionResponse.FromString)
            self.call = method(requests(), timeout=60.0)
        else:
            self.call = stub.Session(requests(), timeout=60.0)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        try:
            for r in self.call:
                kind = r.WhichOneof("result")
                with self.cond:
                    self.resp.setdefault(r.id, []).append((kind, getattr(r, kind), time.monotonic()))
                    self.cond.notify_all()
            code, details = self.call.code(), self.call.details()
        except grpc.RpcError as e:
            code, details = e.code(), e.details()
        with self.cond:
            self.code, self.details = code, details or ""
            self.cond.notify_all()

    def send(self, id, **op):
        self.q.put(pb.SessionRequest(id=id, **op))

    def acquire(self, id, key="", owner="sess", ttl_ms=0, wait_ms=0, mode=bc.LEASE, pool=None, devices=0):
        self.send(id, acquire=bc.acquire_request(key, owner, ttl_ms, wait_ms, mode, pool, devices))

    def renew(self, id, key, token, ttl_ms=0):
        self.send(id, renew=pb.RenewRequest(key=key, token=token, ttl_ms=ttl_ms))

    def release(self, id, key, token):
        self.send(id, release=pb.ReleaseRequest(key=key, token=token))

    def cancel_op(self, id):
        self.send(id, cancel=pb.SessionCancel())

    def kinds(self, id):
        with self.cond:
            return [k for k, _, _ in self.resp.get(id, [])]

    def wait(self, id, kinds=FINAL, timeout=10.0, nth=1):
        """Waits for the nth response of `id` whose kind is in kinds."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                hits = [(k, m) for k, m, _ in self.resp.get(id, []) if k in kinds]
                if len(hits) >= nth:
                    return hits[nth - 1]
                left = deadline - time.monotonic()
                assert left > 0 and self.code is None, \
                    "no %s for id %d: got %s; session %s %r" % (kinds, id, self.kinds(id), self.code, self.details)
                self.cond.wait(left)

    def granted(self, id, timeout=10.0):
        kind, msg = self.wait(id, timeout=timeout)
        assert kind == "granted", "id %d: %s %s" % (id, kind, msg)
        return msg

    def status(self, id, timeout=10.0):
        """The status that ended `id` (the first final response must be it,
        or a granted followed by it: a session-held lock that ended)."""
        kind, msg = self.wait(id, timeout=timeout)
        if kind == "granted":
            kind, msg = self.wait(id, kinds=("status",), timeout=timeout)
        return grpc.StatusCode(next(c for c in grpc.StatusCode if c.value[0] == msg.code)), msg.message

    def wait_end(self, timeout=10.0):
        with self.cond:
            self.cond.wait_for(lambda: self.code is not None, timeout)
            assert self.code is not None, "session still open"
            return self.code, self.details

    def close(self):
        self.q.put(None)

    def cancel(self):
        self.call.cancel()
        self.q.put(None)


def test_lease_acquire_renew_release_in_one_session(stub):
    key = bc.uniq("sess-basic")
    s = Session(stub)
    s.acquire(1, key, owner="sess-owner", ttl_ms=30000)
    g = s.granted(1)
    assert g.key == key and len(g.token) == 32 and g.fencing > 0 and g.ttl_ms == 30000 and g.device == -1
    d = bc.describe(stub, key)
    assert d.held and d.owner == "sess-owner" and d.fencing == g.fencing

    s.renew(2, key, g.token, ttl_ms=45000)
    kind, r = s.wait(2)
    assert kind == "renew" and r.ttl_ms == 45000, (kind, r)
    s.release(3, key, g.token)
    kind, r = s.wait(3)
    assert kind == "release" and r.released, (kind, r)
    assert not bc.describe(stub, key).held
    # The same id may be used again once its operation has ended.
    s.acquire(1, key, ttl_ms=30000)
    kind, g2 = s.wait(1, nth=2)
    assert kind == "granted" and g2.fencing > g.fencing, (kind, g2)
    s.release(4, key, g2.token)
    assert s.wait(4)[0] == "release"
    s.close()
    assert s.wait_end() == (OK, "")


def test_errors_end_only_their_operation(stub):
    key = bc.uniq("sess-err")
    other = bc.grant(stub, key, "rpc-holder", ttl_ms=30000)
    s = Session(stub)
    s.acquire(1, "bad key")
    code, msg = s.status(1)
    assert code == INVALID and "key" in msg.lower(), (code, msg)
    s.acquire(2, key, wait_ms=0)
    code, msg = s.status(2)
    assert code == grpc.StatusCode.ABORTED and "rpc-holder" in msg, (code, msg)
    s.release(3, key, "0" * 32)
    code, msg = s.status(3)
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "rpc-holder" in msg, (code, msg)
    s.renew(4, key, "0" * 32)
    assert s.status(4)[0] == grpc.StatusCode.FAILED_PRECONDITION
    # The holder is untouched and the session still works.
    d = bc.describe(stub, key)
    assert d.held and d.fencing == other.fencing
    s.release(5, key, other.token)
    assert s.wait(5)[0] == "release"
    s.close()
    assert s.wait_end()[0] == OK


def test_waiter_in_session_is_granted_after_release_never_before(stub):
    key = bc.uniq("sess-wait")
    w = bc.WatchStream(stub, key=key)
    w.sync()
    first = bc.grant(stub, key, "first", ttl_ms=30000)
    s = Session(stub)
    s.acquire(7, key, owner="second", wait_ms=20000)
    kind, q = s.wait(7, kinds=("queued",))
    assert q.position == 1
    time.sleep(0.2)
    assert "granted" not in s.kinds(7), "granted while another holds the key"
    bc.release(stub, key, first.token)
    g = s.granted(7)
    assert g.fencing > first.fencing
    rel = w.wait_event(lambda e: e.type == T.RELEASED and e.fencing == first.fencing)
    acq = w.wait_event(lambda e: e.type == T.ACQUIRED and e.fencing == g.fencing)
    assert rel is not None and acq is not None
    # An RPC try-acquire sees the session's lease.
    events, code, details, _ = bc.acquire(stub, key, "third", wait_ms=0)
    assert code == grpc.StatusCode.ABORTED and "second" in details, (code, details)
    s.release(8, key, g.token)
    assert s.wait(8)[0] == "release"
    s.cancel()
    w.cancel()


def test_end_of_session_releases_session_holds_and_dequeues_but_keeps_leases(stub):
    lease_key, held_key, wait_key = bc.uniq("sess-l"), bc.uniq("sess-h"), bc.uniq("sess-w")
    blocker = bc.grant(stub, wait_key, "blocker", ttl_ms=30000)
    s = Session(stub)
    s.acquire(1, lease_key, ttl_ms=30000)
    s.acquire(2, held_key, mode=bc.STREAM)
    s.acquire(3, wait_key, wait_ms=30000)
    lease = s.granted(1)
    held = s.granted(2)
    s.wait(3, kinds=("queued",))
    assert bc.describe(stub, wait_key).waiters == 1
    time.sleep(0.1)
    assert s.kinds(2) == ["granted"], "a session-held lock stays held: %s" % s.kinds(2)

    s.cancel()
    assert bc.wait_until(lambda: not bc.describe(stub, held_key).held, 5.0), "session hold not released"
    assert bc.wait_until(lambda: bc.describe(stub, wait_key).waiters == 0, 5.0), "waiter not dequeued"
    d = bc.describe(stub, lease_key)
    assert d.held and d.fencing == lease.fencing, "a delivered lease outlives its session"
    # The next holder of the session-held key gets a higher fencing token and
    # the dequeued waiter never gets the blocked key.
    g = bc.grant(stub, held_key, "after", ttl_ms=30000)
    assert g.fencing > held.fencing
    bc.release(stub, wait_key, blocker.token)
    g3 = bc.grant(stub, wait_key, "after", ttl_ms=30000)
    assert g3.fencing > blocker.fencing
    for k, gg in ((held_key, g), (wait_key, g3), (lease_key, lease)):
        bc.release(stub, k, gg.token)


def test_session_hold_released_by_release_ends_with_ok(stub):
    key = bc.uniq("sess-rel")
    s = Session(stub)
    s.acquire(1, key, mode=bc.STREAM)
    g = s.granted(1)
    s.release(2, key, g.token)
    assert s.wait(2)[0] == "release"
    code, msg = s.status(1)
    assert code == OK, (code, msg)
    assert not bc.describe(stub, key).held
    s.close()
    assert s.wait_end()[0] == OK


def test_half_closed_session_stays_open_while_it_holds(stub):
    key = bc.uniq("sess-half")
    s = Session(stub)
    s.acquire(1, key, mode=bc.STREAM)
    g = s.granted(1)
    s.close()
    time.sleep(0.3)
    assert s.code is None, "ended while holding: %s %r" % (s.code, s.details)
    assert bc.describe(stub, key).held
    bc.release(stub, key, g.token)  # from another call
    assert s.status(1)[0] == OK
    assert s.wait_end() == (OK, "")


def test_many_operations_in_flight(stub):
    """More operations than a session takes at once (64): reads pause and
    resume, and every one is answered exactly once."""
    prefix = bc.uniq("sess-many")
    s = Session(stub)
    n = 300
    for i in range(n):
        s.acquire(1000 + i, "%s/%d" % (prefix, i), ttl_ms=30000)
    grants = [s.granted(1000 + i, timeout=30.0) for i in range(n)]
    assert len({g.token for g in grants}) == n
    for i, g in enumerate(grants):
        s.release(5000 + i, g.key, g.token)
    for i in range(n):
        assert s.wait(5000 + i, timeout=30.0)[0] == "release"
    for i in range(n):
        assert s.kinds(1000 + i) == ["granted"] and s.kinds(5000 + i) == ["release"]
    s.close()
    assert s.wait_end()[0] == OK


def test_two_sessions_contend_without_double_grant(stub):
    """Two sessions loop acquire -> check -> release on one key: never two
    holders at once, fencing strictly increasing."""
    key = bc.uniq("sess-mutex")
    holders = []
    fencings = []
    lock = threading.Lock()
    errors = []

    def worker(name):
        s = Session(stub)
        try:
            for i in range(40):
                s.acquire(i * 2, key, owner=name, ttl_ms=30000, wait_ms=20000)
                kind, g = s.wait(i * 2, timeout=30.0)
                assert kind == "granted", (kind, g)
                with lock:
                    holders.append(name)
                    if len(holders) > 1:
                        errors.append("two holders: %s" % holders)
                    fencings.append(g.fencing)
                time.sleep(0.001)
                with lock:
                    holders.remove(name)
                s.release(i * 2 + 1, key, g.token)
                assert s.wait(i * 2 + 1, timeout=30.0)[0] == "release"
        except AssertionError as e:
            errors.append(str(e))
        finally:
            s.cancel()

    threads = [threading.Thread(target=worker, args=("w%d" % i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:3]
    assert len(fencings) == 120
    assert fencings == sorted(fencings) and len(set(fencings)) == len(fencings), "fencing went back"


def test_protocol_errors_end_the_session(stub, channel):
    key = bc.uniq("sess-proto")
    s = Session(stub)
    s.acquire(1, key, mode=bc.STREAM)
    g = s.granted(1)
    s.acquire(1, bc.uniq("sess-proto2"))  # id 1 is still in flight (held)
    code, details = s.wait_end()
    assert code == INVALID and "id 1" in details, (code, details)
    assert bc.wait_until(lambda: not bc.describe(stub, key).held, 5.0), "session hold survived its session"
    assert g.fencing > 0

    s = Session(stub)
    s.send(9)  # no operation
    code, details = s.wait_end()
    assert code == INVALID and "no operation" in details, (code, details)

    s = Session(stub, channel, raw=True)
    s.q.put(b"\x0a\xff\xff")  # field 1 as a truncated length-delimited value
    code, details = s.wait_end()
    assert code == INVALID, (code, details)


def test_waiting_acquires_never_block_the_sessions_own_release(stub):
    """More waiters than the session's busy limit (64) on a key the session
    itself holds: its Release must still be read, and the head waiter then
    granted. Past 1024 waiting acquires a session refuses more."""
    key = bc.uniq("sess-own")
    s = Session(stub)
    s.acquire(1, key, ttl_ms=60000)
    g = s.granted(1)
    n = 1024
    for i in range(n):
        s.acquire(100 + i, key, owner="w%d" % i, wait_ms=60000)
    s.acquire(100 + n, key, owner="one-too-many", wait_ms=60000)
    code, msg = s.status(100 + n, timeout=30.0)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "1024" in msg, (code, msg)
    assert bc.wait_until(lambda: bc.describe(stub, key).waiters == n, 30.0), bc.describe(stub, key)
    s.release(2, key, g.token)
    assert s.wait(2)[0] == "release"
    g2 = s.granted(100, timeout=10.0)
    assert g2.fencing > g.fencing
    assert "granted" not in s.kinds(101)
    s.cancel()
    assert bc.wait_until(lambda: bc.describe(stub, key).waiters == 0, 10.0), "waiters left in the queue"
    # The delivered lease of the head waiter stays; release it.
    bc.release(stub, key, g2.token)


def test_cancel_dequeues_a_waiter_and_releases_a_hold(stub):
    """SessionCancel ends one acquire as cancelling its Acquire RPC would;
    the session and its other operations carry on."""
    wait_key, held_key, lease_key = bc.uniq("sess-cw"), bc.uniq("sess-ch"), bc.uniq("sess-cl")
    blocker = bc.grant(stub, wait_key, "blocker", ttl_ms=30000)
    s = Session(stub)
    s.acquire(1, wait_key, wait_ms=30000)
    s.acquire(2, held_key, mode=bc.STREAM)
    s.acquire(3, lease_key, ttl_ms=30000)
    s.acquire(4, wait_key, owner="second", wait_ms=30000, mode=bc.STREAM)
    s.wait(1, kinds=("queued",))
    s.wait(4, kinds=("queued",))
    held = s.granted(2)
    lease = s.granted(3)
    assert bc.describe(stub, wait_key).waiters == 2

    s.cancel_op(1)
    code, msg = s.status(1)
    assert code == CANCELLED and "waiting" in msg, (code, msg)
    assert bc.wait_until(lambda: bc.describe(stub, wait_key).waiters == 1, 5.0), "waiter not dequeued"
    s.cancel_op(2)
    code, msg = s.status(2)
    assert code == CANCELLED and "released" in msg, (code, msg)
    assert not bc.describe(stub, held_key).held
    # A granted lease, a finished operation and an unknown id: ignored.
    s.cancel_op(3)
    s.cancel_op(2)
    s.cancel_op(99)
    time.sleep(0.2)
    assert s.kinds(3) == ["granted"] and s.kinds(2) == ["granted", "status"] and s.kinds(99) == []
    assert bc.describe(stub, lease_key).held
    # The cancelled waiter never gets the key: the one behind it does.
    bc.release(stub, wait_key, blocker.token)
    g4 = s.granted(4)
    assert g4.fencing > blocker.fencing and s.kinds(1) == ["queued", "status"]
    assert bc.describe(stub, wait_key).owner == "second"
    # Ids of cancelled operations are free again.
    s.acquire(1, held_key, mode=bc.STREAM)
    g = s.wait(1, nth=2)[1]
    assert g.fencing > held.fencing
    s.close()
    for id_, key, tok, nth in ((1, held_key, g.token, 2), (4, wait_key, g4.token, 1)):
        bc.release(stub, key, tok)
        st = s.wait(id_, kinds=("status",), nth=nth)[1]
        assert st.code == 0, st
    bc.release(stub, lease_key, lease.token)
    assert s.wait_end()[0] == OK


def test_cancels_racing_grants_never_leave_two_holders(stub):
    """Sessions queue stream acquires on one key and cancel most of them at
    random moments, racing their grants: a cancel that lands after the grant
    releases the lock, so the key never has two holders, no cancelled
    acquire keeps it and fencing keeps rising."""
    import random
    key = bc.uniq("sess-crace")
    holders, fencings, errors = [], [], []
    lock = threading.Lock()

    def worker(name, seed):
        rnd = random.Random(seed)
        s = Session(stub)
        try:
            for i in range(1, 61):
                s.acquire(i, key, owner=name, wait_ms=20000, mode=bc.STREAM)
                if rnd.random() < 0.6:
                    time.sleep(rnd.random() * 0.003)
                    s.cancel_op(i)
                    kind, m = s.wait(i, timeout=30.0)
                    if kind == "granted":  # the grant won: the cancel releases it
                        code, msg = s.status(i, timeout=30.0)
                        assert code == CANCELLED, (code, msg)
                        with lock:
                            fencings.append(m.fencing)
                    else:
                        assert grpc.StatusCode.CANCELLED.value[0] == m.code, m
                    continue
                g = s.granted(i, timeout=30.0)
                with lock:
                    holders.append(name)
                    if len(holders) > 1:
                        errors.append("two holders: %s" % holders)
                    fencings.append(g.fencing)
                d = bc.describe(stub, key)
                if d.owner != name or d.fencing != g.fencing:
                    errors.append("%s holds f=%d but describe says %s f=%d" % (name, g.fencing, d.owner, d.fencing))
                with lock:
                    holders.remove(name)
                s.release(1000 + i, key, g.token)
                assert s.wait(1000 + i, timeout=30.0)[0] == "release"
                assert s.status(i)[0] == OK
        except AssertionError as e:
            errors.append("%s: %s" % (name, e))
        finally:
            s.cancel()

    threads = [threading.Thread(target=worker, args=("w%d" % i, i)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:3]
    assert len(fencings) >= 4 * 24 and len(set(fencings)) == len(fencings), "a fencing token came twice"
    assert bc.wait_until(lambda: not bc.describe(stub, key).held and bc.describe(stub, key).waiters == 0,
                         5.0), bc.describe(stub, key)
