"""What the sync and asyncio clients share: durations, errors from gRPC
statuses, request building, event and description objects."""
import os
import re
import socket

import grpc

from baton.v1 import lock_pb2 as pb

DEFAULT_TARGET = "127.0.0.1:50051"

# Keepalive pings every 1.5 s, the connection given up when one goes
# unanswered for 1.5 s: a batond that hangs or a network that goes silent is
# noticed within 3 s, before batond gives a vanished holder's lock away (its
# own keepalive timeout, 5 s at the earliest). batond accepts pings down to
# one a second, also on a connection without calls.
KEEPALIVE_OPTIONS = [
    ("grpc.keepalive_time_ms", 1500),
    ("grpc.keepalive_timeout_ms", 1500),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # Back at most 1 s after batond restarts, not gRPC's default 120 s.
    # (Not grpc.min_reconnect_backoff_ms: it is also the connect timeout, and
    # 100 ms failed connections on a loaded machine, "tcp handshaker shutdown".)
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.initial_reconnect_backoff_ms", 100),
]

# Unary calls (Release, Renew, Describe, ForceRelease) give up after this
# long rather than hang on a batond that froze.
CALL_TIMEOUT = 10.0


class BatonError(Exception):
    """Any error from Baton. `.code` is the gRPC status (or None), `.details`
    the server's message."""

    def __init__(self, message, code=None, details=None):
        super().__init__(message)
        self.code = code
        self.details = details if details is not None else message


class Busy(BatonError):
    """Not acquired within `wait`. `.holder` and `.holder_fencing` name the
    holder when the server's answer did (None for a busy pool)."""

    def __init__(self, message, code=None, details=None, holder=None, holder_fencing=None):
        super().__init__(message, code, details)
        self.holder = holder
        self.holder_fencing = holder_fencing


class LockLost(BatonError):
    """The lock is no longer held by us: force-released, expired, its stream
    or connection broke, or a token that no longer holds the key was used."""


class Unavailable(BatonError):
    """batond (or its Redis) could not be reached, or did not answer in time."""


class InvalidArgument(BatonError):
    """The server (or this library) rejected an argument; the message names it."""


_HELD_BY = re.compile(r"held by '(.*)' \(fencing (\d+)\)\s*$", re.S)


def parse_holder(details):
    """(owner, fencing) from a busy answer such as "not acquired within 0 ms:
    lock 'k' is held by 'worker-3' (fencing 17)", else (None, None)."""
    m = _HELD_BY.search(details or "")
    if not m:
        return None, None
    return m.group(1), int(m.group(2))


def error_from_rpc(err, what, acquiring=False):
    """The BatonError for a grpc.RpcError (or an aio.AioRpcError)."""
    code = err.code()
    details = err.details() or ""
    msg = "%s: %s" % (what, details or (code.name if code else "error"))
    if code == grpc.StatusCode.ABORTED and acquiring:
        holder, fencing = parse_holder(details)
        return Busy(msg, code, details, holder, fencing)
    if code in (grpc.StatusCode.ABORTED, grpc.StatusCode.FAILED_PRECONDITION):
        return LockLost(msg, code, details)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return Unavailable(msg, code, details)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgument(msg, code, details)
    return BatonError(msg, code, details)


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*$")


def seconds(value, name="duration"):
    """A duration in seconds (float): a number of seconds, or a string with
    a unit: "500ms", "5s", "2m", "1h" (a bare number is seconds)."""
    if isinstance(value, bool):
        raise InvalidArgument("%s: %r is not a duration" % (name, value))
    if isinstance(value, (int, float)):
        if value != value or value < 0:
            raise InvalidArgument("%s: %r is not a duration of 0 or more seconds" % (name, value))
        return float(value)
    if hasattr(value, "total_seconds"):  # datetime.timedelta
        return seconds(value.total_seconds(), name)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _UNITS[m.group(2) or "s"]
    raise InvalidArgument("%s: %r is not a duration (seconds, or a string such as "
                          "\"500ms\", \"5s\", \"2m\", \"1h\")" % (name, value))


def millis(value, name):
    ms = seconds(value, name) * 1000.0
    if ms > 2 ** 62:
        raise InvalidArgument("%s: %r is too long" % (name, value))
    return int(round(ms))


def wait_ms(wait):
    """None: the server's maximum (-1); 0: try once; else milliseconds."""
    return -1 if wait is None else millis(wait, "wait")


def ttl_ms(ttl):
    """None: the server's default (0); else milliseconds (at least 1)."""
    if ttl is None:
        return 0
    ms = millis(ttl, "ttl")
    if ms <= 0:
        raise InvalidArgument("ttl: %r must be more than 0" % (ttl,))
    return ms


MODES = {"stream": pb.HOLD_MODE_STREAM, "lease": pb.HOLD_MODE_LEASE}


def hold_mode(mode):
    try:
        return MODES[mode]
    except (KeyError, TypeError):
        raise InvalidArgument("mode: %r is not \"stream\" or \"lease\"" % (mode,)) from None


# Bumped in a forked child, so per-process state (the default owner, a
# client's channel) is noticed stale without a getpid() per call (a system
# call costs 1-2 us on the VMs measured, a good part of a lock cycle's budget).
fork_generation = 0
_owner = None


def _forked():
    global fork_generation, _owner
    fork_generation += 1
    _owner = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forked)


def default_owner():
    """host/pid; a forked child names its own pid."""
    global _owner
    o = _owner
    if o is None:
        o = _owner = "%s/%d" % (socket.gethostname(), os.getpid())
    return o


def acquire_request(key, owner, ttl, wait, mode, pool=None, devices=0, count=0, weight=0):
    if pool is None:
        if not isinstance(key, str) or not key:
            raise InvalidArgument("key: %r is not a non-empty string" % (key,))
        return pb.AcquireRequest(key=key, owner=owner, ttl_ms=ttl_ms(ttl), wait_ms=wait_ms(wait),
                                 mode=hold_mode(mode))
    if not isinstance(pool, str) or not pool:
        raise InvalidArgument("pool: %r is not a non-empty string" % (pool,))
    if isinstance(devices, bool) or not isinstance(devices, int) or devices <= 0:
        raise InvalidArgument("devices: %r is not a positive device count" % (devices,))
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise InvalidArgument("count: %r is not a device count (0 or 1 = one device)" % (count,))
    if isinstance(weight, bool) or not isinstance(weight, int) or weight < 0:
        raise InvalidArgument("weight: %r is not a weight (0 = the whole device)" % (weight,))
    return pb.AcquireRequest(pool=pb.Pool(name=pool, devices=devices, count=count, weight=weight), owner=owner,
                             ttl_ms=ttl_ms(ttl), wait_ms=wait_ms(wait), mode=hold_mode(mode))


def grant_devices(g):
    """(devices, fencings, names) of a grant: every device of a pool grant
    (a server from before Pool.count reports one), names [] when the pool has
    none; ([], [], []) for a key."""
    if g.devices:
        return list(g.devices), list(g.fencings), list(g.device_names)
    if g.device >= 0:
        return [g.device], [g.fencing], []
    return [], [], []


def cuda_visible_devices(lock):
    """CUDA_VISIBLE_DEVICES for a pool lock: its devices' names when the
    pool has them, else their indexes: "1,3"."""
    return ",".join(lock.device_names or [str(d) for d in lock.devices])


def call_metadata(token):
    if token is None:
        return None
    if not isinstance(token, str) or not token or "\n" in token:
        raise InvalidArgument("token: must be a non-empty string")
    return (("authorization", "Bearer " + token),)


def credentials(tls):
    """None/False: plaintext. True: TLS with the system's roots. A path (str)
    or PEM (bytes): TLS trusting that CA. A grpc.ChannelCredentials: as is."""
    if tls is None or tls is False:
        return None
    if tls is True:
        return grpc.ssl_channel_credentials()
    if isinstance(tls, grpc.ChannelCredentials):
        return tls
    if isinstance(tls, bytes):
        return grpc.ssl_channel_credentials(root_certificates=tls)
    if isinstance(tls, (str, os.PathLike)):
        with open(tls, "rb") as f:
            return grpc.ssl_channel_credentials(root_certificates=f.read())
    raise InvalidArgument("tls: %r is not None, True, a CA file, PEM bytes or grpc.ChannelCredentials"
                          % (tls,))


class Event:
    """One Watch event: .type ("ACQUIRED", "RELEASED", "EXPIRED",
    "FORCE_RELEASED"), .key, .owner, .fencing, .at (Unix time in seconds)."""

    __slots__ = ("type", "key", "owner", "fencing", "at")

    def __init__(self, type, key, owner, fencing, at):
        self.type, self.key, self.owner, self.fencing, self.at = type, key, owner, fencing, at

    @classmethod
    def from_pb(cls, ev):
        try:
            name = pb.LockEvent.Type.Name(ev.type)
        except ValueError:
            name = str(ev.type)
        return cls(name, ev.key, ev.owner, ev.fencing, ev.at_unix_ms / 1000.0)

    def __repr__(self):
        return "Event(type=%r, key=%r, owner=%r, fencing=%d, at=%.3f)" % (
            self.type, self.key, self.owner, self.fencing, self.at)


class Description:
    """Who holds a key: .held, .owner, .fencing, .ttl (seconds left),
    .waiters (queued acquires)."""

    __slots__ = ("key", "held", "owner", "fencing", "ttl", "waiters")

    def __init__(self, key, r):
        self.key = key
        self.held = r.held
        self.owner = r.owner
        self.fencing = r.fencing
        self.ttl = r.ttl_ms / 1000.0
        self.waiters = r.waiters

    def __bool__(self):
        return self.held

    def __repr__(self):
        return "Description(key=%r, held=%r, owner=%r, fencing=%d, ttl=%.3f, waiters=%d)" % (
            self.key, self.held, self.owner, self.fencing, self.ttl, self.waiters)


def watch_request(key, prefix):
    if (key is None) == (prefix is None):
        raise InvalidArgument("watch: give exactly one of key and prefix")
    return pb.WatchRequest(key=key or "", prefix=prefix or "")


def check_key(key):
    if not isinstance(key, str) or not key:
        raise InvalidArgument("key: %r is not a non-empty string" % (key,))
    return key


def swap_env(name, value):
    """Sets os.environ[name] (None: unsets); returns the previous value."""
    old = os.environ.get(name)
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
    return old


LEASE_MARGIN = 5  # a lease is reported lost a fifth of its TTL before it runs out
