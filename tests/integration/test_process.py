"""batond as a process: bad configuration, starting before Redis."""
import os
import subprocess
import time

import grpc
from baton.v1 import lock_pb2_grpc

import bclient as bc
import harness


def _run(binary, *args):
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=20)


def test_bad_config_exits_2_naming_the_key(batond_binary, workdir):
    path = os.path.join(workdir, "bad.yaml")
    with open(path, "w") as f:
        f.write("locks:\n  default_ttl_ms: 600000\n  max_ttl_ms: -5\n")
    r = _run(batond_binary, "--config", path, "--listen", "127.0.0.1:%d" % harness.free_port())
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "max_ttl_ms" in r.stderr and "bad.yaml" in r.stderr, r.stderr

    with open(path, "w") as f:
        f.write("locks:\n  no_such_key: 1\n")
    r = _run(batond_binary, "--config", path, "--listen", "127.0.0.1:%d" % harness.free_port())
    assert r.returncode == 2 and "no_such_key" in r.stderr, (r.returncode, r.stderr)

    r = _run(batond_binary, "--config", os.path.join(workdir, "missing.yaml"))
    assert r.returncode == 2 and "missing.yaml" in r.stderr, (r.returncode, r.stderr)


def test_unknown_flag_and_missing_value_exit_2(batond_binary):
    r = _run(batond_binary, "--no-such-flag")
    assert r.returncode == 2, (r.returncode, r.stderr)
    r = _run(batond_binary, "--listen")
    assert r.returncode == 2 and "--listen" in r.stderr, (r.returncode, r.stderr)


def test_batond_started_before_redis(start_redis, start_batond):
    """Redis is not there yet: Acquire answers UNAVAILABLE at once; when
    Redis appears, batond connects by itself and serves."""
    port = harness.free_port()
    b = start_batond("127.0.0.1:%d" % port, name="batond-early", wait_ready=False)
    assert bc.wait_until(lambda: _port_open(b.port), 10.0), b.log_tail()
    with grpc.insecure_channel(b.target) as ch:
        stub = lock_pb2_grpc.LockServiceStub(ch)
        events, code, details, secs = bc.acquire(stub, bc.uniq("early"), "x", wait_ms=30000, timeout=20.0)
        assert code == grpc.StatusCode.UNAVAILABLE, (code, details)
        assert secs < 2.0
        start_redis(port=port)
        key = bc.uniq("early")
        t0 = time.monotonic()

        def works():
            _, code, _, _ = bc.acquire(stub, key, "x", ttl_ms=1000, timeout=5.0)
            return code == bc.OK
        assert bc.wait_until(works, 10.0, 0.1), "batond never connected to the late Redis:\n" + b.log_tail()
        bc.record_timing("Redis appears -> batond serves", time.monotonic() - t0)
    assert b.running()


def _port_open(port):
    import socket
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False
