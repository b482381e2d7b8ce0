"""Tests of the baton CLI against a real batond + redis-server.

Run as: with_batond.sh python3 test_cli.py PATH/TO/baton
(with_batond.sh exports BATON_TEST_TARGET and BATON_TEST_REDIS_SOCK).
Waits are bounded generously; nothing asserts speed.
"""
import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from relay import Relay  # noqa: E402

BATON = None
HANG = 20  # seconds: only catches hangs


def run(*args, env=None, timeout=HANG):
    e = dict(os.environ)
    e["BATON_TARGET"] = os.environ["BATON_TEST_TARGET"]
    if env:
        e.update(env)
    return subprocess.run([BATON, *args], capture_output=True, text=True, timeout=timeout, env=e)


def spawn(*args):
    e = dict(os.environ)
    e["BATON_TARGET"] = os.environ["BATON_TEST_TARGET"]
    return subprocess.Popen([BATON, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=e)


def finish(proc):
    """Ends a spawned holder whose CMD waits on stdin: EOF, then wait."""
    if proc.poll() is None:
        proc.stdin.close()
        try:
            proc.wait(HANG)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(HANG)
    for f in (proc.stdout, proc.stderr):
        f.close()
    return proc.returncode


def redis(*args):
    return subprocess.run(["redis-cli", "-s", os.environ["BATON_TEST_REDIS_SOCK"], *args],
                          capture_output=True, text=True, timeout=HANG).stdout.strip()


def wait_line(proc, text):
    """Reads proc's stdout until a line containing text; returns the lines."""
    lines = []
    deadline = time.monotonic() + HANG
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if text in line:
            return lines
    raise AssertionError("no line with %r, got %r" % (text, lines))


class Cli(unittest.TestCase):
    def test_help_documents_exit_codes(self):
        r = run("--help")
        self.assertEqual(r.returncode, 0)
        for code in ("75", "69", "70", " 2 ", "128+"):
            self.assertIn(code, r.stdout)
        for cmd in ("exec", "acquire", "renew", "release", "watch", "describe", "force-release", "ls"):
            r = run(cmd, "--help")
            self.assertEqual(r.returncode, 0, cmd)
            self.assertIn("usage: baton " + cmd, r.stdout)

    def test_usage_errors_exit_2(self):
        for args in (["exec", "--wait", "5x", "k", "--", "true"],
                     ["exec", "--wait", "-1", "k", "--", "true"],
                     ["exec", "--wait", "1.5s", "k", "--", "true"],
                     ["exec", "--ttl", "ms", "k", "--", "true"],
                     ["acquire", "--ttl", "", "k"],
                     ["acquire", "--ttl", "3d", "k"],
                     ["exec", "k"],
                     ["exec", "--pool", "p", "--", "true"],
                     ["acquire"],
                     ["release", "k"],
                     ["renew", "--prefix", "x", "k"],
                     ["nosuchcommand"],
                     ["acquire", "--bogus", "k"]):
            r = run(*args)
            self.assertEqual(r.returncode, 2, (args, r.stderr))
            self.assertTrue(r.stderr, args)
        # Valid units are accepted (the try-lock succeeds on a free key).
        for d in ("0", "500ms", "5s", "2m", "30"):
            self.assertEqual(run("exec", "--wait", d, "--ttl", "5s", "cli:units", "--", "true").returncode, 0, d)
        for d in ("500ms", "5s", "2m", "1h", "30"):
            self.assertEqual(run("exec", "--ttl", d, "cli:units", "--", "true").returncode, 0, d)

    def test_usage_error_names_the_long_option(self):
        # glibc reports a long option's value (not a character) in optopt.
        for args, named in ((["acquire", "--ttl"], "--ttl"), (["acquire", "--json=1", "k"], "--json=1")):
            r = run(*args)
            self.assertEqual(r.returncode, 2, (args, r.stderr))
            self.assertIn(named, r.stderr)
            self.assertTrue(r.stderr.isascii(), r.stderr)

    def test_terminal_ctrl_c_reaches_command_once(self):
        """Ctrl-C typed at a terminal goes to the whole foreground process
        group, CMD included; baton must not send CMD a second SIGINT."""
        child = ("import signal, sys, time\n"
                 "n = 0\n"
                 "def h(s, f):\n"
                 "    global n; n += 1\n"
                 "signal.signal(signal.SIGINT, h)\n"
                 "print('ready', flush=True)\n"
                 "end = time.monotonic() + 1.5\n"
                 "while time.monotonic() < end: time.sleep(0.01)\n"
                 "print('total', n, flush=True)\n")
        pid, fd = pty.fork()
        if pid == 0:
            try:
                os.environ["BATON_TARGET"] = os.environ["BATON_TEST_TARGET"]
                os.execv(BATON, [BATON, "exec", "cli:ctrlc", "--", sys.executable, "-c", child])
            finally:
                os._exit(127)
        out = b""
        deadline = time.monotonic() + HANG
        sent = False
        while time.monotonic() < deadline:
            if not sent and b"ready" in out:
                os.write(fd, b"\x03")  # the terminal's Ctrl-C
                sent = True
            r, _, _ = select.select([fd], [], [], 0.05)
            if r:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:  # EIO: the other side has closed
                    break
                if not chunk:
                    break
                out += chunk
        _, st = os.waitpid(pid, 0)
        os.close(fd)
        text = out.decode(errors="replace")
        self.assertTrue(sent, text)
        self.assertIn("total 1", text)
        self.assertEqual(os.waitstatus_to_exitcode(st), 0, text)

    def test_exec_status_and_environment(self):
        r = run("exec", "cli:env", "--", "sh", "-c",
                'echo "$BATON_KEY $BATON_FENCING $BATON_TOKEN ${CUDA_VISIBLE_DEVICES-unset}"; exit 7')
        self.assertEqual(r.returncode, 7, r.stderr)
        key, fencing, token, cvd = r.stdout.split()
        self.assertEqual(key, "cli:env")
        self.assertGreater(int(fencing), 0)
        self.assertEqual(len(token), 32)
        self.assertEqual(cvd, "unset")
        # CMD's own options are not baton's.
        r = run("exec", "cli:env", "--", "sh", "-c", "exit 0", "--wait")
        self.assertEqual(r.returncode, 0, r.stderr)
        # Missing command: 127.
        self.assertEqual(run("exec", "cli:env", "--", "/nonexistent/cmd").returncode, 127)

    def test_exec_pool_sets_cuda_visible_devices(self):
        holder = spawn("exec", "--pool", "cli-gpu", "--devices", "2", "--", "sh", "-c",
                       'echo "ready $CUDA_VISIBLE_DEVICES"; read x; exit 0')
        try:
            first = wait_line(holder, "ready")[-1].split()[1]
            r = run("exec", "--pool", "cli-gpu", "--devices", "2", "--wait", "0", "--", "sh", "-c",
                    'echo "$BATON_KEY $BATON_DEVICE $CUDA_VISIBLE_DEVICES"')
            self.assertEqual(r.returncode, 0, r.stderr)
            key, dev, cvd = r.stdout.split()
            self.assertEqual(dev, cvd)
            self.assertEqual(key, "cli-gpu/" + dev)
            self.assertNotEqual(cvd, first)
            self.assertEqual(sorted([cvd, first]), ["0", "1"])
            # Both devices taken: busy.
            holder2 = spawn("exec", "--pool", "cli-gpu", "--devices", "2", "--", "sh", "-c", 'echo ready; read x; exit 0')
            wait_line(holder2, "ready")
            r = run("exec", "--pool", "cli-gpu", "--devices", "2", "--wait", "0", "--", "true")
            self.assertEqual(r.returncode, 75, r.stderr)
            self.assertEqual(finish(holder2), 0)
        finally:
            self.assertEqual(finish(holder), 0)

    def test_exec_pool_count_exports_every_device(self):
        r = run("exec", "--pool", "cli-multi", "--devices", "4", "--count", "2", "--wait", "0", "--", "sh", "-c",
                'echo "$BATON_KEY $BATON_DEVICE $BATON_DEVICES $CUDA_VISIBLE_DEVICES"')
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.split(), ["cli-multi/0", "0", "0,1", "0,1"])
        # Named devices (cli-mig: MIG-a, MIG-b, GPU-c) reach CUDA_VISIBLE_DEVICES.
        holder = spawn("exec", "--pool", "cli-mig", "--devices", "3", "--", "sh", "-c",
                       'echo "ready $CUDA_VISIBLE_DEVICES"; read x; exit 0')
        try:
            self.assertEqual(wait_line(holder, "ready")[-1].split(), ["ready", "MIG-a"])
            r = run("exec", "--pool", "cli-mig", "--devices", "3", "--count", "2", "--json", "--wait", "0", "--",
                    "sh", "-c", 'echo "$BATON_DEVICES $CUDA_VISIBLE_DEVICES"')
            self.assertEqual(r.returncode, 0, r.stderr)
            out, js = r.stdout.splitlines()
            self.assertEqual(out.split(), ["1,2", "MIG-b,GPU-c"])
            j = json.loads(js)
            self.assertEqual((j["devices"], j["device_names"], j["lost"]), ([1, 2], ["MIG-b", "GPU-c"], False))
            # All 3 busy for a request of 2: none is taken.
            r = run("exec", "--pool", "cli-mig", "--devices", "3", "--count", "3", "--wait", "0", "--", "true")
            self.assertEqual(r.returncode, 75, r.stderr)
        finally:
            self.assertEqual(finish(holder), 0)
        r = run("exec", "--count", "2", "cli:key", "--", "true")
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("--count and --weight need --pool", r.stderr)

    def test_acquire_pool_json_lists_devices_and_weights(self):
        r = run("acquire", "--json", "--pool", "cli-acq", "--devices", "3", "--count", "2")
        self.assertEqual(r.returncode, 0, r.stderr)
        j = json.loads(r.stdout)
        self.assertEqual((j["key"], j["device"], j["devices"], j["keys"]),
                         ("cli-acq/0", 0, [0, 1], ["cli-acq/0", "cli-acq/1"]))
        self.assertEqual(len(j["fencings"]), 2)
        self.assertEqual(j["fencings"][0], j["fencing"])
        self.assertNotIn("device_names", j)
        # Releasing by the second key frees both devices.
        r = run("release", "--token", j["token"], "cli-acq/1")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(redis("EXISTS", "baton:{cli-acq/0}:lock"), "0")
        # Text output names every device.
        r = run("acquire", "--pool", "cli-acq", "--devices", "3", "--count", "3", "--ttl", "5s")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(" device=0 devices=0,1,2", r.stdout)
        # Weights: shares of cli-cap's capacity 80.
        devs = []
        for _ in range(3):
            r = run("acquire", "--json", "--pool", "cli-cap", "--devices", "2", "--weight", "30", "--ttl", "5s")
            self.assertEqual(r.returncode, 0, r.stderr)
            devs.append(json.loads(r.stdout)["device"])
        self.assertEqual(devs, [0, 0, 1])
        r = run("acquire", "--pool", "cli-cap", "--devices", "2", "--weight", "81")
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("pool.weight: must be at most the capacity of pool 'cli-cap' (80), got 81", r.stderr)
        r = run("acquire", "--count", "2", "cli:key")
        self.assertEqual(r.returncode, 2, r.stderr)

    def test_trylock_busy_and_conflict_exit_code_and_tokens(self):
        r = run("acquire", "--json", "--ttl", "30s", "cli:busy")
        self.assertEqual(r.returncode, 0, r.stderr)
        grant = json.loads(r.stdout)
        for field in ("key", "token", "fencing", "ttl_ms", "device"):
            self.assertIn(field, grant)
        self.assertEqual(grant["key"], "cli:busy")
        self.assertEqual(grant["ttl_ms"], 30000)
        self.assertEqual(grant["device"], -1)

        r = run("exec", "--wait", "0", "cli:busy", "--", "true")
        self.assertEqual(r.returncode, 75)
        self.assertIn("held", r.stderr)
        self.assertEqual(run("exec", "--wait", "0", "--conflict-exit-code", "9", "cli:busy", "--", "true").returncode, 9)
        self.assertEqual(run("exec", "--wait", "300ms", "cli:busy", "--", "true").returncode, 75)
        self.assertEqual(run("acquire", "--wait", "0", "cli:busy").returncode, 75)

        r = run("renew", "--json", "--token", grant["token"], "--ttl", "1m", "cli:busy")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["ttl_ms"], 60000)
        r = run("release", "--json", "--token", grant["token"], "cli:busy")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(json.loads(r.stdout)["released"])
        # Stale token: 70, for release and renew.
        self.assertEqual(run("release", "--token", grant["token"], "cli:busy").returncode, 70)
        self.assertEqual(run("renew", "--token", grant["token"], "cli:busy").returncode, 70)
        r = run("acquire", "cli:busy")
        self.assertEqual(r.returncode, 0)
        self.assertRegex(r.stdout, r"^key=cli:busy token=[0-9a-f]{32} fencing=\d+ ttl_ms=\d+ device=-1$")

    def test_exec_releases_on_exit(self):
        for _ in range(3):
            self.assertEqual(run("exec", "--wait", "0", "cli:rel", "--", "true").returncode, 0)
        r = run("describe", "--json", "cli:rel")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertFalse(json.loads(r.stdout)["held"])
        # Even when CMD fails.
        self.assertEqual(run("exec", "cli:rel", "--", "false").returncode, 1)
        self.assertFalse(json.loads(run("describe", "--json", "cli:rel").stdout)["held"])

    def test_signals_forwarded(self):
        for sig, code in ((signal.SIGTERM, 42), (signal.SIGINT, 43), (signal.SIGHUP, 44)):
            p = spawn("exec", "cli:sig", "--", "sh", "-c",
                      'trap "echo got; exit %d" %s; echo ready; while :; do sleep 0.05; done'
                      % (code, sig.name[3:]))
            wait_line(p, "ready")
            p.send_signal(sig)
            out, _ = p.communicate(timeout=HANG)
            finish(p)
            self.assertEqual(p.returncode, code, sig)
            self.assertIn("got", out)
        # A command killed by a signal: 128 + N.
        self.assertEqual(run("exec", "cli:sig", "--", "sh", "-c", "kill -KILL $$").returncode, 128 + 9)

    def test_interrupt_while_waiting(self):
        grant = json.loads(run("acquire", "--json", "cli:intr").stdout)
        p = spawn("exec", "--wait", "1m", "cli:intr", "--", "sh", "-c", "echo ran")
        deadline = time.monotonic() + HANG
        while json.loads(run("describe", "--json", "cli:intr").stdout)["waiters"] == 0:
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.05)
        p.send_signal(signal.SIGINT)
        out, _ = p.communicate(timeout=HANG)
        finish(p)
        self.assertEqual(p.returncode, 128 + signal.SIGINT)
        self.assertNotIn("ran", out)
        while json.loads(run("describe", "--json", "cli:intr").stdout)["waiters"] != 0:
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.05)
        self.assertEqual(run("release", "--token", grant["token"], "cli:intr").returncode, 0)

    def test_exec_lock_lost_terminates_command(self):
        p = spawn("exec", "--ttl", "300ms", "cli:lost", "--", "sh", "-c",
                  'trap "echo term; exit 0" TERM; echo ready; while :; do sleep 0.05; done')
        wait_line(p, "ready")
        self.assertEqual(redis("DEL", "baton:{cli:lost}:lock"), "1")
        out, err = p.communicate(timeout=HANG)
        finish(p)
        self.assertEqual(p.returncode, 70, err)
        self.assertIn("lost", err)
        self.assertIn("term", out)

    def test_exec_terminates_command_when_the_network_goes_silent(self):
        """The connection to batond goes silent (no FIN, no RST): the CLI's
        keepalive pings go unanswered, the lock is reported lost within about
        3 s and CMD gets SIGTERM, well before batond (keepalive, 15 s) lets the
        lock go. Without pings CMD ran on for as long as the silence lasted."""
        relay = Relay(os.environ["BATON_TEST_TARGET"])
        p = spawn("exec", "--target", relay.address, "cli:silent", "--", "sh", "-c",
                  'trap "echo term; exit 0" TERM; echo ready; while :; do sleep 0.05; done')
        try:
            wait_line(p, "ready")
            time.sleep(2.0)  # held quietly for a while first
            relay.silent = True
            t0 = time.monotonic()
            out, err = p.communicate(timeout=HANG)
            took = time.monotonic() - t0
            finish(p)
            self.assertEqual(p.returncode, 70, err)
            self.assertIn("lost", err)
            self.assertIn("term", out)
            # CMD stopped while batond still held the lock for it (batond lets
            # it go only when its own keepalive gives up, 10 s + 5 s).
            d = json.loads(run("describe", "--json", "cli:silent").stdout)
            self.assertTrue(d["held"], "CMD stopped %.1f s after the silence, after batond let go" % took)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait(HANG)
            relay.close()

    def test_unavailable_exit_69(self):
        r = run("exec", "--target", "127.0.0.1:1", "cli:x", "--", "true")
        self.assertEqual(r.returncode, 69, r.stderr)
        self.assertEqual(run("acquire", "--target", "127.0.0.1:1", "cli:x").returncode, 69)

    def test_invalid_key_exit_2(self):
        self.assertEqual(run("acquire", "bad key!").returncode, 2)

    def test_watch_json_lines_in_order(self):
        w = spawn("watch", "--json", "--prefix", "cli:w:")
        try:
            # batond subscribes asynchronously: probe until the first event shows.
            deadline = time.monotonic() + HANG
            import select
            while time.monotonic() < deadline:
                self.assertEqual(run("exec", "cli:w:probe", "--", "true").returncode, 0)
                if select.select([w.stdout], [], [], 0.2)[0]:
                    break
            lines = wait_line(w, '"RELEASED"')
            fencings = []
            for _ in range(2):
                r = run("exec", "cli:w:k", "--", "sh", "-c", 'echo $BATON_FENCING')
                fencings.append(int(r.stdout))
            events = []
            while len([e for e in events if e["key"] == "cli:w:k"]) < 4:
                line = w.stdout.readline()
                self.assertTrue(line)
                events.append(json.loads(line))
            mine = [(e["type"], e["fencing"]) for e in events if e["key"] == "cli:w:k"]
            self.assertEqual(mine, [("ACQUIRED", fencings[0]), ("RELEASED", fencings[0]),
                                    ("ACQUIRED", fencings[1]), ("RELEASED", fencings[1])])
            for e in events:
                for field in ("type", "key", "owner", "fencing", "at_unix_ms"):
                    self.assertIn(field, e)
            w.send_signal(signal.SIGINT)
            w.communicate(timeout=HANG)
            self.assertEqual(w.returncode, 0)
            self.assertTrue(lines)
        finally:
            finish(w)

    def test_describe_and_force_release(self):
        grant = json.loads(run("acquire", "--json", "cli:force").stdout)
        d = json.loads(run("describe", "--json", "cli:force").stdout)
        self.assertTrue(d["held"])
        self.assertEqual(d["fencing"], grant["fencing"])
        self.assertEqual(run("force-release", "--fencing", str(grant["fencing"] + 1), "cli:force").returncode, 70)
        self.assertEqual(run("force-release", "--fencing", str(grant["fencing"]), "cli:force").returncode, 0)
        self.assertFalse(json.loads(run("describe", "--json", "cli:force").stdout)["held"])

    def test_ls_table_json_older_than_and_watch(self):
        old = json.loads(run("acquire", "--json", "--owner", "ocr-7", "--ttl", "10m", "cli:ls:old").stdout)
        time.sleep(1.2)
        new = json.loads(run("acquire", "--json", "--owner", "asr-1", "--ttl", "30s", "cli:ls:new").stdout)
        try:
            r = run("ls", "--prefix", "cli:ls:")
            self.assertEqual(r.returncode, 0, r.stderr)
            lines = r.stdout.splitlines()
            self.assertEqual(lines[0].split(), ["KEY", "OWNER", "FENCING", "HELD", "TTL", "WAITERS"])
            self.assertEqual([l.split()[0] for l in lines[1:]], ["cli:ls:new", "cli:ls:old"], r.stdout)
            row = lines[2].split()
            self.assertEqual(row[1:3], ["ocr-7", str(old["fencing"])])
            self.assertTrue(row[3].endswith("s") and float(row[3][:-1]) >= 1.0, row)
            self.assertTrue(row[4].startswith("9m") or row[4].startswith("10m"), row)
            self.assertEqual(row[5], "0")
            j = [json.loads(l) for l in run("ls", "--json", "--prefix", "cli:ls:").stdout.splitlines()]
            self.assertEqual([(x["key"], x["owner"], x["fencing"]) for x in j],
                             [("cli:ls:new", "asr-1", new["fencing"]), ("cli:ls:old", "ocr-7", old["fencing"])])
            self.assertTrue(all(set(x) == {"key", "owner", "fencing", "held_for_ms", "ttl_ms", "waiters"}
                                for x in j))
            j = [json.loads(l) for l in
                 run("ls", "--json", "--older-than", "1s", "--prefix", "cli:ls:").stdout.splitlines()]
            self.assertEqual([x["key"] for x in j], ["cli:ls:old"])
            self.assertGreaterEqual(j[0]["held_for_ms"], 1000)
            # --watch refreshes until interrupted
            w = spawn("ls", "--watch", "--interval", "200ms", "--prefix", "cli:ls:")
            try:
                wait_line(w, "cli:ls:old")
                wait_line(w, "cli:ls:old")  # a second refresh
                w.send_signal(signal.SIGINT)
                w.wait(HANG)
                w.stdin.close()
            finally:
                finish(w)
            self.assertEqual(run("ls", "--older-than", "soon").returncode, 2)
            self.assertEqual(run("ls", "extra").returncode, 2)
            r = run("ls", "--prefix", "bad key")
            self.assertEqual(r.returncode, 2, r.stderr)
            self.assertIn("prefix", r.stderr)
        finally:
            run("release", "--token", old["token"], "cli:ls:old")
            run("release", "--token", new["token"], "cli:ls:new")
        self.assertEqual(run("ls", "--prefix", "cli:ls:").stdout.splitlines()[1:], [])


if __name__ == "__main__":
    BATON = os.path.abspath(sys.argv.pop(1))
    if "BATON_TEST_TARGET" not in os.environ:
        print("BATON_TEST_TARGET unset: skipped")
        sys.exit(77)
    unittest.main(verbosity=2)
