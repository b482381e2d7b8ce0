"""baton.aio.Client against a real batond and redis-server. Each test runs
its own event loop (asyncio.run), so no pytest plugin is needed."""
import asyncio
import os
import random
import signal
import time

import pytest

import baton
import baton.aio


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


async def until(pred, timeout, step=0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = await pred()
        if v:
            return v
        await asyncio.sleep(step)
    return await pred()


def test_lock_try_lock_busy_and_release(batond, other, key):
    async def main():
        async with baton.aio.Client(batond.target, owner="aio-owner") as c:
            async with c.lock(key) as lock:
                assert lock.key == key and lock.fencing > 0 and lock.device == -1 and not lock.lost
                d = other.describe(key)
                assert d.held and d.owner == "aio-owner" and d.fencing == lock.fencing
                assert await c.try_lock(key) is None
                with pytest.raises(baton.Busy) as e:
                    await c.acquire(key, wait=0)
                assert e.value.holder == "aio-owner" and e.value.holder_fencing == lock.fencing
                t = time.monotonic()
                with pytest.raises(baton.Busy):
                    async with c.lock(key, wait="300ms"):
                        pytest.fail("granted while held")
                assert time.monotonic() - t >= 0.25
            # released before the block returned
            lk = other.try_lock(key)
            assert lk is not None
            lk.release()
            d = await c.describe(key)
            assert not d.held
    run(main())


@pytest.mark.parametrize("mode", ["stream", "lease"])
def test_released_when_the_block_raises(batond, other, key, mode):
    async def main():
        async with baton.aio.Client(batond.target) as c:
            with pytest.raises(KeyError):
                async with c.lock(key, mode=mode, ttl="1m"):
                    raise KeyError(1)
            lk = other.try_lock(key)
            assert lk is not None
            lk.release()
    run(main())


def test_fifo_waiters(batond, other, key):
    async def main():
        async with baton.aio.Client(batond.target) as c:
            holder = other.acquire(key)
            order = []

            async def waiter(i):
                async with c.lock(key, wait="20s") as lk:
                    order.append((i, lk.fencing))
                    await asyncio.sleep(0.01)

            tasks = []
            for i in range(4):
                tasks.append(asyncio.ensure_future(waiter(i)))
                assert await until(lambda: _waiters(c, key, i + 1), 5)
            holder.release()
            await asyncio.gather(*tasks)
            assert [i for i, _ in order] == [0, 1, 2, 3]
            assert [f for _, f in order] == sorted(f for _, f in order)
    run(main())


async def _waiters(c, key, n):
    return (await c.describe(key)).waiters == n


def test_lease_renews_and_lost_is_reported(batond, other, key):
    async def main():
        async with baton.aio.Client(batond.target) as c:
            async with c.lock(key, mode="lease", ttl="600ms") as lock:
                await asyncio.sleep(1.5)
                d = other.describe(key)
                assert d.held and d.fencing == lock.fencing and not lock.lost
            got = asyncio.Event()

            async def on_lost(lk):  # a coroutine function works too
                got.set()

            lock = await c.acquire(key, mode="lease", ttl="600ms", on_lost=on_lost)
            assert other.force_release(key, lock.fencing)
            await asyncio.wait_for(got.wait(), 3)
            assert lock.lost
            with pytest.raises(baton.LockLost):
                await lock.release()
    run(main())


def test_force_released_stream_lock_is_lost(batond, other, key):
    async def main():
        async with baton.aio.Client(batond.target) as c:
            lost = []
            with pytest.raises(baton.LockLost):
                async with c.lock(key, on_lost=lost.append) as lock:
                    assert other.force_release(key, lock.fencing)
                    for _ in range(300):
                        if lock.lost:
                            break
                        await asyncio.sleep(0.01)
                    assert lock.lost and lost == [lock] and "force-released" in lock.lost_reason
    run(main())


def test_stream_lock_lost_when_batond_is_killed(private_batond, key):
    b = private_batond()

    async def main():
        c = baton.aio.Client(b.target)
        lost = asyncio.Event()
        lock = await c.acquire(key, on_lost=lambda lk: lost.set())
        b.kill()
        await asyncio.wait_for(lost.wait(), 3)
        assert lock.lost
        with pytest.raises(baton.LockLost):
            await lock.release()
        with pytest.raises(baton.Unavailable):
            await c.try_lock(key)
        await c.close()
    run(main())


def test_keepalive_notices_a_frozen_batond(private_batond, key):
    b = private_batond()

    async def main():
        c = baton.aio.Client(b.target)
        lost = asyncio.Event()
        await c.acquire(key, on_lost=lambda lk: lost.set())
        await asyncio.sleep(0.2)
        b.signal(signal.SIGSTOP)
        t = time.monotonic()
        try:
            await asyncio.wait_for(lost.wait(), 5)
            assert time.monotonic() - t < 3.5
        finally:
            b.signal(signal.SIGCONT)
        await c.close()
    run(main())


def test_gpu_pool_and_cuda_visible_devices(batond, other):
    async def main():
        os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        async with baton.aio.Client(batond.target) as c:
            async with c.gpu("node7", 4) as a:
                assert os.environ["CUDA_VISIBLE_DEVICES"] == str(a.device) and a.key == "node7/%d" % a.device
                async with c.gpu("node7", 4) as b:
                    assert b.device != a.device and os.environ["CUDA_VISIBLE_DEVICES"] == str(b.device)
                    assert other.describe(b.key).held
                assert os.environ["CUDA_VISIBLE_DEVICES"] == str(a.device)
            assert "CUDA_VISIBLE_DEVICES" not in os.environ
            assert not other.describe(a.key).held
    run(main())


def test_watch_async_for(batond, other, key):
    async def main():
        async with baton.aio.Client(batond.target) as c:
            events = []
            w = c.watch(prefix=key)

            async def follow():
                async for ev in w:
                    events.append(ev)

            t = asyncio.ensure_future(follow())
            await asyncio.sleep(0.3)
            with other.lock(key + ":x", owner="someone") as lk:
                pass
            assert await until(lambda: _n(events, 2), 5)
            w.close()
            await asyncio.wait_for(t, 5)
            assert [(e.type, e.key, e.owner, e.fencing) for e in events] == [
                ("ACQUIRED", key + ":x", "someone", lk.fencing), ("RELEASED", key + ":x", "someone", lk.fencing)]
    run(main())


async def _n(lst, n):
    return len(lst) >= n


def test_describe_and_force_release(batond, other, key):
    async def main():
        async with baton.aio.Client(batond.target) as c:
            lk = other.acquire(key, owner="victim")
            d = await c.describe(key)
            assert d.held and d.owner == "victim"
            assert await c.force_release(key, d.fencing + 1) is False
            assert await c.force_release(key, d.fencing) is True
            assert not (await c.describe(key)).held
            with pytest.raises(baton.LockLost):
                lk.release()
    run(main())


def _storm(batond, other, key, mode, rounds, seed):
    """Tasks enter `async with client.lock(key)` while another client holds
    the key (or not), and are cancelled at random moments: while queued,
    around the grant, inside the block, during the release. After the
    client has finished its background work the key must be free and
    nobody queued."""
    rng = random.Random(seed)
    phases = {"before-grant": 0, "in-block": 0, "releasing": 0, "done": 0}

    async def main():
        c = baton.aio.Client(batond.target)
        c2 = baton.aio.Client(batond.target, owner="blocker")  # on the same loop: a sync call would block it
        for i in range(rounds):
            blocker = await c2.acquire(key, wait="10s") if rng.random() < 0.3 else None
            state = {"phase": "before-grant"}

            async def user():
                async with c.lock(key, mode=mode, wait="10s", ttl="30s"):
                    state["phase"] = "in-block"
                    await asyncio.sleep(rng.choice([0, 0, 0.0005, 0.002]))
                    state["phase"] = "releasing"
                state["phase"] = "done"

            tasks = [asyncio.ensure_future(user()) for _ in range(rng.choice([1, 1, 2, 3]))]
            await asyncio.sleep(rng.random() * 0.003)
            if blocker is not None and rng.random() < 0.5:
                await blocker.release()
            for _ in range(rng.choice([0, 1, 2])):
                await asyncio.sleep(0)  # cancel between any two steps
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            phases[state["phase"]] += 1
            if blocker is not None:
                await blocker.release()
        await c.wait_idle()
        d = other.describe(key)
        free = other.try_lock(key)
        await c.close()
        await c2.close()
        return d, free

    d, free = run(main())
    assert not d.held and d.waiters == 0, "a cancelled task left %r behind" % (d,)
    assert free is not None
    free.release()
    # the storm did hit every phase
    print("%s storm phases: %s" % (mode, phases))
    assert phases["before-grant"] > 0 and phases["in-block"] + phases["releasing"] + phases["done"] > 0


@pytest.mark.parametrize("mode", ["stream", "lease"])
def test_cancellation_storm_never_leaves_the_lock_held(batond, other, key, mode):
    _storm(batond, other, key, mode, rounds=300, seed=hash((key, mode)) & 0xffff)


def test_cancelled_lease_acquire_granted_in_flight_is_released(batond, other, key):
    """The hardest moment: the lease is granted by batond while the task is
    being cancelled. Repeated until the grant and the cancel have crossed."""
    async def main():
        c = baton.aio.Client(batond.target)
        for i in range(200):
            t = asyncio.ensure_future(c.acquire(key, mode="lease", ttl="30s", wait="5s"))
            await asyncio.sleep(random.random() * 0.002)
            t.cancel()
            try:
                lk = await t
            except asyncio.CancelledError:
                continue
            await lk.release()
        await c.wait_idle()
        d = await c.describe(key)
        await c.close()
        return d

    d = run(main())
    assert not d.held and d.waiters == 0, d


def test_cancelled_while_releasing_still_releases(batond, other, key):
    async def main():
        c = baton.aio.Client(batond.target)
        for i in range(50):
            lk = await c.acquire(key, mode="lease" if i % 2 else "stream", ttl="30s")
            t = asyncio.ensure_future(lk.release())
            await asyncio.sleep(0)
            t.cancel()
            await asyncio.gather(t, return_exceptions=True)
            await c.wait_idle()
            assert not other.describe(key).held, i
        await c.close()
    run(main())


def test_stream_lock_released_when_holding_process_is_killed(batond, other, key):
    import subprocess
    import sys
    code = ("import asyncio, sys, baton.aio\n"
            "async def main():\n"
            "    c = baton.aio.Client(sys.argv[1], owner='doomed-aio')\n"
            "    async with c.lock(sys.argv[2]) as l:\n"
            "        print('GRANTED', l.fencing, flush=True)\n"
            "        await asyncio.sleep(600)\n"
            "asyncio.run(main())\n")
    p = subprocess.Popen([sys.executable, "-c", code, batond.target, key], stdout=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        assert line.startswith("GRANTED"), line
        assert other.describe(key).owner == "doomed-aio"
        os.kill(p.pid, signal.SIGKILL)
        p.wait(10)
        deadline = time.monotonic() + 3
        while other.describe(key).held and time.monotonic() < deadline:
            time.sleep(0.005)
        assert not other.describe(key).held, "the killed process's lock was not released"
    finally:
        p.kill()
        p.wait()
        p.stdout.close()


def test_token_is_sent_on_every_call(key):
    import grpc
    from concurrent import futures
    from baton.v1 import lock_pb2 as pb
    seen = []

    class H(grpc.GenericRpcHandler):
        def service(self, details):
            if details.method != "/baton.v1.LockService/Describe":
                return None

            def describe(req, ctx):
                seen.append(dict(ctx.invocation_metadata()).get("authorization"))
                return pb.DescribeResponse()
            return grpc.unary_unary_rpc_method_handler(describe, pb.DescribeRequest.FromString,
                                                       pb.DescribeResponse.SerializeToString)

    server = grpc.server(futures.ThreadPoolExecutor(2), handlers=[H()])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()

    async def main():
        async with baton.aio.Client("127.0.0.1:%d" % port, token="t0k") as c:
            await c.describe(key)
    try:
        run(main())
    finally:
        server.stop(0)
    assert seen == ["Bearer t0k"]
