"""pytest fixtures for the Python client: the `baton` package must be the
installed one (ctest's python_install puts it in a venv), and every test
runs against a real redis-server and batond started by
tests/integration/harness.py.

Run by hand:  tests/python/install.sh /tmp/bv . &&
              BATOND=build/server/batond /tmp/bv/bin/python -m pytest -q tests/python
"""
import os
import shutil
import sys
import tempfile
import uuid

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import harness  # noqa: E402

import baton  # noqa: E402


def pytest_report_header(config):
    return "baton package: %s" % baton.__file__


@pytest.fixture(scope="session", autouse=True)
def installed_package():
    """The package under test is the installed one, not the source tree."""
    venv = os.environ.get("BATON_PY_VENV")
    src = os.path.realpath(os.path.join(HERE, "..", "..", "client", "python"))
    path = os.path.realpath(baton.__file__)
    assert not path.startswith(src + os.sep), "testing the source tree, not the installed package"
    if venv:
        assert path.startswith(os.path.realpath(venv) + os.sep), (path, venv)


@pytest.fixture(scope="session")
def batond_binary():
    path = harness.find_batond()
    if not path or not os.access(path, os.X_OK):
        pytest.skip("batond not built: set BATOND=/path/to/batond")
    return path


@pytest.fixture(scope="session")
def workdir():
    d = tempfile.mkdtemp(prefix="baton-py-")
    yield d
    shutil.rmtree(d, True)


@pytest.fixture(scope="session")
def redis_server(workdir):
    r = harness.RedisServer(workdir).start()
    yield r
    r.stop()


@pytest.fixture(scope="session")
def batond(batond_binary, workdir, redis_server):
    b = harness.Batond(batond_binary, workdir, redis_server.address, name="batond-py").start()
    yield b
    b.check_clean_exit(b.stop())


@pytest.fixture
def private_batond(batond_binary, workdir):
    """A batond (and Redis) of one test's own, which it may kill."""
    started = []

    def make(extra_config=""):
        r = harness.RedisServer(workdir).start()
        b = harness.Batond(batond_binary, workdir, r.address, name="batond-priv", extra_config=extra_config)
        started.append((r, b))
        return b.start()

    yield make
    for r, b in started:
        if b.running():
            b.signal(__import__("signal").SIGCONT)
            rc = b.stop()
            if not getattr(b, "killed", False):
                b.check_clean_exit(rc)
        r.stop()


@pytest.fixture(params=["session", "per-call"])
def client(batond, request):
    """The client under test, once per path: "session" (stream-mode locks
    through the client's Session stream, the default) and "per-call" (an
    Acquire stream per lock: what a grpcio that cannot drive a Session on
    the caller's thread gets)."""
    from baton import _lane
    _lane.ENABLED = request.param == "session"
    try:
        c = baton.Client(batond.target)
    finally:
        _lane.ENABLED = True
    yield c
    c.close()


@pytest.fixture
def other(batond):
    """A second client (its own connection), as another process would be."""
    c = baton.Client(batond.target, owner="other-client")
    yield c
    c.close()


@pytest.fixture
def key():
    return "py-" + uuid.uuid4().hex[:12]


def pytest_runtest_setup(item):
    for b in harness.ALL_BATONDS:
        b.mark = b.log_size()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for b in harness.ALL_BATONDS:
            text = b.log_tail(100, start=b.mark)
            if text.strip():
                rep.sections.append(("%s log during this test" % b.name, text))
