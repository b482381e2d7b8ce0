/* Unit tests for server/metrics: the Prometheus text renderer driven from
 * plain snapshot values, the registry's hooks and buckets, and the lock view
 * (holds, hold times, handoffs, pool devices, long-held rules). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "lock_view.h"
#include "metrics.h"

static char *render(const metrics_snapshot *s)
{
    size_t len = 0;
    char *text = metrics_render(s, &len);
    assert_non_null(text);
    assert_int_equal(strlen(text), len);
    return text;
}

static void assert_line(const char *text, const char *line)
{
    char want[512];
    snprintf(want, sizeof want, "\n%s\n", line);
    if (strstr(text, want) == NULL)
        fail_msg("no line '%s' in:\n%s", line, text);
}

static void assert_no(const char *text, const char *part)
{
    if (strstr(text, part) != NULL)
        fail_msg("unexpected '%s' in:\n%s", part, text);
}

static void test_render_plain_values(void **state)
{
    metrics_snapshot s;
    memset(&s, 0, sizeof s);
    s.version = "1.2\"3";
    s.grants[0] = 7;
    s.grants[1] = 2;
    s.ends[METRICS_END_STREAM_END] = 4;
    s.acquire_timeouts = 3;
    s.requests[0][0] = 11;  /* Acquire OK */
    s.requests[0][10] = 3;  /* Acquire ABORTED */
    s.requests[10][12] = 1; /* unknown UNIMPLEMENTED */
    s.locks_held = 5;
    s.waiters = 9;
    s.redis_up = 1;
    s.hist[METRICS_H_ACQUIRE_WAIT].buckets[0] = 2;                   /* <= 1 ms */
    s.hist[METRICS_H_ACQUIRE_WAIT].buckets[3] = 1;                   /* <= 10 ms */
    s.hist[METRICS_H_ACQUIRE_WAIT].buckets[METRICS_LAT_BUCKETS] = 1; /* > 1 h */
    s.hist[METRICS_H_ACQUIRE_WAIT].sum_us = 4000000001;
    s.scripts[0].buckets[1] = 6; /* acquire <= 100 us */
    s.scripts[0].sum_us = 450;
    s.npools = 1;
    s.pool_names[0] = "node7";
    s.pool_devices_held[0] = 3;
    char *t = render(&s);
    assert_true(strncmp(t, "# HELP baton_build_info ", 24) == 0);
    assert_line(t, "baton_build_info{version=\"1.2\\\"3\"} 1");
    assert_line(t, "# TYPE baton_grants_total counter");
    assert_line(t, "baton_grants_total{mode=\"lease\"} 7");
    assert_line(t, "baton_grants_total{mode=\"stream\"} 2");
    assert_line(t, "baton_releases_total{reason=\"release\"} 0");
    assert_line(t, "baton_releases_total{reason=\"stream_end\"} 4");
    assert_line(t, "baton_releases_total{reason=\"lost\"} 0");
    assert_line(t, "baton_acquire_timeouts_total 3");
    assert_line(t, "baton_requests_total{method=\"Acquire\",code=\"OK\"} 11");
    assert_line(t, "baton_requests_total{method=\"Acquire\",code=\"ABORTED\"} 3");
    assert_line(t, "baton_requests_total{method=\"unknown\",code=\"UNIMPLEMENTED\"} 1");
    assert_no(t, "code=\"CANCELLED\""); /* zero series are left out */
    assert_line(t, "baton_locks_held 5");
    assert_line(t, "baton_waiters 9");
    assert_line(t, "baton_redis_up 1");
    assert_line(t, "baton_long_held_locks 0");
    /* cumulative buckets, seconds without trailing zeros, +Inf == count */
    assert_line(t, "baton_acquire_wait_seconds_bucket{le=\"0.001\"} 2");
    assert_line(t, "baton_acquire_wait_seconds_bucket{le=\"0.0025\"} 2");
    assert_line(t, "baton_acquire_wait_seconds_bucket{le=\"0.01\"} 3");
    assert_line(t, "baton_acquire_wait_seconds_bucket{le=\"3600.0\"} 3");
    assert_line(t, "baton_acquire_wait_seconds_bucket{le=\"+Inf\"} 4");
    assert_line(t, "baton_acquire_wait_seconds_sum 4000.000001");
    assert_line(t, "baton_acquire_wait_seconds_count 4");
    assert_line(t, "baton_hold_seconds_count 0");
    assert_line(t, "# TYPE baton_handoff_seconds histogram");
    free(t);
}

static void test_render_script_and_pool_labels(void **state)
{
    metrics_snapshot s;
    memset(&s, 0, sizeof s);
    s.version = "v";
    s.scripts[0].buckets[1] = 6;
    s.scripts[0].sum_us = 450;
    s.npools = 2;
    s.pool_names[0] = "node7";
    s.pool_names[1] = "a/b";
    s.pool_devices_held[0] = 3;
    char *t = render(&s);
    assert_line(t, "baton_redis_script_seconds_bucket{script=\"acquire\",le=\"0.00005\"} 0");
    assert_line(t, "baton_redis_script_seconds_bucket{script=\"acquire\",le=\"0.0001\"} 6");
    assert_line(t, "baton_redis_script_seconds_bucket{script=\"acquire\",le=\"+Inf\"} 6");
    assert_line(t, "baton_redis_script_seconds_sum{script=\"acquire\"} 0.00045");
    assert_line(t, "baton_redis_script_seconds_count{script=\"acquire\"} 6");
    assert_line(t, "baton_redis_script_seconds_count{script=\"list\"} 0");
    assert_line(t, "baton_pool_devices_held{pool=\"node7\"} 3");
    assert_line(t, "baton_pool_devices_held{pool=\"a/b\"} 0");
    free(t);
    s.npools = 0;
    t = render(&s);
    assert_no(t, "baton_pool_devices_held");
    free(t);
}

static void test_hooks_off_until_enabled(void **state)
{
    metrics_reset();
    metrics_grant(0, 10);
    metrics_request("/baton.v1.LockService/Acquire", 0);
    metrics_snapshot s;
    metrics_snapshot_take(&s, "v");
    assert_int_equal(s.grants[0], 0);
    assert_int_equal(s.requests[0][0], 0);
    assert_int_equal(s.hist[METRICS_H_ACQUIRE_WAIT].buckets[0], 0);
}

static void test_hooks_and_buckets(void **state)
{
    metrics_reset();
    const char *pools[] = {"node7", "gpu"};
    metrics_enable(pools, 2);
    metrics_grant(0, 1000);                               /* exactly 1 ms: the le="0.001" bucket */
    metrics_grant(1, 1001);                               /* just above: le="0.0025" */
    metrics_grant(1, -5);                                 /* a negative duration counts as 0 */
    metrics_observe(METRICS_H_HOLD, INT64_C(7200000000)); /* 2 h: +Inf */
    metrics_end_count(METRICS_END_LOST);
    metrics_end_count(METRICS_END_COUNT); /* ignored */
    metrics_acquire_timeout();
    metrics_request("/baton.v1.LockService/ForceRelease", 9);
    metrics_request("/grpc.health.v1.Health/Check", 0);
    metrics_request("/x.Y/Z", 12);
    metrics_request(NULL, 99); /* unknown method, code out of range -> UNKNOWN */
    metrics_redis_script("release", metrics_now_us());
    metrics_redis_script("nope", metrics_now_us());
    assert_int_equal(metrics_pool_of_device_key("node7/3"), 0);
    assert_int_equal(metrics_pool_of_device_key("gpu/12"), 1);
    assert_int_equal(metrics_pool_of_device_key("gpu/"), -1);
    assert_int_equal(metrics_pool_of_device_key("gpu/1x"), -1);
    assert_int_equal(metrics_pool_of_device_key("node/1"), -1);
    assert_int_equal(metrics_pool_of_device_key("gpu"), -1);
    metrics_pool_devices_add(1, 2);
    metrics_pool_devices_add(5, 1); /* no such pool: ignored */

    metrics_snapshot s;
    metrics_snapshot_take(&s, "v");
    assert_int_equal(s.grants[0], 1);
    assert_int_equal(s.grants[1], 2);
    const metrics_histogram *w = &s.hist[METRICS_H_ACQUIRE_WAIT];
    assert_int_equal(w->buckets[0], 2); /* 1000 us and 0 */
    assert_int_equal(w->buckets[1], 1);
    assert_int_equal(w->sum_us, 2001);
    assert_int_equal(s.hist[METRICS_H_HOLD].buckets[METRICS_LAT_BUCKETS], 1);
    assert_int_equal(s.ends[METRICS_END_LOST], 1);
    assert_int_equal(s.acquire_timeouts, 1);
    assert_int_equal(s.requests[5][9], 1);
    assert_int_equal(s.requests[8][0], 1);
    assert_int_equal(s.requests[metrics_nmethods - 1][12], 1);
    assert_int_equal(s.requests[metrics_nmethods - 1][2], 1);
    uint64_t n = 0;
    for (int b = 0; b <= METRICS_SCRIPT_BUCKETS; b++)
        n += s.scripts[3].buckets[b] + s.scripts[metrics_nscripts - 1].buckets[b];
    assert_int_equal(n, 2); /* "release" and "other" */
    assert_int_equal(s.npools, 2);
    assert_string_equal(s.pool_names[1], "gpu");
    assert_int_equal(s.pool_devices_held[1], 2);
    metrics_reset();
}

/* ------------------------------------------------------------ lock view */

static store_event ev(store_event_type t, const char *key, const char *owner, uint64_t fencing, int64_t at)
{
    store_event e = {.type = t, .key = key, .owner = owner, .fencing = fencing, .at_unix_ms = at};
    return e;
}

static void test_view_holds_and_hold_time(void **state)
{
    metrics_reset();
    const char *pools[] = {"node7"};
    metrics_enable(pools, 1);
    lock_view_enable();
    store_event e = ev(STORE_EV_ACQUIRED, "a", "w1", 10, 1000);
    lock_view_event(&e);
    e = ev(STORE_EV_ACQUIRED, "node7/2", "w2", 3, 1500);
    lock_view_event(&e);
    assert_int_equal(lock_view_held(), 2);
    metrics_snapshot s;
    metrics_snapshot_take(&s, "v");
    assert_int_equal(s.locks_held, 2);
    assert_int_equal(s.pool_devices_held[0], 1);
    /* an end with another fencing is not this hold's end */
    e = ev(STORE_EV_RELEASED, "a", "old", 9, 1200);
    lock_view_event(&e);
    assert_int_equal(lock_view_held(), 2);
    /* an end for a hold never seen starting is ignored */
    e = ev(STORE_EV_RELEASED, "zzz", "x", 1, 1200);
    lock_view_event(&e);
    e = ev(STORE_EV_EXPIRED, "a", "w1", 10, 3500); /* held 2.5 s */
    lock_view_event(&e);
    e = ev(STORE_EV_FORCE_RELEASED, "node7/2", "w2", 3, 1510); /* 10 ms */
    lock_view_event(&e);
    e = ev(STORE_EV_WAKE, "a", "", 0, 0);
    lock_view_event(&e);
    assert_int_equal(lock_view_held(), 0);
    metrics_snapshot_take(&s, "v");
    assert_int_equal(s.locks_held, 0);
    assert_int_equal(s.pool_devices_held[0], 0);
    assert_int_equal(s.ends[METRICS_END_EXPIRED], 1);
    assert_int_equal(s.hist[METRICS_H_HOLD].sum_us, 2510000);
    assert_int_equal(s.hist[METRICS_H_HOLD].buckets[3], 1);  /* 10 ms */
    assert_int_equal(s.hist[METRICS_H_HOLD].buckets[10], 1); /* 2.5 s */
    /* a second ACQUIRED of a key whose end was missed replaces the hold */
    e = ev(STORE_EV_ACQUIRED, "b", "w1", 1, 1000);
    lock_view_event(&e);
    e = ev(STORE_EV_ACQUIRED, "b", "w2", 2, 2000);
    lock_view_event(&e);
    assert_int_equal(lock_view_held(), 1);
    lock_view_reset();
    assert_int_equal(lock_view_held(), 0);
    assert_true(lock_view_enabled());
    lock_view_shutdown();
    assert_false(lock_view_enabled());
    metrics_reset();
}

static void test_view_handoff(void **state)
{
    metrics_reset();
    metrics_enable(NULL, 0);
    lock_view_enable();
    lock_view_waiter_granted("k"); /* nothing freed: no handoff */
    lock_view_key_freed("k");
    lock_view_key_freed("k"); /* the latest end counts */
    lock_view_waiter_granted("k");
    lock_view_waiter_granted("k"); /* consumed: not twice */
    metrics_snapshot s;
    metrics_snapshot_take(&s, "v");
    uint64_t n = 0;
    for (int b = 0; b <= METRICS_LAT_BUCKETS; b++)
        n += s.hist[METRICS_H_HANDOFF].buckets[b];
    assert_int_equal(n, 1);
    assert_int_equal(s.hist[METRICS_H_HANDOFF].buckets[0], 1); /* well under 1 ms */
    lock_view_shutdown();
    metrics_reset();
}

static int fired_n;
static char fired_key[64];
static void on_fired(void *ud, const lock_view_hold *h)
{
    fired_n++;
    snprintf(fired_key, sizeof fired_key, "%s/%s/%llu/%lld", h->key, h->owner, (unsigned long long)h->fencing,
             (long long)h->age_ms);
}

static void test_view_long_held_once_per_hold(void **state)
{
    metrics_reset();
    metrics_enable(NULL, 0);
    lock_view_enable();
    lock_view_rule rules[] = {{"gpu:", 1000}, {"", 60000}};
    store_event e = ev(STORE_EV_ACQUIRED, "gpu:1", "o1", 5, 10000);
    lock_view_event(&e);
    e = ev(STORE_EV_ACQUIRED, "video:1", "o2", 6, 10000);
    lock_view_event(&e);
    fired_n = 0;
    assert_int_equal(lock_view_sweep(rules, 2, 10500, on_fired, NULL), 0);
    assert_int_equal(fired_n, 0);
    assert_int_equal(lock_view_sweep(rules, 2, 11001, on_fired, NULL), 1);
    assert_int_equal(fired_n, 1);
    assert_string_equal(fired_key, "gpu:1/o1/5/1001");
    /* once per hold */
    assert_int_equal(lock_view_sweep(rules, 2, 20000, on_fired, NULL), 1);
    assert_int_equal(fired_n, 1);
    metrics_snapshot s;
    metrics_snapshot_take(&s, "v");
    assert_int_equal(s.long_held, 1);
    /* the catch-all rule, later */
    assert_int_equal(lock_view_sweep(rules, 2, 70001, on_fired, NULL), 2);
    assert_int_equal(fired_n, 2);
    /* the hold ends: no longer counted; a new hold of the key fires again */
    e = ev(STORE_EV_RELEASED, "gpu:1", "o1", 5, 70002);
    lock_view_event(&e);
    metrics_snapshot_take(&s, "v");
    assert_int_equal(s.long_held, 1);
    e = ev(STORE_EV_ACQUIRED, "gpu:1", "o3", 7, 70003);
    lock_view_event(&e);
    assert_int_equal(lock_view_sweep(rules, 2, 71004, on_fired, NULL), 2);
    assert_int_equal(fired_n, 3);
    lock_view_shutdown();
    metrics_reset();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_render_plain_values),
        cmocka_unit_test(test_render_script_and_pool_labels),
        cmocka_unit_test(test_hooks_off_until_enabled),
        cmocka_unit_test(test_hooks_and_buckets),
        cmocka_unit_test(test_view_holds_and_hold_time),
        cmocka_unit_test(test_view_handoff),
        cmocka_unit_test(test_view_long_held_once_per_hold),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
