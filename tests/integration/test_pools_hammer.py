"""Randomized hammer of multi-device pool grants against a real batond and
Redis: many clients asking for 1-4 of 6 devices, LEASE and STREAM holds,
try-once and waiting requests, cancels while waiting or holding, and holder
processes killed with SIGKILL.

The checker works on client-side conservative intervals: a device counts as
held from the moment the client saw the Granted message (after Redis made
the grant) until the moment just before the client released, cancelled or
killed its holder (before Redis can free it). Every real hold contains its
interval, so two intervals of one device that overlap are a real double
grant; ordered by fencing they must follow one another (fencing never goes
back), and every grant must hold exactly the count asked for (never partial).
"""
import random
import signal
import subprocess
import threading
import time

import bclient as bc
import harness

DEVICES = 6
DURATION = 8.0

HOLDER = (
    "import sys, grpc\n"
    "from baton.v1 import lock_pb2 as pb, lock_pb2_grpc as pg\n"
    "stub = pg.LockServiceStub(grpc.insecure_channel(sys.argv[1]))\n"
    "req = pb.AcquireRequest(owner='proc', wait_ms=10000, mode=pb.HOLD_MODE_STREAM,\n"
    "                        pool=pb.Pool(name=sys.argv[2], devices=%d, count=int(sys.argv[3])))\n"
    "for ev in stub.Acquire(req):\n"
    "    if ev.WhichOneof('event') == 'granted':\n"
    "        g = ev.granted\n"
    "        print('GRANTED', ' '.join('%%d:%%d' %% (d, f) for d, f in zip(g.devices, g.fencings)), flush=True)\n"
    % DEVICES)


class Log:
    def __init__(self):
        self.lock = threading.Lock()
        self.holds = []  # (count, [(device, fencing)], start, end, what)
        self.errors = []

    def hold(self, count, pairs, start, end, what):
        with self.lock:
            self.holds.append((count, pairs, start, end, what))

    def error(self, e):
        with self.lock:
            self.errors.append(e)


def _pairs(g):
    return list(zip(g.devices, g.fencings))


def _client(stub, name, seed, deadline, log):
    try:
        _client_loop(stub, name, seed, deadline, log)
    except Exception as e:  # a failed Release, for one: reported after the checker ran
        log.error(repr(e))


def _client_loop(stub, name, seed, deadline, log):
    rnd = random.Random(seed)
    while time.monotonic() < deadline:
        count = rnd.randint(1, 4)
        wait_ms = rnd.choice([0, 3000, 3000])
        if rnd.random() < 0.5:
            events, code, details, _ = bc.acquire(stub, owner="lease", pool=name, devices=DEVICES, count=count,
                                                  wait_ms=wait_ms)
            if code != bc.OK:
                if code != bc.grpc.StatusCode.ABORTED:
                    log.error((code, details))
                continue
            start = time.monotonic()
            g = events[-1].granted
            time.sleep(rnd.random() * 0.02)
            end = time.monotonic()
            bc.release(stub, rnd.choice(list(g.keys)), g.token)
            log.hold(count, _pairs(g), start, end, "lease")
        else:
            s = bc.AcquireStream(stub, owner="stream", pool=name, devices=DEVICES, count=count,
                                 wait_ms=wait_ms, mode=bc.STREAM)
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
                log.hold(count, _pairs(g), start, end, "stream")
            elif s.ended and s.code not in (bc.grpc.StatusCode.ABORTED, bc.grpc.StatusCode.CANCELLED):
                log.error((s.code, s.details))


def _killer(batond, stubs_dir, name, seed, deadline, log):
    rnd = random.Random(seed)
    env = harness.python_env(stubs_dir)
    while time.monotonic() < deadline:
        count = rnd.randint(1, 3)
        proc = subprocess.Popen([harness.PYTHON, "-c", HOLDER, batond.target, name, str(count)],
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
            log.hold(count, pairs, start, end, "killed")
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)


def test_hammer_no_device_over_capacity_no_partial_grant(stub, batond, stubs_dir):
    name = bc.uniq("hammer")
    log = Log()
    deadline = time.monotonic() + DURATION
    seed = int(time.time())
    print("hammer seed %d" % seed)
    threads = [threading.Thread(target=_client, args=(stub, name, seed + i, deadline, log), daemon=True)
               for i in range(8)]
    threads.append(threading.Thread(target=_killer, args=(batond, stubs_dir, name, seed - 1, deadline, log),
                                    daemon=True))
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)

    per_dev = {d: [] for d in range(DEVICES)}
    kinds = {}
    for count, pairs, start, end, what in log.holds:
        devs = [d for d, _ in pairs]
        assert len(devs) == count and len(set(devs)) == count, ("partial or odd grant", count, pairs, what)
        for d, f in pairs:
            per_dev[d].append((f, start, end, what))
        kinds[what] = kinds.get(what, 0) + 1
    print("hammer: %d holds %s" % (len(log.holds), kinds))
    for d, hs in per_dev.items():
        hs.sort()
        for a, b in zip(hs, hs[1:]):
            assert a[0] < b[0], ("fencing repeated on device %d" % d, a, b)
            assert a[2] <= b[1], ("device %d held twice: fencing %d (%s) until %.4f, fencing %d (%s) from %.4f"
                                  % (d, a[0], a[3], a[2], b[0], b[3], b[1]))
    assert not log.errors, log.errors[:5]
    assert len(log.holds) > 100 and kinds.get("killed", 0) > 0 and kinds.get("stream", 0) > 0
    assert any(count > 1 for count, _, _, _, _ in log.holds)
    # Everything was given back: the pool is free.
    assert bc.wait_until(lambda: all(not bc.describe(stub, "%s/%d" % (name, i)).held
                                     for i in range(DEVICES)), 10.0)
