"""TLS and mTLS (the `tls:` section and --tls-* flags), with certificates
made by tests/support/make_certs.sh during the run: TLS with a bearer token
from Python's grpcio (the interop proof), Health over TLS, plain text to a
TLS port failing cleanly, mTLS refusing a client without or with a wrong
certificate, SIGHUP reloading the certificate without dropping connections,
and bad TLS files stopping batond with exit 2."""
import hashlib
import os
import signal
import subprocess
import time

import grpc
import pytest
from baton.v1 import lock_pb2 as pb
from baton.v1 import lock_pb2_grpc

import bclient as bc
import harness

TOKEN = "tls-team-token-42"
AUTH = """\
auth:
  tokens:
    - {name: tls-team, sha256: "%s", prefixes: ["tls/", "it-ready-probe"], admin: true}
""" % hashlib.sha256(TOKEN.encode()).hexdigest()
MD = (("authorization", "Bearer " + TOKEN),)


@pytest.fixture(scope="module")
def certs(workdir):
    d = os.path.join(workdir, "certs-%d" % os.getpid())
    subprocess.run([os.path.join(harness.SOURCE_DIR, "tests", "support", "make_certs.sh"), d], check=True)
    return d


def read(path):
    with open(path, "rb") as f:
        return f.read()


def creds(certs, ca="ca.pem", client=None):
    key = chain = None
    if client:
        key, chain = read(os.path.join(certs, client + ".key")), read(os.path.join(certs, client + ".pem"))
    return grpc.ssl_channel_credentials(root_certificates=read(os.path.join(certs, ca)), private_key=key,
                                        certificate_chain=chain)


def tls_config(certs, mtls=False, require=False, prefix=""):
    cfg = 'tls:\n  cert_file: "%s"\n  key_file: "%s"\n' % (os.path.join(certs, prefix + "server.pem"),
                                                          os.path.join(certs, prefix + "server.key"))
    if mtls:
        cfg += '  client_ca_file: "%s"\n' % os.path.join(certs, "ca.pem")
    if require:
        cfg += "  require_client_cert: true\n"
    return cfg


def start_tls(start_redis, start_batond, certs, config, probe_client=None, **kw):
    r = start_redis()
    return start_batond(r.address, name="batond-tls", extra_config=config + AUTH, probe_metadata=MD,
                        probe_channel=lambda t: grpc.secure_channel(t, creds(certs, client=probe_client)), **kw)


def describe(channel, key="tls/x", timeout=5):
    return lock_pb2_grpc.LockServiceStub(channel).Describe(pb.DescribeRequest(key=key), metadata=MD,
                                                           timeout=timeout)


def test_tls_with_token_from_python(start_redis, start_batond, certs):
    b = start_tls(start_redis, start_batond, certs, tls_config(certs))
    with grpc.secure_channel(b.target, creds(certs)) as ch:
        stub = lock_pb2_grpc.LockServiceStub(ch)
        events = list(stub.Acquire(bc.acquire_request("tls/py", "interop"), metadata=MD, timeout=5))
        g = events[-1].granted
        assert describe(ch, "tls/py").owner == "tls-team/interop"
        stub.Release(pb.ReleaseRequest(key="tls/py", token=g.token), metadata=MD, timeout=5)
        # Without the token the TLS connection alone is not enough.
        with pytest.raises(grpc.RpcError) as e:
            stub.Describe(pb.DescribeRequest(key="tls/py"), timeout=5)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # Health over TLS, without a token.
    from test_auth import health_check
    assert health_check(b.target, creds(certs))


def test_plain_text_to_tls_port_fails_cleanly(start_redis, start_batond, certs):
    b = start_tls(start_redis, start_batond, certs, tls_config(certs))
    with grpc.insecure_channel(b.target) as ch:
        with pytest.raises(grpc.RpcError) as e:
            describe(ch, timeout=3)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    # A client that does not trust the server's CA fails too.
    with grpc.secure_channel(b.target, creds(certs, ca="other-ca.pem")) as ch:
        with pytest.raises(grpc.RpcError) as e:
            describe(ch, timeout=3)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert b.running()
    with grpc.secure_channel(b.target, creds(certs)) as ch:
        assert describe(ch).held is False


def test_flags_turn_tls_on(start_redis, start_batond, certs):
    r = start_redis()
    b = start_batond(r.address, name="batond-tls-flags", extra_config=AUTH, probe_metadata=MD,
                     probe_channel=lambda t: grpc.secure_channel(t, creds(certs)),
                     extra_args=["--tls-cert", os.path.join(certs, "server.pem"),
                                 "--tls-key", os.path.join(certs, "server.key")])
    with grpc.secure_channel(b.target, creds(certs)) as ch:
        assert describe(ch).held is False


def test_mtls_refuses_clients_without_a_good_certificate(start_redis, start_batond, certs):
    b = start_tls(start_redis, start_batond, certs, tls_config(certs, mtls=True, require=True),
                  probe_client="client")
    for client in (None, "other-client"):
        with grpc.secure_channel(b.target, creds(certs, client=client)) as ch:
            with pytest.raises(grpc.RpcError) as e:
                describe(ch, timeout=3)
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE, (client, e.value)
    with grpc.secure_channel(b.target, creds(certs, client="client")) as ch:
        assert describe(ch).held is False


def test_mtls_optional_still_refuses_a_wrong_certificate(start_redis, start_batond, certs):
    b = start_tls(start_redis, start_batond, certs, tls_config(certs, mtls=True))
    with grpc.secure_channel(b.target, creds(certs)) as ch:
        assert describe(ch).held is False
    with grpc.secure_channel(b.target, creds(certs, client="other-client")) as ch:
        with pytest.raises(grpc.RpcError) as e:
            describe(ch, timeout=3)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE


def test_sighup_reloads_the_certificate_keeping_connections(start_redis, start_batond, certs, workdir):
    live = os.path.join(workdir, "live-certs-%d" % os.getpid())
    os.makedirs(live, exist_ok=True)
    for f in ("server.pem", "server.key", "ca.pem"):
        with open(os.path.join(live, f), "wb") as out:
            out.write(read(os.path.join(certs, f)))
    b = start_tls(start_redis, start_batond, live, tls_config(live))
    old = grpc.secure_channel(b.target, creds(certs))
    stub = lock_pb2_grpc.LockServiceStub(old)
    hold = stub.Acquire(bc.acquire_request("tls/held", "h", mode=bc.STREAM), metadata=MD, timeout=60)
    assert next(iter(hold)).HasField("granted")
    # A new CA and server certificate in place of the old files.
    subprocess.run([os.path.join(harness.SOURCE_DIR, "tests", "support", "make_certs.sh"), live, "new-"],
                   check=True)
    for f in ("server.pem", "server.key"):
        os.replace(os.path.join(live, "new-" + f), os.path.join(live, f))
    mark = b.log_size()
    b.signal(signal.SIGHUP)
    bc.wait_until(lambda: "TLS certificate, key and client CA re-read" in b.log_text(mark), timeout=5)
    new_ca = grpc.ssl_channel_credentials(root_certificates=read(os.path.join(live, "new-ca.pem")))
    with grpc.secure_channel(b.target, new_ca) as ch:
        assert describe(ch).held is False
    with grpc.secure_channel(b.target, creds(certs, ca="ca.pem"),
                             options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
        with pytest.raises(grpc.RpcError):
            describe(ch, timeout=3)
    # The connection made before the reload is still up, its lock still held.
    assert describe(old, "tls/held").held
    hold.cancel()
    old.close()
    # A broken file on SIGHUP: logged, the current certificate stays.
    with open(os.path.join(live, "server.key"), "w") as f:
        f.write("not a key\n")
    mark = b.log_size()
    b.signal(signal.SIGHUP)
    bc.wait_until(lambda: "TLS not reloaded" in b.log_text(mark), timeout=5)
    assert "tls.key_file: no PEM private key" in b.log_text(mark)
    with grpc.secure_channel(b.target, new_ca, options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
        assert describe(ch).held is False


@pytest.mark.parametrize("cfg,want", [
    ("tls:\n  cert_file: \"{d}/server.pem\"\n  key_file: \"{d}/client.key\"\n",
     "tls.key_file: does not match the certificate of tls.cert_file"),
    ("tls:\n  cert_file: \"{d}/nope.pem\"\n  key_file: \"{d}/server.key\"\n",
     "tls.cert_file: cannot read {d}/nope.pem: No such file or directory"),
    ("tls:\n  cert_file: \"{d}/server.pem\"\n  key_file: \"{d}/server.key\"\n  client_ca_file: \"{d}/server.key\"\n",
     "tls.client_ca_file: no PEM certificate in it"),
])
def test_bad_tls_files_exit_2(batond_binary, workdir, certs, cfg, want):
    path = os.path.join(workdir, "bad-tls.yaml")
    with open(path, "w") as f:
        f.write("redis: {address: \"127.0.0.1:1\"}\nlisten: \"127.0.0.1:0\"\n" + cfg.format(d=certs))
    r = subprocess.run([batond_binary, "--config", path], capture_output=True, text=True, timeout=20)
    assert r.returncode == 2, r.stderr
    assert "batond: " + want.format(d=certs) in r.stderr, r.stderr
