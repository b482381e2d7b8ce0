"""/metrics (metrics.listen, --metrics-listen): the fixed metric names, a
scripted scenario read back from the endpoint, promtool's checker, and a
short fuzz of malformed HTTP against the port."""
import os
import random
import shutil
import socket
import subprocess
import sys
import time

import grpc
import pytest

import bclient as bc
import harness
import promtext as pt
from bclient import pb

sys.path.insert(0, os.path.join(harness.SOURCE_DIR, "tests", "deploy"))
from test_deploy import METRICS  # noqa: E402  (the names README documents)


@pytest.fixture(scope="module")
def mredis(workdir):
    """The metrics batond's own Redis: holds that other tests leave on the
    session's Redis expire while this module runs, and their events would move
    the gauges it checks (locks_held went 1 - 1 = 0 in one full run)."""
    r = harness.RedisServer(workdir).start()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def mb(batond_binary, workdir, mredis):
    """A batond with metrics on, on a Redis of its own."""
    port = harness.free_port()
    b = harness.Batond(batond_binary, workdir, mredis.address, name="batond-metrics",
                       extra_config='metrics:\n  listen: "127.0.0.1:%d"\n' % port)
    b.metrics_port = port
    b.start()
    yield b
    b.check_clean_exit(b.stop())


@pytest.fixture(scope="module")
def mstub(mb):
    from baton.v1 import lock_pb2_grpc
    ch = grpc.insecure_channel(mb.target)
    yield lock_pb2_grpc.LockServiceStub(ch)
    ch.close()


def wait_value(port, name, want, timeout=5.0, **labels):
    got = bc.wait_until(lambda: pt.value(pt.sample(port), name, **labels) == want, timeout)
    assert got, "%s%s: want %s, have %s" % (name, labels, want, pt.value(pt.sample(port), name, **labels))


def test_serves_every_documented_metric_and_promtool_accepts_it(mb, mstub):
    # a pool device held: the pool gauge has a value (released at the end:
    # the session's Redis is shared and other tests want node7 free)
    pg = bc.grant(mstub, pool="node7", devices=4, owner="m")
    try:
        check_exposition(mb)
    finally:
        bc.release(mstub, pg.key, pg.token)


def check_exposition(mb):
    status, ctype, text = pt.fetch(mb.metrics_port)
    assert status == 200 and ctype.startswith("text/plain; version=0.0.4"), ctype
    assert pt.families(text) >= METRICS, "missing: %s" % (METRICS - pt.families(text))
    if not shutil.which("promtool"):
        pytest.fail("promtool missing: deploy/install-deps.sh test installs prometheus")
    r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    # No label carries a lock key: every label value is from a fixed set
    # (or a configured pool name).
    s = pt.parse(text)
    allowed = {"mode", "reason", "method", "code", "le", "script", "version", "pool"}
    for name, labels in s:
        assert {k for k, _ in labels} <= allowed, (name, labels)
    assert pt.value(s, "baton_build_info", version="0.1.0") == 1
    wait_value(mb.metrics_port, "baton_redis_up", 1)  # published every 250 ms


def test_scenario_moves_each_metric(mb, mstub):
    p = mb.metrics_port
    # Gauges are published every 250 ms: wait until the last test's release
    # shows, so that `before` is a settled baseline.
    wait_value(p, "baton_locks_held", 0)
    before = pt.sample(p)

    def delta(name, **labels):
        return pt.value(pt.sample(p), name, **labels) - pt.value(before, name, **labels)

    # grant, then a waiter, then release: a handoff
    key = bc.uniq("m-scn")
    g = bc.grant(mstub, key, owner="holder-1")
    assert bc.wait_until(lambda: delta("baton_locks_held") == 1), "locks_held counts the grant"
    waiter = bc.AcquireStream(mstub, key, "waiter-1", wait_ms=10000)
    waiter.wait_queued()
    assert bc.wait_until(lambda: pt.value(pt.sample(p), "baton_waiters") >= 1), "waiters gauge"
    time.sleep(0.05)
    bc.release(mstub, key, g.token)
    g2 = waiter.wait_granted()
    assert waiter.wait_end() == (bc.OK, "")
    assert delta("baton_grants_total", mode="lease") == 2
    assert delta("baton_releases_total", reason="release") == 1
    assert delta("baton_acquire_wait_seconds_count") == 2
    # the waiter waited >= 50 ms: its wait is in a bucket above 0.05 s
    assert delta("baton_acquire_wait_seconds_bucket", le="0.05") == 1
    assert bc.wait_until(lambda: delta("baton_handoff_seconds_count") == 1), "one handoff"
    assert bc.wait_until(lambda: delta("baton_hold_seconds_count") == 1), "holder-1's hold timed"
    assert bc.wait_until(lambda: pt.value(pt.sample(p), "baton_waiters") == 0)

    # a wait that runs out: a timeout, answered ABORTED
    events, code, _, _ = bc.acquire(mstub, key, "late", wait_ms=200)
    assert code == grpc.StatusCode.ABORTED
    assert delta("baton_acquire_timeouts_total") == 1
    assert delta("baton_requests_total", method="Acquire", code="ABORTED") == 1
    # a try-lock that fails is not a timeout
    bc.acquire(mstub, key, "try", wait_ms=0)
    assert delta("baton_acquire_timeouts_total") == 1

    # force-release of the waiter's grant
    mstub.ForceRelease(pb.ForceReleaseRequest(key=key, fencing=g2.fencing), timeout=5)
    assert delta("baton_releases_total", reason="force") == 1

    # expiry: the TTL runs out
    ekey = bc.uniq("m-exp")
    bc.grant(mstub, ekey, owner="expires", ttl_ms=200)
    assert bc.wait_until(lambda: delta("baton_releases_total", reason="expired") >= 1, 5.0), "expired"

    # stream mode: held while the stream is open, released when it ends
    skey = bc.uniq("m-stream")
    s = bc.AcquireStream(mstub, skey, "streamer", mode=bc.STREAM)
    s.wait_granted()
    assert delta("baton_grants_total", mode="stream") == 1
    assert bc.wait_until(lambda: pt.value(pt.sample(p), "baton_streams_open") >= 1)
    s.cancel()
    assert bc.wait_until(lambda: delta("baton_releases_total", reason="stream_end") == 1), "stream_end"

    # bad input is counted with its code
    bc.acquire(mstub, "bad key", "x")
    assert delta("baton_requests_total", method="Acquire", code="INVALID_ARGUMENT") == 1
    bc.describe(mstub, key)
    assert delta("baton_requests_total", method="Describe", code="OK") >= 1

    # every lock of the scenario is over: held count back where it was
    assert bc.wait_until(lambda: pt.value(pt.sample(p), "baton_locks_held") ==
                         pt.value(before, "baton_locks_held")), "locks_held back"
    after = pt.sample(p)
    assert pt.value(after, "baton_redis_script_seconds_count", script="acquire") > \
        pt.value(before, "baton_redis_script_seconds_count", script="acquire")
    assert pt.value(after, "baton_hold_seconds_count") - pt.value(before, "baton_hold_seconds_count") >= 4


def test_pool_devices_and_watchers(mb, mstub):
    p = mb.metrics_port
    start = pt.value(pt.sample(p), "baton_pool_devices_held", pool="node7")
    holds = [bc.AcquireStream(mstub, owner="pool-%d" % i, mode=bc.STREAM, pool="node7", devices=4)
             for i in range(2)]
    for h in holds:
        h.wait_granted()
    wait_value(p, "baton_pool_devices_held", start + 2, pool="node7")
    w = bc.WatchStream(mstub, prefix="m-")
    assert bc.wait_until(lambda: pt.value(pt.sample(p), "baton_watchers") >= 1)
    for h in holds:
        h.cancel()
    wait_value(p, "baton_pool_devices_held", start, pool="node7")
    w.cancel()
    wait_value(p, "baton_watchers", 0)


def test_redis_down_is_seen(batond_binary, workdir, start_redis):
    r = start_redis()
    port = harness.free_port()
    b = harness.Batond(batond_binary, workdir, r.address, name="batond-metrics-redis",
                       extra_config='metrics:\n  listen: "127.0.0.1:%d"\n' % port)
    b.start()
    try:
        wait_value(port, "baton_redis_up", 1)  # published every 250 ms
        r.stop()
        wait_value(port, "baton_redis_up", 0)
        assert b.running()
    finally:
        b.check_clean_exit(b.stop())


def test_bad_metrics_listen_is_a_config_error(batond_binary, workdir):
    path = os.path.join(workdir, "bad-metrics.yaml")
    with open(path, "w") as f:
        f.write('listen: "127.0.0.1:0"\nmetrics:\n  listen: "nowhere"\n')
    r = subprocess.run([batond_binary, "--config", path, "--check-config"], capture_output=True, text=True)
    assert r.returncode == 2
    assert "%s:3: metrics.listen: expected \"host:port\"" % path in r.stderr, r.stderr
    r = subprocess.run([batond_binary, "--metrics-listen", "1.2.3.4:99999", "--check-config"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "<command line>: metrics.listen:" in r.stderr, r.stderr
    r = subprocess.run([batond_binary, "--metrics-listen", "127.0.0.1:9464", "--check-config"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and 'listen: "127.0.0.1:9464"  # command line' in r.stdout, r.stdout


def test_busy_metrics_port_stops_batond(batond_binary, workdir, redis_server):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        busy = s.getsockname()[1]
        r = subprocess.run([batond_binary, "--listen", "127.0.0.1:0", "--redis", redis_server.address,
                            "--metrics-listen", "127.0.0.1:%d" % busy], capture_output=True, text=True,
                           timeout=20)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert "metrics.listen: cannot listen on 127.0.0.1:%d: Address already in use" % busy in r.stderr, r.stderr


def _raw(port, data, read=True, timeout=3.0):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
            if read:
                s.shutdown(socket.SHUT_WR)
                return s.recv(65536)
        except OSError:
            return b""
    return b""


def test_http_port_survives_malformed_requests(mb):
    p = mb.metrics_port
    assert _raw(p, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 404")
    assert _raw(p, b"DELETE /metrics HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 405")
    assert b"baton_build_info" in _raw(p, b"GET /metrics HTTP/1.0\r\n\r\n")
    rnd = random.Random(18)
    fixed = [
        b"", b"\r\n\r\n", b"GET\r\n\r\n", b"GET /metrics\r\n\r\n", b"GET /metrics HTTP/9.9\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\n" + b"X: " + b"a" * 100000 + b"\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\nabc",
        b"POST /metrics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
        b"GET /%00%ff/../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\n" + b"H: v\r\n" * 5000 + b"\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(200),  # a TLS ClientHello
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    ]
    cases = fixed + [bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 2048))) for _ in range(150)]
    cases += [b"GET /metrics HTTP/1.1\r\n" + bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 512)))
              for _ in range(100)]
    for i, c in enumerate(cases):
        _raw(p, c, timeout=0.2)  # an incomplete request gets no answer: do not wait for one
        if i % 50 == 0:
            assert pt.fetch(p)[0] == 200, "case %d" % i
    # Half-sent requests hold a connection only until the idle timeout (3 s):
    # after it the server has closed them all and scrapes get through.
    socks = []
    for _ in range(40):
        s = socket.create_connection(("127.0.0.1", p), timeout=6)
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        socks.append(s)
    t0 = time.monotonic()
    for s in socks:
        assert s.recv(100) == b"", "the server closes an idle half-sent request"
        s.close()
    assert time.monotonic() - t0 < 5.5
    assert bc.wait_until(lambda: pt.fetch(p)[0] == 200, 5.0)
    assert mb.running()
