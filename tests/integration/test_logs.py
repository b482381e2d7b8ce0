"""log_format: json (and --log-format) and log_lock_events: every line of
batond's log is one JSON object; grants and lock ends are logged with their
key, owner, fencing and wait / hold times."""
import json
import time

import grpc
import pytest

import bclient as bc
import harness


@pytest.fixture(scope="module")
def jb(batond_binary, workdir, redis_server):
    b = harness.Batond(batond_binary, workdir, redis_server.address, name="batond-jsonlog",
                       extra_config="log_format: json\nlog_lock_events: true\n")
    b.start()
    yield b
    b.check_clean_exit(b.stop())


def json_lines(b, start=0):
    out = []
    for line in b.log_text(start).splitlines():
        if line.startswith(("E1", "W1", "I1")):  # gRPC core's own stderr lines
            continue
        out.append(json.loads(line))
    return out


def test_every_line_is_json_with_lock_events(jb):
    from baton.v1 import lock_pb2_grpc
    stub = lock_pb2_grpc.LockServiceStub(grpc.insecure_channel(jb.target))
    mark = jb.log_size()
    key = bc.uniq("jlog")
    g = bc.grant(stub, key, owner="ocr 7")
    time.sleep(0.3)
    bc.release(stub, key, g.token)

    def ends():
        return [l for l in json_lines(jb, mark) if l["message"] == "lock ended" and l["key"] == key]
    assert bc.wait_until(ends), json_lines(jb, mark)
    lines = json_lines(jb)
    assert lines, "batond logged nothing"
    for l in lines:
        assert set(l) >= {"time", "level", "message"}, l
        assert l["level"] in ("debug", "info", "warn", "error")
        assert l["time"].endswith("Z")
    granted = [l for l in json_lines(jb, mark) if l["message"] == "lock granted" and l["key"] == key]
    assert len(granted) == 1, granted
    assert granted[0]["owner"] == "ocr 7" and granted[0]["fencing"] == g.fencing
    assert granted[0]["mode"] == "lease" and granted[0]["wait_ms"] >= 0
    (end,) = ends()
    assert end["event"] == "RELEASED" and end["fencing"] == g.fencing and end["owner"] == "ocr 7"
    assert 250 <= end["hold_ms"] < 5000, end


def test_log_format_flag_and_bad_value(batond_binary, workdir, redis_server):
    import subprocess
    r = subprocess.run([batond_binary, "--log-format", "yaml", "--check-config"], capture_output=True, text=True)
    assert r.returncode == 2 and "<command line>: log_format: must be text or json, got 'yaml'" in r.stderr
    r = subprocess.run([batond_binary, "--log-format", "json", "--check-config"], capture_output=True, text=True)
    assert r.returncode == 0 and 'log_format: "json"  # command line' in r.stdout, r.stdout
