"""The baton CLI (and libbaton underneath) against a batond that requires
mTLS and bearer tokens: --tls-ca / --tls-cert / --tls-key, --token-file and
$BATON_AUTH_TOKEN, and the exit status of a refused token (77).

Run as: BATON_TEST_SECURE=1 with_batond.sh python3 test_cli_secure.py PATH/TO/baton
"""
import os
import subprocess
import sys
import tempfile
import unittest

BATON = None
HANG = 20


def certs(name):
    return os.path.join(os.environ["BATON_TEST_CERTS"], name)


def tls_args(client="client"):
    return ["--tls-ca", certs("ca.pem"), "--tls-cert", certs(client + ".pem"), "--tls-key", certs(client + ".key")]


def run(*args, token=None, env=None):
    e = dict(os.environ)
    e["BATON_TARGET"] = os.environ["BATON_TEST_TARGET"]
    e.pop("BATON_AUTH_TOKEN", None)
    if token is not None:
        e["BATON_AUTH_TOKEN"] = token
    if env:
        e.update(env)
    return subprocess.run([BATON, *args], capture_output=True, text=True, timeout=HANG, env=e)


class Secure(unittest.TestCase):
    def test_acquire_release_with_env_token(self):
        tok = os.environ["BATON_TEST_TOKEN"]
        r = run("acquire", "--json", *tls_args(), "cli/a", token=tok)
        self.assertEqual(r.returncode, 0, r.stderr)
        import json
        g = json.loads(r.stdout)
        r = run("describe", "--json", *tls_args(), "cli/a", token=tok)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn('"owner":"cli/', r.stdout.replace(" ", ""))
        r = run("release", *tls_args(), "--token", g["token"], "cli/a", token=tok)
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_token_file(self):
        with tempfile.NamedTemporaryFile("w", suffix=".tok") as f:
            f.write(os.environ["BATON_TEST_TOKEN"] + "\n")
            f.flush()
            r = run("exec", *tls_args(), "--token-file", f.name, "cli/exec", "--", "sh", "-c", "exit 0")
            self.assertEqual(r.returncode, 0, r.stderr)
            # --token-file wins over the environment.
            r = run("describe", *tls_args(), "--token-file", f.name, "cli/x", token="wrong")
            self.assertEqual(r.returncode, 0, r.stderr)
        r = run("describe", *tls_args(), "--token-file", "/nonexistent/tok", "cli/x")
        self.assertEqual(r.returncode, 2)
        self.assertIn("--token-file /nonexistent/tok", r.stderr)

    def test_no_or_wrong_token_exits_77(self):
        for tok in (None, "not-a-token"):
            r = run("describe", *tls_args(), "cli/x", token=tok)
            self.assertEqual(r.returncode, 77, (tok, r.stderr))
            self.assertIn("bearer token", r.stderr)

    def test_other_prefix_and_force_release_without_admin_exit_77(self):
        r = run("acquire", *tls_args(), "cli/y", token=os.environ["BATON_TEST_TOKEN_OTHER"])
        self.assertEqual(r.returncode, 77, r.stderr)
        self.assertIn('outside the prefixes of token "other"', r.stderr)
        r = run("force-release", *tls_args(), "--fencing", "1", "other/y",
                token=os.environ["BATON_TEST_TOKEN_OTHER"])
        self.assertEqual(r.returncode, 77, r.stderr)
        self.assertIn("not admin", r.stderr)

    def test_mtls_needs_the_client_certificate(self):
        tok = os.environ["BATON_TEST_TOKEN"]
        r = run("describe", "--tls-ca", certs("ca.pem"), "cli/x", token=tok)
        self.assertEqual(r.returncode, 69, r.stderr)
        r = run("describe", *tls_args("other-client"), "cli/x", token=tok)
        self.assertEqual(r.returncode, 69, r.stderr)
        r = run("describe", "cli/x", token=tok)  # plain text to the TLS port
        self.assertEqual(r.returncode, 69, r.stderr)
        r = run("describe", "--tls-ca", "/nonexistent/ca.pem", "cli/x", token=tok)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("tls_ca_file: cannot read /nonexistent/ca.pem", r.stderr)


if __name__ == "__main__":
    BATON = sys.argv.pop(1)
    unittest.main(verbosity=2)
