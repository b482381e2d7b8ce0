"""deploy/: every shipped file passes the checker of the tool that reads it.

Run:  BATOND=build/server/batond BATON_HEALTH_PROBE=build/client/health_probe/baton-health-probe \
      BATON_BUILD_DIR=build python3 -m pytest -q tests/deploy/test_deploy.py
"""
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

import pytest
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("BATON_SOURCE_DIR") or os.path.abspath(os.path.join(HERE, "..", ".."))
DEPLOY = os.path.join(SRC, "deploy")
BUILD = os.environ.get("BATON_BUILD_DIR") or os.path.join(SRC, "build")
BATOND = os.environ.get("BATOND") or os.path.join(BUILD, "server", "batond")
PROBE = os.environ.get("BATON_HEALTH_PROBE") or os.path.join(BUILD, "client", "health_probe",
                                                             "baton-health-probe")

# The metric names README documents (fixed by issue #18). test_metrics.py
# checks that a running batond serves every one of them.
METRICS = {
    "baton_grants_total", "baton_releases_total", "baton_acquire_timeouts_total", "baton_requests_total",
    "baton_locks_held", "baton_waiters", "baton_streams_open", "baton_watchers",
    "baton_acquire_wait_seconds", "baton_hold_seconds", "baton_handoff_seconds", "baton_redis_up",
    "baton_redis_script_seconds", "baton_long_held_locks", "baton_build_info", "baton_pool_devices_held",
}


def run(*args, **kw):
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("timeout", 120)
    return subprocess.run(list(args), **kw)


def check_config(config_text=None, flags=(), name="cfg"):
    """batond [--config FILE] FLAGS --check-config; returns the result."""
    args = [BATOND]
    d = tempfile.mkdtemp(prefix="baton-deploy-")
    try:
        if config_text is not None:
            path = os.path.join(d, name + ".yaml")
            with open(path, "w") as f:
                f.write(config_text)
            args += ["--config", path]
        return run(*args, *flags, "--check-config")
    finally:
        shutil.rmtree(d, True)


def assert_config_ok(r, what):
    assert r.returncode == 0, "%s: batond --check-config exit %s:\n%s%s" % (what, r.returncode, r.stdout,
                                                                            r.stderr)


@pytest.fixture(scope="module")
def install_root():
    """cmake --install of the server component into a temp prefix."""
    d = tempfile.mkdtemp(prefix="baton-install-")
    prefix = os.path.join(d, "opt", "baton")
    r = run("cmake", "--install", BUILD, "--component", "server", "--prefix", prefix)
    assert r.returncode == 0, r.stdout + r.stderr
    yield prefix
    shutil.rmtree(d, True)


@pytest.fixture(scope="module")
def image_root():
    """The tree the Dockerfile's build stage makes: DESTDIR=/out, prefix /usr."""
    d = tempfile.mkdtemp(prefix="baton-image-")
    env = dict(os.environ, DESTDIR=os.path.join(d, "out"))
    r = run("cmake", "--install", BUILD, "--component", "server", "--prefix", "/usr", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    yield d
    shutil.rmtree(d, True)


# ------------------------------------------------------------- cmake --install

def test_install_server_component(install_root):
    for rel in ("bin/batond", "bin/baton-health-probe", "lib/systemd/system/batond.service",
                "etc/baton/batond.yaml"):
        assert os.path.isfile(os.path.join(install_root, rel)), rel
    assert os.access(os.path.join(install_root, "bin/batond"), os.X_OK)
    # The client component is not part of it.
    assert not os.path.exists(os.path.join(install_root, "bin/baton"))
    unit = open(os.path.join(install_root, "lib/systemd/system/batond.service")).read()
    # The unit names the installed binary and configuration, for this prefix.
    assert "ExecStart=%s/bin/batond --config %s/etc/baton/batond.yaml" % (install_root, install_root) in unit
    # The installed example configuration is valid.
    r = run(os.path.join(install_root, "bin/batond"), "--config",
            os.path.join(install_root, "etc/baton/batond.yaml"), "--check-config")
    assert_config_ok(r, "installed batond.yaml")


def test_install_prefix_usr_puts_config_in_etc(image_root):
    out = os.path.join(image_root, "out")
    assert os.path.isfile(os.path.join(out, "etc/baton/batond.yaml"))
    unit = open(os.path.join(out, "usr/lib/systemd/system/batond.service")).read()
    assert "ExecStart=/usr/bin/batond --config /etc/baton/batond.yaml" in unit


# ------------------------------------------------------------------- systemd

def test_systemd_unit_verifies(install_root):
    if not shutil.which("systemd-analyze"):
        pytest.fail("systemd-analyze missing: deploy/install-deps.sh test installs systemd")
    unit = os.path.join(install_root, "lib/systemd/system/batond.service")
    r = run("systemd-analyze", "verify", unit)
    # verify exits 0 on unknown keys but says so: any output is a finding.
    assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), r.stdout + r.stderr


def test_systemd_unit_is_hardened(install_root):
    text = open(os.path.join(DEPLOY, "batond.service")).read()
    for line in ("DynamicUser=yes", "ProtectSystem=strict", "NoNewPrivileges=yes", "ProtectHome=yes",
                 "PrivateTmp=yes", "CapabilityBoundingSet=\n", "RestartPreventExitStatus=2"):
        assert line in text, line
    unit = os.path.join(install_root, "lib/systemd/system/batond.service")
    r = run("systemd-analyze", "security", "--offline=true", "--no-pager", unit)
    m = re.search(r"Overall exposure level for batond.service: ([0-9.]+)", r.stdout + r.stderr)
    assert m, r.stdout + r.stderr
    assert float(m.group(1)) <= 2.0, "exposure %s:\n%s" % (m.group(1), r.stdout[-3000:])


# ---------------------------------------------------------------- Dockerfile

def dockerfile_instructions(path):
    """[(INSTRUCTION, args)] with continuation lines joined and comments dropped."""
    out, cur = [], ""
    for raw in open(path):
        line = raw.rstrip("\n")
        if not cur and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if cur and line.lstrip().startswith("#"):
            continue
        cur += line[:-1] + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            word, _, rest = cur.strip().partition(" ")
            out.append((word, rest.strip()))
            cur = ""
    assert not cur, "dangling continuation line"
    return out


def apt_packages(run_args):
    m = re.search(r"apt-get install (.*?)(&&|$)", run_args)
    assert m, run_args
    return [w for w in m.group(1).split() if not w.startswith("-")]


def depends_closure(pkgs):
    """Every package apt installs with pkgs (their Depends, recursively, as
    dpkg knows them on this machine)."""
    seen, todo = set(), list(pkgs)
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        r = run("dpkg-query", "-W", "-f=${Depends}", p)
        for dep in r.stdout.split(","):
            for alt in dep.split("|"):
                name = alt.strip().split(" ")[0].split(":")[0]
                if name:
                    todo.append(name)
    return seen


def test_dockerfile(image_root):
    ins = dockerfile_instructions(os.path.join(DEPLOY, "Dockerfile"))
    known = {"FROM", "RUN", "COPY", "WORKDIR", "USER", "EXPOSE", "HEALTHCHECK", "ENTRYPOINT", "CMD", "ENV",
             "ARG", "LABEL"}
    assert all(i in known for i, _ in ins), [i for i, _ in ins if i not in known]
    froms = [i for i, (w, _) in enumerate(ins) if w == "FROM"]
    assert [ins[i][1] for i in froms] == ["debian:12-slim AS build", "debian:12-slim"], "multi-stage on 12-slim"
    build, runtime = ins[froms[0]:froms[1]], ins[froms[1]:]

    # The build stage installs what deploy/install-deps.sh builds with.
    deps = open(os.path.join(DEPLOY, "install-deps.sh")).read()
    build_pkgs = set(re.search(r"build_pkgs=\((.*?)\)", deps, re.S).group(1).split()) - {"redis-server"}
    stage_pkgs = set(apt_packages(next(a for w, a in build if w == "RUN" and "apt-get install" in a)))
    assert build_pkgs <= stage_pkgs, "missing in the build stage: %s" % (build_pkgs - stage_pkgs)

    # Every file the runtime stage copies exists in the tree the build stage
    # installs (same cmake --install, DESTDIR=/out, prefix /usr) ...
    copies = [a.split() for w, a in runtime if w == "COPY"]
    elves = []
    for args in copies:
        assert args[0] == "--from=build", args
        for src in args[1:-1]:
            assert src.startswith("/out/"), src
            local = os.path.join(image_root, src.lstrip("/"))
            assert os.path.isfile(local), "%s is not in the installed tree" % src
            if open(local, "rb").read(4) == b"\x7fELF":
                elves.append(local)
    assert elves, "the runtime stage copies no binary"
    # ... and every shared library they need comes from a package the runtime
    # stage installs (or the base image's libc).
    runtime_pkgs = set(apt_packages(next(a for w, a in runtime if w == "RUN" and "apt-get install" in a)))
    base = {"libc6", "libgcc-s1", "libstdc++6"} | depends_closure(runtime_pkgs)
    for elf in elves:
        needed = re.findall(r"\(NEEDED\).*\[(.*)\]", run("readelf", "-d", elf).stdout)
        assert needed, elf
        if any(lib.startswith(("libasan.", "libtsan.")) for lib in needed):
            continue  # a sanitizer build of this tree (own runtime libraries); the image builds without
        for lib in needed:
            path = next((os.path.join(d, lib) for d in ("/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu",
                                                         "/usr/lib/aarch64-linux-gnu", "/usr/lib")
                         if os.path.exists(os.path.join(d, lib))), None)
            assert path, "%s needs %s, not found" % (elf, lib)
            owner = None
            for cand in (path, os.path.realpath(path), path.replace("/usr/lib/", "/lib/")):
                r = run("dpkg", "-S", cand)
                if r.returncode == 0:
                    owner = r.stdout.split(":")[0]
                    break
            assert owner, "no package owns %s" % path
            assert owner in runtime_pkgs | base, "%s needs %s from %s, not installed in the runtime stage" % (
                os.path.basename(elf), lib, owner)

    # Non-root, a health check through the gRPC health service, and a command
    # line batond accepts with the image's configuration.
    user = [a for w, a in runtime if w == "USER"]
    assert user and not user[-1].startswith(("0", "root")), user
    hc = next(a for w, a in runtime if w == "HEALTHCHECK")
    assert "baton-health-probe" in hc
    entry = json.loads(next(a for w, a in runtime if w == "ENTRYPOINT"))
    cmd = json.loads(next(a for w, a in runtime if w == "CMD"))
    assert entry[0] == "/usr/bin/batond"
    args = [a.replace("/etc/baton/batond.yaml", os.path.join(image_root, "out/etc/baton/batond.yaml"))
            for a in entry[1:] + cmd]
    assert_config_ok(run(BATOND, *args, "--check-config"), "Dockerfile ENTRYPOINT + CMD")


# ------------------------------------------------------------------- compose

def test_compose():
    c = yaml.safe_load(open(os.path.join(DEPLOY, "compose.yaml")))
    services = c["services"]
    assert set(services) == {"redis", "batond", "prometheus"}
    assert services["prometheus"].get("profiles") == ["monitoring"], "prometheus is optional"
    b = services["batond"]
    ctx = os.path.normpath(os.path.join(DEPLOY, b["build"]["context"]))
    assert os.path.isfile(os.path.join(ctx, b["build"]["dockerfile"]))
    assert b["depends_on"]["redis"]["condition"] == "service_healthy"
    # The command line the image's ENTRYPOINT gets, with the image's config.
    assert_config_ok(run(BATOND, "--config", os.path.join(DEPLOY, "batond.yaml"), *b["command"],
                         "--check-config"), "compose batond command")
    flags = b["command"]
    assert flags[flags.index("--redis") + 1] == "redis:6379"
    # Prometheus scrapes the port batond serves metrics on.
    mport = flags[flags.index("--metrics-listen") + 1].rsplit(":", 1)[1]
    assert "%s:%s" % (mport, mport) in b["ports"]
    prom = yaml.safe_load(open(os.path.join(DEPLOY, "prometheus", "prometheus.yml")))
    targets = [t for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    assert "batond:%s" % mport in targets
    for svc in services.values():
        for v in svc.get("volumes", []):
            src = v.split(":")[0]
            if src.startswith("."):
                assert os.path.exists(os.path.join(DEPLOY, src)), src


# ---------------------------------------------------------------------- k8s

def load_docs(*rel):
    docs = []
    for r in rel:
        docs += [d for d in yaml.safe_load_all(open(os.path.join(DEPLOY, "k8s", r))) if d]
    for d in docs:
        assert {"apiVersion", "kind", "metadata"} <= set(d), d
    return docs


def by_kind(docs, kind, name=None):
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, (kind, name, len(found))
    return found[0]


def test_k8s_manifests():
    docs = load_docs("configmap.yaml", "deployment.yaml", "service.yaml", "pdb.yaml")
    dep = by_kind(docs, "Deployment")
    cm = by_kind(docs, "ConfigMap")
    svc = by_kind(docs, "Service")
    pdb = by_kind(docs, "PodDisruptionBudget")
    labels = dep["spec"]["template"]["metadata"]["labels"]
    for sel in (dep["spec"]["selector"]["matchLabels"], svc["spec"]["selector"],
                pdb["spec"]["selector"]["matchLabels"]):
        assert sel.items() <= labels.items(), sel

    cfg_text = cm["data"]["batond.yaml"]
    assert_config_ok(check_config(cfg_text), "k8s ConfigMap batond.yaml")
    cfg = yaml.safe_load(cfg_text)
    port = int(cfg["listen"].rsplit(":", 1)[1])

    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (c,) = pod["containers"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert port in [p["containerPort"] for p in c["ports"]]
    # gRPC probes on grpc.health.v1: the service batond answers for.
    for probe in ("livenessProbe", "readinessProbe"):
        g = c[probe]["grpc"]
        assert g["port"] == port, probe
        assert g.get("service", "") in ("", "baton.v1.LockService"), probe
    # The ConfigMap is mounted where args point.
    mount = next(m for m in c["volumeMounts"] if m["name"] == "config")
    vol = next(v for v in pod["volumes"] if v["name"] == "config")
    assert vol["configMap"]["name"] == cm["metadata"]["name"]
    assert c["args"][c["args"].index("--config") + 1] == mount["mountPath"] + "/batond.yaml"
    assert any(p["port"] == port for p in svc["spec"]["ports"])
    # The metrics port: configured, exposed, annotated for scraping.
    mport = int(cfg["metrics"]["listen"].rsplit(":", 1)[1])
    assert {"name": "metrics", "containerPort": mport} in c["ports"]
    assert dep["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == str(mport)
    assert any(p.get("name") == "metrics" for p in svc["spec"]["ports"])


def test_k8s_sentinel_example():
    docs = load_docs("sentinel/configmap.yaml", "sentinel/redis.yaml")
    cm = by_kind(docs, "ConfigMap", "batond")
    assert_config_ok(check_config(cm["data"]["batond.yaml"]), "sentinel ConfigMap batond.yaml")
    sts = by_kind(docs, "StatefulSet")
    names = [c["name"] for c in sts["spec"]["template"]["spec"]["containers"]]
    assert names == ["redis", "sentinel"]
    sentinel_conf = by_kind(docs, "ConfigMap", "redis-sentinel")["data"]["sentinel.conf"]
    assert re.search(r"^sentinel monitor \S+ redis-0\.%s 6379 2$" % sts["spec"]["serviceName"],
                     sentinel_conf, re.M)
    # batond names every sentinel of the StatefulSet and the monitored master.
    conf = yaml.safe_load(cm["data"]["batond.yaml"])
    master = re.search(r"^sentinel monitor (\S+) ", sentinel_conf, re.M).group(1)
    want = "sentinel://%s/%s" % (",".join("redis-%d.%s:26379" % (i, sts["spec"]["serviceName"])
                                           for i in range(sts["spec"]["replicas"])), master)
    assert conf["redis"]["address"] == want


# ---------------------------------------------------------------- prometheus

def promtool(*args):
    if not shutil.which("promtool"):
        pytest.fail("promtool missing: deploy/install-deps.sh test installs prometheus")
    return run("promtool", *args, cwd=os.path.join(DEPLOY, "prometheus"))


def test_prometheus_rules_and_config():
    for args in (("check", "rules", "alerts.yml"), ("check", "config", "prometheus.yml"),
                 ("test", "rules", "alerts_test.yml")):
        r = promtool(*args)
        assert r.returncode == 0, "promtool %s:\n%s%s" % (" ".join(args), r.stdout, r.stderr)
    rules = yaml.safe_load(open(os.path.join(DEPLOY, "prometheus", "alerts.yml")))
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    assert alerts == {"BatonDown", "BatonRedisDown", "BatonLongHeldLocks", "BatonWaitersPilingUp",
                      "BatonAcquireWaitP99High"}
    tested = {t["alertname"] for case in yaml.safe_load(open(os.path.join(DEPLOY, "prometheus",
                                                                          "alerts_test.yml")))["tests"]
              for t in case["alert_rule_test"]}
    assert tested == alerts, "every alert has a promtool unit test"
    assert_metric_names(json.dumps(rules), "alerts.yml")


def assert_metric_names(text, what):
    used = set(re.findall(r"\bbaton_[a-z_]+", text))
    base = {re.sub(r"_(bucket|sum|count)$", "", m) for m in used}
    unknown = {m for m in base if m not in METRICS}
    assert not unknown, "%s names metrics batond does not serve: %s" % (what, unknown)
    return base


def test_grafana_dashboard():
    dash = json.load(open(os.path.join(DEPLOY, "grafana", "baton.json")))
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert exprs
    used = assert_metric_names("\n".join(exprs), "grafana/baton.json")
    assert used == METRICS, "metrics without a panel: %s" % (METRICS - used)
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))


# ------------------------------------------------------- baton-health-probe

def test_health_probe_against_real_batond():
    sys.path.insert(0, os.path.join(SRC, "tests", "integration"))
    import harness
    work = tempfile.mkdtemp(prefix="baton-probe-")
    stubs = os.path.join(work, "stubs")
    os.makedirs(stubs)
    harness.generate_stubs(stubs)
    sys.path.insert(0, stubs)
    redis = harness.RedisServer(work).start()
    b = harness.Batond(BATOND, work, redis.address, name="batond-probe")
    try:
        b.start()
        r = run(PROBE, "--timeout", "3000", b.target)
        assert (r.returncode, r.stdout.strip()) == (0, "SERVING"), r.stdout + r.stderr
        r = run(PROBE, "--service", "baton.v1.LockService", b.target)
        assert r.returncode == 0, r.stderr
        r = run(PROBE, "--service", "nope", b.target)
        assert r.returncode == 3 and "NOT_FOUND" in r.stderr, r.stdout + r.stderr
        redis.stop()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            r = run(PROBE, b.target)
            if r.returncode == 1:
                break
            time.sleep(0.1)
        assert (r.returncode, r.stdout.strip()) == (1, "NOT_SERVING"), r.stdout + r.stderr
        b.check_clean_exit(b.stop())
        r = run(PROBE, "--timeout", "500", b.target)
        assert r.returncode == 3, r.stdout + r.stderr
        assert run(PROBE, "--bogus").returncode == 2
    finally:
        b.stop()
        redis.stop()
        shutil.rmtree(work, True)
