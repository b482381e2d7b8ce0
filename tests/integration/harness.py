"""Processes for the integration tests: generated stubs, a private
redis-server and batond.

Nothing here talks to the system Redis: every redis-server is started on a
free 127.0.0.1 port with persistence off, and every process is stopped
(SIGTERM, then SIGKILL) by whoever started it.
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("BATON_SOURCE_DIR") or os.path.abspath(os.path.join(HERE, "..", ".."))
GRPC_PYTHON_PLUGIN = "/usr/bin/grpc_python_plugin"

# Every Batond ever created in this session, for failure reports.
ALL_BATONDS = []
_used_ports = set()


def find_batond():
    """$BATOND, else a binary in a build directory of the source tree."""
    path = os.environ.get("BATOND")
    if path:
        return path
    for build in ("build-it", "build"):
        cand = os.path.join(SOURCE_DIR, build, "server", "batond")
        if os.access(cand, os.X_OK):
            return cand
    return None


def generate_stubs(out_dir):
    """protoc + the standard Python gRPC plugin: baton/v1/lock_pb2{,_grpc}.py in out_dir."""
    protoc = shutil.which("protoc") or "/usr/bin/protoc"
    subprocess.run(
        [protoc, "-I", os.path.join(SOURCE_DIR, "proto"),
         "--python_out=" + out_dir, "--grpc_python_out=" + out_dir,
         "--plugin=protoc-gen-grpc_python=" + GRPC_PYTHON_PLUGIN,
         "baton/v1/lock.proto"],
        check=True, cwd=SOURCE_DIR)


def free_port():
    """A TCP port that was free a moment ago (redis-server cannot take port 0
    and report it back, so we pick one; never the same twice per session)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _used_ports:
            _used_ports.add(port)
            return port
    raise RuntimeError("no free port")


def _stop_process(proc, term_timeout=10.0):
    """SIGTERM, then SIGKILL after term_timeout. Returns the exit code."""
    if proc is None or proc.poll() is not None:
        return None if proc is None else proc.returncode
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(term_timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(10)


class RedisServer:
    """A private redis-server on 127.0.0.1:<port> (no persistence unless
    extra_args turn it on; they come last, so they override the defaults)."""

    def __init__(self, workdir, port=None, extra_args=()):
        self.workdir = workdir
        self.port = port or free_port()
        self.extra_args = list(extra_args)
        self.proc = None
        self.log_path = os.path.join(workdir, "redis-%d.log" % self.port)

    @property
    def address(self):
        return "127.0.0.1:%d" % self.port

    def start(self, timeout=10.0):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", self.workdir,
             "--daemonize", "no", *self.extra_args],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("redis-server exited %s:\n%s" % (self.proc.returncode, self.log()))
            if self.ping():
                return self
            time.sleep(0.05)
        raise RuntimeError("redis-server did not answer PING:\n" + self.log())

    def ping(self):
        try:
            return self.cli("PING") == "PONG"
        except Exception:
            return False

    def cli(self, *args):
        """One redis-cli command; returns stdout stripped (raw format)."""
        r = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), "--raw", *args],
                           capture_output=True, text=True, timeout=10)
        if r.returncode != 0:
            raise RuntimeError("redis-cli %s: %s%s" % (args, r.stdout, r.stderr))
        return r.stdout.strip()

    def kill(self):
        """SIGKILL: the data is gone, clients see the connection drop."""
        self.proc.kill()
        self.proc.wait(10)

    def stop(self):
        _stop_process(self.proc, 5.0)

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""


CONFIG_TEMPLATE = """\
listen: "127.0.0.1:{port}"
log_level: {log_level}
redis:
  address: "{redis}"
  reconnect_ms: 100
  command_timeout_ms: 2000
{redis_extra}locks:
  min_ttl_ms: 50
  recheck_ms: 2000
  waiter_liveness_ms: 1500
pools:
  - name: node7
    devices: 4
  - name: mig3
    devices: 3
    device_names: [MIG-aaa, MIG-bbb, GPU-ccc]
  - name: gpu80
    devices: 2
    capacity: 80
"""


class Batond:
    """One batond process with its own config file and stderr log."""

    def __init__(self, binary, workdir, redis_address, name="batond", extra_config="", redis_extra="",
                 extra_args=(), probe_channel=None, probe_metadata=None):
        self.extra_config = extra_config  # YAML appended to the generated config (new sections only)
        self.redis_extra = redis_extra  # more keys of the redis section, each indented by two spaces
        self.extra_args = list(extra_args)  # more batond flags (e.g. --tls-cert FILE)
        # Readiness probe: a channel factory (target -> channel; default plain
        # text) and the metadata of its Describe (a bearer token with auth).
        self.probe_channel = probe_channel
        self.probe_metadata = probe_metadata
        self.binary = binary
        self.workdir = workdir
        self.redis_address = redis_address
        self.name = name
        self.port = free_port()
        self.proc = None
        self.log_path = os.path.join(workdir, "%s-%d.log" % (name, self.port))
        self.config_path = os.path.join(workdir, "%s-%d.yaml" % (name, self.port))
        self.mark = 0  # log offset at the start of the current test
        ALL_BATONDS.append(self)

    @property
    def target(self):
        return "127.0.0.1:%d" % self.port

    def start(self, timeout=20.0, wait_ready=True):
        import grpc
        from baton.v1 import lock_pb2, lock_pb2_grpc

        with open(self.config_path, "w") as f:
            f.write(CONFIG_TEMPLATE.format(port=self.port, redis=self.redis_address,
                                           redis_extra=self.redis_extra,
                                           log_level=os.environ.get("BATON_IT_LOG_LEVEL", "debug")))
            f.write(self.extra_config)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [self.binary, "--config", self.config_path, "--listen", self.target,
             "--redis", self.redis_address, *self.extra_args],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        if not wait_ready:
            return self
        # Ready = a Describe succeeds: the port is open AND Redis is connected.
        # A fresh channel per try: a channel that found the port closed backs
        # off for a second or more before it tries again.
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited with %s before it was ready:\n%s"
                                   % (self.name, self.proc.returncode, self.log_tail()))
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1.0).close()
            except OSError as e:
                last = str(e)
                time.sleep(0.05)
                continue
            ch = self.probe_channel(self.target) if self.probe_channel else grpc.insecure_channel(self.target)
            with ch:
                try:
                    lock_pb2_grpc.LockServiceStub(ch).Describe(
                        lock_pb2.DescribeRequest(key="it-ready-probe"), timeout=1.0,
                        metadata=self.probe_metadata)
                    return self
                except grpc.RpcError as e:
                    last = "%s %s" % (e.code(), e.details())
            time.sleep(0.05)
        raise RuntimeError("%s not ready after %.0fs (last: %s):\n%s"
                           % (self.name, timeout, last, self.log_tail()))

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout):
        return self.proc.wait(timeout)

    def stop(self):
        return _stop_process(self.proc, 10.0)

    def kill(self):
        """SIGKILL (a crash): no cleanup in Redis, no exit-code check."""
        self.killed = True
        self.proc.kill()
        self.proc.wait(10)

    def sanitizer_reports(self):
        """Lines of the log where ASan/UBSan/LSan reported something."""
        return [l for l in self.log_text().splitlines()
                if "Sanitizer" in l or "runtime error:" in l]

    def check_clean_exit(self, rc):
        """After stop(): exit 0 (graceful SIGTERM) and no sanitizer reports."""
        problems = []
        if rc not in (0, None):
            problems.append("%s exited with %s after SIGTERM" % (self.name, rc))
        problems += self.sanitizer_reports()[:20]
        if problems:
            raise AssertionError("\n".join(problems) + "\n--- log tail ---\n" + self.log_tail(60))

    def log_text(self, start=0):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(start)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_size(self):
        try:
            return os.path.getsize(self.log_path)
        except OSError:
            return 0

    def log_tail(self, lines=150, start=0):
        text = self.log_text(start).splitlines()
        cut = text[-lines:]
        head = "... (%d earlier lines)\n" % (len(text) - len(cut)) if len(text) > len(cut) else ""
        return head + "\n".join(cut)


def sanitized(binary):
    """Whether binary was built with ASan (its memory figures mean little then)."""
    try:
        out = subprocess.run(["ldd", binary], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return "libasan" in out


def python_env(stubs_dir):
    """Environment for a helper Python subprocess that imports the stubs."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([stubs_dir, HERE] + [p for p in [env.get("PYTHONPATH")] if p])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


PYTHON = sys.executable
