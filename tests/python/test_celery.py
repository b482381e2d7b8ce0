"""baton.celery with a real Celery worker (Debian's python3-celery, prefork
pool) on the tests' redis-server as broker and result backend."""
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
celery = pytest.importorskip("celery")


@pytest.fixture(scope="module")
def worker(batond, redis_server, workdir):
    env = dict(os.environ)
    env.update(BATON_TARGET=batond.target, CELERY_BROKER="redis://%s/3" % redis_server.address,
               CELERY_QUEUE="q-" + uuid.uuid4().hex[:8],
               PYTHONPATH=os.pathsep.join([HERE] + [p for p in [env.get("PYTHONPATH")] if p]))
    os.environ.update(CELERY_BROKER=env["CELERY_BROKER"], BATON_TARGET=batond.target,
                      CELERY_QUEUE=env["CELERY_QUEUE"])
    sys.path.insert(0, HERE)
    import celery_app
    log = open(os.path.join(workdir, "celery-worker.log"), "wb")
    p = subprocess.Popen([sys.executable, "-m", "celery", "-A", "celery_app", "worker", "-P", "prefork",
                          "-c", "2", "--loglevel=INFO", "--without-heartbeat", "--without-gossip",
                          "--without-mingle", "-n", "baton-it-%d@localhost" % os.getpid()],
                         env=env, cwd=HERE, stdout=log, stderr=subprocess.STDOUT)
    try:
        celery_app.transcode.delay("warmup").get(timeout=60)
        yield celery_app
    finally:
        # The result consumer's pub/sub would try to reconnect to a Redis
        # that the session's teardown stops.
        import gc
        gc.collect()  # AsyncResults unsubscribe while Redis is still there
        try:
            celery_app.app.backend.result_consumer.stop()
        except Exception:
            pass
        celery_app.app.close()
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        log.close()


def worker_log(workdir):
    with open(os.path.join(workdir, "celery-worker.log"), errors="replace") as f:
        return f.read()[-3000:]


def test_gpu_task_holds_a_device_with_cuda_visible_devices(worker, other):
    res = [worker.transcribe.delay(0.3) for _ in range(3)]
    out = [r.get(timeout=30) for r in res]
    for o in out:
        assert 0 <= o["device"] < 4 and o["key"] == "node7/%d" % o["device"] and o["cuda"] == str(o["device"])
    # two ran at once (concurrency 2) on different devices; none is left held
    assert not any(other.describe("node7/%d" % d).held for d in range(4))


def test_gpu_task_holds_two_devices(worker, other):
    res = [worker.train.delay(0.3) for _ in range(2)]
    out = [r.get(timeout=30) for r in res]
    for o in out:
        assert len(set(o["devices"])) == 2 and o["cuda"] == ",".join(str(d) for d in o["devices"]), o
    assert not any(other.describe("node8/%d" % d).held for d in range(4))


def test_busy_key_is_skipped_then_runs_when_free(worker, other):
    vid = uuid.uuid4().hex[:8]
    with other.lock("video:" + vid):
        assert worker.transcode.delay(vid).get(timeout=30) is None  # skipped, not run
    out = worker.transcode.delay(vid).get(timeout=30)
    assert out["key"] == "video:" + vid and out["fencing"] > 0
    assert not other.describe("video:" + vid).held


def test_task_that_raises_leaves_no_lock(worker, other):
    vid = uuid.uuid4().hex[:8]
    with pytest.raises(ValueError):
        worker.transcode.delay(vid, fail=True).get(timeout=30)
    assert not other.describe("video:" + vid).held


def test_busy_key_retries_later(worker, other):
    vid = uuid.uuid4().hex[:8]
    lk = other.acquire("video:" + vid)
    r = worker.transcode_later.delay(vid)
    time.sleep(0.8)
    assert not r.ready()
    lk.release()
    out = r.get(timeout=30)
    assert out["key"] == "video:" + vid and out["retries"] >= 1
    assert not other.describe("video:" + vid).held


def test_killed_worker_process_leaves_no_lock(worker, other, workdir):
    vid = uuid.uuid4().hex[:8]
    pidfile = os.path.join(workdir, "task-%s.pid" % vid)
    doomed = worker.transcode.delay(vid, hold=60, pidfile=pidfile)
    deadline = time.monotonic() + 30
    while not os.path.exists(pidfile) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert os.path.exists(pidfile), worker_log(workdir)
    pid = int(open(pidfile).read())
    d = other.describe("video:" + vid)
    assert d.held and "celery" in d.owner and str(pid) in d.owner, d
    os.kill(pid, signal.SIGKILL)  # the OOM killer, say
    t = time.monotonic()
    while other.describe("video:" + vid).held and time.monotonic() - t < 3:
        time.sleep(0.005)
    assert not other.describe("video:" + vid).held, "the killed task's lock is still held"
    with pytest.raises(Exception) as e:
        doomed.get(timeout=30)
    assert "WorkerLost" in type(e.value).__name__, e.value
    # the worker goes on (a new child) and the key can be taken again
    out = worker.transcode.delay(vid).get(timeout=30)
    assert out["key"] == "video:" + vid
