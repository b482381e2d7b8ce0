/*
 * The metrics registry: fixed counters, gauges and histograms as relaxed
 * atomics. Writers are the loop thread's hooks; the HTTP thread only reads.
 * Relaxed order is enough: each value is independent, and a scrape that sees
 * one counter a moment later than another is still a valid sample.
 */
#include "metrics.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *const metrics_method_names[] = {
    "Acquire", "Renew", "Release",      "Watch",        "Describe", "ForceRelease",
    "Session", "List",  "Health/Check", "Health/Watch", "unknown",
};
const size_t metrics_nmethods = sizeof metrics_method_names / sizeof metrics_method_names[0];
static const char *const method_paths[] = {
    "/baton.v1.LockService/Acquire", "/baton.v1.LockService/Renew",    "/baton.v1.LockService/Release",
    "/baton.v1.LockService/Watch",   "/baton.v1.LockService/Describe", "/baton.v1.LockService/ForceRelease",
    "/baton.v1.LockService/Session", "/baton.v1.LockService/List",     "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
};
_Static_assert(sizeof method_paths / sizeof method_paths[0] + 1 ==
                   sizeof metrics_method_names / sizeof metrics_method_names[0],
               "one path per method label, then unknown");

const char *const metrics_script_names[] = {
    "acquire", "dequeue", "renew", "release",  "force_release", "describe",
    "refresh", "reap",    "epoch", "reassert", "list",          "other",
};
const size_t metrics_nscripts = sizeof metrics_script_names / sizeof metrics_script_names[0];

const char *const metrics_end_names[METRICS_END_COUNT] = {"release", "expired", "force", "stream_end",
                                                          "lost"};

/* 1 ms .. 1 h: waits and handoffs are milliseconds, holds minutes to hours. */
const uint64_t metrics_lat_bounds_us[METRICS_LAT_BUCKETS] = {
    1000,    2500,    5000,    10000,    25000,    50000,    100000,    250000,     500000,
    1000000, 2500000, 5000000, 10000000, 30000000, 60000000, 300000000, 1800000000, 3600000000,
};
/* 50 us .. 1 s: a script is a fraction of a millisecond unless Redis is slow. */
const uint64_t metrics_script_bounds_us[METRICS_SCRIPT_BUCKETS] = {
    50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000,
};

typedef struct ahist {
    _Atomic uint64_t buckets[METRICS_LAT_BUCKETS + 1];
    _Atomic uint64_t sum_us;
} ahist;

typedef struct ascript {
    _Atomic uint64_t buckets[METRICS_SCRIPT_BUCKETS + 1];
    _Atomic uint64_t sum_us;
} ascript;

static struct {
    int on;
    _Atomic uint64_t grants[2];
    _Atomic uint64_t ends[METRICS_END_COUNT];
    _Atomic uint64_t acquire_timeouts;
    _Atomic uint64_t requests[16][METRICS_NCODES];
    _Atomic int64_t locks_held, waiters, streams_open, watchers, redis_up, long_held;
    ahist hist[METRICS_H_COUNT];
    ascript scripts[16];
    size_t npools;
    char *pools[METRICS_MAX_POOLS];
    _Atomic int64_t pool_held[METRICS_MAX_POOLS];
} g;

_Static_assert(sizeof metrics_method_names / sizeof metrics_method_names[0] <= 16, "requests rows");
_Static_assert(sizeof metrics_script_names / sizeof metrics_script_names[0] <= 16, "scripts rows");

#define ADD(a, v) atomic_fetch_add_explicit(&(a), (v), memory_order_relaxed)
#define SET(a, v) atomic_store_explicit(&(a), (v), memory_order_relaxed)
#define GET(a) atomic_load_explicit(&(a), memory_order_relaxed)

void metrics_enable(const char *const *pools, size_t npools)
{
    g.npools = 0;
    for (size_t i = 0; i < npools && g.npools < METRICS_MAX_POOLS; i++) {
        char *copy = strdup(pools[i]);
        if (copy)
            g.pools[g.npools++] = copy;
    }
    g.on = 1;
}

int metrics_enabled(void)
{
    return g.on;
}

void metrics_reset(void)
{
    for (size_t i = 0; i < g.npools; i++)
        free(g.pools[i]);
    memset(&g, 0, sizeof g);
}

int64_t metrics_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static size_t bucket_of(const uint64_t *bounds, size_t n, uint64_t v)
{
    size_t lo = 0, hi = n; /* first bound >= v, or n (+Inf) */
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (bounds[mid] >= v)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

void metrics_observe(metrics_hist h, int64_t us)
{
    if (!g.on || (unsigned)h >= METRICS_H_COUNT)
        return;
    uint64_t v = us > 0 ? (uint64_t)us : 0;
    ADD(g.hist[h].buckets[bucket_of(metrics_lat_bounds_us, METRICS_LAT_BUCKETS, v)], 1);
    ADD(g.hist[h].sum_us, v);
}

void metrics_grant(int stream_mode, int64_t wait_us)
{
    if (!g.on)
        return;
    ADD(g.grants[stream_mode ? 1 : 0], 1);
    metrics_observe(METRICS_H_ACQUIRE_WAIT, wait_us);
}

void metrics_end_count(metrics_end why)
{
    if (g.on && (unsigned)why < METRICS_END_COUNT)
        ADD(g.ends[why], 1);
}

void metrics_acquire_timeout(void)
{
    if (g.on)
        ADD(g.acquire_timeouts, 1);
}

void metrics_request(const char *path, int code)
{
    if (!g.on)
        return;
    size_t m = metrics_nmethods - 1;
    for (size_t i = 0; path && i < metrics_nmethods - 1; i++) {
        if (strcmp(path, method_paths[i]) == 0) {
            m = i;
            break;
        }
    }
    if (code < 0 || code >= METRICS_NCODES)
        code = 2; /* UNKNOWN */
    ADD(g.requests[m][code], 1);
}

void metrics_redis_script(const char *name, int64_t sent_us)
{
    if (!g.on)
        return;
    size_t s = metrics_nscripts - 1;
    for (size_t i = 0; name && i < metrics_nscripts - 1; i++) {
        if (strcmp(name, metrics_script_names[i]) == 0) {
            s = i;
            break;
        }
    }
    int64_t d = metrics_now_us() - sent_us;
    uint64_t v = d > 0 ? (uint64_t)d : 0;
    ADD(g.scripts[s].buckets[bucket_of(metrics_script_bounds_us, METRICS_SCRIPT_BUCKETS, v)], 1);
    ADD(g.scripts[s].sum_us, v);
}

void metrics_publish(const metrics_gauges *m)
{
    if (!g.on)
        return;
    SET(g.waiters, m->waiters);
    SET(g.streams_open, m->streams_open);
    SET(g.watchers, m->watchers);
    SET(g.redis_up, m->redis_up);
}

void metrics_set_locks_held(int64_t n)
{
    if (g.on)
        SET(g.locks_held, n);
}

void metrics_set_long_held(int64_t n)
{
    if (g.on)
        SET(g.long_held, n);
}

void metrics_pool_devices_add(size_t i, int64_t delta)
{
    if (g.on && i < g.npools)
        ADD(g.pool_held[i], delta);
}

int metrics_pool_of_device_key(const char *key)
{
    const char *slash = strrchr(key, '/');
    if (slash == NULL || slash[1] == '\0')
        return -1;
    for (const char *p = slash + 1; *p; p++)
        if (*p < '0' || *p > '9')
            return -1;
    size_t n = (size_t)(slash - key);
    for (size_t i = 0; i < g.npools; i++)
        if (strlen(g.pools[i]) == n && memcmp(g.pools[i], key, n) == 0)
            return (int)i;
    return -1;
}

void metrics_snapshot_take(metrics_snapshot *out, const char *version)
{
    memset(out, 0, sizeof *out);
    out->version = version;
    for (int i = 0; i < 2; i++)
        out->grants[i] = GET(g.grants[i]);
    for (int i = 0; i < METRICS_END_COUNT; i++)
        out->ends[i] = GET(g.ends[i]);
    out->acquire_timeouts = GET(g.acquire_timeouts);
    for (size_t m = 0; m < metrics_nmethods; m++)
        for (int c = 0; c < METRICS_NCODES; c++)
            out->requests[m][c] = GET(g.requests[m][c]);
    out->locks_held = GET(g.locks_held);
    out->waiters = GET(g.waiters);
    out->streams_open = GET(g.streams_open);
    out->watchers = GET(g.watchers);
    out->redis_up = GET(g.redis_up);
    out->long_held = GET(g.long_held);
    for (int h = 0; h < METRICS_H_COUNT; h++) {
        for (int b = 0; b <= METRICS_LAT_BUCKETS; b++)
            out->hist[h].buckets[b] = GET(g.hist[h].buckets[b]);
        out->hist[h].sum_us = GET(g.hist[h].sum_us);
    }
    for (size_t s = 0; s < metrics_nscripts; s++) {
        for (int b = 0; b <= METRICS_SCRIPT_BUCKETS; b++)
            out->scripts[s].buckets[b] = GET(g.scripts[s].buckets[b]);
        out->scripts[s].sum_us = GET(g.scripts[s].sum_us);
    }
    out->npools = g.npools;
    for (size_t i = 0; i < g.npools; i++) {
        out->pool_names[i] = g.pools[i];
        out->pool_devices_held[i] = GET(g.pool_held[i]);
    }
}
