"""Redis Cluster for the integration tests: private redis-server processes
(cluster-enabled, persistence off, 127.0.0.1 only) joined by
`redis-cli --cluster create`, with the operations the tests run against it:
resharding (redis-cli's, or one slot moved by hand in small batches), manual
failover, SIGKILL of a primary, restart of a node.

Every wait polls (20-50 ms steps) with a deadline; nothing sleeps blindly.
Node state is read over a tiny RESP client (one connection per command);
`cli()` runs redis-cli for callers that want its text.
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import time

import harness


# ------------------------------------------------------------------ support

def support_problem():
    """None when redis-server and redis-cli can run a Cluster with sharded
    pub/sub (Redis 7.0+, redis-cli --cluster); else why not."""
    for tool in ("redis-server", "redis-cli"):
        if not shutil.which(tool):
            return "%s not found in PATH" % tool
    try:
        out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError) as e:
        return "redis-server --version: %s" % e
    m = re.search(r"v=(\d+)\.(\d+)", out)
    if not m:
        return "redis-server --version: unexpected output %r" % out.strip()
    if (int(m.group(1)), int(m.group(2))) < (7, 0):
        return "redis-server %s.%s has no sharded pub/sub (Redis Cluster tests need 7.0+)" % m.groups()
    try:
        r = subprocess.run(["redis-cli", "--cluster", "help"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as e:
        return "redis-cli --cluster help: %s" % e
    if "reshard" not in r.stdout + r.stderr:
        return "redis-cli has no --cluster manager"
    return None


# ------------------------------------------------------------------ CRC16

def _crc16_table():
    table = []
    for i in range(256):
        crc = i << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return table


_CRC16 = _crc16_table()


def crc16(data):
    """CRC16-CCITT (XMODEM), Redis Cluster's key hash."""
    crc = 0
    for b in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16[((crc >> 8) ^ b) & 0xFF]
    return crc


def slot_of(key):
    """Redis' slot of a key (the {hash tag} rule), computed here; the same
    as CLUSTER KEYSLOT (test_cluster_harness checks it)."""
    k = key.encode() if isinstance(key, str) else key
    s = k.find(b"{")
    if s >= 0:
        e = k.find(b"}", s + 1)
        if e > s + 1:
            k = k[s + 1:e]
    return crc16(k) % 16384


# ------------------------------------------------------------------ RESP

class RedisError(Exception):
    """An error reply (the text Redis sent, e.g. "MOVED 1 127.0.0.1:7000")."""


def _encode(args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if not isinstance(a, bytes):
            a = str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def _read(f):
    line = f.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("connection closed")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        return RedisError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)
        return data[:-2].decode("utf-8", "replace")
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_read(f) for _ in range(n)]
    raise ConnectionError("bad reply line %r" % line)


def command(port, *args, timeout=5.0, raise_error=True):
    """One command to 127.0.0.1:port on a fresh connection. Error replies
    raise RedisError (or are returned with raise_error=False); a node that
    does not answer raises OSError."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(_encode(args))
        with s.makefile("rb") as f:
            reply = _read(f)
    if isinstance(reply, RedisError) and raise_error:
        raise reply
    return reply


def _try(port, *args, timeout=2.0):
    """command(), or None when the node is down or answers an error."""
    try:
        r = command(port, *args, timeout=timeout)
    except (OSError, RedisError):
        return None
    return r


# ------------------------------------------------------------------ ports

def free_cluster_port():
    """A port p, free a moment ago, whose cluster bus port p + 10000 is free
    too (both kept out of harness.free_port's later answers)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        bus = port + 10000
        if bus > 65535 or port in harness._used_ports or bus in harness._used_ports:
            continue
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.1", bus))
        except OSError:
            continue
        harness._used_ports.update((port, bus))
        return port
    raise RuntimeError("no free port pair (p, p + 10000)")


# ------------------------------------------------------------------ nodes

class Node:
    """One line of CLUSTER NODES."""

    def __init__(self, line):
        f = line.split()
        self.id = f[0]
        addr = f[1].split("@")[0]
        self.port = int(addr.rsplit(":", 1)[1]) if addr.rsplit(":", 1)[1] else 0
        self.flags = set(f[2].split(","))
        self.master_id = None if f[3] == "-" else f[3]
        self.link = f[7]
        self.slots = []  # (start, end) ranges it serves
        self.open = []  # "[slot->-id]" / "[slot-<-id]" entries (migrating / importing)
        for s in f[8:]:
            if s.startswith("["):
                self.open.append(s)
            elif "-" in s:
                a, b = s.split("-")
                self.slots.append((int(a), int(b)))
            else:
                self.slots.append((int(s), int(s)))

    @property
    def primary(self):
        return "master" in self.flags

    @property
    def failed(self):
        return "fail" in self.flags or "fail?" in self.flags or "noaddr" in self.flags


class RedisCluster:
    """`primaries` primaries with `replicas_per_primary` replicas each, on
    free ports of 127.0.0.1, in a directory of their own under workdir.
    Started by the constructor unless start=False (then the ports are chosen
    and address() is known, so a batond can be pointed at a cluster that is
    not up yet; start() brings it up)."""

    def __init__(self, workdir, primaries=3, replicas_per_primary=1, node_timeout_ms=1000, start=True,
                 extra_args=()):
        self.extra_args = list(extra_args)  # more redis-server arguments for every node
        self.nprimaries = primaries
        self.replicas_per_primary = replicas_per_primary
        self.node_timeout_ms = node_timeout_ms
        self.ports = [free_cluster_port() for _ in range(primaries * (1 + replicas_per_primary))]
        self.dir = os.path.join(workdir, "cluster-%d" % self.ports[0])
        os.makedirs(self.dir, exist_ok=True)
        self.procs = {}  # port -> Popen
        self.ids = {}  # port -> node id
        if start:
            self.start()

    # ----------------------------------------------------------- lifecycle

    def _spawn(self, port):
        log = open(os.path.join(self.dir, "redis-%d.log" % port), "ab")
        self.procs[port] = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", self.dir,
             "--save", "", "--appendonly", "no", "--daemonize", "no",
             "--cluster-enabled", "yes", "--cluster-config-file", "nodes-%d.conf" % port,
             "--cluster-node-timeout", str(self.node_timeout_ms),
             # A replica may always be promoted (however long its link was down),
             # and replicas stay where they were put.
             "--cluster-replica-validity-factor", "0",
             "--cluster-allow-replica-migration", "no",
             # Replicas sync at once (Redis 7 waits 5 s for more replicas by default).
             "--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0",
             "--repl-ping-replica-period", "1"] + self.extra_args,
            stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def _wait_ping(self, port, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            p = self.procs[port]
            if p.poll() is not None:
                raise RuntimeError("redis-server %d exited %s:\n%s" % (port, p.returncode, self.log(port)))
            if _try(port, "PING") == "PONG":
                return
            time.sleep(0.02)
        raise RuntimeError("redis-server %d did not answer PING:\n%s" % (port, self.log(port)))

    def start(self, timeout=30.0):
        t0 = time.monotonic()
        for p in self.ports:
            self._spawn(p)
        for p in self.ports:
            self._wait_ping(p)
        for p in self.ports:
            self.ids[p] = command(p, "CLUSTER", "MYID")
        r = subprocess.run(
            ["redis-cli", "--cluster", "create", *("127.0.0.1:%d" % p for p in self.ports),
             "--cluster-replicas", str(self.replicas_per_primary), "--cluster-yes"],
            capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0 or "[OK] All 16384 slots covered" not in r.stdout:
            raise RuntimeError("redis-cli --cluster create failed (%d):\n%s%s" % (r.returncode, r.stdout, r.stderr))
        self.wait_consistent(timeout)
        self.wait_replicas_synced(timeout)
        self.create_seconds = time.monotonic() - t0
        return self

    def stop(self):
        """SIGKILL every node (persistence is off: nothing to flush) and reap it."""
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
        for p in self.procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                pass

    def running(self, port):
        p = self.procs.get(port)
        return p is not None and p.poll() is None

    def live_ports(self):
        return [p for p in self.ports if self.running(p)]

    def log(self, port, chars=4000):
        try:
            with open(os.path.join(self.dir, "redis-%d.log" % port), errors="replace") as f:
                return f.read()[-chars:]
        except OSError:
            return ""

    # ----------------------------------------------------------- reading state

    def address(self, seeds=2):
        """cluster://127.0.0.1:P1,127.0.0.1:P2: the first `seeds` nodes."""
        return "cluster://" + ",".join("127.0.0.1:%d" % p for p in self.ports[:seeds])

    def cli(self, port, *args):
        """One redis-cli command (raw output, stripped); an error reply raises."""
        r = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), "--raw", *map(str, args)],
                           capture_output=True, text=True, timeout=30)
        out = r.stdout.strip()
        if r.returncode != 0 or re.match(r"^(ERR|WRONGTYPE|MOVED|ASK|TRYAGAIN|CLUSTERDOWN|NOSCRIPT|BUSYKEY|"
                                         r"CROSSSLOT|READONLY|LOADING|NOAUTH|IOERR)\b", out):
            raise RuntimeError("redis-cli -p %d %s: %s%s" % (port, " ".join(map(str, args)), out, r.stderr))
        return out

    def nodes(self, port):
        """CLUSTER NODES as node `port` sees it: {port: Node}, or None if it is down."""
        out = _try(port, "CLUSTER", "NODES")
        if out is None:
            return None
        view = {}
        for line in out.splitlines():
            if line.strip():
                n = Node(line)
                view[n.port] = n
        return view

    def _any_view(self):
        for p in self.live_ports():
            v = self.nodes(p)
            if v is not None:
                return v
        raise RuntimeError("no cluster node answers")

    def node_id(self, port):
        return self.ids[port]

    def port_of_id(self, node_id):
        return next(p for p, i in self.ids.items() if i == node_id)

    def primaries(self):
        """Ports of the primaries that serve slots (as a live node sees it), in slot order."""
        v = self._any_view()
        ps = [n for n in v.values() if n.primary and n.slots and not n.failed]
        return [n.port for n in sorted(ps, key=lambda n: n.slots[0][0])]

    def replicas_of(self, primary_port):
        v = self._any_view()
        pid = self.ids[primary_port]
        return [n.port for n in v.values() if n.master_id == pid and not n.failed]

    def slot_owners(self, port=None):
        """A list of 16384 ports: the primary serving each slot (None if none)
        in the view of node `port` (a live node if None)."""
        v = self.nodes(port) if port else self._any_view()
        owners = [None] * 16384
        for n in v.values():
            if n.primary and not n.failed:
                for a, b in n.slots:
                    owners[a:b + 1] = [n.port] * (b - a + 1)
        return owners

    def node_of_slot(self, slot):
        """Port of the primary serving slot (CLUSTER SLOTS of a live node)."""
        for p in self.live_ports():
            slots = _try(p, "CLUSTER", "SLOTS")
            if slots is None:
                continue
            for entry in slots:
                if entry[0] <= slot <= entry[1]:
                    return int(entry[2][1])
            return None
        raise RuntimeError("no cluster node answers")

    def key_slot(self, redis_key):
        """CLUSTER KEYSLOT redis_key, asked of a live node."""
        return int(command(self.live_ports()[0], "CLUSTER", "KEYSLOT", redis_key))

    def node_of_key(self, redis_key):
        return self.node_of_slot(self.key_slot(redis_key))

    def keys_in_slot(self, port, slot, count=1000):
        return command(port, "CLUSTER", "GETKEYSINSLOT", slot, count)

    # ----------------------------------------------------------- waiting

    def _slots_signature(self, port):
        """CLUSTER SLOTS of node `port` as sorted (start, end, primary port), or None."""
        slots = _try(port, "CLUSTER", "SLOTS")
        if slots is None:
            return None
        return tuple(sorted((e[0], e[1], int(e[2][1])) for e in slots))

    def consistent_problem(self):
        """None when every live node says cluster_state:ok, has no slot in
        migration, knows no failing node among the live ones, and CLUSTER
        SLOTS covers all 16384 slots the same way everywhere; else what is off."""
        sigs = {}
        live = self.live_ports()
        for p in live:
            info = _try(p, "CLUSTER", "INFO")
            if info is None:
                return "node %d does not answer CLUSTER INFO" % p
            if "cluster_state:ok" not in info:
                return "node %d: cluster_state not ok" % p
            view = self.nodes(p)
            if view is None:
                return "node %d does not answer CLUSTER NODES" % p
            for n in view.values():
                if n.open:
                    return "node %d sees open slots on %d: %s" % (p, n.port, n.open)
                if n.port in live and n.failed:
                    return "node %d sees live node %d as %s" % (p, n.port, ",".join(sorted(n.flags)))
            sig = self._slots_signature(p)
            if sig is None:
                return "node %d does not answer CLUSTER SLOTS" % p
            if sum(b - a + 1 for a, b, _ in sig) != 16384:
                return "node %d: CLUSTER SLOTS covers %d slots" % (p, sum(b - a + 1 for a, b, _ in sig))
            sigs[p] = sig
        if len(set(sigs.values())) != 1:
            return "nodes disagree on CLUSTER SLOTS: %s" % {p: len(s) for p, s in sigs.items()}
        return None

    def wait_consistent(self, timeout=30.0):
        deadline = time.monotonic() + timeout
        while True:
            problem = self.consistent_problem()
            if problem is None:
                return
            if time.monotonic() >= deadline:
                raise RuntimeError("cluster not consistent after %.0fs: %s" % (timeout, problem))
            time.sleep(0.05)

    def wait_replicas_synced(self, timeout=30.0):
        """Until every live replica's link to its primary is up and its
        offset has caught up (so a manual failover can start at once)."""
        deadline = time.monotonic() + timeout
        while True:
            lagging = []
            for p in self.live_ports():
                info = _try(p, "INFO", "replication") or ""
                if "role:slave" in info and ("master_link_status:up" not in info
                                              or "master_sync_in_progress:0" not in info):
                    lagging.append(p)
            if not lagging:
                return
            if time.monotonic() >= deadline:
                raise RuntimeError("replicas %s not in sync after %.0fs" % (lagging, timeout))
            time.sleep(0.05)

    def _wait_promoted(self, old_port, new_ports, timeout, why):
        """Until every live node names one of new_ports as the primary of
        old_port's slots and the cluster is consistent; returns that port."""
        deadline = time.monotonic() + timeout
        while True:
            problem = self.consistent_problem()
            if problem is None:
                owners = set(self.slot_owners())
                got = [p for p in new_ports if p in owners]
                if old_port not in owners and len(got) == 1:
                    role = _try(got[0], "ROLE")
                    if role and role[0] == "master":
                        return got[0]
                problem = "slots still served by %d" % old_port
            if time.monotonic() >= deadline:
                raise RuntimeError("%s: no promotion within %.0fs: %s" % (why, timeout, problem))
            time.sleep(0.05)

    # ----------------------------------------------------------- operations

    def wait_replica_known(self, primary_port, replica_port, timeout=30.0):
        """Until every live node's CLUSTER NODES has replica_port as a replica
        of primary_port (a primary ignores a manual failover request from a
        node it does not know as its replica yet)."""
        pid = self.ids[primary_port]
        deadline = time.monotonic() + timeout
        while True:
            views = [self.nodes(p) for p in self.live_ports()]
            if all(v is not None and replica_port in v and v[replica_port].master_id == pid
                   and not v[replica_port].primary for v in views):
                return
            if time.monotonic() >= deadline:
                raise RuntimeError("not every node knows %d as a replica of %d" % (replica_port, primary_port))
            time.sleep(0.05)

    def failover(self, primary_port, timeout=30.0):
        """CLUSTER FAILOVER (manual, coordinated with the primary) on a
        replica of primary_port; waits until every live node sees it as the
        primary and the old one as its replica. Returns the new primary's port.
        A request that times out (Redis gives it 5 s) is made again."""
        replicas = self.replicas_of(primary_port)
        if not replicas:
            raise RuntimeError("primary %d has no live replica" % primary_port)
        new = replicas[0]
        self.wait_replica_known(primary_port, new, timeout)
        self.wait_replicas_synced(timeout)
        deadline = time.monotonic() + timeout
        while True:
            command(new, "CLUSTER", "FAILOVER")
            try:
                self._wait_promoted(primary_port, [new], min(6.0, max(0.1, deadline - time.monotonic())),
                                    "CLUSTER FAILOVER on %d" % new)
                break
            except RuntimeError:
                if time.monotonic() >= deadline:
                    raise
        self.wait_replica_known(new, primary_port, max(1.0, deadline - time.monotonic()))
        return new

    def kill_primary(self, port, timeout=30.0):
        """SIGKILL of primary `port`; waits until the survivors agree that one
        of its replicas serves its slots. Returns that replica's port."""
        replicas = self.replicas_of(port)
        if not replicas:
            raise RuntimeError("primary %d has no live replica to promote" % port)
        self.kill(port)
        return self._wait_promoted(port, replicas, timeout, "SIGKILL of %d" % port)

    def kill(self, port):
        p = self.procs[port]
        p.send_signal(signal.SIGKILL)
        p.wait(10)

    def restart(self, port, timeout=30.0):
        """Starts a killed node again on its port with its nodes.conf (its
        identity): it rejoins, as a replica if it was failed over. Waits until
        the cluster is consistent and replicas are in sync."""
        if self.running(port):
            raise RuntimeError("node %d is running" % port)
        self._spawn(port)
        self._wait_ping(port)
        self.wait_consistent(timeout)
        role = command(port, "ROLE")
        if role[0] == "slave":
            self.wait_replica_known(int(role[2]), port, timeout)
        self.wait_replicas_synced(timeout)

    def reshard(self, from_port, to_port, slots, timeout=120.0):
        """redis-cli --cluster reshard: `slots` slots (the lowest of from_port's)
        move with their keys from one primary to the other."""
        self.wait_consistent(timeout)
        r = subprocess.run(
            ["redis-cli", "--cluster", "reshard", "127.0.0.1:%d" % from_port,
             "--cluster-from", self.ids[from_port], "--cluster-to", self.ids[to_port],
             "--cluster-slots", str(slots), "--cluster-yes"],
            capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0 or "[ERR]" in r.stdout:
            raise RuntimeError("redis-cli --cluster reshard failed (%d):\n%s%s" % (
                r.returncode, r.stdout[-3000:], r.stderr))
        self.wait_consistent(timeout)

    def move_slot(self, slot, to_port, batch=1, pause=0.2, on_batch=None, timeout=60.0):
        """Moves one slot by hand, as redis-cli does, but slowly: SETSLOT
        IMPORTING on the target, MIGRATING on the source, then MIGRATE of
        `batch` keys at a time with `pause` seconds (and on_batch(moved_so_far),
        if given) between batches, so clients run against a slot half moved
        (ASK / TRYAGAIN); then SETSLOT NODE on the target, the source and
        every other primary. Returns the number of keys moved."""
        self.wait_consistent(timeout)
        src = self.node_of_slot(slot)
        if src == to_port:
            raise RuntimeError("slot %d is already on %d" % (slot, to_port))
        src_id, dst_id = self.ids[src], self.ids[to_port]
        command(to_port, "CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        command(src, "CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
        moved = 0
        deadline = time.monotonic() + timeout
        while True:
            keys = command(src, "CLUSTER", "GETKEYSINSLOT", slot, batch)
            if not keys:
                break
            if time.monotonic() >= deadline:
                raise RuntimeError("slot %d: keys still on %d after %.0fs" % (slot, src, timeout))
            r = command(src, "MIGRATE", "127.0.0.1", to_port, "", 0, 5000, "KEYS", *keys, raise_error=False)
            if isinstance(r, RedisError):
                # A key created on both sides meanwhile is a test bug, not
                # something to paper over with REPLACE; anything else: retry.
                if str(r).startswith("BUSYKEY"):
                    raise r
                time.sleep(0.02)
                continue
            moved += len(keys)
            if on_batch:
                on_batch(moved)
            if pause:
                time.sleep(pause)
        # The target first: from now on it answers for the slot; then the
        # source (it stops sending ASK); then everyone else.
        command(to_port, "CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        command(src, "CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        for p in self.primaries():
            if p not in (src, to_port):
                _try(p, "CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        self.wait_consistent(timeout)
        return moved
