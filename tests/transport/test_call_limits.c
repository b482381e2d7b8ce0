/* Unit tests for server/transport/call_limits.c: each limit refuses with its
 * name, shares are per tenant, entries go away with their last reference. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "call_limits.h"

static const config_limits CFG = {
    .max_streams = 5, .max_streams_per_connection = 3, .max_streams_per_tenant = 4,
    .max_waiting = 4, .max_waiting_per_tenant = 3, .max_waiters_per_key = 2,
    .max_watches = 3, .max_watches_per_tenant = 2, .max_watch_backlog = 100,
};

static void test_streams(void **state)
{
    (void)state;
    char msg[256];
    limits *l = limits_new(&CFG);
    limits_entry *a = limits_tenant(l, "a"), *b = limits_tenant(l, "b");
    limits_entry *c1 = limits_conn(l, "ipv4:1.2.3.4:1"), *c2 = limits_conn(l, "ipv4:1.2.3.4:2");
    for (int i = 0; i < 3; i++)
        assert_int_equal(limits_take(l, LIMITS_STREAM, a, c1, msg, sizeof msg), 0);
    assert_int_equal(limits_take(l, LIMITS_STREAM, a, c1, msg, sizeof msg), -1);
    assert_string_equal(msg, "limits.max_streams_per_connection (3) reached on this connection");
    assert_int_equal(limits_take(l, LIMITS_STREAM, a, c2, msg, sizeof msg), 0);
    assert_int_equal(limits_take(l, LIMITS_STREAM, a, c2, msg, sizeof msg), -1);
    assert_string_equal(msg, "limits.max_streams_per_tenant (4) reached by \"a\"");
    assert_int_equal(limits_take(l, LIMITS_STREAM, b, c2, msg, sizeof msg), 0);
    assert_int_equal(limits_take(l, LIMITS_STREAM, b, c2, msg, sizeof msg), -1);
    assert_string_equal(msg, "limits.max_streams (5) reached: too many streams open on this server");
    assert_int_equal(limits_count(l, LIMITS_STREAM), 5);
    limits_give(l, LIMITS_STREAM, a, c1);
    assert_int_equal(limits_take(l, LIMITS_STREAM, b, c1, msg, sizeof msg), 0);
    limits_unref(l, a);
    limits_unref(l, b);
    limits_unref(l, c1);
    limits_unref(l, c2);
    assert_int_equal(limits_entries(l), 0);
    limits_free(l);
}

static void test_waiting_and_keys(void **state)
{
    (void)state;
    char msg[256];
    limits *l = limits_new(&CFG);
    limits_entry *a = limits_tenant(l, "a");
    limits_entry *k1 = limits_key_take(l, "k", msg, sizeof msg), *k2 = limits_key_take(l, "k", msg, sizeof msg);
    assert_non_null(k1);
    assert_ptr_equal(k1, k2);
    assert_null(limits_key_take(l, "k", msg, sizeof msg));
    assert_string_equal(msg, "limits.max_waiters_per_key (2) reached on \"k\"");
    limits_entry *other = limits_key_take(l, "k2", msg, sizeof msg);
    assert_non_null(other);
    limits_key_give(l, k1);
    assert_non_null(k1 = limits_key_take(l, "k", msg, sizeof msg));
    limits_key_give(l, k1);
    limits_key_give(l, k2);
    limits_key_give(l, other);
    for (int i = 0; i < 3; i++)
        assert_int_equal(limits_take(l, LIMITS_WAITING, a, NULL, msg, sizeof msg), 0);
    assert_int_equal(limits_take(l, LIMITS_WAITING, a, NULL, msg, sizeof msg), -1);
    assert_string_equal(msg, "limits.max_waiting_per_tenant (3) reached by \"a\"");
    assert_int_equal(limits_take(l, LIMITS_WAITING, NULL, NULL, msg, sizeof msg), 0);
    assert_int_equal(limits_take(l, LIMITS_WAITING, NULL, NULL, msg, sizeof msg), -1);
    assert_string_equal(msg, "limits.max_waiting (4) reached: too many acquires waiting on this server");
    assert_int_equal(limits_take(l, LIMITS_WATCH, a, NULL, msg, sizeof msg), 0);
    assert_int_equal(limits_take(l, LIMITS_WATCH, a, NULL, msg, sizeof msg), 0);
    assert_int_equal(limits_take(l, LIMITS_WATCH, a, NULL, msg, sizeof msg), -1);
    assert_string_equal(msg, "limits.max_watches_per_tenant (2) reached by \"a\"");
    limits_unref(l, a);
    assert_int_equal(limits_entries(l), 0);
    limits_free(l);
}

static void test_watch_backlog_share(void **state)
{
    (void)state;
    char msg[256];
    limits *l = limits_new(&CFG);
    limits_entry *a = limits_tenant(l, "a"), *b = limits_tenant(l, "b");
    assert_int_equal(limits_watch_backlog(l), 100); /* no watch yet: all of it */
    assert_int_equal(limits_take(l, LIMITS_WATCH, a, NULL, msg, sizeof msg), 0);
    assert_int_equal(limits_take(l, LIMITS_WATCH, b, NULL, msg, sizeof msg), 0);
    assert_int_equal(limits_watch_backlog(l), 50);
    assert_int_equal(limits_take(l, LIMITS_WATCH, b, NULL, msg, sizeof msg), 0);
    assert_int_equal(limits_watch_backlog(l), 33);
    config_limits big = CFG, tiny = CFG;
    big.max_watch_backlog = 1 << 30;
    tiny.max_watch_backlog = 1;
    limits *lb = limits_new(&big), *lt = limits_new(&tiny);
    assert_int_equal(limits_watch_backlog(lb), LIMITS_WATCH_BACKLOG_MAX);
    assert_int_equal(limits_watch_backlog(lt), LIMITS_WATCH_BACKLOG_MIN);
    limits_free(lb);
    limits_free(lt);
    limits_give(l, LIMITS_WATCH, a, NULL);
    limits_give(l, LIMITS_WATCH, b, NULL);
    limits_give(l, LIMITS_WATCH, b, NULL);
    limits_unref(l, a);
    limits_unref(l, b);
    limits_free(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_streams),
        cmocka_unit_test(test_waiting_and_keys),
        cmocka_unit_test(test_watch_backlog_share),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
