/* Unit tests for server/store/redis/address.c: every address form, and the
 * malformed ones each get an error instead of a guess. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "address.h"

static redis_addr parse_ok(const char *s)
{
    redis_addr a;
    char err[256] = "";
    int rc = redis_addr_parse(s, &a, err, sizeof err);
    if (rc != 0)
        print_error("%s: %s\n", s, err);
    assert_int_equal(rc, 0);
    return a;
}

static void plain_forms(void **state)
{
    redis_addr a = parse_ok("127.0.0.1:6379");
    assert_int_equal(a.kind, REDIS_ADDR_TCP);
    assert_int_equal(a.nnodes, 1);
    assert_string_equal(a.nodes[0].host, "127.0.0.1");
    assert_int_equal(a.nodes[0].port, 6379);
    a = parse_ok("redis://redis.internal:7000");
    assert_int_equal(a.kind, REDIS_ADDR_TCP);
    assert_string_equal(a.nodes[0].host, "redis.internal");
    assert_int_equal(a.nodes[0].port, 7000);
    a = parse_ok("redis://[::1]:6380/");
    assert_string_equal(a.nodes[0].host, "::1");
    assert_int_equal(a.nodes[0].port, 6380);
    a = parse_ok("unix:/run/redis.sock");
    assert_int_equal(a.kind, REDIS_ADDR_UNIX);
    assert_string_equal(a.path, "/run/redis.sock");
    a = parse_ok("unix:///tmp/r.sock");
    assert_string_equal(a.path, "/tmp/r.sock");
}

static void sentinel_and_cluster(void **state)
{
    redis_addr a = parse_ok("sentinel://10.0.0.1:26379,10.0.0.2:26379,[fe80::1]:26380/mymaster");
    assert_int_equal(a.kind, REDIS_ADDR_SENTINEL);
    assert_int_equal(a.nnodes, 3);
    assert_string_equal(a.nodes[1].host, "10.0.0.2");
    assert_string_equal(a.nodes[2].host, "fe80::1");
    assert_int_equal(a.nodes[2].port, 26380);
    assert_string_equal(a.master, "mymaster");
    a = parse_ok("sentinel://s1:26379/m");
    assert_int_equal(a.nnodes, 1);
    a = parse_ok("cluster://127.0.0.1:7000,127.0.0.1:7001");
    assert_int_equal(a.kind, REDIS_ADDR_CLUSTER);
    assert_int_equal(a.nnodes, 2);
    assert_int_equal(a.nodes[1].port, 7001);
    assert_string_equal(redis_addr_kind_name(a.kind), "cluster");
}

static void malformed(void **state)
{
    static const char *bad[] = {
        "",
        "localhost",
        "localhost:",
        ":6379",
        "host:0",
        "host:65536",
        "host:63a9",
        "host:123456",
        "::1:6379",                 /* v6 without brackets */
        "[::1:6379",
        "unix:",
        "unix:relative.sock",
        "http://h:1",
        "redis://",
        "redis://h",
        "sentinel://h:1",            /* no master name */
        "sentinel://h:1/",
        "sentinel:///m",             /* no sentinel */
        "sentinel://h:1,/m",
        "sentinel://h:1/m/x",
        "sentinel://h:1/m x",
        "cluster://",
        "cluster://h",
        "cluster://h:1,,h:2",
        "cluster://h:1,h:2/x",
        "cluster://1:1,2:2,3:3,4:4,5:5,6:6,7:7,8:8,9:9,10:10,11:11,12:12,13:13,14:14,15:15,16:16,17:17",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        redis_addr a;
        char err[256] = "";
        if (redis_addr_parse(bad[i], &a, err, sizeof err) == 0)
            fail_msg("accepted %s", bad[i]);
        assert_true(err[0] != '\0');
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(plain_forms),
        cmocka_unit_test(sentinel_and_cluster),
        cmocka_unit_test(malformed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
