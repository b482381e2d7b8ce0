/* Unit tests for the pure parts of server/store/redis/sentinel.c, from
 * hand-built replies: get-master-addr-by-name, +switch-master, ROLE. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "sentinel.h"

static redisReply str(const char *s)
{
    redisReply r = {.type = REDIS_REPLY_STRING, .str = (char *)s, .len = strlen(s)};
    return r;
}

static void master_addr(void **state)
{
    redisReply a = str("10.0.0.7"), b = str("6380");
    redisReply *el[2] = {&a, &b};
    redisReply arr = {.type = REDIS_REPLY_ARRAY, .elements = 2, .element = el};
    char host[64];
    int port = 0;
    const char *why = NULL;
    assert_int_equal(sentinel_parse_master_addr(&arr, host, sizeof host, &port, &why), 0);
    assert_string_equal(host, "10.0.0.7");
    assert_int_equal(port, 6380);

    redisReply nil = {.type = REDIS_REPLY_NIL};
    assert_int_equal(sentinel_parse_master_addr(&nil, host, sizeof host, &port, &why), -1);
    assert_string_equal(why, "unknown master name");
    redisReply err = {.type = REDIS_REPLY_ERROR, .str = "NOAUTH", .len = 6};
    assert_int_equal(sentinel_parse_master_addr(&err, host, sizeof host, &port, &why), -1);

    static const char *bad_ports[] = {"", "0", "65536", "12a", "-1", "99999999999"};
    for (size_t i = 0; i < sizeof bad_ports / sizeof bad_ports[0]; i++) {
        b = str(bad_ports[i]);
        assert_int_equal(sentinel_parse_master_addr(&arr, host, sizeof host, &port, &why), -1);
    }
    b = str("6380");
    a = str("");
    assert_int_equal(sentinel_parse_master_addr(&arr, host, sizeof host, &port, &why), -1);
    a = str("a-host-name-longer-than-the-buffer-we-give-it");
    assert_int_equal(sentinel_parse_master_addr(&arr, host, 8, &port, &why), -1);
    a = str("h");
    arr.elements = 1;
    assert_int_equal(sentinel_parse_master_addr(&arr, host, sizeof host, &port, &why), -1);
    arr.elements = 2;
    redisReply num = {.type = REDIS_REPLY_INTEGER, .integer = 6380};
    el[1] = &num;
    assert_int_equal(sentinel_parse_master_addr(&arr, host, sizeof host, &port, &why), -1);
}

static void switch_master(void **state)
{
    char host[64];
    int port = 0;
    const char *m = "mymaster 127.0.0.1 6379 127.0.0.1 6381";
    assert_int_equal(sentinel_parse_switch(m, strlen(m), "mymaster", host, sizeof host, &port), 1);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 6381);
    /* another master of the same sentinels */
    assert_int_equal(sentinel_parse_switch(m, strlen(m), "mymaste", host, sizeof host, &port), 0);
    assert_int_equal(sentinel_parse_switch(m, strlen(m), "other", host, sizeof host, &port), 0);
    static const char *bad[] = {
        "",
        "mymaster",
        "mymaster 127.0.0.1 6379 127.0.0.1",
        "mymaster 127.0.0.1 6379 127.0.0.1 6381 extra",
        "mymaster 127.0.0.1 6379 127.0.0.1 63a1",
        "mymaster 127.0.0.1 6379 127.0.0.1 0",
        "mymaster 127.0.0.1 6379 127.0.0.1 70000",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(sentinel_parse_switch(bad[i], strlen(bad[i]), "mymaster", host, sizeof host, &port), 0);
    /* only the first len bytes count */
    assert_int_equal(sentinel_parse_switch(m, strlen(m) - 1, "mymaster", host, sizeof host, &port), 1);
    assert_int_equal(port, 638);
}

static void role(void **state)
{
    redisReply master = str("master"), slave = str("slave"), off = {.type = REDIS_REPLY_INTEGER, .integer = 1};
    redisReply *el[2] = {&master, &off};
    redisReply arr = {.type = REDIS_REPLY_ARRAY, .elements = 2, .element = el};
    assert_int_equal(sentinel_role_is_primary(&arr), 1);
    el[0] = &slave;
    assert_int_equal(sentinel_role_is_primary(&arr), 0);
    arr.elements = 0;
    assert_int_equal(sentinel_role_is_primary(&arr), 0);
    redisReply err = {.type = REDIS_REPLY_ERROR, .str = "ERR", .len = 3};
    assert_int_equal(sentinel_role_is_primary(&err), 0);
    assert_int_equal(sentinel_role_is_primary(NULL), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(master_addr),
        cmocka_unit_test(switch_master),
        cmocka_unit_test(role),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
