#ifndef BATON_METRICS_H
#define BATON_METRICS_H

/*
 * batond's Prometheus metrics (README "Metrics"; the names are a contract).
 *
 * Two sides, two threads:
 *   - the loop thread (engine, store, transport) records through the hooks
 *     below: relaxed atomic adds and stores, no lock, no allocation. Every
 *     hook returns at once while metrics are off (metrics_enable not called).
 *   - the HTTP thread (metrics_http.c) takes a snapshot of the atomics
 *     (metrics_snapshot_take) and renders it (metrics_render, pure).
 * Labels never carry a lock key (keys are unbounded): only the fixed sets
 * below and the configured pool names.
 *
 * Histograms keep per-bucket counts in microseconds; the renderer makes
 * them cumulative and derives _count from the buckets, so +Inf always
 * equals _count even though the snapshot is not taken atomically.
 */

#include <stddef.h>
#include <stdint.h>

typedef enum metrics_end {
    METRICS_END_RELEASE = 0, /* Release RPC (or a session's release) */
    METRICS_END_EXPIRED,     /* the TTL ran out (an EXPIRED event) */
    METRICS_END_FORCE,       /* ForceRelease */
    METRICS_END_STREAM_END,  /* a stream-held lock released because its stream ended */
    METRICS_END_LOST,        /* a stream-held lock lost (expired in an outage, force-released) */
    METRICS_END_COUNT
} metrics_end;

typedef enum metrics_hist {
    METRICS_H_ACQUIRE_WAIT = 0, /* request to grant */
    METRICS_H_HOLD,             /* grant to end */
    METRICS_H_HANDOFF,          /* release to the next waiter's grant */
    METRICS_H_COUNT
} metrics_hist;

#define METRICS_MAX_POOLS 64
#define METRICS_NCODES 17 /* gRPC status codes 0..16 */

/* Request method labels: LockService methods by name, Health as "Health/Check". */
extern const char *const metrics_method_names[];
extern const size_t metrics_nmethods; /* the last one is "unknown" */
/* Redis script labels (the store's Lua scripts). */
extern const char *const metrics_script_names[];
extern const size_t metrics_nscripts;
extern const char *const metrics_end_names[METRICS_END_COUNT];

/* Bucket upper bounds in microseconds (the renderer prints seconds). */
#define METRICS_LAT_BUCKETS 18
extern const uint64_t metrics_lat_bounds_us[METRICS_LAT_BUCKETS];
#define METRICS_SCRIPT_BUCKETS 14
extern const uint64_t metrics_script_bounds_us[METRICS_SCRIPT_BUCKETS];

/* Turns the hooks on. Pool names are copied (at most METRICS_MAX_POOLS;
 * the rest get no metric). Call once, before any other thread starts. */
void metrics_enable(const char *const *pools, size_t npools);
int metrics_enabled(void);
/* For tests: everything back to zero and off. */
void metrics_reset(void);

/* Microseconds on the monotonic clock. */
int64_t metrics_now_us(void);

/* ---- hooks (loop thread) ---- */
void metrics_grant(int stream_mode, int64_t wait_us);
void metrics_end_count(metrics_end why);
void metrics_acquire_timeout(void);
/* path: "/baton.v1.LockService/Acquire" etc.; NULL or unknown: "unknown". */
void metrics_request(const char *path, int grpc_code);
/* name: a store script ("acquire", "release", ...); sent_us: metrics_now_us() when sent. */
void metrics_redis_script(const char *name, int64_t sent_us);
void metrics_observe(metrics_hist h, int64_t us);

typedef struct metrics_gauges {
    int64_t waiters, streams_open, watchers, redis_up;
} metrics_gauges;
/* The loop's periodic publication of what only it can read. */
void metrics_publish(const metrics_gauges *g);
/* Set by the lock view (lock_view.c) as holds start and end. */
void metrics_set_locks_held(int64_t n);
void metrics_set_long_held(int64_t n);
/* Pool index i (order of metrics_enable) gains delta held devices. */
void metrics_pool_devices_add(size_t i, int64_t delta);
/* Index of a configured pool for a device key "name/<digits>", or -1. */
int metrics_pool_of_device_key(const char *key);

/* ---- reading (any thread) and rendering (pure) ---- */
typedef struct metrics_histogram {
    uint64_t buckets[METRICS_LAT_BUCKETS + 1]; /* per bucket, not cumulative; last = +Inf */
    uint64_t sum_us;
} metrics_histogram;

typedef struct metrics_script_histogram {
    uint64_t buckets[METRICS_SCRIPT_BUCKETS + 1];
    uint64_t sum_us;
} metrics_script_histogram;

typedef struct metrics_snapshot {
    const char *version;
    uint64_t grants[2]; /* lease, stream */
    uint64_t ends[METRICS_END_COUNT];
    uint64_t acquire_timeouts;
    uint64_t requests[16][METRICS_NCODES]; /* [method][code]; rows: metrics_nmethods */
    int64_t locks_held, waiters, streams_open, watchers, redis_up, long_held;
    metrics_histogram hist[METRICS_H_COUNT];
    metrics_script_histogram scripts[16]; /* rows: metrics_nscripts */
    size_t npools;
    const char *pool_names[METRICS_MAX_POOLS];
    int64_t pool_devices_held[METRICS_MAX_POOLS];
} metrics_snapshot;

void metrics_snapshot_take(metrics_snapshot *out, const char *version);
/* The Prometheus text exposition (format 0.0.4) of s: a heap string the
 * caller frees, length in *len; NULL on OOM. */
char *metrics_render(const metrics_snapshot *s, size_t *len);

#endif
