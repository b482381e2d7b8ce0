#!/usr/bin/python3
"""An in-memory model of batond's API contract, used only to check the
integration suite itself (a test that passes against nothing proves nothing;
a test that fails against a faithful model is a test bug).

    BATOND=tests/integration/fake_batond.py /usr/bin/python3 -m pytest -q tests/integration

It keeps no state in Redis, so the tests that look inside Redis or kill it
(test_redis_outage.py, test_shutdown.py) are expected to fail against it.
Usage as batond: fake_batond.py --config FILE --listen HOST:PORT --redis ADDR
"""
import argparse
import os
import re
import secrets
import signal
import sys
import threading
import time
from concurrent import futures

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
if not any(os.path.isdir(os.path.join(p, "baton")) for p in sys.path if p):
    import tempfile
    import harness
    _d = tempfile.mkdtemp(prefix="fake-batond-stubs-")
    harness.generate_stubs(_d)
    sys.path.insert(0, _d)
from baton.v1 import lock_pb2 as pb  # noqa: E402
from baton.v1 import lock_pb2_grpc  # noqa: E402

KEY_RE = re.compile(r"[A-Za-z0-9_\-.:/@+=]{1,256}")
TOKEN_RE = re.compile(r"[0-9a-f]{32}")
LIM = dict(default_ttl_ms=600000, min_ttl_ms=100, max_ttl_ms=3600000, max_wait_ms=300000,
           max_pool_devices=64)
POOLS = {}
SC = grpc.StatusCode
T = pb.LockEvent


class Invalid(Exception):
    pass


def check_key(field, k):
    if not KEY_RE.fullmatch(k) or len(k.encode()) > 256:
        raise Invalid("%s: must be 1..256 characters of [A-Za-z0-9_-.:/@+=]" % field)


def check_token(field, t):
    if not TOKEN_RE.fullmatch(t):
        raise Invalid("%s: must be 32 lowercase hex characters" % field)


def check_ttl(ttl):
    if ttl == 0:
        return LIM["default_ttl_ms"]
    if not LIM["min_ttl_ms"] <= ttl <= LIM["max_ttl_ms"]:
        raise Invalid("ttl_ms: out of range")
    return ttl


def now_ms():
    return int(time.time() * 1000)


class Model:
    def __init__(self):
        self.cond = threading.Condition()
        self.holds = {}    # key -> [token, owner, fencing, expires_monotonic]
        self.fence = {}
        self.queues = {}   # ("k", key) / ("p", name) -> [waiter tokens]
        self.watches = []  # [key, prefix, list, cond]
        self.shutting_down = False
        threading.Thread(target=self._reaper, daemon=True).start()

    def emit(self, typ, key, owner, fencing):
        for w in list(self.watches):
            if (w[0] and w[0] == key) or (w[1] and key.startswith(w[1])):
                with w[3]:
                    w[2].append(pb.LockEvent(type=typ, key=key, owner=owner, fencing=fencing,
                                             at_unix_ms=now_ms()))
                    w[3].notify_all()

    def _reap(self):
        t = time.monotonic()
        for k, h in list(self.holds.items()):
            if h[3] <= t:
                del self.holds[k]
                self.emit(T.EXPIRED, k, h[1], h[2])
                self.cond.notify_all()

    def _reaper(self):
        while True:
            with self.cond:
                self._reap()
            time.sleep(0.01)

    def grant_key(self, key, token, owner, ttl):
        f = self.fence.get(key) or int(time.time() * 1e6)
        f += 1
        self.fence[key] = f
        self.holds[key] = [token, owner, f, time.monotonic() + ttl / 1000.0]
        self.emit(T.ACQUIRED, key, owner, f)
        return f

    def try_grant(self, target, token, owner, ttl, devices):
        """Under cond. Returns (key, device) or None; keeps token queued."""
        q = self.queues.setdefault(target, [])
        if token not in q:
            q.append(token)
        if q[0] != token:
            return None
        if target[0] == "k":
            cands = [(target[1], -1)]
        else:
            cands = [("%s/%d" % (target[1], i), i) for i in range(devices)]
        for key, dev in cands:
            if key in self.holds:
                continue
            if target[0] == "p" and self.queues.get(("k", key)):
                continue
            q.remove(token)
            self.cond.notify_all()
            return key, dev
        return None

    def holder_of(self, target, devices):
        keys = [target[1]] if target[0] == "k" else ["%s/%d" % (target[1], i) for i in range(devices)]
        return ", ".join("%s (fencing %d)" % (self.holds[k][1], self.holds[k][2]) for k in keys if k in self.holds)

    def dequeue(self, target, token):
        q = self.queues.get(target, [])
        if token in q:
            q.remove(token)
            self.cond.notify_all()


M = Model()


class Service(lock_pb2_grpc.LockServiceServicer):
    def Acquire(self, req, ctx):
        try:
            has_pool = req.HasField("pool")
            if bool(req.key) == has_pool:
                raise Invalid("key: exactly one of key and pool must be set")
            if has_pool:
                check_key("pool.name", req.pool.name)
                n = req.pool.devices
                if n < 1 or n > LIM["max_pool_devices"]:
                    raise Invalid("pool.devices: out of range")
                if len(req.pool.name) + 1 + len(str(n - 1)) > 256:
                    raise Invalid("pool.name: too long for its device keys")
                if req.pool.name in POOLS and POOLS[req.pool.name] != n:
                    raise Invalid("pool.devices: pool %s has %d devices" % (req.pool.name, POOLS[req.pool.name]))
                target = ("p", req.pool.name)
            else:
                check_key("key", req.key)
                target = ("k", req.key)
            if len(req.owner.encode()) > 256 or any(ord(c) < 32 and c != "\t" for c in req.owner):
                raise Invalid("owner: invalid")
            ttl = check_ttl(req.ttl_ms)
            wait = req.wait_ms if req.wait_ms >= 0 else LIM["max_wait_ms"]
            if wait > LIM["max_wait_ms"]:
                raise Invalid("wait_ms: above the maximum")
            if req.mode not in (0, 1):
                raise Invalid("mode: unknown")
        except Invalid as e:
            ctx.abort(SC.INVALID_ARGUMENT, str(e))
        if M.shutting_down:
            ctx.abort(SC.UNAVAILABLE, "shutting down")
        token = secrets.token_hex(16)
        ctx.add_callback(lambda: _poke())
        deadline = time.monotonic() + wait / 1000.0
        last_pos = None
        while True:
            with M.cond:
                got = M.try_grant(target, token, req.owner, ttl, req.pool.devices)
                if got is None:
                    pos = M.queues[target].index(token) + 1
                    if not ctx.is_active() or M.shutting_down or time.monotonic() >= deadline:
                        holder = M.holder_of(target, req.pool.devices)
                        M.dequeue(target, token)
                        if M.shutting_down:
                            ctx.abort(SC.UNAVAILABLE, "server shutting down")
                        if not ctx.is_active():
                            return
                        ctx.abort(SC.ABORTED, "not acquired within wait_ms; held by " + holder)
                    if wait == 0:
                        M.dequeue(target, token)
                        ctx.abort(SC.ABORTED, "held by " + M.holder_of(target, req.pool.devices))
                else:
                    key, dev = got
                    fencing = M.grant_key(key, token, req.owner, ttl)
            if got is not None:
                break
            if pos != last_pos:
                last_pos = pos
                yield pb.AcquireEvent(queued=pb.Queued(position=pos))
            with M.cond:
                M.cond.wait(0.05)
        yield pb.AcquireEvent(granted=pb.Granted(key=key, token=token, fencing=fencing, ttl_ms=ttl, device=dev))
        if req.mode == pb.HOLD_MODE_LEASE:
            return
        while True:
            with M.cond:
                h = M.holds.get(key)
                if h is None or h[0] != token:
                    lost = True
                    break
                if not ctx.is_active() or M.shutting_down:
                    del M.holds[key]
                    M.emit(T.RELEASED, key, h[1], h[2])
                    M.cond.notify_all()
                    if M.shutting_down:
                        ctx.abort(SC.UNAVAILABLE, "server shutting down")
                    return
                h[3] = time.monotonic() + ttl / 1000.0
                M.cond.wait(min(ttl / 3000.0, 0.05))
        if token in RELEASED_TOKENS:
            return
        ctx.abort(SC.ABORTED, "lock lost")

    def _hold_check(self, key, token, ctx):
        h = M.holds.get(key)
        if h is None or h[0] != token:
            ctx.abort(SC.FAILED_PRECONDITION, "not the holder; held by %s" % (h[1] if h else "nobody"))
        return h

    def Renew(self, req, ctx):
        try:
            check_key("key", req.key)
            check_token("token", req.token)
            ttl = check_ttl(req.ttl_ms)
        except Invalid as e:
            ctx.abort(SC.INVALID_ARGUMENT, str(e))
        with M.cond:
            h = self._hold_check(req.key, req.token, ctx)
            h[3] = time.monotonic() + ttl / 1000.0
        return pb.RenewResponse(ttl_ms=ttl)

    def Release(self, req, ctx):
        try:
            check_key("key", req.key)
            check_token("token", req.token)
        except Invalid as e:
            ctx.abort(SC.INVALID_ARGUMENT, str(e))
        with M.cond:
            h = self._hold_check(req.key, req.token, ctx)
            RELEASED_TOKENS.add(req.token)
            del M.holds[req.key]
            M.emit(T.RELEASED, req.key, h[1], h[2])
            M.cond.notify_all()
        return pb.ReleaseResponse(released=True)

    def ForceRelease(self, req, ctx):
        try:
            check_key("key", req.key)
            if req.fencing == 0:
                raise Invalid("fencing: must be > 0")
        except Invalid as e:
            ctx.abort(SC.INVALID_ARGUMENT, str(e))
        with M.cond:
            h = M.holds.get(req.key)
            if h is None or h[2] != req.fencing:
                ctx.abort(SC.FAILED_PRECONDITION, "fencing does not match")
            del M.holds[req.key]
            M.emit(T.FORCE_RELEASED, req.key, h[1], h[2])
            M.cond.notify_all()
        return pb.ReleaseResponse(released=True)

    def Describe(self, req, ctx):
        try:
            check_key("key", req.key)
        except Invalid as e:
            ctx.abort(SC.INVALID_ARGUMENT, str(e))
        with M.cond:
            h = M.holds.get(req.key)
            n = len(M.queues.get(("k", req.key), []))
            if h is None:
                return pb.DescribeResponse(waiters=n)
            return pb.DescribeResponse(held=True, owner=h[1], fencing=h[2],
                                       ttl_ms=max(1, int((h[3] - time.monotonic()) * 1000)), waiters=n)

    def Watch(self, req, ctx):
        try:
            if bool(req.key) == bool(req.prefix):
                raise Invalid("key/prefix: exactly one must be set")
            if req.key:
                check_key("key", req.key)
            else:
                check_key("prefix", req.prefix)
        except Invalid as e:
            ctx.abort(SC.INVALID_ARGUMENT, str(e))
        w = [req.key, req.prefix, [], threading.Condition()]
        with M.cond:
            M.watches.append(w)
        try:
            while ctx.is_active() and not M.shutting_down:
                with w[3]:
                    if not w[2]:
                        w[3].wait(0.05)
                    evs, w[2][:] = list(w[2]), []
                for e in evs:
                    yield e
        finally:
            with M.cond:
                M.watches.remove(w)


RELEASED_TOKENS = set()


def _poke():
    with M.cond:
        M.cond.notify_all()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config")
    ap.add_argument("--listen", default="127.0.0.1:50051")
    ap.add_argument("--redis")
    a = ap.parse_args()
    if a.config:
        text = open(a.config).read()
        for k in LIM:
            m = re.search(r"^\s*%s:\s*(\d+)" % k, text, re.M)
            if m:
                LIM[k] = int(m.group(1))
        for name, n in re.findall(r"-\s*name:\s*(\S+)\s*\n\s*devices:\s*(\d+)", text):
            POOLS[name] = int(n)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=200),
                         options=[("grpc.max_receive_message_length", 65536)])
    lock_pb2_grpc.add_LockServiceServicer_to_server(Service(), server)
    server.add_insecure_port(a.listen)
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    M.shutting_down = True
    _poke()
    time.sleep(0.3)
    server.stop(2).wait()
    sys.exit(0)


if __name__ == "__main__":
    main()
