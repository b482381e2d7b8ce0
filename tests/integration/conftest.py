"""pytest harness: stubs generated from proto/ once per session, one private
redis-server and one batond for the session, and helpers to start more.

Run:  BATOND=/path/to/batond /usr/bin/python3 -m pytest -q tests/integration
(without BATOND, a build-it/ or build/ batond of the source tree is used).
"""
import atexit
import os
import shutil
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

# The stubs must exist before any test module imports them, so they are
# generated when pytest loads this file (once per session).
STUBS_DIR = tempfile.mkdtemp(prefix="baton-it-stubs-")
atexit.register(shutil.rmtree, STUBS_DIR, True)
harness.generate_stubs(STUBS_DIR)
sys.path.insert(0, STUBS_DIR)

import grpc  # noqa: E402
from baton.v1 import lock_pb2_grpc  # noqa: E402

import bclient  # noqa: E402


@pytest.fixture(scope="session")
def stubs_dir():
    return STUBS_DIR


@pytest.fixture(scope="session")
def batond_binary():
    path = harness.find_batond()
    if not path or not os.access(path, os.X_OK):
        pytest.skip("batond not built: set BATOND=/path/to/batond")
    return path


@pytest.fixture(scope="session")
def workdir():
    d = tempfile.mkdtemp(prefix="baton-it-")
    yield d
    if os.environ.get("BATON_IT_KEEP"):
        print("kept integration work dir", d)
    else:
        shutil.rmtree(d, True)


@pytest.fixture(scope="session")
def redis_server(workdir):
    r = harness.RedisServer(workdir).start()
    yield r
    r.stop()


@pytest.fixture(scope="session")
def batond(batond_binary, workdir, redis_server):
    b = harness.Batond(batond_binary, workdir, redis_server.address, name="batond-main").start()
    yield b
    b.check_clean_exit(b.stop())


@pytest.fixture(scope="session")
def channel(batond):
    ch = grpc.insecure_channel(batond.target)
    yield ch
    ch.close()


@pytest.fixture(scope="session")
def stub(channel):
    return lock_pb2_grpc.LockServiceStub(channel)


@pytest.fixture
def start_redis(workdir):
    """Factory for a private redis-server owned by one test."""
    started = []

    def make(port=None):
        r = harness.RedisServer(workdir, port=port).start()
        started.append(r)
        return r

    yield make
    for r in started:
        r.stop()


@pytest.fixture
def start_batond(batond_binary, workdir):
    """Factory for a private batond owned by one test (stopped at the end)."""
    started = []

    def make(redis_address, name="batond-private", wait_ready=True, extra_config="", redis_extra="", **kw):
        b = harness.Batond(batond_binary, workdir, redis_address, name=name, extra_config=extra_config,
                           redis_extra=redis_extra, **kw)
        started.append(b)
        return b.start(wait_ready=wait_ready)

    yield make
    results = [(b, b.stop()) for b in started]
    for b, rc in results:
        if not getattr(b, "killed", False):
            b.check_clean_exit(rc)


def pytest_runtest_setup(item):
    for b in harness.ALL_BATONDS:
        b.mark = b.log_size()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On failure, attach what each batond logged during this test."""
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for b in harness.ALL_BATONDS:
            text = b.log_tail(200, start=b.mark)
            if text.strip():
                state = "running" if b.running() else "exited %s" % (b.proc.returncode if b.proc else "-")
                rep.sections.append(("%s log during this test (%s)" % (b.name, state), text))


def pytest_terminal_summary(terminalreporter):
    """Measured latencies (informational; the tests only bound them loosely)."""
    if bclient.TIMINGS:
        terminalreporter.section("baton timings")
        for name, seconds in bclient.TIMINGS:
            terminalreporter.write_line("%-55s %8.1f ms" % (name, seconds * 1000.0))
