"""deploy/run.sh, the front door, with the batond under test (BATOND=...),
and batond --check-config, which run.sh asks whether a Redis is configured."""
import os
import re
import signal
import subprocess

import grpc
from baton.v1 import lock_pb2_grpc

import bclient as bc
import harness

RUN_SH = os.path.join(harness.SOURCE_DIR, "deploy", "run.sh")


def _check(binary, *args):
    return subprocess.run([binary, *args, "--check-config"], capture_output=True, text=True, timeout=20)


def _address_line(out):
    lines = [l for l in out.splitlines() if l.startswith("  address: ")]
    assert len(lines) == 1, out
    return lines[0]


def test_check_config_names_where_each_setting_came_from(batond_binary, workdir):
    path = os.path.join(workdir, "flow.yaml")
    with open(path, "w") as f:
        f.write('redis: {address: "unix:/tmp/nowhere.sock", password: "s3cret"}\n')
    r = _check(batond_binary, "--config", path)
    assert r.returncode == 0, r.stderr
    assert _address_line(r.stdout) == '  address: "unix:/tmp/nowhere.sock"  # file'
    assert "s3cret" not in r.stdout
    assert 'listen: "127.0.0.1:50051"  # default' in r.stdout

    r = _check(batond_binary, "--config", path, "--redis", "10.0.0.5:6379", "--listen", "0.0.0.0:1")
    assert r.returncode == 0, r.stderr
    assert _address_line(r.stdout) == '  address: "10.0.0.5:6379"  # command line'
    assert 'listen: "0.0.0.0:1"  # command line' in r.stdout

    r = _check(batond_binary)
    assert _address_line(r.stdout) == '  address: "127.0.0.1:6379"  # default'

    with open(path, "w") as f:
        f.write("locks: {max_ttl_ms: -5}\n")
    r = _check(batond_binary, "--config", path)
    assert r.returncode == 2 and "max_ttl_ms" in r.stderr and r.stdout == "", (r.returncode, r.stderr)


class RunSh:
    """deploy/run.sh in its own process group, as a terminal would run it."""

    def __init__(self, batond_binary, workdir, *args):
        self.port = harness.free_port()
        self.target = "127.0.0.1:%d" % self.port
        self.err_path = os.path.join(workdir, "run-sh-%d.err" % self.port)
        env = dict(os.environ, BATOND=batond_binary)
        env.pop("BATON_REDIS", None)
        with open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen([RUN_SH, "--listen", self.target, *args], stdout=subprocess.DEVNULL,
                                         stderr=err, env=env, start_new_session=True)

    def stderr(self):
        with open(self.err_path, errors="replace") as f:
            return f.read()

    def wait_serving(self):
        def serving():
            if self.proc.poll() is not None:
                raise AssertionError("run.sh exited %s:\n%s" % (self.proc.returncode, self.stderr()))
            with grpc.insecure_channel(self.target) as ch:
                try:
                    grpc.channel_ready_future(ch).result(timeout=0.5)
                    return True
                except grpc.FutureTimeoutError:
                    return False
        assert bc.wait_until(serving, 20.0, 0.1), self.stderr()

    def private_dir(self):
        m = re.search(r"private redis-server at unix:(\S+)/redis.sock", self.stderr())
        return m.group(1) if m else None

    def wait(self, timeout=20.0):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
            raise AssertionError("run.sh did not stop:\n" + self.stderr())


def test_run_sh_uses_a_redis_the_config_sets_in_flow_style(batond_binary, workdir, start_redis):
    redis = start_redis()
    path = os.path.join(workdir, "flow-redis.yaml")
    with open(path, "w") as f:
        f.write('redis: {address: "%s"}\n' % redis.address)
    run = RunSh(batond_binary, workdir, "--config", path)
    try:
        run.wait_serving()
        key = bc.uniq("runsh-flow")
        with grpc.insecure_channel(run.target) as ch:
            g = bc.grant(lock_pb2_grpc.LockServiceStub(ch), key, "runsh", ttl_ms=60000)
        # The lock is in the configured Redis, not in a private one.
        assert redis.cli("EXISTS", "baton:{%s}:lock" % key) == "1", run.stderr()
        assert g.fencing > 0
        assert run.private_dir() is None, run.stderr()
    finally:
        os.killpg(run.proc.pid, signal.SIGINT)
    assert run.wait() == 0, run.stderr()


def test_run_sh_ctrl_c_with_open_calls_stops_gracefully(batond_binary, workdir):
    """Ctrl-C reaches run.sh's whole process group. batond must get one
    signal (from run.sh), not two: a second makes it exit at once, status 1,
    without finishing its open calls."""
    run = RunSh(batond_binary, workdir)
    run.wait_serving()
    tmp = run.private_dir()
    assert tmp and os.path.isdir(tmp), run.stderr()
    ch = grpc.insecure_channel(run.target)
    stub = lock_pb2_grpc.LockServiceStub(ch)
    holds = [bc.AcquireStream(stub, bc.uniq("runsh-hold"), "h", wait_ms=0, mode=bc.STREAM) for _ in range(8)]
    for h in holds:
        h.wait_granted()
    os.killpg(run.proc.pid, signal.SIGINT)
    rc = run.wait()
    for h in holds:
        h.cancel()
    ch.close()
    err = run.stderr()
    assert "second signal" not in err, err
    assert rc == 0, err
    assert not os.path.exists(tmp), "private Redis dir left behind: " + tmp


def test_run_sh_hangup_to_the_script_alone_stops_batond_and_redis(batond_binary, workdir):
    run = RunSh(batond_binary, workdir)
    run.wait_serving()
    tmp = run.private_dir()
    assert tmp, run.stderr()
    run.proc.send_signal(signal.SIGHUP)  # to run.sh only, not its group
    assert run.wait() == 0, run.stderr()
    assert not os.path.exists(tmp)
    # batond is gone too: the port is free again.
    with grpc.insecure_channel(run.target) as ch:
        try:
            grpc.channel_ready_future(ch).result(timeout=1.0)
            raise AssertionError("batond still serves after run.sh ended")
        except grpc.FutureTimeoutError:
            pass


def test_run_sh_refuses_a_bad_config_with_batonds_message(batond_binary, workdir):
    path = os.path.join(workdir, "bad-runsh.yaml")
    with open(path, "w") as f:
        f.write("locks: {max_tll_ms: 5}\n")
    env = dict(os.environ, BATOND=batond_binary)
    r = subprocess.run([RUN_SH, "--config", path], capture_output=True, text=True, timeout=30, env=env)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "max_tll_ms" in r.stderr and "bad-runsh.yaml" in r.stderr, r.stderr
    assert "private redis-server" not in r.stderr, r.stderr  # stopped before starting anything
