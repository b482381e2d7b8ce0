"""Malformed requests: INVALID_ARGUMENT naming the field, nothing reaches Redis;
oversized messages are refused by gRPC limits and the server keeps working."""
import grpc
import pytest

import bclient as bc
from bclient import pb

INVALID = grpc.StatusCode.INVALID_ARGUMENT
TOKEN = "0123456789abcdef0123456789abcdef"


def _acq(**kw):
    pool = kw.pop("pool", None)
    req = pb.AcquireRequest(**kw)
    if pool is not None:
        req.pool.name, req.pool.devices = pool
    return req


# (id, request, words of which the message must contain one)
ACQUIRE_CASES = [
    ("neither-key-nor-pool", _acq(owner="o"), ("key", "pool")),
    ("key-with-space", _acq(key="a b"), ("key",)),
    ("key-257-bytes", _acq(key="k" * 257), ("key",)),
    ("key-non-ascii", _acq(key="caf\u00e9"), ("key",)),
    ("key-newline", _acq(key="a\nb"), ("key",)),
    ("key-nul", _acq(key="k\x00x"), ("key",)),
    ("owner-nul", _acq(key="k", owner="a\x00b"), ("owner",)),
    ("key-and-pool", _acq(key="k1", pool=("p1", 2)), ("key", "pool")),
    ("pool-devices-0", _acq(pool=("p2", 0)), ("devices", "pool")),
    ("pool-devices-negative", _acq(pool=("p2", -1)), ("devices", "pool")),
    ("pool-devices-too-many", _acq(pool=("p3", 65)), ("devices", "pool")),
    ("pool-empty-name", _acq(pool=("", 2)), ("pool", "name")),
    ("pool-name-space", _acq(pool=("p q", 2)), ("pool", "name")),
    ("pool-device-key-too-long", _acq(pool=("p" * 255, 2)), ("pool", "name")),
    ("ttl-negative", _acq(key="k", ttl_ms=-1), ("ttl",)),
    ("ttl-below-min", _acq(key="k", ttl_ms=10), ("ttl",)),
    ("ttl-above-max", _acq(key="k", ttl_ms=3600001), ("ttl",)),
    ("wait-above-max", _acq(key="k", wait_ms=300001), ("wait",)),
    ("owner-257-bytes", _acq(key="k", owner="o" * 257), ("owner",)),
    ("owner-control-char", _acq(key="k", owner="a\x01b"), ("owner",)),
    ("mode-unknown", _acq(key="k", mode=7), ("mode",)),
]


@pytest.mark.parametrize("req,words", [c[1:] for c in ACQUIRE_CASES], ids=[c[0] for c in ACQUIRE_CASES])
def test_invalid_acquire(stub, req, words):
    events, code, details, secs = bc.acquire(stub, request=req, timeout=10.0)
    assert code == INVALID, (code, details)
    assert any(w in details.lower() for w in words), "message %r names none of %s" % (details, words)
    assert not events
    assert secs < 5.0


def test_valid_boundaries(stub):
    """The limits themselves are accepted (so the invalid cases test the limit)."""
    long_key = (bc.uniq("b") + "k" * 256)[:256]
    for key, owner, ttl in ((long_key, "o" * 256, 50), (bc.uniq("b") + "_-.:/@+=AZaz09", "", 3600000)):
        g = bc.grant(stub, key, owner, ttl_ms=ttl)
        assert g.key == key and g.ttl_ms == ttl
        if ttl > 1000:  # the 50 ms one expires by itself
            bc.release(stub, key, g.token)
    key = bc.uniq("maxwait")
    g = bc.grant(stub, key, "w", wait_ms=300000)
    bc.release(stub, key, g.token)
    name = "q" * 254  # "name/1" is exactly 256 bytes
    g = bc.grant(stub, owner="x", pool=name, devices=2)
    assert g.key == name + "/0"
    bc.release(stub, g.key, g.token)


def _raw_acquire_bytes(key, owner_bytes):
    """An AcquireRequest encoded by hand, to send an owner that is not UTF-8
    (the Python protobuf library refuses to encode one)."""
    def field(num, data):
        out = bytes([(num << 3) | 2])
        n = len(data)
        while n >= 0x80:
            out += bytes([(n & 0x7F) | 0x80])
            n >>= 7
        return out + bytes([n]) + data
    return field(1, key.encode()) + field(2, owner_bytes)


def test_invalid_utf8_owner(channel):
    call = channel.unary_stream("/baton.v1.LockService/Acquire",
                                request_serializer=lambda b: b,
                                response_deserializer=pb.AcquireEvent.FromString)
    key = bc.uniq("utf8")
    try:
        events = list(call(_raw_acquire_bytes(key, b"bad\xff\xfeowner"), timeout=10.0))
        code, details = bc.OK, ""
    except grpc.RpcError as e:
        events, code, details = [], e.code(), e.details() or ""
    assert code == INVALID, (code, details, events)
    assert "owner" in details.lower() or "utf" in details.lower(), details


UNARY_CASES = [
    ("renew-bad-token", "Renew", pb.RenewRequest(key="k", token="xyz"), ("token",)),
    ("renew-uppercase-token", "Renew", pb.RenewRequest(key="k", token=TOKEN.upper()), ("token",)),
    ("renew-31-char-token", "Renew", pb.RenewRequest(key="k", token=TOKEN[:31]), ("token",)),
    ("renew-empty-key", "Renew", pb.RenewRequest(key="", token=TOKEN), ("key",)),
    ("renew-ttl-negative", "Renew", pb.RenewRequest(key="k", token=TOKEN, ttl_ms=-5), ("ttl",)),
    ("renew-ttl-above-max", "Renew", pb.RenewRequest(key="k", token=TOKEN, ttl_ms=3600001), ("ttl",)),
    ("release-empty-token", "Release", pb.ReleaseRequest(key="k", token=""), ("token",)),
    ("release-bad-token", "Release", pb.ReleaseRequest(key="k", token="g" * 32), ("token",)),
    ("release-bad-key", "Release", pb.ReleaseRequest(key="bad key", token=TOKEN), ("key",)),
    ("describe-empty-key", "Describe", pb.DescribeRequest(key=""), ("key",)),
    ("describe-nul-key", "Describe", pb.DescribeRequest(key="k\x00x"), ("key",)),
    ("release-nul-token", "Release", pb.ReleaseRequest(key="k", token=TOKEN[:16] + "\x00" + TOKEN[17:]),
     ("token",)),
    ("describe-long-key", "Describe", pb.DescribeRequest(key="d" * 300), ("key",)),
    ("force-fencing-0", "ForceRelease", pb.ForceReleaseRequest(key="k", fencing=0), ("fencing",)),
    ("force-empty-key", "ForceRelease", pb.ForceReleaseRequest(key="", fencing=5), ("key",)),
]


@pytest.mark.parametrize("method,req,words", [c[1:] for c in UNARY_CASES], ids=[c[0] for c in UNARY_CASES])
def test_invalid_unary(stub, method, req, words):
    code, details = bc.rpc_error(getattr(stub, method), req)
    assert code == INVALID, (code, details)
    assert any(w in details.lower() for w in words), "message %r names none of %s" % (details, words)


WATCH_CASES = [
    ("neither", pb.WatchRequest(), ("key", "prefix")),
    ("both", pb.WatchRequest(key="k", prefix="k"), ("key", "prefix")),
    ("bad-prefix", pb.WatchRequest(prefix="a b"), ("prefix",)),
    ("bad-key", pb.WatchRequest(key="k" * 257), ("key",)),
]


@pytest.mark.parametrize("req,words", [c[1:] for c in WATCH_CASES], ids=[c[0] for c in WATCH_CASES])
def test_invalid_watch(stub, req, words):
    try:
        events = list(stub.Watch(req, timeout=5.0))
        code, details = bc.OK, ""
    except grpc.RpcError as e:
        events, code, details = [], e.code(), e.details() or ""
    assert code == INVALID, (code, details, events)
    assert any(w in details.lower() for w in words), details


def test_oversized_message_is_refused_and_server_survives(stub):
    key = bc.uniq("huge")
    events, code, details, _ = bc.acquire(stub, key, owner="x" * (1 << 20), timeout=10.0)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, (code, details)
    assert not events
    assert not bc.describe(stub, key).held
    g = bc.grant(stub, key, "normal")
    bc.release(stub, key, g.token)
