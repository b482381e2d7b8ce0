/* Unit tests for the tls, auth and limits sections (server/config/
 * config_security.c): defaults, loading, every error with its line and key,
 * the command-line TLS override and config_to_yaml's round trip. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config.h"

#define SHA_A "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"
#define SHA_B "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD"

static char err[1024];

static int load(baton_config *c, const char *yaml)
{
    err[0] = '\0';
    return config_load_string(c, "t.yaml", yaml, strlen(yaml), err, sizeof err);
}

static void expect_err_at(const char *yaml, const char *want, const char *file, int line)
{
    baton_config c;
    config_defaults(&c);
    int rc = load(&c, yaml);
    config_free(&c);
    if (rc != -1 || strcmp(err, want) != 0) {
        print_error("rc %d\ngot  '%s'\nwant '%s'\n", rc, err, want);
        _fail(file, line);
    }
}
#define expect_err(yaml, want) expect_err_at((yaml), (want), __FILE__, __LINE__)

static void test_defaults(void **state)
{
    (void)state;
    baton_config c;
    config_defaults(&c);
    assert_string_equal(c.sec.tls.cert_file, "");
    assert_string_equal(c.sec.tls.key_file, "");
    assert_string_equal(c.sec.tls.client_ca_file, "");
    assert_int_equal(c.sec.tls.require_client_cert, 0);
    assert_int_equal(c.sec.auth, 0);
    assert_int_equal(c.sec.ntokens, 0);
    assert_int_equal(c.sec.limits.max_streams, 20000);
    assert_int_equal(c.sec.limits.max_streams_per_connection, 15000);
    assert_int_equal(c.sec.limits.max_streams_per_tenant, 15000);
    assert_int_equal(c.sec.limits.max_waiting, 15000);
    assert_int_equal(c.sec.limits.max_waiting_per_tenant, 12000);
    assert_int_equal(c.sec.limits.max_waiters_per_key, 12000);
    assert_int_equal(c.sec.limits.max_watches, 5000);
    assert_int_equal(c.sec.limits.max_watches_per_tenant, 2500);
    assert_int_equal(c.sec.limits.max_watch_backlog, 200000);
    config_free(&c);
}

static const char FULL[] = "tls:\n"
                           "  cert_file: /etc/baton/server.pem\n"
                           "  key_file: /etc/baton/server.key\n"
                           "  client_ca_file: /etc/baton/ca.pem\n"
                           "  require_client_cert: true\n"
                           "auth:\n"
                           "  tokens:\n"
                           "    - name: team-a\n"
                           "      sha256: " SHA_A "\n"
                           "      prefixes: [\"team-a/\", \"shared/\"]\n"
                           "    - {name: ops, sha256: \"" SHA_B "\", prefixes: [\"\"], admin: true}\n"
                           "limits:\n"
                           "  max_streams: 100\n"
                           "  max_watches_per_tenant: 7\n";

static void test_full(void **state)
{
    (void)state;
    baton_config c;
    config_defaults(&c);
    if (load(&c, FULL) != 0)
        fail_msg("%s", err);
    assert_string_equal(c.sec.tls.cert_file, "/etc/baton/server.pem");
    assert_string_equal(c.sec.tls.client_ca_file, "/etc/baton/ca.pem");
    assert_int_equal(c.sec.tls.require_client_cert, 1);
    assert_int_equal(c.sec.auth, 1);
    assert_int_equal(c.sec.ntokens, 2);
    assert_string_equal(c.sec.tokens[0].name, "team-a");
    assert_int_equal(c.sec.tokens[0].nprefixes, 2);
    assert_string_equal(c.sec.tokens[0].prefixes[1], "shared/");
    assert_int_equal(c.sec.tokens[0].admin, 0);
    assert_string_equal(c.sec.tokens[1].sha256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    assert_string_equal(c.sec.tokens[1].prefixes[0], "");
    assert_int_equal(c.sec.tokens[1].admin, 1);
    assert_int_equal(c.sec.limits.max_streams, 100);
    assert_int_equal(c.sec.limits.max_watches_per_tenant, 7);
    assert_int_equal(c.sec.limits.max_watches, 5000);

    /* What config_to_yaml writes loads back to the same settings. */
    char *y = config_to_yaml(&c);
    assert_non_null(y);
    assert_non_null(strstr(y, "  max_streams: 100  # file\n"));
    assert_non_null(strstr(y, "  max_waiting: 15000  # default\n"));
    baton_config b;
    config_defaults(&b);
    if (load(&b, y) != 0)
        fail_msg("%s\n%s", err, y);
    assert_int_equal(b.sec.ntokens, 2);
    assert_string_equal(b.sec.tokens[1].sha256, c.sec.tokens[1].sha256);
    assert_int_equal(b.sec.tokens[1].admin, 1);
    assert_string_equal(b.sec.tls.key_file, c.sec.tls.key_file);
    assert_int_equal(b.sec.limits.max_watches_per_tenant, 7);
    free(y);
    config_free(&b);
    config_free(&c);
}

static void test_errors(void **state)
{
    (void)state;
    expect_err("tls:\n  cert: x\n",
               "t.yaml:2: tls.cert: unknown key (allowed: cert_file, key_file, client_ca_file, require_client_cert)");
    expect_err("tls:\n  cert_file: a.pem\n", "t.yaml:2: tls.key_file: tls.cert_file and tls.key_file must be set together");
    expect_err("tls:\n  cert_file: a\n  key_file: b\n  require_client_cert: true\n",
               "t.yaml:2: tls.require_client_cert: needs tls.client_ca_file (the CA that signs client certificates)");
    expect_err("tls:\n  client_ca_file: ca.pem\n",
               "t.yaml:2: tls.client_ca_file: client certificates need TLS: set tls.cert_file and tls.key_file too");
    expect_err("tls:\n  require_client_cert: 1\n",
               "t.yaml:2: tls.require_client_cert: expected a boolean (true/false/yes/no), got an integer");
    expect_err("limits:\n  max_watches: 0\n", "t.yaml:2: limits.max_watches: must be between 1 and 2147483647, got 0");
    expect_err("limits:\n  max_streams: many\n",
               "t.yaml:2: limits.max_streams: expected a decimal integer (milliseconds for durations), got 'many'");
    expect_err("limits:\n  max_stream: 1\n",
               "t.yaml:2: limits.max_stream: unknown key (allowed: max_streams, max_streams_per_connection, "
               "max_streams_per_tenant, max_waiting, max_waiting_per_tenant, max_waiters_per_key, max_watches, "
               "max_watches_per_tenant, max_watch_backlog)");
    expect_err("auth:\n  users: []\n", "t.yaml:2: auth.users: unknown key (allowed: tokens)");
    expect_err("auth:\n  tokens: []\n",
               "t.yaml:2: auth.tokens: expected a non-empty sequence of {name, sha256, prefixes, admin}, got a sequence");
    expect_err("auth:\n  tokens:\n    - {sha256: " SHA_A ", prefixes: [a/]}\n", "t.yaml:3: auth.tokens[0]: missing name");
    expect_err("auth:\n  tokens:\n    - {name: a, prefixes: [a/]}\n", "t.yaml:3: auth.tokens[0]: missing sha256");
    expect_err("auth:\n  tokens:\n    - {name: a, sha256: " SHA_A "}\n",
               "t.yaml:3: auth.tokens[0]: missing prefixes (the keys it may use; [\"\"] = every key)");
    expect_err("auth:\n  tokens:\n    - {name: a, sha256: hunter2, prefixes: [a/]}\n",
               "t.yaml:3: auth.tokens[0].sha256: expected 64 hex digits (sha256sum of the token, not the token), "
               "got 7 characters");
    expect_err("auth:\n  tokens:\n    - {name: a/b, sha256: " SHA_A ", prefixes: [a/]}\n",
               "t.yaml:3: auth.tokens[0].name: must be 1..64 bytes of A-Z a-z 0-9 _ - . (it prefixes owners as "
               "\"name/...\")");
    expect_err("auth:\n  tokens:\n    - {name: a, sha256: " SHA_A ", prefixes: [a/]}\n"
               "    - {name: a, sha256: " SHA_B ", prefixes: [a/]}\n",
               "t.yaml:4: auth.tokens[1].name: token 'a' is already defined as auth.tokens[0]");
    expect_err("auth:\n  tokens:\n    - {name: a, sha256: " SHA_A ", prefixes: [a/]}\n"
               "    - {name: b, sha256: " SHA_A ", prefixes: [a/]}\n",
               "t.yaml:4: auth.tokens[1].sha256: the same token as auth.tokens[0] ('a')");
    expect_err("auth:\n  tokens:\n    - {name: a, sha256: " SHA_A ", prefixes: []}\n",
               "t.yaml:3: auth.tokens[0].prefixes: must name at least one prefix (\"\" = every key)");
    expect_err("auth:\n  tokens:\n    - {name: a, sha256: " SHA_A ", prefixes: [\"a b\"]}\n",
               "t.yaml:3: auth.tokens[0].prefixes[0]: must be 1..256 bytes of [A-Za-z0-9_-.:/@+=], got byte 0x20 at "
               "offset 1");
    expect_err("auth:\n  tokens:\n    - {name: a, sha256: " SHA_A ", prefixes: a/}\n",
               "t.yaml:3: auth.tokens[0].prefixes: expected a sequence of key prefixes (\"\" = every key), got a "
               "string");
    expect_err("auth:\n  tokens:\n    - {name: a, sha256: " SHA_A ", prefixes: [a/], root: true}\n",
               "t.yaml:3: auth.tokens[0].root: unknown key (allowed: name, sha256, prefixes, admin)");
    expect_err("auth:\n  tokens:\n    - {name: a, sha256: " SHA_A ", prefixes: [a/], admin: 1}\n",
               "t.yaml:3: auth.tokens[0].admin: expected a boolean (true/false/yes/no), got an integer");
    expect_err("auth: yes\n", "t.yaml:1: auth: expected a mapping with tokens, got a boolean");
}

static void test_failed_load_leaves_config_unchanged(void **state)
{
    (void)state;
    baton_config c;
    config_defaults(&c);
    if (load(&c, FULL) != 0)
        fail_msg("%s", err);
    assert_int_equal(load(&c, "auth:\n  tokens:\n    - {name: z, sha256: x, prefixes: [a/]}\n"), -1);
    assert_int_equal(c.sec.ntokens, 2);
    assert_string_equal(c.sec.tokens[0].name, "team-a");
    config_free(&c);
}

static void test_command_line_override(void **state)
{
    (void)state;
    baton_config c;
    config_defaults(&c);
    assert_int_equal(config_security_override(&c, "tls.cert_file", "/c.pem"), 0);
    assert_int_equal(config_check(&c, err, sizeof err), -1);
    assert_string_equal(err, "<command line>: tls.key_file: tls.cert_file and tls.key_file must be set together");
    assert_int_equal(config_security_override(&c, "tls.key_file", "/k.pem"), 0);
    assert_int_equal(config_check(&c, err, sizeof err), 0);
    assert_int_equal(config_security_override(&c, "tls.require_client_cert", "true"), -1);
    assert_int_equal(config_security_override(&c, "limits.max_streams", "1"), -1);
    char *y = config_to_yaml(&c);
    assert_non_null(strstr(y, "  cert_file: \"/c.pem\"  # command line\n"));
    free(y);
    config_free(&c);
}

/* The documented deploy/batond.yaml states the security defaults too. */
static void test_deploy_file(void **state)
{
    (void)state;
    baton_config c, d;
    config_defaults(&c);
    config_defaults(&d);
    if (config_load_file(&c, BATON_SOURCE_DIR "/deploy/batond.yaml", err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_memory_equal(&c.sec.limits, &d.sec.limits, sizeof c.sec.limits);
    assert_string_equal(c.sec.tls.cert_file, "");
    assert_int_equal(c.sec.auth, 0);
    assert_string_equal(c.redis_username, "");
    config_free(&c);
    config_free(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_full),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_failed_load_leaves_config_unchanged),
        cmocka_unit_test(test_command_line_override),
        cmocka_unit_test(test_deploy_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
