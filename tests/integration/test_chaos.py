"""Chaos: two batonds share one persistent redis-server while 24 client
threads fight over 3 keys and a chaos thread restarts Redis (SIGTERM or
SIGKILL; AOF with fsync always, so nothing acknowledged is lost) and pauses
one batond at a time (SIGSTOP / SIGCONT). Mutual exclusion and fencing must
survive all of it.

What a client may believe (the intervals checked, all on one monotonic clock):
  - LEASE: held from the moment the grant was read until the earliest of
    "Release sent" and "acquire sent + ttl_ms". The TTL starts in Redis when
    the script runs, which is after the client sent the Acquire, so this end
    is never later than the real expiry. A successful Renew sent at t with
    ttl R moves the end to t + R (same argument).
  - STREAM: held from the grant until the client cancels, or until it reads
    the end of the stream (ABORTED: lost). The server keeps the lock while the
    stream is open; a paused batond cannot renew, so stream TTLs here are
    longer than the longest pause plus one renew step (ttl/3): a silent loss
    during a pause would be the generic process-pause limit, not what this
    test looks for.
Times a client records late (grant read) only shorten its interval; times it
records early (acquire sent, release/cancel sent) only shorten it too. So any
overlap left is real: two clients were told they held the same key at once.

Fencing: sorted by fencing, every hold starts after all holds with a lower
fencing ended (no overlap AND monotonic fencing), and no two grants of a key
share a fencing token.
"""
import collections
import os
import random
import signal
import tempfile
import threading
import time

import grpc
from baton.v1 import lock_pb2_grpc

import bclient as bc
import harness
from bclient import pb

C = grpc.StatusCode
LOAD_SECONDS = 24.0
THREADS = 24
NKEYS = 3
LEASE_TTL_MS = (300, 2000)
STREAM_TTL_MS = (2000, 3000)  # > PAUSE_S max + ttl/3 + slack (see above)
WAIT_MS = (2000, 5000)
HOLD_S = (0.002, 0.04)
PAUSE_S = (0.2, 0.8)
CHAOS_GAP_S = (1.0, 3.0)
# Non-OK codes the contract allows per RPC; anything else fails the test.
ALLOWED = {
    "Acquire": {C.UNAVAILABLE, C.ABORTED},
    "Renew": {C.UNAVAILABLE, C.FAILED_PRECONDITION},
    "Release": {C.UNAVAILABLE, C.FAILED_PRECONDITION},
}

Hold = collections.namedtuple("Hold", "key fencing start end token who mode via how")


class Chaos:
    """Shared state of one run: holds per key, counters, problems, timeline."""

    def __init__(self, t0):
        self.t0 = t0
        self.lock = threading.Lock()
        self.holds = collections.defaultdict(list)
        self.counts = collections.Counter()
        self.problems = []
        self.timeline = []  # (time, text) of chaos actions

    def rel(self, t):
        return t - self.t0

    def count(self, what, n=1):
        with self.lock:
            self.counts[what] += n

    def problem(self, text):
        with self.lock:
            self.problems.append("%.3f %s" % (self.rel(time.monotonic()), text))

    def event(self, text):
        with self.lock:
            self.timeline.append((time.monotonic(), text))

    def rpc(self, method, code, details, who, expected=()):
        """Counts a non-OK result; records a problem if the contract does not allow it."""
        self.count("%s %s" % (method, code.name))
        if code not in ALLOWED[method] and code not in expected:
            self.problem("%s %s: %s %r" % (who, method, code.name, details))

    def add_hold(self, h):
        with self.lock:
            self.holds[h.key].append(h)


def _granted_or_ended(s, timeout):
    s._wait(lambda: any(k == "granted" for k, _, _ in s.items), timeout)
    return s.granted


def _wait_end(s, cx, who, timeout=10.0):
    try:
        return s.wait_end(timeout)
    except AssertionError as e:
        cx.problem("%s: %s" % (who, e))
        s.cancel()
        return s.wait_end(10.0)


def _unary(cx, method, fn, req, who):
    """Runs one unary RPC; returns the response or None (error counted)."""
    try:
        return fn(req, timeout=15.0)
    except grpc.RpcError as e:
        cx.rpc(method, e.code(), e.details(), who)
        return None


def _hold_lease(cx, stub, rng, s, key, who, via):
    g = s.granted
    belief = s.started_at + g.ttl_ms / 1000.0  # sent time + TTL: never past the real expiry
    how = ""
    if rng.random() < 0.3 or belief - time.monotonic() < 0.15:
        t_renew = time.monotonic()
        ttl = rng.randint(*LEASE_TTL_MS)
        r = _unary(cx, "Renew", stub.Renew, pb.RenewRequest(key=key, token=g.token, ttl_ms=ttl), who)
        if r is None:
            # UNAVAILABLE: the script may have run and set a SHORTER TTL.
            belief = min(belief, t_renew + ttl / 1000.0)
            how = "renew of %d ms failed at %.4f, " % (ttl, cx.rel(t_renew))
        else:
            # Renew SETS the TTL (it may shorten it): the old expiry no longer counts.
            cx.count("renewed")
            belief = t_renew + r.ttl_ms / 1000.0
            how = "renewed %d ms at %.4f, " % (r.ttl_ms, cx.rel(t_renew))
    time.sleep(rng.uniform(*HOLD_S))
    if rng.random() < 0.1:
        end, how = belief, how + "ttl"  # never released: counts until its TTL surely ran out
        cx.count("left to expire")
    else:
        t_release = time.monotonic()
        end = min(t_release, belief)
        how += "released at %.4f" % cx.rel(t_release)
        r = _unary(cx, "Release", stub.Release, pb.ReleaseRequest(key=key, token=g.token), who)
        if r is not None and not r.released:
            cx.problem("%s Release(%s) OK but released=false" % (who, key))
    code, details = _wait_end(s, cx, who)
    if code != C.OK:
        cx.problem("%s lease Acquire(%s) granted, then ended %s %r" % (who, key, code.name, details))
    how = "acquire sent %.4f ttl %d ms, %s" % (cx.rel(s.started_at), g.ttl_ms, how)
    cx.add_hold(Hold(key, g.fencing, s.granted_at, end, g.token, who, "lease", via, how))


def _hold_stream(cx, rng, s, key, who, via):
    g = s.granted
    time.sleep(rng.uniform(*HOLD_S))
    t_cancel = time.monotonic()
    if not s.ended:
        s.cancel()
    code, details = _wait_end(s, cx, who)
    end = min(t_cancel, s.ended_at)
    how = "cancel"
    if code != C.CANCELLED:
        # The server ended the hold before our cancel: only "lost" is allowed
        # (a stream hold ends OK only after a Release with its token, never sent here).
        how = "ended %s" % code.name
        cx.count("stream hold ended by server %s" % code.name)
        if code not in (C.ABORTED, C.UNAVAILABLE):
            cx.problem("%s stream hold of %s ended %s %r" % (who, key, code.name, details))
    cx.add_hold(Hold(key, g.fencing, s.granted_at, end, g.token, who, "stream", via, how))


def _one_op(cx, stub, rng, n, via, key, kind):
    """kind: lease (wait), stream (wait), cancel (cancel while queued), try (wait 0)."""
    if kind == "stream" or (kind == "cancel" and rng.random() < 0.5):
        mode, ttl = bc.STREAM, rng.randint(*STREAM_TTL_MS)
    else:
        mode, ttl = bc.LEASE, rng.randint(*LEASE_TTL_MS)
    wait = 0 if kind == "try" else rng.randint(*WAIT_MS)
    who = "t%d/%s@b%d" % (n, kind, via)
    s = bc.AcquireStream(stub, key, who, ttl_ms=ttl, wait_ms=wait, mode=mode, timeout=wait / 1000.0 + 20.0)
    limit = rng.uniform(0.005, 0.3) if kind == "cancel" else wait / 1000.0 + 15.0
    g = _granted_or_ended(s, limit)
    if g is None:
        t_cancel = None
        if not s.ended:
            if kind != "cancel":
                cx.problem("%s Acquire(%s): neither granted nor ended within %.1fs: %s"
                           % (who, key, limit, s.summary()))
            t_cancel = time.monotonic()
            s.cancel()
        code, details = _wait_end(s, cx, who)
        g = s.granted
        if g is None:
            if code == C.OK:
                cx.problem("%s Acquire(%s) ended OK without granted" % (who, key))
            else:
                cx.rpc("Acquire", code, details, who, expected={C.CANCELLED} if t_cancel else ())
            return
        # Granted in the race with our cancel: this client never used it.
        cx.count("granted after cancel")
        end = t_cancel if mode == bc.STREAM else min(t_cancel, s.started_at + g.ttl_ms / 1000.0)
        cx.add_hold(Hold(key, g.fencing, s.granted_at, end, g.token, who, "raced", via, "cancel"))
        if mode == bc.LEASE:
            _unary(cx, "Release", stub.Release, pb.ReleaseRequest(key=key, token=g.token), who)
        return
    cx.count("granted %s" % ("stream" if mode == bc.STREAM else "lease"))
    if mode == bc.STREAM:
        _hold_stream(cx, rng, s, key, who, via)
    else:
        _hold_lease(cx, stub, rng, s, key, who, via)


def _worker(cx, stubs, keys, load_end, seed, n):
    rng = random.Random(seed * 1000 + n)
    via = n % 2
    stub = stubs[via][(n // 2) % len(stubs[via])]
    while time.monotonic() < load_end:
        key = rng.choice(keys)
        r = rng.random()
        kind = "lease" if r < 0.45 else "stream" if r < 0.7 else "cancel" if r < 0.85 else "try"
        try:
            _one_op(cx, stub, rng, n, via, key, kind)
        except Exception as e:  # a bug in this test, or an error nobody classified
            cx.problem("t%d %s on %s raised %r" % (n, kind, key, e))
            return
        if cx.counts.get("Acquire UNAVAILABLE", 0) and rng.random() < 0.5:
            time.sleep(0.02)  # Redis may be down: do not spin on instant UNAVAILABLEs


def _fences(r, keys):
    return [int(r.cli("GET", "baton:{%s}:fence" % k) or 0) for k in keys]


def _chaos(cx, r, batonds, keys, chaos_end, seed):
    rng = random.Random(seed)
    plan = []
    while True:
        time.sleep(rng.uniform(*CHAOS_GAP_S))
        if time.monotonic() >= chaos_end:
            return
        if not plan:  # shuffled rounds: every kind of chaos happens in every run
            plan = ["term", "kill", "stop", "stop"]
            rng.shuffle(plan)
        action = plan.pop()
        try:
            if action == "stop":
                i = rng.randrange(len(batonds))
                pause = rng.uniform(*PAUSE_S)
                cx.event("SIGSTOP b%d for %.0f ms" % (i, pause * 1000))
                batonds[i].signal(signal.SIGSTOP)
                time.sleep(pause)
                batonds[i].signal(signal.SIGCONT)
                cx.event("SIGCONT b%d" % i)
                cx.count("batond paused")
                continue
            before = _fences(r, keys)
            cx.event("redis %s" % ("SIGTERM" if action == "term" else "SIGKILL"))
            if action == "term":
                r.stop()
            else:
                r.kill()
            r.start()
            cx.event("redis up again")
            cx.count("redis restarted (%s)" % action)
            after = _fences(r, keys)
            # The premise of the test: a restart loses nothing acknowledged.
            if any(a < b for a, b in zip(after, before)):
                cx.problem("redis lost data over a %s restart: fences %s -> %s" % (action, before, after))
        except Exception as e:
            cx.problem("chaos %s failed: %r" % (action, e))
            return


def _fmt_hold(cx, h):
    return ("%s fencing=%d [%.4f, %.4f] %s via b%d end=%s token=%s"
            % (h.who, h.fencing, cx.rel(h.start), cx.rel(h.end), h.mode, h.via, h.how, h.token))


def _near(cx, t_from, t_to):
    return ["  %.4f %s" % (cx.rel(t), text) for t, text in cx.timeline if t_from - 3.0 <= t <= t_to + 1.0]


def _check_holds(cx, keys):
    """Returns (non-empty holds, violations)."""
    bad, used = [], 0
    for key in keys:
        holds = cx.holds[key]
        by_fencing = collections.Counter(h.fencing for h in holds)
        for f, c in by_fencing.items():
            if c > 1:
                bad.append("fencing %d granted %d times on %s: %s"
                           % (f, c, key, [_fmt_hold(cx, h) for h in holds if h.fencing == f]))
        real = [h for h in holds if h.end > h.start]
        used += len(real)
        by_start = sorted(real, key=lambda h: h.start)
        last = None
        for h in by_start:
            if last is not None and h.start < last.end:
                bad.append("two holders of %s at once (overlap %.3f ms):\n  %s\n  %s\n chaos around then:\n%s"
                           % (key, (last.end - h.start) * 1000, _fmt_hold(cx, last), _fmt_hold(cx, h),
                              "\n".join(_near(cx, last.start, h.end))))
            if last is None or h.end > last.end:
                last = h
        by_f = sorted(real, key=lambda h: h.fencing)
        for prev, cur in zip(by_f, by_f[1:]):
            if cur.start < prev.end:
                bad.append("fencing not increasing in grant order on %s:\n  %s\n  %s"
                           % (key, _fmt_hold(cx, prev), _fmt_hold(cx, cur)))
    return used, bad


def test_chaos_mutual_exclusion_and_fencing(workdir, start_batond):
    seed = int(os.environ.get("BATON_CHAOS_SEED") or time.time())
    print("chaos seed %d (BATON_CHAOS_SEED to repeat the choices)" % seed)
    rdir = tempfile.mkdtemp(prefix="redis-aof-", dir=workdir)
    r = harness.RedisServer(rdir, extra_args=["--appendonly", "yes", "--appendfsync", "always"]).start()
    batonds, channels = [], []
    try:
        batonds = [start_batond(r.address, name="batond-chaos-%s" % c) for c in "ab"]
        channels = [[grpc.insecure_channel(b.target) for _ in range(3)] for b in batonds]
        stubs = [[lock_pb2_grpc.LockServiceStub(ch) for ch in chs] for chs in channels]
        keys = [bc.uniq("chaos%d" % i) for i in range(NKEYS)]
        t0 = time.monotonic()
        cx = Chaos(t0)
        load_end = t0 + LOAD_SECONDS
        chaos = threading.Thread(target=_chaos, args=(cx, r, batonds, keys, load_end - 1.0, seed), daemon=True)
        workers = [threading.Thread(target=_worker, args=(cx, stubs, keys, load_end, seed, n), daemon=True)
                   for n in range(THREADS)]
        chaos.start()
        for t in workers:
            t.start()
        chaos.join(LOAD_SECONDS + 30.0)
        assert not chaos.is_alive(), "chaos thread hung"
        # Whatever the chaos did last, everything is up again now.
        assert r.ping(), "redis-server not answering after the chaos"
        for w in workers:
            w.join(max(1.0, load_end + 40.0 - time.monotonic()))
        hung = [i for i, w in enumerate(workers) if w.is_alive()]
        assert not hung, "client threads hung: %s\n%s" % (hung, "\n".join(cx.problems[:20]))

        # Settle: every lease TTL runs out; streams were all cancelled.
        time.sleep(LEASE_TTL_MS[1] / 1000.0 + 0.3)
        for i, b in enumerate(batonds):
            assert b.running(), "b%d (%s) died: exit %s\n%s" % (i, b.name, b.proc.returncode, b.log_tail(60))
            assert not b.sanitizer_reports(), "b%d: %s" % (i, b.sanitizer_reports()[:10])
        for key in keys:
            for i in range(len(batonds)):
                d = bc.wait_until(lambda: (lambda d: d if not d.held else None)(bc.describe(stubs[i][0], key)),
                                  timeout=5.0, interval=0.1)
                assert d is not None, "%s still held after every TTL ran out: %r" % (key, bc.describe(stubs[i][0], key))
                # Usable from both servers; stale queue entries do not block it.
                g = bc.grant(stubs[i][0], key, "final-check", ttl_ms=5000, wait_ms=3000)
                bc.release(stubs[i][0], key, g.token)
            d = bc.wait_until(lambda: (lambda d: d if d.waiters == 0 and not d.held else None)(
                bc.describe(stubs[0][0], key)), timeout=5.0, interval=0.1)
            assert d is not None, "%s: waiters left over: %r" % (key, bc.describe(stubs[0][0], key))

        used, bad = _check_holds(cx, keys)
        counts = dict(cx.counts)
        grants = counts.get("granted lease", 0) + counts.get("granted stream", 0)
        errors = {k: v for k, v in sorted(counts.items()) if k.split(" ")[0] in ALLOWED}
        restarts = sum(v for k, v in counts.items() if k.startswith("redis restarted"))
        bc.record_timing("chaos: %d grants (%d lease, %d stream, %d checked holds), %d redis restarts "
                         "(%d kill), %d pauses, %d lost/ended streams, errors %s; mean gap per grant"
                         % (grants, counts.get("granted lease", 0), counts.get("granted stream", 0), used,
                            restarts, counts.get("redis restarted (kill)", 0), counts.get("batond paused", 0),
                            sum(v for k, v in counts.items() if k.startswith("stream hold ended")), errors),
                         LOAD_SECONDS / max(grants, 1))
        assert not bad, "\n\n".join(bad[:10])
        assert not cx.problems, "unexpected results:\n" + "\n".join(cx.problems[:30])
        # A run that did not do its job proves nothing.
        assert restarts >= 2 and counts.get("batond paused", 0) >= 1, counts
        for key in keys:
            n = sum(1 for h in cx.holds[key] if h.end > h.start)
            assert n >= 20, "too few checked holds on %s (%d) for the test to mean anything" % (key, n)
    finally:
        for b in batonds:
            if b.running():
                b.signal(signal.SIGCONT)
        for chs in channels:
            for ch in chs:
                ch.close()
        for b in batonds:
            b.stop()  # the start_batond fixture checks exit status and sanitizer reports
        r.stop()
