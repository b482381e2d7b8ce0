"""Randomized hammer of multi-device pool grants against a real batond and
Redis: many clients asking for 1-4 of 6 devices (and, on the shared pool
gpu80 of capacity 80, for 1-2 devices with weights 0, 20, 40 and 60), LEASE
and STREAM holds, try-once and waiting requests, cancels while waiting or
holding, and holder processes killed with SIGKILL.

The checker works on client-side conservative intervals: a device counts as
held from the moment the client saw the Granted message (after Redis made
the grant) until the moment just before the client released, cancelled or
killed its holder (before Redis can free it). Every real hold contains its
interval, so where the weights of intervals of one device that overlap sum
above its capacity (a whole-device hold weighs the capacity) there was a real
over-capacity grant; two holds that could not coexist must follow one another
in fencing order (fencing never goes back), and every grant must hold exactly
the count asked for (never partial).
"""
import random
import signal
import subprocess
import threading
import time

import bclient as bc
import harness

DURATION = 8.0

HOLDER = (
    "import sys, grpc\n"
    "from baton.v1 import lock_pb2 as pb, lock_pb2_grpc as pg\n"
    "stub = pg.LockServiceStub(grpc.insecure_channel(sys.argv[1]))\n"
    "req = pb.AcquireRequest(owner='proc', wait_ms=10000, mode=pb.HOLD_MODE_STREAM,\n"
    "                        pool=pb.Pool(name=sys.argv[2], devices=int(sys.argv[4]), count=int(sys.argv[3]),\n"
    "                                     weight=int(sys.argv[5])))\n"
    "for ev in stub.Acquire(req):\n"
    "    if ev.WhichOneof('event') == 'granted':\n"
    "        g = ev.granted\n"
    "        print('GRANTED', ' '.join('%d:%d' % (d, f) for d, f in zip(g.devices, g.fencings)), flush=True)\n")


class Log:
    def __init__(self):
        self.lock = threading.Lock()
        self.holds = []  # (count, weight, [(device, fencing)], start, end, what)
        self.errors = []

    def hold(self, count, weight, pairs, start, end, what):
        with self.lock:
            self.holds.append((count, weight, pairs, start, end, what))

    def error(self, e):
        with self.lock:
            self.errors.append(e)


def _pairs(g):
    return list(zip(g.devices, g.fencings))


class Pool:
    def __init__(self, name, devices, capacity, counts, weights):
        self.name, self.devices, self.capacity, self.counts, self.weights = name, devices, capacity, counts, weights


def _client(stub, pool, seed, deadline, log):
    try:
        _client_loop(stub, pool, seed, deadline, log)
    except Exception as e:  # a failed Release, for one: reported after the checker ran
        log.error(repr(e))


def _client_loop(stub, pool, seed, deadline, log):
    rnd = random.Random(seed)
    while time.monotonic() < deadline:
        count = rnd.choice(pool.counts)
        weight = rnd.choice(pool.weights)
        req = dict(pool=pool.name, devices=pool.devices, count=count, weight=weight)
        wait_ms = rnd.choice([0, 3000, 3000])
        if rnd.random() < 0.5:
            events, code, details, _ = bc.acquire(
                stub, request=bc.acquire_request(owner="lease", wait_ms=wait_ms, **req))
            if code != bc.OK:
                if code != bc.grpc.StatusCode.ABORTED:
                    log.error((code, details))
                continue
            start = time.monotonic()
            g = events[-1].granted
            time.sleep(rnd.random() * 0.02)
            end = time.monotonic()
            bc.release(stub, rnd.choice(list(g.keys)), g.token)
            log.hold(count, weight, _pairs(g), start, end, "lease")
        else:
            s = bc.AcquireStream(stub, request=bc.acquire_request(owner="stream", wait_ms=wait_ms, mode=bc.STREAM,
                                                                  **req))
            cancel_early = rnd.random() < 0.3
            s._wait(lambda: any(k == "granted" for k, _, _ in s.items),
                    rnd.random() * 0.05 if cancel_early else 5.0)
            if s.granted is None and not cancel_early and not s.ended:
                log.error("stream not granted or ended within 5 s: %s" % s.summary())
            if s.granted is not None:
                time.sleep(rnd.random() * 0.02)
            end = time.monotonic()
            s.cancel()
            g, start = s.granted, s.granted_at
            if g is not None:
                log.hold(count, weight, _pairs(g), start, end, "stream")
            elif s.ended and s.code not in (bc.grpc.StatusCode.ABORTED, bc.grpc.StatusCode.CANCELLED):
                log.error((s.code, s.details))


def _killer(batond, stubs_dir, pool, seed, deadline, log):
    rnd = random.Random(seed)
    env = harness.python_env(stubs_dir)
    while time.monotonic() < deadline:
        count = rnd.choice(pool.counts)
        weight = rnd.choice(pool.weights)
        proc = subprocess.Popen([harness.PYTHON, "-c", HOLDER, batond.target, pool.name, str(count),
                                 str(pool.devices), str(weight)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            line = proc.stdout.readline()
            start = time.monotonic()
            if not line.startswith("GRANTED "):
                continue  # not granted within its wait: nothing held
            pairs = [tuple(int(x) for x in p.split(":")) for p in line.split()[1:]]
            time.sleep(rnd.random() * 0.05)
            end = time.monotonic()
            proc.send_signal(signal.SIGKILL)
            log.hold(count, weight, pairs, start, end, "killed")
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)


def _hammer(stub, batond, stubs_dir, pool):
    log = Log()
    deadline = time.monotonic() + DURATION
    seed = int(time.time())
    print("hammer seed %d" % seed)
    threads = [threading.Thread(target=_client, args=(stub, pool, seed + i, deadline, log), daemon=True)
               for i in range(8)]
    threads.append(threading.Thread(target=_killer, args=(batond, stubs_dir, pool, seed - 1, deadline, log),
                                    daemon=True))
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)

    cap = pool.capacity
    per_dev = {d: [] for d in range(pool.devices)}
    kinds = {}
    for count, weight, pairs, start, end, what in log.holds:
        devs = [d for d, _ in pairs]
        assert len(devs) == count and len(set(devs)) == count, ("partial or odd grant", count, pairs, what)
        w = weight if 0 < weight < cap else cap
        for d, f in pairs:
            per_dev[d].append((f, start, end, w, what))
        kinds[what] = kinds.get(what, 0) + 1
    print("hammer %s: %d holds %s" % (pool.name, len(log.holds), kinds))
    for d, hs in per_dev.items():
        hs.sort()
        assert len({h[0] for h in hs}) == len(hs), "fencing repeated on device %d" % d
        # Sweep: the weights held at once never exceed the capacity.
        points = sorted([(h[1], 1, h) for h in hs] + [(h[2], 0, h) for h in hs], key=lambda p: (p[0], p[1]))
        load = 0
        for t, starts, h in points:
            load += h[3] if starts else -h[3]
            assert load <= cap, "device %d over capacity (%d > %d) at %.4f, hold %r" % (d, load, cap, t, h)
        # Holds that cannot coexist follow one another in fencing order.
        for i, a in enumerate(hs):
            for b in hs[i + 1:]:
                if a[3] + b[3] > cap:
                    assert a[2] <= b[1], ("device %d: fencing %d (%s, weight %d) until %.4f, fencing %d (%s, "
                                          "weight %d) from %.4f" % (d, a[0], a[4], a[3], a[2], b[0], b[4], b[3], b[1]))
    assert not log.errors, log.errors[:5]
    assert len(log.holds) > 100 and kinds.get("killed", 0) > 0 and kinds.get("stream", 0) > 0
    assert any(count > 1 for count, _, _, _, _, _ in log.holds)
    # Everything was given back: the pool is free.
    assert bc.wait_until(lambda: all(not bc.describe(stub, "%s/%d" % (pool.name, i)).held
                                     for i in range(pool.devices)), 10.0)


def test_hammer_no_device_held_twice_no_partial_grant(stub, batond, stubs_dir):
    _hammer(stub, batond, stubs_dir, Pool(bc.uniq("hammer"), 6, 1, [1, 2, 3, 4], [0]))


def test_hammer_shared_devices_never_over_capacity(stub, batond, stubs_dir):
    """gpu80 (harness config): 2 devices of capacity 80."""
    _hammer(stub, batond, stubs_dir, Pool("gpu80", 2, 80, [1, 1, 2], [0, 20, 40, 60]))
