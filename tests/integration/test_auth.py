"""Bearer tokens and per-prefix access (the `auth:` section): the access
matrix of every RPC and Session operation x no token / wrong token / other
prefix / allowed / admin, owners prefixed with the token's name, Watch
filtering, Health without a token, and refusals that need no Redis."""
import hashlib
import queue
import threading
import time

import grpc
import pytest
from baton.v1 import lock_pb2 as pb
from baton.v1 import lock_pb2_grpc

import bclient as bc

UNAUTH = grpc.StatusCode.UNAUTHENTICATED
DENIED = grpc.StatusCode.PERMISSION_DENIED

TOKENS = {"team-a": "a-secret-0123456789", "team-b": "b-secret-0123456789", "ops": "ops-secret-0123456789"}


def sha(tok):
    return hashlib.sha256(tok.encode()).hexdigest()


AUTH_CONFIG = """\
auth:
  tokens:
    - name: team-a
      sha256: "%s"
      prefixes: ["team-a/"]
    - name: team-b
      sha256: "%s"
      prefixes: ["team-b/", "shared/"]
      admin: false
    - name: ops
      sha256: "%s"
      prefixes: [""]
      admin: true
""" % (sha(TOKENS["team-a"]), sha(TOKENS["team-b"]), sha(TOKENS["ops"]).upper())


def md(name):
    return (("authorization", "Bearer " + TOKENS[name]),)


class _Auth(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
            grpc.StreamStreamClientInterceptor):
    """Adds `authorization: Bearer <token>` to every call of a channel."""

    def __init__(self, value):
        self.value = value

    def _details(self, d):
        meta = list(d.metadata or []) + [("authorization", self.value)]
        return d._replace(metadata=meta) if hasattr(d, "_replace") else _Details(d, meta)

    def intercept_unary_unary(self, cont, d, req):
        return cont(self._details(d), req)

    def intercept_unary_stream(self, cont, d, req):
        return cont(self._details(d), req)

    def intercept_stream_stream(self, cont, d, it):
        return cont(self._details(d), it)


class _Details(grpc.ClientCallDetails):
    def __init__(self, d, meta):
        self.method, self.timeout, self.credentials = d.method, d.timeout, d.credentials
        self.wait_for_ready, self.compression = d.wait_for_ready, d.compression
        self.metadata = meta


@pytest.fixture(scope="module")
def server(start_redis_module, batond_binary, workdir):
    import harness
    b = harness.Batond(batond_binary, workdir, start_redis_module.address, name="batond-auth",
                       extra_config=AUTH_CONFIG, probe_metadata=md("ops"))
    b.start()
    yield b
    b.check_clean_exit(b.stop())


@pytest.fixture(scope="module")
def start_redis_module(workdir):
    import harness
    r = harness.RedisServer(workdir).start()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def stubs(server):
    chans = {}
    out = {}
    plain = grpc.insecure_channel(server.target)
    chans["none"] = plain
    out["none"] = lock_pb2_grpc.LockServiceStub(plain)
    for name, value in [("wrong", "Bearer not-a-known-token"), ("team-a", "Bearer " + TOKENS["team-a"]),
                        ("team-b", "Bearer " + TOKENS["team-b"]), ("ops", "Bearer " + TOKENS["ops"]),
                        ("scheme", "Basic " + TOKENS["ops"])]:
        ch = grpc.intercept_channel(grpc.insecure_channel(server.target), _Auth(value))
        chans[name] = ch
        out[name] = lock_pb2_grpc.LockServiceStub(ch)
    yield out
    for ch in chans.values():
        ch.close()


def code_of(fn, *a, **kw):
    try:
        r = fn(*a, timeout=5, **kw)
        if hasattr(r, "__iter__") and not isinstance(r, (pb.RenewResponse, pb.ReleaseResponse,
                                                          pb.DescribeResponse, pb.ListResponse)):
            for _ in r:
                pass
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as e:
        return e.code(), e.details()


def unary_calls(key, token="0" * 32, fencing=1):
    """(name, callable(stub)) for every RPC on `key`."""
    return [
        ("Acquire", lambda s: code_of(s.Acquire, bc.acquire_request(key, "w"))),
        ("Acquire(pool)", lambda s: code_of(s.Acquire, bc.acquire_request(pool=key + "pool", devices=2,
                                                                          owner="w"))),
        ("Renew", lambda s: code_of(s.Renew, pb.RenewRequest(key=key, token=token))),
        ("Release", lambda s: code_of(s.Release, pb.ReleaseRequest(key=key, token=token))),
        ("Describe", lambda s: code_of(s.Describe, pb.DescribeRequest(key=key))),
        ("ForceRelease", lambda s: code_of(s.ForceRelease, pb.ForceReleaseRequest(key=key, fencing=fencing))),
        ("Watch(key)", lambda s: watch_code(s, key=key)),
        ("Watch(prefix)", lambda s: watch_code(s, prefix=key)),
        ("List", lambda s: code_of(s.List, pb.ListRequest(prefix=key))),
    ]


def watch_code(stub, key="", prefix=""):
    """A Watch that is refused ends at once; one that is accepted stays open."""
    call = stub.Watch(pb.WatchRequest(key=key, prefix=prefix), timeout=5)
    try:
        call.initial_metadata()
        done = threading.Event()
        threading.Thread(target=lambda: (call.code(), done.set()), daemon=True).start()
        if not done.wait(0.5):
            return grpc.StatusCode.OK, "(open)"
        return call.code(), call.details()
    finally:
        call.cancel()


def test_no_token_and_wrong_token_are_unauthenticated(stubs):
    key = bc.uniq("team-a/x")
    key = "team-a/" + key
    for who in ("none", "wrong", "scheme"):
        for name, fn in unary_calls(key):
            code, msg = fn(stubs[who])
            assert code == UNAUTH, "%s with %s: %s %s" % (name, who, code, msg)
            assert "bearer token" in msg


def test_other_prefix_is_permission_denied_naming_the_rule(stubs):
    key = "team-b/" + bc.uniq("x")
    held = bc.grant(stubs["team-b"], key, "secret-holder-7")
    for name, fn in unary_calls(key, token=held.token, fencing=held.fencing):
        code, msg = fn(stubs["team-a"])
        want = DENIED
        assert code == want, "%s on team-b's key by team-a: %s %s" % (name, code, msg)
        assert "secret-holder-7" not in msg, "never another tenant's holder: " + msg
        if name != "ForceRelease":
            assert 'outside the prefixes of token "team-a" (allowed: "team-a/")' in msg, msg
    # The lock is untouched by all of that.
    d = stubs["team-b"].Describe(pb.DescribeRequest(key=key), timeout=5)
    assert d.held and d.fencing == held.fencing
    bc.release(stubs["team-b"], key, held.token)


def test_allowed_prefix_works_and_owner_carries_token_name(stubs):
    a = stubs["team-a"]
    key = "team-a/" + bc.uniq("own")
    g = bc.grant(a, key, "worker-3")
    d = bc.describe(a, key)
    assert d.held and d.owner == "team-a/worker-3", d.owner
    # team-b cannot pose as team-a: its owner text gets its own name first.
    key_b = "shared/" + bc.uniq("own")
    gb = bc.grant(stubs["team-b"], key_b, "team-a/worker-3")
    assert bc.describe(stubs["ops"], key_b).owner == "team-b/team-a/worker-3"
    assert bc.renew(a, key, g.token, ttl_ms=5000).ttl_ms == 5000
    assert bc.release(a, key, g.token).released
    bc.release(stubs["team-b"], key_b, gb.token)
    # A second prefix of the same token is allowed too.
    assert bc.describe(stubs["team-b"], "shared/" + bc.uniq("z")).held is False


def test_list_within_own_prefixes_or_admin(stubs):
    """List shows holders, so a token lists only under its own prefixes; an
    admin token lists anything."""
    key = "team-a/" + bc.uniq("ls")
    g = bc.grant(stubs["team-a"], key, "lister")
    mine = stubs["team-a"].List(pb.ListRequest(prefix=key), timeout=5)
    assert [(l.key, l.owner) for l in mine.locks] == [(key, "team-a/lister")]
    code, msg = code_of(stubs["team-a"].List, pb.ListRequest(prefix=""))
    assert code == DENIED and 'outside the prefixes of token "team-a"' in msg, (code, msg)
    code, msg = code_of(stubs["team-b"].List, pb.ListRequest(prefix="team-a/"))
    assert code == DENIED, (code, msg)
    seen, page = [], ""
    while True:
        r = stubs["ops"].List(pb.ListRequest(prefix="", page_token=page), timeout=5)
        seen += [l.key for l in r.locks]
        page = r.next_page_token
        if not page:
            break
    assert key in seen
    bc.release(stubs["team-a"], key, g.token)


def test_force_release_needs_admin(stubs):
    key = "team-a/" + bc.uniq("force")
    g = bc.grant(stubs["team-a"], key, "w")
    code, msg = code_of(stubs["team-a"].ForceRelease, pb.ForceReleaseRequest(key=key, fencing=g.fencing))
    assert code == DENIED and msg == 'ForceRelease is an operator call: token "team-a" is not admin', msg
    r = stubs["ops"].ForceRelease(pb.ForceReleaseRequest(key=key, fencing=g.fencing), timeout=5)
    assert r.released
    assert not bc.describe(stubs["team-a"], key).held


def test_admin_with_all_prefixes_reaches_every_key(stubs):
    key = "team-b/" + bc.uniq("adm")
    g = bc.grant(stubs["ops"], key, "oncall")
    assert bc.describe(stubs["team-b"], key).owner == "ops/oncall"
    assert bc.release(stubs["ops"], key, g.token).released


def test_pool_checked_by_its_name(stubs):
    pool = "team-a/" + bc.uniq("pool")[:40]
    g = bc.grant(stubs["team-a"], pool=pool, devices=2, owner="gpu")
    assert g.key.startswith(pool + "/")
    bc.release(stubs["team-a"], g.key, g.token)
    code, msg = code_of(stubs["team-b"].Acquire, bc.acquire_request(pool=pool, devices=2, owner="x"))
    assert code == DENIED and 'pool "%s"' % pool in msg, msg


def health_check(target, credentials=None):
    """grpc.health.v1.Health/Check of "" without a token (stubs built as in test_health.py)."""
    import os
    import shutil
    import subprocess
    import sys
    import tempfile
    import harness
    out = tempfile.mkdtemp(prefix="baton-it-health-auth-")
    try:
        subprocess.run([shutil.which("protoc") or "/usr/bin/protoc",
                        "-I", os.path.join(harness.SOURCE_DIR, "proto", "grpc", "health", "v1"),
                        "--python_out=" + out, "--grpc_python_out=" + out,
                        "--plugin=protoc-gen-grpc_python=" + harness.GRPC_PYTHON_PLUGIN, "health.proto"],
                       check=True)
        sys.path.insert(0, out)
        import health_pb2
        import health_pb2_grpc
    finally:
        sys.path.remove(out)
        shutil.rmtree(out, True)
    ch = grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target)
    with ch:
        r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        return r.status == health_pb2.HealthCheckResponse.SERVING


def test_health_check_needs_no_token(server):
    assert health_check(server.target)


def test_watch_prefix_sees_only_allowed_keys(stubs):
    tag = bc.uniq("w")[3:]
    wide = bc.WatchStream(stubs["team-a"], prefix="team-")  # wider than team-a/: filtered
    exact = bc.WatchStream(stubs["ops"], prefix="team-")
    time.sleep(0.3)
    ka, kb = "team-a/" + tag, "team-b/" + tag
    gb = bc.grant(stubs["team-b"], kb, "hidden")
    ga = bc.grant(stubs["team-a"], ka, "seen")
    bc.release(stubs["team-b"], kb, gb.token)
    bc.release(stubs["team-a"], ka, ga.token)
    exact.wait_event(lambda e: e.key == ka and e.type == pb.LockEvent.RELEASED)
    wide.wait_event(lambda e: e.key == ka and e.type == pb.LockEvent.RELEASED)
    keys = {e.key for e in wide.events() if tag in e.key}
    assert keys == {ka}, "team-a's watch of 'team-' saw %s" % keys
    assert {e.key for e in exact.events() if tag in e.key} == {ka, kb}
    owners = {e.owner for e in wide.events() if e.key == ka}
    assert owners == {"team-a/seen"}, owners
    wide.cancel()
    exact.cancel()
    code, msg = watch_code(stubs["team-a"], prefix="shared/")
    assert code == DENIED and 'watch prefix "shared/"' in msg, msg


class Session:
    """A Session stream whose responses arrive on a queue."""

    def __init__(self, stub):
        self.q = queue.Queue()
        self.out = queue.Queue()
        self.call = stub.Session(iter(self.q.get, None), timeout=30)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        try:
            for r in self.call:
                self.out.put(r)
        except grpc.RpcError as e:
            self.out.put(e)

    def send(self, **kw):
        self.q.put(pb.SessionRequest(**kw))

    def next(self):
        r = self.out.get(timeout=5)
        if isinstance(r, Exception):
            raise r
        return r

    def close(self):
        self.q.put(None)


def test_session_checked_per_operation(stubs):
    s = Session(stubs["team-a"])
    mine, theirs = "team-a/" + bc.uniq("s"), "team-b/" + bc.uniq("s")
    s.send(id=1, acquire=bc.acquire_request(theirs, "w"))
    r = s.next()
    assert r.id == 1 and r.WhichOneof("result") == "status" and r.status.code == DENIED.value[0], r
    assert 'key "%s" is outside the prefixes of token "team-a"' % theirs in r.status.message
    s.send(id=2, acquire=bc.acquire_request(mine, "w"))
    r = s.next()
    assert r.id == 2 and r.WhichOneof("result") == "granted", r
    tok = r.granted.token
    s.send(id=3, renew=pb.RenewRequest(key=theirs, token=tok))
    r = s.next()
    assert r.id == 3 and r.status.code == DENIED.value[0], r
    s.send(id=4, release=pb.ReleaseRequest(key=theirs, token=tok))
    r = s.next()
    assert r.id == 4 and r.status.code == DENIED.value[0], r
    s.send(id=5, renew=pb.RenewRequest(key=mine, token=tok, ttl_ms=4000))
    r = s.next()
    assert r.id == 5 and r.renew.ttl_ms == 4000, r
    s.send(id=6, release=pb.ReleaseRequest(key=mine, token=tok))
    r = s.next()
    assert r.id == 6 and r.release.released, r
    assert bc.describe(stubs["team-a"], mine).held is False
    s.close()


def test_session_without_token_is_unauthenticated(stubs):
    s = Session(stubs["none"])
    s.send(id=1, acquire=bc.acquire_request("team-a/" + bc.uniq("s"), "w"))
    with pytest.raises(grpc.RpcError) as e:
        s.next()
    assert e.value.code() == UNAUTH
    s.close()


def test_refusals_need_no_redis(start_redis, start_batond):
    """With Redis gone, a bad token and a foreign prefix are still answered
    UNAUTHENTICATED / PERMISSION_DENIED (not UNAVAILABLE): no round trip."""
    r = start_redis()
    b = start_batond(r.address, name="batond-auth-noredis", extra_config=AUTH_CONFIG, probe_metadata=md("ops"))
    r.stop()
    with grpc.insecure_channel(b.target) as ch:
        s = lock_pb2_grpc.LockServiceStub(ch)
        assert code_of(s.Describe, pb.DescribeRequest(key="team-a/x"))[0] == UNAUTH
        assert code_of(s.Describe, pb.DescribeRequest(key="team-b/x"), metadata=md("team-a"))[0] == DENIED
        assert code_of(s.Describe, pb.DescribeRequest(key="team-a/x"),
                       metadata=md("team-a"))[0] == grpc.StatusCode.UNAVAILABLE


def test_no_auth_section_means_no_token_needed(stub):
    """Without `auth`, batond behaves as before: no token, owner unchanged."""
    key = bc.uniq("noauth")
    g = bc.grant(stub, key, "plain-owner")
    assert bc.describe(stub, key).owner == "plain-owner"
    bc.release(stub, key, g.token)
