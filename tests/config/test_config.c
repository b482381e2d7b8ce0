/* Unit tests for server/config/config.c: defaults, overrides, every error class
 * with its line number and key path, the real deploy/batond.yaml. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"

static char err[1024];

static int load(baton_config *c, const char *yaml)
{
    err[0] = '\0';
    return config_load_string(c, "t.yaml", yaml, strlen(yaml), err, sizeof(err));
}

/* Loads `yaml` over defaults and asserts the exact error message. */
static void expect_err_at(const char *yaml, const char *want, const char *file, int line)
{
    baton_config c;
    config_defaults(&c);
    int rc = load(&c, yaml);
    config_free(&c);
    if (rc != -1)
        _fail(file, line);
    if (strcmp(err, want) != 0) {
        print_error("got  '%s'\nwant '%s'\n", err, want);
        _fail(file, line);
    }
}
#define expect_err(yaml, want) expect_err_at((yaml), (want), __FILE__, __LINE__)

/* Same, but only asserts that the message starts with `want`. */
static void expect_err_prefix_at(const char *yaml, const char *want, const char *file, int line)
{
    baton_config c;
    config_defaults(&c);
    int rc = load(&c, yaml);
    config_free(&c);
    if (rc != -1 || strncmp(err, want, strlen(want)) != 0) {
        print_error("rc %d, got '%s'\nwant prefix '%s'\n", rc, err, want);
        _fail(file, line);
    }
}
#define expect_err_prefix(yaml, want) expect_err_prefix_at((yaml), (want), __FILE__, __LINE__)

static void assert_defaults(const baton_config *c)
{
    assert_string_equal(c->listen, "127.0.0.1:50051");
    assert_string_equal(c->log_level, "info");
    assert_string_equal(c->redis_address, "127.0.0.1:6379");
    assert_string_equal(c->redis_password, "");
    assert_int_equal(c->redis_database, 0);
    assert_string_equal(c->key_prefix, "baton:");
    assert_int_equal(c->redis_command_timeout_ms, 5000);
    assert_int_equal(c->redis_reconnect_ms, 200);
    assert_int_equal(c->redis_keyspace_events, 1);
    assert_int_equal(c->default_ttl_ms, 600000);
    assert_int_equal(c->min_ttl_ms, 100);
    assert_int_equal(c->max_ttl_ms, 3600000);
    assert_int_equal(c->max_wait_ms, 300000);
    assert_int_equal(c->recheck_ms, 30000);
    assert_int_equal(c->waiter_liveness_ms, 6000);
    assert_int_equal(c->max_pool_devices, 64);
    assert_int_equal(c->max_concurrent_streams, 20000);
    assert_int_equal(c->max_message_bytes, 65536);
    assert_int_equal(c->keepalive_time_ms, 10000);
    assert_int_equal(c->keepalive_timeout_ms, 5000);
    assert_null(c->pools);
    assert_int_equal(c->npools, 0);
}

/* ---------------------------------------------------------------- defaults */

static void test_defaults(void **state)
{
    baton_config c;
    config_defaults(&c);
    assert_defaults(&c);
    assert_int_equal(config_check(&c, err, sizeof(err)), 0);
    config_free(&c);
    assert_null(c.listen);
    assert_null(c.pools);
    config_free(&c); /* freeing a zeroed config is harmless */
}

static void test_empty_documents(void **state)
{
    static const char *empty[] = {"", "\n\n", "# only a comment\n", "---\n", "~\n", "null", "---\n...\n"};
    for (size_t i = 0; i < sizeof(empty) / sizeof(empty[0]); i++) {
        baton_config c;
        config_defaults(&c);
        if (load(&c, empty[i]) != 0)
            fail_msg("'%s' rejected: %s", empty[i], err);
        assert_defaults(&c);
        config_free(&c);
    }
}

static void test_empty_sections(void **state)
{
    baton_config c;
    config_defaults(&c);
    assert_int_equal(load(&c, "redis:\nlocks: ~\ngrpc: {}\npools: []\n"), 0);
    assert_defaults(&c);
    config_free(&c);
}

/* --------------------------------------------------------------- overrides */

static const char *FULL = "listen: \"0.0.0.0:6000\"\n"
                          "log_level: debug\n"
                          "redis:\n"
                          "  address: unix:/tmp/r.sock\n"
                          "  password: 's3cret'\n"
                          "  database: 3\n"
                          "  key_prefix: \"app:v2:\"\n"
                          "  command_timeout_ms: 1500\n"
                          "  reconnect_ms: 50\n"
                          "  keyspace_events: no\n"
                          "locks:\n"
                          "  default_ttl_ms: 20000\n"
                          "  min_ttl_ms: 1000\n"
                          "  max_ttl_ms: 86400000\n"
                          "  max_wait_ms: 0\n"
                          "  recheck_ms: 5000\n"
                          "  waiter_liveness_ms: 3000\n"
                          "  max_pool_devices: 16\n"
                          "grpc:\n"
                          "  max_concurrent_streams: 100\n"
                          "  max_message_bytes: 4096\n"
                          "  keepalive_time_ms: 2000\n"
                          "  keepalive_timeout_ms: 1000\n"
                          "pools:\n"
                          "  - name: node7\n"
                          "    devices: 8\n"
                          "  - {name: \"rack:2/gpu\", devices: 16}\n";

static void test_full_override(void **state)
{
    baton_config c;
    config_defaults(&c);
    if (load(&c, FULL) != 0)
        fail_msg("%s", err);
    assert_string_equal(c.listen, "0.0.0.0:6000");
    assert_string_equal(c.log_level, "debug");
    assert_string_equal(c.redis_address, "unix:/tmp/r.sock");
    assert_string_equal(c.redis_password, "s3cret");
    assert_int_equal(c.redis_database, 3);
    assert_string_equal(c.key_prefix, "app:v2:");
    assert_int_equal(c.redis_command_timeout_ms, 1500);
    assert_int_equal(c.redis_reconnect_ms, 50);
    assert_int_equal(c.redis_keyspace_events, 0);
    assert_int_equal(c.default_ttl_ms, 20000);
    assert_int_equal(c.min_ttl_ms, 1000);
    assert_int_equal(c.max_ttl_ms, 86400000);
    assert_int_equal(c.max_wait_ms, 0);
    assert_int_equal(c.recheck_ms, 5000);
    assert_int_equal(c.waiter_liveness_ms, 3000);
    assert_int_equal(c.max_pool_devices, 16);
    assert_int_equal(c.max_concurrent_streams, 100);
    assert_int_equal(c.max_message_bytes, 4096);
    assert_int_equal(c.keepalive_time_ms, 2000);
    assert_int_equal(c.keepalive_timeout_ms, 1000);
    assert_int_equal(c.npools, 2);
    assert_string_equal(c.pools[0].name, "node7");
    assert_int_equal(c.pools[0].devices, 8);
    assert_string_equal(c.pools[1].name, "rack:2/gpu");
    assert_int_equal(c.pools[1].devices, 16);
    config_free(&c);
}

static void test_partial_override_keeps_rest(void **state)
{
    baton_config c;
    config_defaults(&c);
    assert_int_equal(load(&c, "redis:\n  database: 2\n"), 0);
    assert_int_equal(c.redis_database, 2);
    c.redis_database = 0;
    assert_defaults(&c);
    config_free(&c);
}

static void test_applies_on_top(void **state)
{
    baton_config c;
    config_defaults(&c);
    assert_int_equal(load(&c, "log_level: warn\n"), 0);
    assert_int_equal(load(&c, "listen: \"[::1]:7000\"\n"), 0);
    assert_string_equal(c.log_level, "warn");
    assert_string_equal(c.listen, "[::1]:7000");
    /* A later pools list replaces the earlier one. */
    assert_int_equal(load(&c, "pools: [{name: a, devices: 2}, {name: b, devices: 3}]\n"), 0);
    assert_int_equal(c.npools, 2);
    assert_int_equal(load(&c, "pools:\n  - name: z\n    devices: 1\n"), 0);
    assert_int_equal(c.npools, 1);
    assert_string_equal(c.pools[0].name, "z");
    assert_int_equal(load(&c, "pools: ~\n"), 0);
    assert_int_equal(c.npools, 0);
    assert_null(c.pools);
    config_free(&c);
}

static void test_booleans(void **state)
{
    static const struct {
        const char *v;
        int want;
    } cases[] = {{"true", 1}, {"false", 0}, {"yes", 1}, {"no", 0}, {"True", 1}, {"NO", 0}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char yaml[128];
        baton_config c;
        config_defaults(&c);
        c.redis_keyspace_events = !cases[i].want;
        snprintf(yaml, sizeof(yaml), "redis:\n  keyspace_events: %s\n", cases[i].v);
        assert_int_equal(load(&c, yaml), 0);
        assert_int_equal(c.redis_keyspace_events, cases[i].want);
        config_free(&c);
    }
}

static void test_integer_bounds_accepted(void **state)
{
    baton_config c;
    config_defaults(&c);
    assert_int_equal(load(&c, "redis:\n  database: 0\n  command_timeout_ms: 1\n"
                              "locks:\n  max_pool_devices: 4096\n  waiter_liveness_ms: 30\n"
                              "grpc:\n  max_message_bytes: 1024\n"
                              "  max_concurrent_streams: 2147483647\n"),
                     0);
    assert_int_equal(c.max_pool_devices, 4096);
    assert_int_equal(c.max_concurrent_streams, INT32_MAX);
    config_free(&c);
}

static void test_anchors_and_flow_style(void **state)
{
    baton_config c;
    config_defaults(&c);
    if (load(&c, "locks: {min_ttl_ms: &t 700, default_ttl_ms: *t, max_ttl_ms: 700}\n") != 0)
        fail_msg("%s", err);
    assert_int_equal(c.min_ttl_ms, 700);
    assert_int_equal(c.default_ttl_ms, 700);
    assert_int_equal(c.max_ttl_ms, 700);
    config_free(&c);
}

static void test_string_allows_any_text(void **state)
{
    baton_config c;
    config_defaults(&c);
    assert_int_equal(load(&c, "redis:\n  password: \"12345\"\n"), 0);
    assert_string_equal(c.redis_password, "12345");
    assert_int_equal(load(&c, "redis:\n  password: p@ss word#1\n"), 0);
    assert_string_equal(c.redis_password, "p@ss word#1");
    assert_int_equal(load(&c, "redis:\n  password: ''\n"), 0);
    assert_string_equal(c.redis_password, "");
    config_free(&c);
}

/* Every redis.address form is checked when the file is read, with its line:
 * a typo in a sentinel list must not surface as "cannot connect" later. */
static void test_redis_address_forms(void **state)
{
    baton_config c;
    config_defaults(&c);
    assert_int_equal(load(&c, "redis:\n  address: redis://10.1.2.3:6380\n"), 0);
    assert_int_equal(load(&c, "redis:\n  address: unix:/run/redis.sock\n"), 0);
    assert_int_equal(load(&c, "redis:\n  address: sentinel://s1:26379,s2:26379/mymaster\n"
                              "  sentinel_password: pw\n  username: batond\n"),
                     0);
    assert_string_equal(c.redis_username, "batond");
    assert_string_equal(c.redis_sentinel_password, "pw");
    config_free(&c);
    expect_err("log_level: info\nredis:\n  address: sentinel://s1:26379\n",
               "t.yaml:3: redis.address: sentinel://s1:26379: expected "
               "sentinel://HOST:PORT[,HOST:PORT...]/MASTER_NAME (at most 16)");
    expect_err("redis:\n  address: localhost\n",
               "t.yaml:2: redis.address: localhost: expected host:port, [v6]:port, redis://host:port or unix:/path");
    config_defaults(&c);
    assert_int_equal(load(&c, "redis:\n  address: cluster://h:1,h:2\n"), 0);
    config_free(&c);
    /* Redis Cluster has one database. */
    expect_err("redis:\n  address: cluster://h:1,h:2\n  database: 3\n",
               "t.yaml:3: redis.database: redis.database must be 0 with a cluster:// address (Redis Cluster has "
               "one database)");
}

/* WAIT blocks the command connection, so its timeout must stay below the
 * command timeout that would otherwise drop the connection under it. */
static void test_min_replicas(void **state)
{
    baton_config c;
    config_defaults(&c);
    assert_int_equal(c.redis_min_replicas, 0);
    assert_int_equal(c.redis_replica_timeout_ms, 500);
    assert_int_equal(load(&c, "redis:\n  min_replicas: 1\n  replica_timeout_ms: 250\n"), 0);
    assert_int_equal(c.redis_min_replicas, 1);
    config_free(&c);
    expect_err("redis:\n  min_replicas: 1\n  command_timeout_ms: 400\n",
               "t.yaml:3: redis.command_timeout_ms: redis.replica_timeout_ms (500) must be below "
               "redis.command_timeout_ms (400) when redis.min_replicas is set");
    expect_err("redis:\n  min_replicas: 65\n",
               "t.yaml:2: redis.min_replicas: must be between 0 and 64, got 65");
    /* Without min_replicas the two timeouts are independent. */
    config_defaults(&c);
    assert_int_equal(load(&c, "redis:\n  command_timeout_ms: 400\n"), 0);
    config_free(&c);
}

static const char *line_of_yaml(const char *yaml, const char *prefix);

/* redis.failover_grace_ms: off by default, 0..600000 ms, shown by --check-config. */
static void test_failover_grace(void **state)
{
    (void)state;
    baton_config c;
    config_defaults(&c);
    assert_int_equal(c.redis_failover_grace_ms, 0);
    char *y = config_to_yaml(&c);
    assert_non_null(y);
    assert_string_equal(line_of_yaml(y, "  failover_grace_ms:"), "  failover_grace_ms: 0  # default");
    free(y);
    assert_int_equal(load(&c, "redis:\n  failover_grace_ms: 3000\n"), 0);
    assert_int_equal(c.redis_failover_grace_ms, 3000);
    y = config_to_yaml(&c);
    assert_string_equal(line_of_yaml(y, "  failover_grace_ms:"), "  failover_grace_ms: 3000  # file");
    free(y);
    assert_int_equal(load(&c, "redis:\n  failover_grace_ms: 600000\n"), 0);
    config_free(&c);
    expect_err("redis:\n  failover_grace_ms: 600001\n",
               "t.yaml:2: redis.failover_grace_ms: must be between 0 and 600000, got 600001");
    expect_err("redis:\n  failover_grace_ms: -1\n",
               "t.yaml:2: redis.failover_grace_ms: must be between 0 and 600000, got -1");
    expect_err_prefix("redis:\n  failover_grace_ms: 3s\n", "t.yaml:2: redis.failover_grace_ms: ");
}

/* ---------------------------------------------------------- unknown keys */

static void test_unknown_top_key(void **state)
{
    expect_err("log_level: info\nlisten_addr: x\n",
               "t.yaml:2: listen_addr: unknown key (allowed: listen, log_level, log_format, log_lock_events, "
               "redis, locks, grpc, metrics, pools, tls, auth, limits, alerts)");
}

static void test_unknown_section_keys(void **state)
{
    expect_err("redis:\n  adress: x\n",
               "t.yaml:2: redis.adress: unknown key (allowed: address, username, password, "
               "sentinel_password, database, key_prefix, command_timeout_ms, reconnect_ms, keyspace_events, "
               "min_replicas, replica_timeout_ms, failover_grace_ms)");
    expect_err("locks:\n  default_ttl_ms: 1000\n\n  ttl: 5\n",
               "t.yaml:4: locks.ttl: unknown key (allowed: default_ttl_ms, min_ttl_ms, max_ttl_ms, "
               "max_wait_ms, recheck_ms, waiter_liveness_ms, max_pool_devices)");
    expect_err("grpc:\n  port: 1\n", "t.yaml:2: grpc.port: unknown key (allowed: max_concurrent_streams, "
                                     "max_message_bytes, keepalive_time_ms, keepalive_timeout_ms)");
    /* A top-level key in the wrong section. */
    expect_err_prefix("redis:\n  listen: x\n", "t.yaml:2: redis.listen: unknown key (allowed:");
}

static void test_unknown_pool_key(void **state)
{
    expect_err("pools:\n  - name: a\n    devices: 2\n  - name: b\n    gpus: 2\n",
               "t.yaml:5: pools[1].gpus: unknown key (allowed: name, devices, capacity, device_names)");
}

static void test_duplicate_keys(void **state)
{
    expect_err("listen: a:1\nlog_level: info\nlisten: b:2\n",
               "t.yaml:3: listen: duplicate key (first at line 1)");
    expect_err("redis:\n  database: 1\n  database: 2\n",
               "t.yaml:3: redis.database: duplicate key (first at line 2)");
    expect_err("redis:\n  database: 1\nredis:\n  database: 2\n",
               "t.yaml:3: redis: duplicate key (first at line 1)");
    expect_err("pools:\n  - name: a\n    devices: 2\n    name: b\n",
               "t.yaml:4: pools[0].name: duplicate key (first at line 2)");
}

static void test_non_scalar_key(void **state)
{
    expect_err_prefix("? [a, b]\n: 1\n", "t.yaml:1: mapping keys must be plain words, got a sequence");
}

/* ----------------------------------------------------------- wrong types */

static void test_wrong_types(void **state)
{
    expect_err("redis:\n  database: \"3\"\n",
               "t.yaml:2: redis.database: expected an integer, got a string (remove the quotes)");
    expect_err("redis:\n  database: three\n",
               "t.yaml:2: redis.database: expected a decimal integer (milliseconds for durations), "
               "got 'three'");
    expect_err("redis:\n  database: 'three'\n",
               "t.yaml:2: redis.database: expected an integer, got a string");
    expect_err("redis:\n  database: true\n", "t.yaml:2: redis.database: expected an integer, got a boolean");
    expect_err("redis:\n  database:\n", "t.yaml:2: redis.database: expected an integer, got null");
    expect_err("redis:\n  database: {a: 1}\n",
               "t.yaml:2: redis.database: expected an integer, got a mapping");
    expect_err("redis:\n  database: [1]\n", "t.yaml:2: redis.database: expected an integer, got a sequence");
    expect_err("listen: 50051\n",
               "t.yaml:1: listen: expected a string, got an integer (quote it: \"50051\")");
    expect_err("redis:\n  password: yes\n",
               "t.yaml:2: redis.password: expected a string, got a boolean (quote it: \"yes\")");
    expect_err("listen: ~\n", "t.yaml:1: listen: expected a string, got null (quote it: \"~\")");
    expect_err("listen:\n  - a\n", "t.yaml:2: listen: expected a string, got a sequence");
    expect_err("redis:\n  keyspace_events: 1\n",
               "t.yaml:2: redis.keyspace_events: expected a boolean (true/false/yes/no), got an "
               "integer");
    expect_err("redis:\n  keyspace_events: \"true\"\n",
               "t.yaml:2: redis.keyspace_events: expected a boolean (true/false/yes/no), got a "
               "string");
    expect_err("redis:\n  keyspace_events: on\n",
               "t.yaml:2: redis.keyspace_events: expected a boolean (true/false/yes/no), got a "
               "string");
    expect_err("redis: 5\n", "t.yaml:1: redis: expected a mapping, got an integer");
    expect_err("locks:\n  - 1\n", "t.yaml:2: locks: expected a mapping, got a sequence");
    expect_err("pools:\n  name: a\n",
               "t.yaml:2: pools: expected a sequence of {name, devices}, got a mapping");
    expect_err("pools:\n  - node7\n",
               "t.yaml:2: pools[0]: expected a mapping with name and devices, got a string");
    expect_err("pools:\n  - name: 7\n    devices: 2\n",
               "t.yaml:2: pools[0].name: expected a string, got an integer (quote it: \"7\")");
    expect_err("pools:\n  - name: a\n    devices: two\n",
               "t.yaml:3: pools[0].devices: expected a decimal integer (milliseconds for durations), "
               "got 'two'");
}

static void test_top_level_not_mapping(void **state)
{
    expect_err("- a\n- b\n", "t.yaml:1: expected a mapping of settings at the top level, got a sequence");
    expect_err("hello\n", "t.yaml:1: expected a mapping of settings at the top level, got a string");
}

/* --------------------------------------------------------------- integers */

static void test_integer_syntax(void **state)
{
    static const char *bad[] = {"1e3",   "12ms", "0x10", "+5",  "010", "1.5",  "1_000",
                                "5 000", "1-",   "--1",  "0o7", ".5",  "1,000"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char yaml[128], want[256];
        snprintf(yaml, sizeof(yaml), "locks:\n  recheck_ms: %s\n", bad[i]);
        snprintf(want, sizeof(want),
                 "t.yaml:2: locks.recheck_ms: expected a decimal integer (milliseconds for "
                 "durations), got '%s'",
                 bad[i]);
        expect_err(yaml, want);
    }
}

static void test_integer_overflow(void **state)
{
    expect_err("locks:\n  max_ttl_ms: 9223372036854775808\n",
               "t.yaml:2: locks.max_ttl_ms: integer out of range: 9223372036854775808");
    expect_err("locks:\n  max_ttl_ms: 99999999999999999999999\n",
               "t.yaml:2: locks.max_ttl_ms: integer out of range: 99999999999999999999999");
    expect_err("locks:\n  max_ttl_ms: -9223372036854775809\n",
               "t.yaml:2: locks.max_ttl_ms: integer out of range: -9223372036854775809");
    /* INT64_MIN itself parses, then fails the range check. */
    expect_err("locks:\n  max_ttl_ms: -9223372036854775808\n",
               "t.yaml:2: locks.max_ttl_ms: must be between 1 and 31536000000, got "
               "-9223372036854775808");
    /* Fits int64 but not the int32 field. */
    expect_err("grpc:\n  max_message_bytes: 2147483648\n",
               "t.yaml:2: grpc.max_message_bytes: must be between 1024 and 2147483647, got "
               "2147483648");
}

static void test_ranges(void **state)
{
    expect_err("redis:\n  database: -1\n",
               "t.yaml:2: redis.database: must be between 0 and 2147483647, got -1");
    expect_err("redis:\n  command_timeout_ms: 0\n",
               "t.yaml:2: redis.command_timeout_ms: must be between 1 and 3600000, got 0");
    expect_err("redis:\n  reconnect_ms: 3600001\n",
               "t.yaml:2: redis.reconnect_ms: must be between 1 and 3600000, got 3600001");
    expect_err("locks:\n  max_wait_ms: -1\n",
               "t.yaml:2: locks.max_wait_ms: must be between 0 and 31536000000, got -1");
    expect_err("locks:\n  recheck_ms: 0\n",
               "t.yaml:2: locks.recheck_ms: must be between 1 and 86400000, got 0");
    expect_err("locks:\n  waiter_liveness_ms: 29\n",
               "t.yaml:2: locks.waiter_liveness_ms: must be between 30 and 3600000, got 29");
    expect_err("locks:\n  max_pool_devices: 0\n",
               "t.yaml:2: locks.max_pool_devices: must be between 1 and 4096, got 0");
    expect_err("locks:\n  max_pool_devices: 4097\n",
               "t.yaml:2: locks.max_pool_devices: must be between 1 and 4096, got 4097");
    expect_err("grpc:\n  max_concurrent_streams: 0\n",
               "t.yaml:2: grpc.max_concurrent_streams: must be between 1 and 2147483647, got 0");
    expect_err("grpc:\n  max_message_bytes: 1023\n",
               "t.yaml:2: grpc.max_message_bytes: must be between 1024 and 2147483647, got 1023");
    expect_err("grpc:\n  keepalive_time_ms: 0\n",
               "t.yaml:2: grpc.keepalive_time_ms: must be between 1 and 2147483647, got 0");
    expect_err("grpc:\n  keepalive_timeout_ms: -5\n",
               "t.yaml:2: grpc.keepalive_timeout_ms: must be between 1 and 2147483647, got -5");
}

/* ------------------------------------------------------------ ttl ordering */

static void test_ttl_ordering(void **state)
{
    /* Blames the field set later in the file. */
    expect_err("locks:\n  min_ttl_ms: 5000\n  default_ttl_ms: 1000\n",
               "t.yaml:3: locks.default_ttl_ms: locks.min_ttl_ms (5000) must not exceed "
               "locks.default_ttl_ms (1000)");
    expect_err("locks:\n  default_ttl_ms: 1000\n  min_ttl_ms: 5000\n",
               "t.yaml:3: locks.min_ttl_ms: locks.min_ttl_ms (5000) must not exceed "
               "locks.default_ttl_ms (1000)");
    /* Only one side in the file: blame it. */
    expect_err("locks:\n  default_ttl_ms: 50\n",
               "t.yaml:2: locks.default_ttl_ms: locks.min_ttl_ms (100) must not exceed "
               "locks.default_ttl_ms (50)");
    expect_err("\nlocks:\n  max_ttl_ms: 1000\n",
               "t.yaml:3: locks.max_ttl_ms: locks.default_ttl_ms (600000) must not exceed "
               "locks.max_ttl_ms (1000)");
    expect_err("locks:\n  default_ttl_ms: 4000000\n",
               "t.yaml:2: locks.default_ttl_ms: locks.default_ttl_ms (4000000) must not exceed "
               "locks.max_ttl_ms (3600000)");
    /* Equal values are fine. */
    baton_config c;
    config_defaults(&c);
    assert_int_equal(load(&c, "locks:\n  min_ttl_ms: 500\n  default_ttl_ms: 500\n  max_ttl_ms: 500\n"), 0);
    config_free(&c);
}

/* ----------------------------------------------------- strings with rules */

static void test_key_prefix(void **state)
{
    expect_err("redis:\n  key_prefix: \"\"\n", "t.yaml:2: redis.key_prefix: must not be empty");
    expect_err("redis:\n  key_prefix: \"my app:\"\n",
               "t.yaml:2: redis.key_prefix: must be 1..64 bytes of [A-Za-z0-9_-.:/@+=], got byte "
               "0x20 at offset 2");
    expect_err("redis:\n  key_prefix: \"a{b}\"\n",
               "t.yaml:2: redis.key_prefix: must be 1..64 bytes of [A-Za-z0-9_-.:/@+=], got byte "
               "0x7b at offset 1");
    char yaml[256], want[256];
    char p[66];
    memset(p, 'p', 65);
    p[65] = '\0';
    snprintf(yaml, sizeof(yaml), "redis:\n  key_prefix: %s\n", p);
    snprintf(want, sizeof(want),
             "t.yaml:2: redis.key_prefix: must be 1..64 bytes of [A-Za-z0-9_-.:/@+=], got 65 bytes");
    expect_err(yaml, want);
    p[64] = '\0';
    snprintf(yaml, sizeof(yaml), "redis:\n  key_prefix: %s\n", p);
    baton_config c;
    config_defaults(&c);
    assert_int_equal(load(&c, yaml), 0);
    assert_int_equal(strlen(c.key_prefix), 64);
    config_free(&c);
}

static void test_log_level(void **state)
{
    expect_err("log_level: verbose\n",
               "t.yaml:1: log_level: must be one of debug, info, warn, error, got 'verbose'");
    expect_err("log_level: INFO\n",
               "t.yaml:1: log_level: must be one of debug, info, warn, error, got 'INFO'");
    static const char *ok[] = {"debug", "info", "warn", "error"};
    for (size_t i = 0; i < 4; i++) {
        char yaml[64];
        baton_config c;
        config_defaults(&c);
        snprintf(yaml, sizeof(yaml), "log_level: %s\n", ok[i]);
        assert_int_equal(load(&c, yaml), 0);
        assert_string_equal(c.log_level, ok[i]);
        config_free(&c);
    }
}

static void test_empty_strings(void **state)
{
    expect_err("listen: \"\"\n", "t.yaml:1: listen: must not be empty");
    expect_err("redis:\n  address: ''\n", "t.yaml:2: redis.address: must not be empty");
}

static void test_nul_in_string(void **state)
{
    expect_err("listen: \"a\\0b\"\n", "t.yaml:1: listen: must not contain NUL bytes");
}

/* ------------------------------------------------------------------ pools */

static void test_pool_errors(void **state)
{
    expect_err("pools:\n  - devices: 2\n", "t.yaml:2: pools[0]: missing name");
    expect_err("pools:\n  - name: a\n", "t.yaml:2: pools[0]: missing devices");
    expect_err("pools:\n  - name: a\n    devices: 0\n",
               "t.yaml:3: pools[0].devices: must be between 1 and locks.max_pool_devices, got 0");
    expect_err("pools:\n  - name: a\n    devices: 65\n",
               "t.yaml:3: pools[0].devices: must be between 1 and locks.max_pool_devices (64), got 65");
    expect_err("locks:\n  max_pool_devices: 4\npools:\n  - name: a\n    devices: 5\n",
               "t.yaml:5: pools[0].devices: must be between 1 and locks.max_pool_devices (4), got 5");
    expect_err("pools:\n  - name: \"\"\n    devices: 1\n", "t.yaml:2: pools[0].name: must not be empty");
    expect_err("pools:\n  - name: \"gpu node\"\n    devices: 1\n",
               "t.yaml:2: pools[0].name: must be 1..256 bytes of [A-Za-z0-9_-.:/@+=], got byte 0x20 "
               "at offset 3");
    expect_err("pools:\n"
               "  - name: node7\n"
               "    devices: 8\n"
               "  - name: node8\n"
               "    devices: 8\n"
               "  - name: node7\n"
               "    devices: 4\n",
               "t.yaml:6: pools[2].name: pool 'node7' is already defined at line 2");
}

static void test_pool_capacity_and_device_names(void **state)
{
    baton_config c;
    config_defaults(&c);
    if (load(&c, "pools:\n"
                 "  - device_names: [GPU-aa, \"MIG-bb/1/0\", GPU-cc]\n"
                 "    name: node7\n"
                 "    capacity: 80\n"
                 "    devices: 3\n"
                 "  - name: plain\n"
                 "    devices: 2\n") != 0)
        fail_msg("%s", err);
    assert_int_equal(c.pools[0].capacity, 80);
    assert_non_null(c.pools[0].device_names);
    assert_string_equal(c.pools[0].device_names[1], "MIG-bb/1/0");
    assert_int_equal(c.pools[1].capacity, 1); /* default */
    assert_null(c.pools[1].device_names);
    char *yaml = config_to_yaml(&c);
    assert_non_null(yaml);
    assert_non_null(
        strstr(yaml, "    capacity: 80\n    device_names: [\"GPU-aa\", \"MIG-bb/1/0\", \"GPU-cc\"]\n"));
    free(yaml);
    config_free(&c);

    expect_err("pools:\n  - name: a\n    devices: 2\n    capacity: 0\n",
               "t.yaml:4: pools[0].capacity: must be between 1 and 2147483647, got 0");
    expect_err("pools:\n  - name: a\n    devices: 2\n    capacity: \"8\"\n",
               "t.yaml:4: pools[0].capacity: expected an integer, got a string (remove the quotes)");
    expect_err("pools:\n  - name: a\n    device_names: [x, y, z]\n    devices: 2\n",
               "t.yaml:3: pools[0].device_names: must list one name per device (2), got 3");
    expect_err("pools:\n  - name: a\n    devices: 2\n    device_names: [x, x]\n",
               "t.yaml:4: pools[0].device_names[1]: 'x' is already the name of device 0");
    expect_err("pools:\n  - name: a\n    devices: 2\n    device_names: [x, \"y,z\"]\n",
               "t.yaml:4: pools[0].device_names[1]: must not contain spaces, commas or control characters, "
               "got byte 0x2c at offset 1");
    expect_err("pools:\n  - name: a\n    devices: 1\n    device_names: [\"\"]\n",
               "t.yaml:4: pools[0].device_names[0]: must be 1..128 bytes, got 0");
    expect_err("pools:\n  - name: a\n    devices: 1\n    device_names: x\n",
               "t.yaml:4: pools[0].device_names: expected a sequence of names, one per device, got a string");
    /* Names read before a later error are freed (ASan build). */
    expect_err("pools:\n  - name: a\n    device_names: [x, y, z]\n    devices: 8\n    gpus: 1\n",
               "t.yaml:5: pools[0].gpus: unknown key (allowed: name, devices, capacity, device_names)");
}

static void test_pool_devices_order_independent(void **state)
{
    /* pools before locks: the device limit applies to the final value. */
    baton_config c;
    config_defaults(&c);
    if (load(&c, "pools:\n  - name: big\n    devices: 100\nlocks:\n  max_pool_devices: 128\n") != 0)
        fail_msg("%s", err);
    assert_int_equal(c.pools[0].devices, 100);
    config_free(&c);
    expect_err("pools:\n  - name: big\n    devices: 20\nlocks:\n  max_pool_devices: 16\n",
               "t.yaml:3: pools[0].devices: must be between 1 and locks.max_pool_devices (16), got 20");
}

static void test_pool_name_length(void **state)
{
    /* devices 10 -> largest key "name/9": name may be 254 bytes; 255 is too long. */
    char name[300], yaml[512], want[512];
    memset(name, 'n', 254);
    name[254] = '\0';
    snprintf(yaml, sizeof(yaml), "pools:\n  - name: %s\n    devices: 10\n", name);
    baton_config c;
    config_defaults(&c);
    if (load(&c, yaml) != 0)
        fail_msg("%s", err);
    config_free(&c);
    snprintf(yaml, sizeof(yaml), "pools:\n  - name: %s\n    devices: 11\n", name);
    snprintf(want, sizeof(want),
             "t.yaml:2: pools[0].name: must be at most 253 bytes so that device keys "
             "'name/<index>' fit in 256 bytes, got 254 bytes");
    expect_err(yaml, want);
    memset(name, 'n', 257);
    name[257] = '\0';
    snprintf(yaml, sizeof(yaml), "pools:\n  - name: %s\n    devices: 1\n", name);
    expect_err(yaml, "t.yaml:2: pools[0].name: must be 1..256 bytes of [A-Za-z0-9_-.:/@+=], got "
                     "257 bytes");
}

/* ---------------------------------------------------------- syntax errors */

static void test_syntax_errors(void **state)
{
    expect_err_prefix("listen: a\nredis:\n  address: [x\n", "t.yaml:4: invalid YAML: ");
    expect_err_prefix("listen: a\nlog_level: info\n  bad: indent\n", "t.yaml:3: invalid YAML: ");
    expect_err_prefix("redis:\n\taddress: x\n", "t.yaml:2: invalid YAML: ");
    expect_err_prefix("listen: \"unterminated\n", "t.yaml:2: invalid YAML: ");
    expect_err_prefix("a: *nope\n", "t.yaml:1: invalid YAML: ");
    expect_err("listen: a\nredis:\n  address: [x\n",
               "t.yaml:4: invalid YAML: did not find expected ',' or ']' while parsing a flow "
               "sequence (opened at line 3)");
}

static void test_reader_errors(void **state)
{
    /* Invalid UTF-8 and control bytes: libyaml's reader gives only an offset. */
    expect_err_prefix("listen: a\nlog_level: info\nredis:\n  password: \"\xff\"\n",
                      "t.yaml:4: invalid YAML: ");
    baton_config c;
    config_defaults(&c);
    static const char nul_doc[] = "listen: a\n\n  x\0y\n";
    err[0] = '\0';
    assert_int_equal(config_load_string(&c, "t.yaml", nul_doc, sizeof(nul_doc) - 1, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "t.yaml:3: invalid YAML: "));
    config_free(&c);
}

static void test_multiple_documents(void **state)
{
    expect_err("listen: a:1\n---\nlisten: b:2\n", "t.yaml:3: only one YAML document is allowed");
    expect_err_prefix("listen: a:1\n---\nlisten: [\n", "t.yaml:4: invalid YAML: ");
}

/* ------------------------------------------------------------- atomicity */

static void test_failed_load_leaves_config_unchanged(void **state)
{
    baton_config c;
    config_defaults(&c);
    assert_int_equal(load(&c, "pools:\n  - name: keep\n    devices: 2\n"), 0);
    assert_int_equal(load(&c, "listen: \"changed:1\"\nlog_level: debug\n"
                              "pools:\n  - name: x\n    devices: 3\n"
                              "redis:\n  database: nope\n"),
                     -1);
    assert_string_equal(err, "t.yaml:7: redis.database: expected a decimal integer (milliseconds "
                             "for durations), got 'nope'");
    assert_string_equal(c.listen, "127.0.0.1:50051");
    assert_string_equal(c.log_level, "info");
    assert_int_equal(c.npools, 1);
    assert_string_equal(c.pools[0].name, "keep");
    /* Cross-field failures too. */
    assert_int_equal(load(&c, "locks:\n  max_ttl_ms: 500\n"), -1);
    assert_int_equal(c.max_ttl_ms, 3600000);
    config_free(&c);
}

/* ---------------------------------------------------------- config_check */

static void test_check_command_line(void **state)
{
    baton_config c;
    config_defaults(&c);
    assert_int_equal(config_check(&c, err, sizeof(err)), 0);

    c.min_ttl_ms = 700000;
    assert_int_equal(config_check(&c, err, sizeof(err)), -1);
    assert_string_equal(err, "<command line>: locks.min_ttl_ms: locks.min_ttl_ms (700000) must not "
                             "exceed locks.default_ttl_ms (600000)");
    c.min_ttl_ms = 100;
    c.max_ttl_ms = 1000;
    assert_int_equal(config_check(&c, err, sizeof(err)), -1);
    assert_string_equal(err, "<command line>: locks.default_ttl_ms: locks.default_ttl_ms (600000) "
                             "must not exceed locks.max_ttl_ms (1000)");
    c.max_ttl_ms = 3600000;

    assert_int_equal(config_set_string(&c.log_level, "loud"), 0);
    assert_int_equal(config_check(&c, err, sizeof(err)), -1);
    assert_string_equal(err, "<command line>: log_level: must be one of debug, info, warn, error, "
                             "got 'loud'");
    assert_int_equal(config_set_string(&c.log_level, "warn"), 0);

    assert_int_equal(config_set_string(&c.listen, ""), 0);
    assert_int_equal(config_check(&c, err, sizeof(err)), -1);
    assert_string_equal(err, "<command line>: listen: must not be empty");
    assert_int_equal(config_set_string(&c.listen, "0.0.0.0:1"), 0);

    c.redis_command_timeout_ms = 0;
    assert_int_equal(config_check(&c, err, sizeof(err)), -1);
    assert_string_equal(err, "<command line>: redis.command_timeout_ms: must be between 1 and "
                             "3600000, got 0");
    c.redis_command_timeout_ms = 5000;
    assert_int_equal(config_check(&c, err, sizeof(err)), 0);
    config_free(&c);
}

static void test_check_pools(void **state)
{
    baton_config c;
    config_defaults(&c);
    assert_int_equal(load(&c, "pools:\n  - {name: a, devices: 40}\n  - {name: b, devices: 2}\n"), 0);
    c.max_pool_devices = 32;
    assert_int_equal(config_check(&c, err, sizeof(err)), -1);
    assert_string_equal(err, "<command line>: pools[0].devices: must be between 1 and "
                             "locks.max_pool_devices (32), got 40");
    c.max_pool_devices = 64;
    assert_int_equal(config_set_string(&c.pools[1].name, "a"), 0);
    assert_int_equal(config_check(&c, err, sizeof(err)), -1);
    assert_string_equal(err, "<command line>: pools[1].name: pool 'a' is already defined as pools[0]");
    config_free(&c);
}

static void test_set_string(void **state)
{
    char *s = NULL;
    assert_int_equal(config_set_string(&s, "one"), 0);
    assert_string_equal(s, "one");
    assert_int_equal(config_set_string(&s, "two"), 0);
    assert_string_equal(s, "two");
    assert_int_equal(config_set_string(&s, NULL), 0);
    assert_string_equal(s, "");
    free(s);
}

static void test_err_truncation(void **state)
{
    baton_config c;
    char small[10];
    memset(small, 'x', sizeof(small));
    config_defaults(&c);
    assert_int_equal(config_load_string(&c, "t.yaml", "bogus: 1\n", 9, small, sizeof(small)), -1);
    assert_string_equal(small, "t.yaml:1:");
    assert_int_equal(config_load_string(&c, "t.yaml", "bogus: 1\n", 9, NULL, 0), -1);
    config_free(&c);
}

/* ------------------------------------------------- operate (#18): metrics, alerts */

static void test_metrics_listen(void **state)
{
    baton_config c;
    config_defaults(&c);
    assert_string_equal(c.metrics_listen, "");
    assert_int_equal(load(&c, "metrics:\n  listen: \"0.0.0.0:9464\"\n"), 0);
    assert_string_equal(c.metrics_listen, "0.0.0.0:9464");
    assert_int_equal(load(&c, "metrics:\n  listen: \"[::1]:0\"\n"), 0);
    assert_int_equal(load(&c, "metrics:\n  listen: \"\"\n"), 0);
    assert_string_equal(c.metrics_listen, "");
    char *yaml = config_to_yaml(&c);
    assert_non_null(strstr(yaml, "metrics:\n  listen: \"\"  # file\n"));
    free(yaml);
    assert_int_equal(config_override(&c, "metrics.listen", "127.0.0.1:9"), 0);
    assert_int_equal(config_check(&c, err, sizeof(err)), 0);
    assert_int_equal(config_override(&c, "metrics.listen", "x"), 0);
    assert_int_equal(config_check(&c, err, sizeof(err)), -1);
    assert_string_equal(err, "<command line>: metrics.listen: expected \"host:port\" (port 0..65535) or \"\" "
                             "for off, got 'x'");
    config_free(&c);
    expect_err(
        "metrics:\n  listen: nowhere\n",
        "t.yaml:2: metrics.listen: expected \"host:port\" (port 0..65535) or \"\" for off, got 'nowhere'");
    expect_err(
        "metrics:\n  listen: \"h:70000\"\n",
        "t.yaml:2: metrics.listen: expected \"host:port\" (port 0..65535) or \"\" for off, got 'h:70000'");
    expect_err(
        "metrics:\n  listen: \":9464\"\n",
        "t.yaml:2: metrics.listen: expected \"host:port\" (port 0..65535) or \"\" for off, got ':9464'");
    expect_err("metrics:\n  port: 1\n", "t.yaml:2: metrics.port: unknown key (allowed: listen)");
}

static void test_log_format_and_lock_events(void **state)
{
    baton_config c;
    config_defaults(&c);
    assert_string_equal(c.log_format, "text");
    assert_int_equal(c.log_lock_events, 0);
    assert_int_equal(load(&c, "log_format: json\nlog_lock_events: true\n"), 0);
    assert_string_equal(c.log_format, "json");
    assert_int_equal(c.log_lock_events, 1);
    assert_int_equal(config_override(&c, "log_format", "yaml"), 0);
    assert_int_equal(config_check(&c, err, sizeof(err)), -1);
    assert_string_equal(err, "<command line>: log_format: must be text or json, got 'yaml'");
    config_free(&c);
    expect_err("log_format: xml\n", "t.yaml:1: log_format: must be text or json, got 'xml'");
    expect_err("log_lock_events: 1\n",
               "t.yaml:1: log_lock_events: expected a boolean (true/false/yes/no), got an integer");
}

static void test_alerts_long_held(void **state)
{
    baton_config c;
    config_defaults(&c);
    assert_int_equal(c.nlong_held, 0);
    const char *y = "alerts:\n  long_held:\n    - prefix: \"gpu_lock:\"\n      after_ms: 3600000\n"
                    "    - prefix: \"\"\n      after_ms: 86400000\n";
    if (load(&c, y) != 0)
        fail_msg("%s", err);
    assert_int_equal(c.nlong_held, 2);
    assert_string_equal(c.long_held[0].prefix, "gpu_lock:");
    assert_int_equal(c.long_held[0].after_ms, 3600000);
    assert_string_equal(c.long_held[1].prefix, "");
    char *yaml = config_to_yaml(&c);
    assert_non_null(strstr(yaml, "alerts:\n  long_held:  # file\n    - prefix: \"gpu_lock:\"\n"
                                 "      after_ms: 3600000\n    - prefix: \"\"\n      after_ms: 86400000\n"));
    free(yaml);
    /* a failed load keeps the rules in effect; a null list clears them */
    assert_int_equal(load(&c, "alerts:\n  long_held: 3\n"), -1);
    assert_int_equal(c.nlong_held, 2);
    assert_int_equal(load(&c, "alerts:\n  long_held:\n"), 0);
    assert_int_equal(c.nlong_held, 0);
    config_free(&c);

    expect_err("alerts:\n  long_held: 3\n",
               "t.yaml:2: alerts.long_held: expected a sequence of {prefix, after_ms}, got an integer");
    expect_err("alerts:\n  long_held:\n    - prefix: a\n", "t.yaml:3: alerts.long_held[0]: missing after_ms");
    expect_err("alerts:\n  long_held:\n    - after_ms: 5\n",
               "t.yaml:3: alerts.long_held[0]: missing prefix (\"\" for every key)");
    expect_err("alerts:\n  long_held:\n    - prefix: a\n      after_ms: 0\n",
               "t.yaml:4: alerts.long_held[0].after_ms: must be between 1 and 31536000000, got 0");
    expect_err_prefix("alerts:\n  long_held:\n    - prefix: \"a b\"\n      after_ms: 5\n",
                      "t.yaml:3: alerts.long_held[0].prefix: ");
    expect_err("alerts:\n  long_held:\n    - prefix: a\n      after_ms: 5\n      owner: x\n",
               "t.yaml:5: alerts.long_held[0].owner: unknown key (allowed: prefix, after_ms)");
    expect_err("alerts:\n  long_held:\n    - {prefix: a, after_ms: 5}\n    - {prefix: a, after_ms: 9}\n",
               "t.yaml:4: alerts.long_held[1].prefix: prefix 'a' already has a rule at line 3");
    expect_err("alerts:\n  short_held: []\n",
               "t.yaml:2: alerts.short_held: unknown key (allowed: long_held)");
    expect_err("alerts: 1\n", "t.yaml:1: alerts: expected a mapping, got an integer");
}

/* ------------------------------------------------------------------ files */

static void test_deploy_file(void **state)
{
    baton_config c;
    config_defaults(&c);
    const char *path = BATON_SOURCE_DIR "/deploy/batond.yaml";
    if (config_load_file(&c, path, err, sizeof(err)) != 0)
        fail_msg("%s", err);
    /* The documented file states exactly the defaults. */
    assert_defaults(&c);
    config_free(&c);
}

/* The deploy file's commented-out example pool is valid once uncommented. */
static void test_deploy_file_example_pool(void **state)
{
    FILE *f = fopen(BATON_SOURCE_DIR "/deploy/batond.yaml", "rb");
    assert_non_null(f);
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *pools = strstr(buf, "\npools: []\n");
    assert_non_null(pools);
    memcpy(pools, "\npools:   \n", 11);
    for (char *p = pools; (p = strstr(p, "\n#  ")) != NULL;)
        memcpy(p, "\n   ", 4);
    baton_config c;
    config_defaults(&c);
    if (config_load_string(&c, "batond.yaml", buf, strlen(buf), err, sizeof(err)) != 0)
        fail_msg("%s", err);
    assert_int_equal(c.npools, 1);
    assert_string_equal(c.pools[0].name, "node7");
    assert_int_equal(c.pools[0].devices, 8);
    config_free(&c);
}

static void test_file_missing(void **state)
{
    baton_config c;
    config_defaults(&c);
    assert_int_equal(config_load_file(&c, "/nonexistent/batond.yaml", err, sizeof(err)), -1);
    assert_string_equal(err, "/nonexistent/batond.yaml: cannot open: No such file or directory");
    assert_defaults(&c);
    config_free(&c);
}

static void test_file_named_in_errors(void **state)
{
    char path[] = "/tmp/baton-config-test-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *yaml = "# comment\nlocks:\n  max_ttl_ms: 0\n";
    assert_int_equal(write(fd, yaml, strlen(yaml)), (ssize_t)strlen(yaml));
    close(fd);
    baton_config c;
    config_defaults(&c);
    assert_int_equal(config_load_file(&c, path, err, sizeof(err)), -1);
    char want[256];
    snprintf(want, sizeof(want), "%s:3: locks.max_ttl_ms: must be between 1 and 31536000000, got 0", path);
    assert_string_equal(err, want);
    unlink(path);
    config_free(&c);
}

/* ------------------------------------------------- config_to_yaml, origins */

/* The line of `yaml` that starts with `prefix` (static copy), or fails. */
static const char *line_of_yaml(const char *yaml, const char *prefix)
{
    static char line[512];
    for (const char *p = yaml; p && *p;) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        if (strncmp(p, prefix, strlen(prefix)) == 0 && n < sizeof line) {
            memcpy(line, p, n);
            line[n] = '\0';
            return line;
        }
        p = nl ? nl + 1 : NULL;
    }
    fail_msg("no line starting with '%s' in:\n%s", prefix, yaml);
    return NULL;
}

static void test_to_yaml_names_origins(void **state)
{
    (void)state;
    baton_config c;
    config_defaults(&c);
    char *y = config_to_yaml(&c);
    assert_non_null(y);
    assert_string_equal(line_of_yaml(y, "  address:"), "  address: \"127.0.0.1:6379\"  # default");
    assert_string_equal(line_of_yaml(y, "pools:"), "pools: []  # default");
    free(y);

    /* Flow style sets redis.address as surely as block style does. */
    assert_int_equal(load(&c, "redis: {address: \"unix:/r.sock\", database: 2}\n"), 0);
    assert_int_equal(config_override(&c, "listen", "0.0.0.0:1"), 0);
    assert_int_equal(config_override(&c, "redis.nosuch", "x"), -1);
    y = config_to_yaml(&c);
    assert_non_null(y);
    assert_string_equal(line_of_yaml(y, "listen:"), "listen: \"0.0.0.0:1\"  # command line");
    assert_string_equal(line_of_yaml(y, "  address:"), "  address: \"unix:/r.sock\"  # file");
    assert_string_equal(line_of_yaml(y, "  database:"), "  database: 2  # file");
    assert_string_equal(line_of_yaml(y, "  reconnect_ms:"), "  reconnect_ms: 200  # default");
    free(y);

    /* A failed load changes no origin either. */
    assert_int_equal(load(&c, "locks: {max_ttl_ms: 5}\ngrpc: {max_message_bytes: 1}\n"), -1);
    y = config_to_yaml(&c);
    assert_string_equal(line_of_yaml(y, "  max_ttl_ms:"), "  max_ttl_ms: 3600000  # default");
    free(y);
    config_free(&c);
}

/* What config_to_yaml writes loads back to the same settings (the password
 * aside, which it does not show). */
static void test_to_yaml_round_trips(void **state)
{
    (void)state;
    baton_config a, b;
    config_defaults(&a);
    if (load(&a, FULL) != 0)
        fail_msg("%s", err);
    assert_int_equal(config_set_string(&a.redis_address, "unix:/odd \"dir\"\\x\t/r.sock"), 0);
    char *y = config_to_yaml(&a);
    assert_non_null(y);
    assert_null(strstr(y, "s3cret"));
    assert_string_equal(line_of_yaml(y, "  password:"), "  password: \"(set, not shown)\"  # file");
    config_defaults(&b);
    if (load(&b, y) != 0)
        fail_msg("%s\n%s", err, y);
    assert_string_equal(b.redis_address, a.redis_address);
    assert_string_equal(b.listen, a.listen);
    assert_string_equal(b.key_prefix, a.key_prefix);
    assert_int_equal(b.redis_keyspace_events, a.redis_keyspace_events);
    assert_int_equal(b.max_wait_ms, a.max_wait_ms);
    assert_int_equal(b.keepalive_timeout_ms, a.keepalive_timeout_ms);
    assert_int_equal(b.npools, a.npools);
    for (size_t i = 0; i < a.npools; i++) {
        assert_string_equal(b.pools[i].name, a.pools[i].name);
        assert_int_equal(b.pools[i].devices, a.pools[i].devices);
    }
    free(y);
    config_free(&a);
    config_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_empty_documents),
        cmocka_unit_test(test_empty_sections),
        cmocka_unit_test(test_full_override),
        cmocka_unit_test(test_partial_override_keeps_rest),
        cmocka_unit_test(test_applies_on_top),
        cmocka_unit_test(test_booleans),
        cmocka_unit_test(test_integer_bounds_accepted),
        cmocka_unit_test(test_anchors_and_flow_style),
        cmocka_unit_test(test_string_allows_any_text),
        cmocka_unit_test(test_redis_address_forms),
        cmocka_unit_test(test_min_replicas),
        cmocka_unit_test(test_failover_grace),
        cmocka_unit_test(test_unknown_top_key),
        cmocka_unit_test(test_unknown_section_keys),
        cmocka_unit_test(test_unknown_pool_key),
        cmocka_unit_test(test_pool_capacity_and_device_names),
        cmocka_unit_test(test_duplicate_keys),
        cmocka_unit_test(test_non_scalar_key),
        cmocka_unit_test(test_wrong_types),
        cmocka_unit_test(test_top_level_not_mapping),
        cmocka_unit_test(test_integer_syntax),
        cmocka_unit_test(test_integer_overflow),
        cmocka_unit_test(test_ranges),
        cmocka_unit_test(test_ttl_ordering),
        cmocka_unit_test(test_key_prefix),
        cmocka_unit_test(test_log_level),
        cmocka_unit_test(test_empty_strings),
        cmocka_unit_test(test_nul_in_string),
        cmocka_unit_test(test_pool_errors),
        cmocka_unit_test(test_pool_devices_order_independent),
        cmocka_unit_test(test_pool_name_length),
        cmocka_unit_test(test_syntax_errors),
        cmocka_unit_test(test_reader_errors),
        cmocka_unit_test(test_multiple_documents),
        cmocka_unit_test(test_failed_load_leaves_config_unchanged),
        cmocka_unit_test(test_check_command_line),
        cmocka_unit_test(test_check_pools),
        cmocka_unit_test(test_set_string),
        cmocka_unit_test(test_err_truncation),
        cmocka_unit_test(test_deploy_file),
        cmocka_unit_test(test_metrics_listen),
        cmocka_unit_test(test_alerts_long_held),
        cmocka_unit_test(test_log_format_and_lock_events),
        cmocka_unit_test(test_deploy_file_example_pool),
        cmocka_unit_test(test_file_missing),
        cmocka_unit_test(test_file_named_in_errors),
        cmocka_unit_test(test_to_yaml_names_origins),
        cmocka_unit_test(test_to_yaml_round_trips),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
