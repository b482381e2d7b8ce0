"""Baton for Celery tasks: hold a GPU of a pool, or a key built from the
task's arguments, for the task's run. Two lines:

    from baton.celery import gpu, lock

    @app.task(bind=True, max_retries=None)
    @gpu("node7", devices=8)                   # CUDA_VISIBLE_DEVICES=<device>
    def transcribe(self, path): ...

    @app.task
    @lock("video:{video_id}", if_busy="skip")  # someone else is on it: skip
    def transcode(video_id): ...

The lock is held in stream mode: it is released when the task returns or
raises, and when the worker process dies (killed, OOM) batond releases it
within milliseconds, so no lock is left behind. Busy (not acquired within
`wait`) does what `if_busy` says:

    "retry"  task.retry(countdown=...) (the task's max_retries applies)
    "skip"   the task returns None without running
    "raise"  baton.Busy propagates (the task fails)

batond's address: `target=`, else the Celery setting `baton_target`, else
$BATON_TARGET, else 127.0.0.1:50051. One client per worker process, made
on first use (so prefork children never share the parent's connection).
Inside the task, `baton.celery.current_lock()` is the Lock held for it
(`.fencing` for the storage it writes, `.device` for a pool).
"""
import functools
import inspect
import logging
import os
import threading

import baton
from baton import _common as c

log = logging.getLogger("baton.celery")

_clients = {}
_clients_mu = threading.Lock()
_local = threading.local()

IF_BUSY = ("retry", "skip", "raise")


def _target(task, target):
    if target:
        return target
    app = getattr(task, "app", None)
    if app is not None:
        t = app.conf.get("baton_target")
        if t:
            return t
    return os.environ.get("BATON_TARGET") or c.DEFAULT_TARGET


def client(target=None, task=None):
    """This process's baton.Client for target (made on first use)."""
    target = _target(task, target)
    key = (target, os.getpid())
    with _clients_mu:
        cl = _clients.get(key)
        if cl is None:
            cl = _clients[key] = baton.Client(target)
        return cl


def current_lock():
    """The Lock held for the task running on this thread (None outside one)."""
    stack = getattr(_local, "stack", None)
    return stack[-1] if stack else None


def _current_task():
    try:
        from celery import current_task
    except ImportError:  # pragma: no cover - celery is what calls us
        return None
    t = current_task
    return t if t and getattr(t, "request", None) is not None and t.request.id else None


def _owner(task):
    if task is None:
        return None
    return "%s/%d celery %s[%s]" % (c.default_owner().split("/")[0], os.getpid(), task.name, task.request.id)


def _hold(acquire, if_busy, countdown, target):
    if if_busy not in IF_BUSY:
        raise baton.InvalidArgument("if_busy: %r is not one of %s" % (if_busy, ", ".join(IF_BUSY)))
    countdown = c.seconds(countdown, "countdown")

    def decorate(fn):
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def run(*args, **kwargs):
            task = _current_task()
            cl = client(target, task)
            try:
                holding = acquire(cl, sig, args, kwargs, _owner(task))
                lock = holding.__enter__()
            except baton.Busy as busy:
                if if_busy == "skip":
                    log.info("%s: skipped, %s", getattr(task, "name", fn.__name__), busy)
                    return None
                if if_busy == "retry" and task is not None:
                    raise task.retry(countdown=countdown, exc=busy)
                raise
            stack = _local.__dict__.setdefault("stack", [])
            stack.append(lock)
            try:
                result = fn(*args, **kwargs)
            except BaseException as e:
                stack.pop()
                holding.__exit__(type(e), e, e.__traceback__)
                raise
            stack.pop()
            holding.__exit__(None, None, None)
            return result

        return run

    return decorate


def lock(key, *, wait=0, ttl=None, if_busy="retry", countdown=5, target=None, mode="stream"):
    """Holds `key` for the task's run. `key` may name the task's arguments:
    "video:{video_id}" (str.format with the call's arguments by name).
    wait: 0 (default) = do not wait; None = the server's maximum."""
    def acquire(cl, sig, args, kwargs, owner):
        if "{" in key:
            bound = sig.bind_partial(*args, **kwargs)
            bound.apply_defaults()
            k = key.format(**bound.arguments)
        else:
            k = key
        return cl.lock(k, wait=wait, ttl=ttl, mode=mode, owner=owner)

    return _hold(acquire, if_busy, countdown, target)


def gpu(pool, devices, *, count=1, weight=0, wait=None, ttl=None, if_busy="retry", countdown=5, target=None,
        mode="stream"):
    """Holds one free device of `pool` for the task's run, with
    CUDA_VISIBLE_DEVICES set to it (restored after). count=2: two devices at
    once, all or none ("1,3"); weight=24: a share of each device's capacity
    (pools configured with one), as Client.gpu. wait: None (default) = up to
    the server's maximum; 0 = do not wait."""
    def acquire(cl, sig, args, kwargs, owner):
        return cl.gpu(pool, devices, count=count, weight=weight, wait=wait, ttl=ttl, mode=mode, owner=owner)

    return _hold(acquire, if_busy, countdown, target)
