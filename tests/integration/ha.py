"""Redis under Sentinel for the integration tests: one primary, replicas and
sentinels, all private processes on free 127.0.0.1 ports with short timings
(a failover completes in about 2 s instead of the default 30 s+)."""
import os
import subprocess
import time

import harness

MASTER = "mymaster"


class Sentinel:
    def __init__(self, workdir, primary_port, quorum=2, down_after_ms=1000, failover_timeout_ms=4000):
        self.workdir = workdir
        self.port = harness.free_port()
        self.conf = os.path.join(workdir, "sentinel-%d.conf" % self.port)
        self.log_path = os.path.join(workdir, "sentinel-%d.log" % self.port)
        with open(self.conf, "w") as f:
            f.write("port %d\nbind 127.0.0.1\ndir %s\n" % (self.port, workdir))
            f.write("sentinel monitor %s 127.0.0.1 %d %d\n" % (MASTER, primary_port, quorum))
            f.write("sentinel down-after-milliseconds %s %d\n" % (MASTER, down_after_ms))
            f.write("sentinel failover-timeout %s %d\n" % (MASTER, failover_timeout_ms))
            f.write("sentinel parallel-syncs %s 2\n" % MASTER)
        self.proc = None

    def start(self):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(["redis-server", self.conf, "--sentinel"], stdout=log,
                                     stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.cli("PING") == "PONG":
                return self
            time.sleep(0.05)
        raise RuntimeError("sentinel did not start")

    def cli(self, *args):
        r = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), "--raw", *args],
                           capture_output=True, text=True, timeout=10)
        return r.stdout.strip()

    def primary_port(self):
        out = self.cli("SENTINEL", "get-master-addr-by-name", MASTER).split()
        return int(out[1]) if len(out) == 2 else None

    def stop(self):
        harness._stop_process(self.proc, 5.0)


class SentinelSet:
    """A primary, `replicas` replicas and `sentinels` sentinels (quorum 2)."""

    def __init__(self, workdir, replicas=2, sentinels=3, **sentinel_opts):
        self.workdir = workdir
        self.redis = [harness.RedisServer(workdir).start()]
        for _ in range(replicas):
            p = self.redis[0].port
            self.redis.append(harness.RedisServer(
                workdir, extra_args=["--replicaof", "127.0.0.1", str(p)]).start())
        self.wait_replicas(replicas)
        self.sentinels = [Sentinel(workdir, self.redis[0].port, **sentinel_opts).start() for _ in range(sentinels)]
        self.wait_sentinels_know_replicas(replicas)

    @property
    def address(self):
        return "sentinel://%s/%s" % (",".join("127.0.0.1:%d" % s.port for s in self.sentinels), MASTER)

    def by_port(self, port):
        return next(r for r in self.redis if r.port == port)

    def primary(self):
        return self.by_port(self.sentinels[0].primary_port())

    def wait_replicas(self, n, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = self.redis[0].cli("INFO", "replication")
            if "connected_slaves:%d" % n in info and info.count("state=online") >= n:
                return
            time.sleep(0.1)
        raise RuntimeError("replicas did not sync:\n" + info)

    def wait_sentinels_know_replicas(self, n, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ok = True
            for s in self.sentinels:
                out = s.cli("SENTINEL", "master", MASTER).split("\n")
                fields = dict(zip(out[::2], out[1::2]))
                if fields.get("num-slaves") != str(n) or int(fields.get("num-other-sentinels", 0)) < len(
                        self.sentinels) - 1:
                    ok = False
            if ok:
                return
            time.sleep(0.1)
        raise RuntimeError("sentinels did not discover each other and the replicas")

    def wait_new_primary(self, old_port, timeout=30):
        """Until every sentinel names a primary other than old_port; returns its port."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ports = {s.primary_port() for s in self.sentinels}
            if len(ports) == 1 and None not in ports and old_port not in ports:
                port = ports.pop()
                if "role:master" in self.by_port(port).cli("INFO", "replication"):
                    return port
            time.sleep(0.1)
        raise RuntimeError("no failover within %ss" % timeout)

    def stop(self):
        for s in self.sentinels:
            s.stop()
        for r in self.redis:
            if r.proc and r.proc.poll() is None:
                r.stop()
