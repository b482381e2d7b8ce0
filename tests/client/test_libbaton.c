/*
 * libbaton against a real batond + redis-server (run through
 * tests/support/with_batond.sh, which exports BATON_TEST_TARGET and
 * BATON_TEST_REDIS_SOCK). Skips when BATON_TEST_TARGET is unset.
 * Waits are event-driven (condition variables, polls of a state) with
 * generous bounds that only catch hangs.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "baton/baton.h"

#define HANG_MS 10000 /* bound that only catches hangs */

static const char *target;
static baton_client *ca, *cb; /* two clients = two independent processes' worth */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    usleep((useconds_t)ms * 1000);
}

/* Polls until the lock leaves HELD or HANG_MS passes. */
static baton_lock_state wait_not_held(baton_lock *l)
{
    int64_t end = now_ms() + HANG_MS;
    while (baton_lock_state_get(l) == BATON_LOCK_HELD && now_ms() < end)
        sleep_ms(10);
    return baton_lock_state_get(l);
}

/* Runs a redis-cli command against the test Redis; returns its exit status. */
static int redis_cmd(const char *args)
{
    const char *sock = getenv("BATON_TEST_REDIS_SOCK");
    if (sock == NULL)
        return -1;
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "redis-cli -s '%s' %s >/dev/null", sock, args);
    return system(cmd);
}

static int group_setup(void **state)
{
    (void)state;
    target = getenv("BATON_TEST_TARGET");
    if (target == NULL)
        return 0;
    baton_client_options oa = {.owner = "holder-A"}, ob = {.owner = "client-B"};
    if (baton_client_new(target, &oa, &ca) != 0 || baton_client_new(target, &ob, &cb) != 0)
        return -1;
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    baton_client_free(ca);
    baton_client_free(cb);
    return 0;
}

#define NEED_SERVER()                                                                                        \
    do {                                                                                                     \
        if (target == NULL) {                                                                                \
            fprintf(stderr, "BATON_TEST_TARGET unset: skipped\n");                                           \
            skip();                                                                                          \
        }                                                                                                    \
    } while (0)

/* A stream-mode try-acquire of `key` on c succeeds and releases (`when`
 * names the moment in the failure message). */
static void assert_stream_lock_works(baton_client *c, const char *key, const char *when)
{
    baton_lock *l = NULL;
    baton_acquire_options o = {.mode = BATON_MODE_STREAM};
    int err = baton_try_acquire(c, key, &o, &l);
    if (err != 0)
        fail_msg("stream acquire %s: %s: %s", when, baton_error_name(err), baton_last_error());
    assert_int_equal(baton_release(l), 0);
    baton_lock_free(l);
}

/* ---- plain locks ---- */

static void test_try_busy_names_holder(void **state)
{
    (void)state;
    NEED_SERVER();
    baton_lock *a = NULL, *b = NULL;
    assert_int_equal(baton_try_acquire(ca, "t:busy", NULL, &a), 0);
    assert_string_equal(baton_lock_key(a), "t:busy");
    assert_int_equal(strlen(baton_lock_token(a)), 32);
    assert_int_equal(baton_lock_device(a), -1);
    assert_int_equal(baton_lock_state_get(a), BATON_LOCK_HELD);
    assert_string_equal(baton_lock_owner(a), "holder-A");

    assert_int_equal(baton_try_acquire(cb, "t:busy", NULL, &b), BATON_ERR_BUSY);
    assert_null(b);
    assert_non_null(strstr(baton_last_error(), "holder-A"));

    uint64_t f1 = baton_lock_fencing(a);
    assert_int_equal(baton_release(a), 0);
    assert_int_equal(baton_lock_state_get(a), BATON_LOCK_RELEASED);
    baton_lock_free(a);

    assert_int_equal(baton_try_acquire(cb, "t:busy", NULL, &b), 0);
    assert_true(baton_lock_fencing(b) > f1);
    baton_lock_free(b); /* releases */
    assert_int_equal(baton_try_acquire(ca, "t:busy", NULL, &a), 0);
    baton_lock_free(a);
}

struct releaser {
    baton_lock *lock;
    int delay_ms;
};

static void *release_later(void *arg)
{
    struct releaser *r = arg;
    sleep_ms(r->delay_ms);
    baton_release(r->lock);
    return NULL;
}

static void count_queued(int64_t position, void *ud)
{
    int *n = ud;
    assert_true(position >= 1);
    (*n)++;
}

static void test_blocking_acquire_waits_for_release(void **state)
{
    (void)state;
    NEED_SERVER();
    baton_lock *a = NULL, *b = NULL;
    assert_int_equal(baton_try_acquire(ca, "t:wait", NULL, &a), 0);
    struct releaser r = {a, 300};
    pthread_t t;
    pthread_create(&t, NULL, release_later, &r);
    int queued = 0;
    baton_acquire_options o = {.wait_ms = HANG_MS, .on_queued = count_queued, .queued_ud = &queued};
    assert_int_equal(baton_acquire(cb, "t:wait", &o, &b), 0);
    pthread_join(t, NULL);
    assert_true(queued >= 1);
    assert_true(baton_lock_fencing(b) > baton_lock_fencing(a));
    baton_lock_free(a);
    baton_lock_free(b);
}

static void test_wait_times_out_busy(void **state)
{
    (void)state;
    NEED_SERVER();
    baton_lock *a = NULL, *b = NULL;
    assert_int_equal(baton_try_acquire(ca, "t:waitout", NULL, &a), 0);
    baton_acquire_options o = {.wait_ms = 200};
    assert_int_equal(baton_acquire(cb, "t:waitout", &o, &b), BATON_ERR_BUSY);
    assert_non_null(strstr(baton_last_error(), "holder-A"));
    baton_lock_free(a);
}

/* A wait the server refuses must come back as its INVALID_ARGUMENT, in both
 * modes: the client adds its call timeout to wait_ms and must not overflow
 * on the way (UBSan aborts the sanitizer run if it does). */
static void test_huge_wait_refused(void **state)
{
    (void)state;
    NEED_SERVER();
    baton_mode modes[] = {BATON_MODE_LEASE, BATON_MODE_STREAM};
    for (size_t i = 0; i < 2; i++) {
        baton_lock *l = NULL;
        baton_acquire_options o = {.wait_ms = INT64_MAX, .mode = modes[i]};
        assert_int_equal(baton_acquire(ca, "t:hugewait", &o, &l), BATON_ERR_INVALID);
        assert_null(l);
        assert_non_null(strstr(baton_last_error(), "wait_ms"));
    }
}

static void test_stale_token_not_held(void **state)
{
    (void)state;
    NEED_SERVER();
    baton_lock *a = NULL;
    assert_int_equal(baton_try_acquire(ca, "t:stale", NULL, &a), 0);
    char token[64];
    snprintf(token, sizeof token, "%s", baton_lock_token(a));
    assert_int_equal(baton_renew_token(cb, "t:stale", token, 5000, NULL), 0);
    assert_int_equal(baton_release_token(cb, "t:stale", token), 0);
    /* The handle's token is stale now. */
    assert_int_equal(baton_release_token(cb, "t:stale", token), BATON_ERR_NOT_HELD);
    assert_int_equal(baton_renew_token(cb, "t:stale", token, 0, NULL), BATON_ERR_NOT_HELD);
    assert_int_equal(baton_renew(a, 0), BATON_ERR_NOT_HELD);
    assert_int_equal(baton_lock_state_get(a), BATON_LOCK_LOST);
    baton_lock_free(a);

    /* A stale token never touches the real holder. */
    baton_lock *b = NULL;
    assert_int_equal(baton_try_acquire(cb, "t:stale", NULL, &b), 0);
    assert_int_equal(baton_release_token(ca, "t:stale", token), BATON_ERR_NOT_HELD);
    assert_non_null(strstr(baton_last_error(), "client-B"));
    baton_description d;
    assert_int_equal(baton_describe(ca, "t:stale", &d), 0);
    assert_true(d.held);
    assert_string_equal(d.owner, "client-B");
    assert_int_equal(d.fencing, baton_lock_fencing(b));
    baton_lock_free(b);
    assert_int_equal(baton_describe(ca, "t:stale", &d), 0);
    assert_false(d.held);
}

static void test_renew_and_force_release(void **state)
{
    (void)state;
    NEED_SERVER();
    baton_lock *a = NULL;
    baton_acquire_options o = {.ttl_ms = 5000};
    assert_int_equal(baton_try_acquire(ca, "t:renew", &o, &a), 0);
    assert_int_equal(baton_lock_ttl_ms(a), 5000);
    assert_int_equal(baton_renew(a, 20000), 0);
    assert_int_equal(baton_lock_ttl_ms(a), 20000);
    assert_int_equal(baton_force_release(cb, "t:renew", baton_lock_fencing(a) + 1), BATON_ERR_NOT_HELD);
    assert_int_equal(baton_force_release(cb, "t:renew", baton_lock_fencing(a)), 0);
    assert_int_equal(baton_release(a), BATON_ERR_NOT_HELD);
    assert_int_equal(baton_lock_state_get(a), BATON_LOCK_LOST);
    baton_lock_free(a);
}

/* Waits until batond (asked through c) has exactly `n` waiters queued for
 * `key`, or fails after HANG_MS. */
static void wait_waiters(baton_client *c, const char *key, int64_t n)
{
    baton_description d = {0};
    int64_t end = now_ms() + HANG_MS;
    for (;;) {
        assert_int_equal(baton_describe(c, key, &d), 0);
        if (d.waiters == n || now_ms() >= end)
            break;
        sleep_ms(10);
    }
    assert_int_equal(d.waiters, n);
}

/* ---- auto-renew and loss ---- */

struct lost_rec {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int calls;
    int err;
    baton_lock_state state_in_cb;
    int64_t at_ms; /* when the callback ran */
};
#define LOST_REC_INIT {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0, 0}

static void on_lost(baton_lock *l, int err, const char *msg, void *ud)
{
    struct lost_rec *r = ud;
    assert_non_null(msg);
    pthread_mutex_lock(&r->mu);
    r->calls++;
    r->err = err;
    r->state_in_cb = baton_lock_state_get(l);
    r->at_ms = now_ms();
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static int wait_lost(struct lost_rec *r)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += HANG_MS / 1000;
    pthread_mutex_lock(&r->mu);
    while (r->calls == 0 && pthread_cond_timedwait(&r->cv, &r->mu, &ts) == 0)
        ;
    int n = r->calls;
    pthread_mutex_unlock(&r->mu);
    return n;
}

static void test_auto_renew_keeps_short_ttl_alive(void **state)
{
    (void)state;
    NEED_SERVER();
    struct lost_rec rec = LOST_REC_INIT;
    baton_lock *a = NULL, *b = NULL;
    /* 1 s: short, yet with room for a stalled 2-core CI machine. */
    baton_acquire_options o = {.ttl_ms = 1000, .auto_renew = 1, .on_lost = on_lost, .lost_ud = &rec};
    assert_int_equal(baton_try_acquire(ca, "t:autorenew", &o, &a), 0);
    /* Five TTLs: without renewal the lock would be gone after the first. */
    for (int i = 0; i < 5; i++) {
        sleep_ms(1000);
        assert_int_equal(baton_try_acquire(cb, "t:autorenew", NULL, &b), BATON_ERR_BUSY);
    }
    assert_int_equal(baton_lock_state_get(a), BATON_LOCK_HELD);
    assert_int_equal(rec.calls, 0);
    baton_description d;
    assert_int_equal(baton_describe(cb, "t:autorenew", &d), 0);
    assert_true(d.held);
    assert_int_equal(d.fencing, baton_lock_fencing(a));
    assert_int_equal(baton_release(a), 0);
    baton_lock_free(a);
    assert_int_equal(rec.calls, 0);
}

static void test_lease_loss_reported_when_key_deleted(void **state)
{
    (void)state;
    NEED_SERVER();
    struct lost_rec rec = LOST_REC_INIT;
    baton_lock *a = NULL;
    baton_acquire_options o = {.ttl_ms = 600, .auto_renew = 1, .on_lost = on_lost, .lost_ud = &rec};
    assert_int_equal(baton_try_acquire(ca, "t:lostlease", &o, &a), 0);
    assert_int_equal(redis_cmd("DEL 'baton:{t:lostlease}:lock'"), 0);
    assert_int_equal(wait_lost(&rec), 1);
    assert_int_equal(rec.err, BATON_ERR_LOST);
    assert_int_equal(rec.state_in_cb, BATON_LOCK_LOST);
    assert_int_equal(baton_lock_state_get(a), BATON_LOCK_LOST);
    baton_lock_free(a);
    assert_int_equal(rec.calls, 1);
}

static void test_stream_loss_reported_when_key_deleted(void **state)
{
    (void)state;
    NEED_SERVER();
    struct lost_rec rec = LOST_REC_INIT;
    baton_lock *a = NULL;
    baton_acquire_options o = {.ttl_ms = 300, .mode = BATON_MODE_STREAM, .on_lost = on_lost, .lost_ud = &rec};
    assert_int_equal(baton_try_acquire(ca, "t:loststream", &o, &a), 0);
    assert_int_equal(redis_cmd("DEL 'baton:{t:loststream}:lock'"), 0);
    assert_int_equal(wait_lost(&rec), 1);
    assert_int_equal(rec.err, BATON_ERR_LOST);
    assert_int_equal(baton_lock_state_get(a), BATON_LOCK_LOST);
    baton_lock_free(a);
}

/* ---- stream mode ---- */

static void test_stream_free_releases(void **state)
{
    (void)state;
    NEED_SERVER();
    baton_lock *a = NULL, *b = NULL;
    baton_acquire_options o = {.ttl_ms = 1000, .mode = BATON_MODE_STREAM};
    assert_int_equal(baton_try_acquire(ca, "t:stream", &o, &a), 0);
    assert_int_equal(baton_lock_mode(a), BATON_MODE_STREAM);
    sleep_ms(2300); /* beyond the TTL: the server keeps renewing while the stream is open */
    assert_int_equal(baton_try_acquire(cb, "t:stream", NULL, &b), BATON_ERR_BUSY);
    assert_int_equal(baton_lock_state_get(a), BATON_LOCK_HELD);
    baton_lock_free(a);
    assert_int_equal(baton_try_acquire(cb, "t:stream", NULL, &b), 0);
    baton_lock_free(b);
}

static void test_stream_released_by_token_elsewhere(void **state)
{
    (void)state;
    NEED_SERVER();
    struct lost_rec rec = LOST_REC_INIT;
    baton_lock *a = NULL;
    baton_acquire_options o = {.mode = BATON_MODE_STREAM, .on_lost = on_lost, .lost_ud = &rec};
    assert_int_equal(baton_try_acquire(ca, "t:streamtok", &o, &a), 0);
    assert_int_equal(baton_release_token(cb, "t:streamtok", baton_lock_token(a)), 0);
    assert_int_equal(wait_not_held(a), BATON_LOCK_RELEASED);
    assert_int_equal(rec.calls, 0);
    assert_int_equal(baton_release(a), 0);
    baton_lock_free(a);
}

/* ---- pools ---- */

static void test_pool_grants_distinct_devices(void **state)
{
    (void)state;
    NEED_SERVER();
    baton_lock *l[3] = {NULL, NULL, NULL}, *extra = NULL;
    int seen[3] = {0, 0, 0};
    baton_acquire_options o = {.mode = BATON_MODE_STREAM};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(baton_acquire_pool(i % 2 ? ca : cb, "t-gpu", 3, &o, &l[i]), 0);
        int d = baton_lock_device(l[i]);
        assert_true(d >= 0 && d < 3);
        assert_false(seen[d]);
        seen[d] = 1;
        char key[64], cvd[16];
        snprintf(key, sizeof key, "t-gpu/%d", d);
        assert_string_equal(baton_lock_key(l[i]), key);
        assert_int_equal(baton_lock_cuda_visible_devices(l[i], cvd, sizeof cvd), 0);
        snprintf(key, sizeof key, "%d", d);
        assert_string_equal(cvd, key);
        assert_int_equal(baton_lock_cuda_visible_devices(l[i], cvd, 1), BATON_ERR_INVALID);
    }
    o.wait_ms = 0;
    assert_int_equal(baton_acquire_pool(ca, "t-gpu", 3, &o, &extra), BATON_ERR_BUSY);
    int freed = baton_lock_device(l[1]);
    baton_lock_free(l[1]);
    assert_int_equal(baton_acquire_pool(ca, "t-gpu", 3, &o, &extra), 0);
    assert_int_equal(baton_lock_device(extra), freed);
    baton_lock_free(extra);
    baton_lock_free(l[0]);
    baton_lock_free(l[2]);

    baton_lock *plain = NULL;
    char buf[8];
    assert_int_equal(baton_try_acquire(ca, "t:notpool", NULL, &plain), 0);
    assert_int_equal(baton_lock_cuda_visible_devices(plain, buf, sizeof buf), BATON_ERR_INVALID);
    baton_lock_free(plain);
}

/* count: several devices under one lock, every one exposed, one release for
 * all; named devices (cli-mig of with_batond.sh) in CUDA_VISIBLE_DEVICES. */
static void test_pool_count_grants_every_device(void **state)
{
    (void)state;
    NEED_SERVER();
    baton_lock *one = NULL, *two = NULL, *busy = NULL;
    baton_acquire_options o = {.mode = BATON_MODE_STREAM};
    assert_int_equal(baton_acquire_pool(ca, "t-multi", 4, &o, &one), 0);
    assert_int_equal(baton_lock_device_count(one), 1);
    o.count = 2;
    assert_int_equal(baton_acquire_pool(cb, "t-multi", 4, &o, &two), 0);
    assert_int_equal(baton_lock_device_count(two), 2);
    assert_int_equal(baton_lock_device_at(two, 0), 1);
    assert_int_equal(baton_lock_device_at(two, 1), 2);
    assert_int_equal(baton_lock_device_at(two, 2), -1);
    assert_int_equal(baton_lock_device(two), 1);
    assert_true(baton_lock_device_fencing(two, 0) == baton_lock_fencing(two));
    assert_true(baton_lock_device_fencing(two, 1) > 0);
    assert_null(baton_lock_device_name(two, 0));
    char cvd[32];
    assert_int_equal(baton_lock_cuda_visible_devices(two, cvd, sizeof cvd), 0);
    assert_string_equal(cvd, "1,2");
    assert_int_equal(baton_lock_cuda_visible_devices(two, cvd, 3), BATON_ERR_INVALID);
    o.count = 2;
    o.wait_ms = 0;
    /* one device free, two wanted */
    assert_int_equal(baton_acquire_pool(ca, "t-multi", 4, &o, &busy), BATON_ERR_BUSY);
    baton_lock_free(two); /* frees both */
    o.count = 3;
    assert_int_equal(baton_acquire_pool(ca, "t-multi", 4, &o, &busy), 0);
    assert_int_equal(baton_lock_device_count(busy), 3);
    baton_lock_free(busy);
    baton_lock_free(one);

    baton_lock *named = NULL;
    o.count = 2;
    o.mode = BATON_MODE_LEASE;
    assert_int_equal(baton_acquire_pool(ca, "cli-mig", 3, &o, &named), 0);
    assert_string_equal(baton_lock_device_name(named, 1), "MIG-b");
    assert_int_equal(baton_lock_cuda_visible_devices(named, cvd, sizeof cvd), 0);
    assert_string_equal(cvd, "MIG-a,MIG-b");
    assert_int_equal(baton_release(named), 0);
    baton_lock_free(named);

    baton_lock *plain = NULL;
    assert_int_equal(baton_acquire(ca, "t:key", &o, &plain), BATON_ERR_INVALID); /* count on a key */
}

/* ---- watch ---- */

#define MAX_EV 64
struct watch_rec {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int n;
    baton_event_type type[MAX_EV];
    char key[MAX_EV][64];
    char owner[MAX_EV][64];
    uint64_t fencing[MAX_EV];
    int ended;
    int end_err;
};

static void on_event(const baton_event *ev, int err, const char *msg, void *ud)
{
    struct watch_rec *r = ud;
    pthread_mutex_lock(&r->mu);
    if (ev == NULL) {
        r->ended++;
        r->end_err = err;
    } else if (r->n < MAX_EV) {
        r->type[r->n] = ev->type;
        snprintf(r->key[r->n], 64, "%s", ev->key);
        snprintf(r->owner[r->n], 64, "%s", ev->owner);
        r->fencing[r->n] = ev->fencing;
        r->n++;
    }
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static int wait_events(struct watch_rec *r, int n)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += HANG_MS / 1000;
    pthread_mutex_lock(&r->mu);
    while (r->n < n && pthread_cond_timedwait(&r->cv, &r->mu, &ts) == 0)
        ;
    int got = r->n;
    pthread_mutex_unlock(&r->mu);
    return got;
}

static void test_watch_events_in_order(void **state)
{
    (void)state;
    NEED_SERVER();
    static struct watch_rec r = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    baton_watcher *w = NULL;
    assert_int_equal(baton_watch(cb, NULL, "t:w:", on_event, &r, &w), 0);
    /* The server subscribes asynchronously: probe until an event comes through. */
    baton_lock *p = NULL;
    int64_t end = now_ms() + HANG_MS;
    while (wait_events(&r, 0) == 0 && now_ms() < end) {
        assert_int_equal(baton_try_acquire(ca, "t:w:probe", NULL, &p), 0);
        baton_lock_free(p);
        sleep_ms(50);
    }
    assert_true(r.n > 0);
    /* Let the last probe's events drain: its RELEASED is the marker. */
    int base;
    for (;;) {
        pthread_mutex_lock(&r.mu);
        int done = strcmp(r.key[r.n - 1], "t:w:probe") == 0 && r.type[r.n - 1] == BATON_EVENT_RELEASED;
        base = r.n;
        pthread_mutex_unlock(&r.mu);
        if (done || now_ms() > end)
            break;
        sleep_ms(10);
    }

    baton_lock *a = NULL;
    uint64_t f[3];
    for (int i = 0; i < 3; i++) {
        assert_int_equal(baton_try_acquire(ca, "t:w:k", NULL, &a), 0);
        f[i] = baton_lock_fencing(a);
        baton_lock_free(a);
    }
    baton_watcher *other = NULL; /* a key watch on an unrelated key sees nothing of this */
    assert_int_equal(baton_watch(cb, "t:x:k", NULL, on_event, &r, &other), 0);
    baton_watch_free(other);
    assert_true(wait_events(&r, base + 6) >= base + 6);
    pthread_mutex_lock(&r.mu);
    int k = base;
    for (int i = 0; i < 3; i++) {
        assert_string_equal(r.key[k], "t:w:k");
        assert_int_equal(r.type[k], BATON_EVENT_ACQUIRED);
        assert_int_equal(r.fencing[k], f[i]);
        assert_string_equal(r.owner[k], "holder-A");
        k++;
        assert_int_equal(r.type[k], BATON_EVENT_RELEASED);
        assert_int_equal(r.fencing[k], f[i]);
        k++;
    }
    int ended_before = r.ended; /* the other watch's end callback */
    pthread_mutex_unlock(&r.mu);
    assert_int_equal(ended_before, 1);
    baton_watch_free(w);
    assert_int_equal(r.ended, 2);
    assert_int_equal(r.end_err, BATON_ERR_CANCELLED);
    assert_string_equal(baton_event_type_name(BATON_EVENT_FORCE_RELEASED), "FORCE_RELEASED");
}

/* ---- async ---- */

struct async_rec {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int calls;
    int err;
    baton_lock *lock;
};

static void on_acquired(int err, baton_lock *lock, const char *msg, void *ud)
{
    struct async_rec *r = ud;
    assert_non_null(msg);
    pthread_mutex_lock(&r->mu);
    r->calls++;
    r->err = err;
    r->lock = lock;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static int wait_async(struct async_rec *r)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += HANG_MS / 1000;
    pthread_mutex_lock(&r->mu);
    while (r->calls == 0 && pthread_cond_timedwait(&r->cv, &r->mu, &ts) == 0)
        ;
    int n = r->calls;
    pthread_mutex_unlock(&r->mu);
    return n;
}

static void test_async_acquire_and_cancel(void **state)
{
    (void)state;
    NEED_SERVER();
    struct async_rec r = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, NULL};
    baton_lock *a = NULL;
    baton_async *as = NULL;
    assert_int_equal(baton_try_acquire(ca, "t:async", NULL, &a), 0);
    baton_acquire_options o = {.wait_ms = HANG_MS, .mode = BATON_MODE_STREAM};
    assert_int_equal(baton_acquire_async(cb, "t:async", NULL, 0, &o, on_acquired, &r, &as), 0);
    /* Queued behind a: wait until the server lists it as a waiter. */
    wait_waiters(ca, "t:async", 1);
    assert_int_equal(r.calls, 0);
    baton_lock_free(a);
    assert_int_equal(wait_async(&r), 1);
    assert_int_equal(r.err, 0);
    assert_non_null(r.lock);
    assert_string_equal(baton_lock_owner(r.lock), "client-B");
    baton_async_free(as);
    assert_int_equal(r.calls, 1);

    /* Cancel while queued behind r.lock. */
    struct async_rec r2 = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, NULL};
    assert_int_equal(baton_acquire_async(ca, "t:async", NULL, 0, &o, on_acquired, &r2, &as), 0);
    baton_async_cancel(as);
    assert_int_equal(wait_async(&r2), 1);
    assert_int_equal(r2.err, BATON_ERR_CANCELLED);
    assert_null(r2.lock);
    baton_async_free(as);
    baton_lock_free(r.lock);

    /* Pool form. */
    struct async_rec r3 = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, NULL};
    assert_int_equal(baton_acquire_async(ca, NULL, "t-apool", 2, &o, on_acquired, &r3, &as), 0);
    assert_int_equal(wait_async(&r3), 1);
    assert_int_equal(r3.err, 0);
    assert_true(baton_lock_device(r3.lock) >= 0);
    baton_async_free(as);
    baton_lock_free(r3.lock);
}

/* ---- sessions ---- */

/* Lease operations go over pooled Session streams by default; the same
 * operations with sessions disabled use one RPC each. Both must behave the
 * same, including a cancelled lease acquire leaving the queue. */
static void lease_cycle_and_cancel(baton_client *c, const char *key)
{
    baton_lock *l = NULL, *other = NULL;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(baton_try_acquire(c, key, NULL, &l), 0);
        assert_int_equal(baton_renew(l, 5000), 0);
        assert_int_equal(baton_lock_ttl_ms(l), 5000);
        assert_int_equal(baton_try_acquire(cb, key, NULL, &other), BATON_ERR_BUSY);
        assert_int_equal(baton_release(l), 0);
        assert_int_equal(baton_release_token(c, key, baton_lock_token(l)), BATON_ERR_NOT_HELD);
        baton_lock_free(l);
    }
    assert_int_equal(baton_try_acquire(cb, key, NULL, &other), 0);
    struct async_rec r = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, NULL};
    baton_async *as = NULL;
    baton_acquire_options o = {.wait_ms = HANG_MS};
    assert_int_equal(baton_acquire_async(c, key, NULL, 0, &o, on_acquired, &r, &as), 0);
    wait_waiters(c, key, 1);
    baton_async_cancel(as);
    assert_int_equal(wait_async(&r), 1);
    assert_int_equal(r.err, BATON_ERR_CANCELLED);
    baton_async_free(as);
    wait_waiters(c, key, 0);
    assert_int_equal(baton_release(other), 0);
    baton_lock_free(other);
}

static void test_lease_ops_with_and_without_sessions(void **state)
{
    (void)state;
    NEED_SERVER();
    lease_cycle_and_cancel(ca, "t:sess-on");
    baton_client *plain = NULL;
    baton_client_options o = {.owner = "plain", .disable_sessions = 1};
    assert_int_equal(baton_client_new(target, &o, &plain), 0);
    lease_cycle_and_cancel(plain, "t:sess-off");
    baton_client_free(plain);
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return ntohs(a.sin_port);
}

static pid_t spawned = -1; /* our own batond, stopped by spawned_teardown if a test fails */

static int spawned_teardown(void **state)
{
    (void)state;
    if (spawned > 0) {
        kill(spawned, SIGKILL);
        waitpid(spawned, NULL, 0);
        spawned = -1;
    }
    return 0;
}

/* Starts a batond of our own on `port` against the test Redis. */
static pid_t spawn_batond(const char *dir, int port)
{
    char conf[512], log[512];
    snprintf(conf, sizeof conf, "%s/batond.yaml", dir);
    snprintf(log, sizeof log, "%s/batond.log", dir);
    FILE *f = fopen(conf, "w");
    assert_non_null(f);
    fprintf(f, "listen: \"127.0.0.1:%d\"\nlog_level: warn\nredis:\n  address: \"unix:%s\"\n", port,
            getenv("BATON_TEST_REDIS_SOCK"));
    fclose(f);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the test */
        FILE *out = freopen(log, "a", stderr);
        (void)out;
        execl(getenv("BATOND"), "batond", "--config", conf, (char *)NULL);
        _exit(127);
    }
    spawned = pid;
    return pid;
}

/* Waits until `c` gets through to a serving batond (Describe succeeds). */
static void wait_serving(baton_client *c)
{
    baton_description d;
    int64_t end = now_ms() + HANG_MS;
    while (baton_describe(c, "t:ready", &d) != 0 && now_ms() < end)
        sleep_ms(20);
    assert_int_equal(baton_describe(c, "t:ready", &d), 0);
}

static void stop_batond(pid_t pid)
{
    int st = 0;
    kill(pid, SIGTERM);
    assert_int_equal(waitpid(pid, &st, 0), pid);
    spawned = -1;
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

/* A batond of the test's own (to stop, restart or freeze), on a free port. */
struct private_batond {
    char dir[64];
    int port;
    char addr[64];
    pid_t pid;
};

static void private_start(struct private_batond *p)
{
    snprintf(p->dir, sizeof p->dir, "/tmp/baton-private.XXXXXX");
    assert_non_null(mkdtemp(p->dir));
    p->port = free_port();
    assert_true(p->port > 0);
    snprintf(p->addr, sizeof p->addr, "127.0.0.1:%d", p->port);
    p->pid = spawn_batond(p->dir, p->port);
}

static void private_end(struct private_batond *p)
{
    stop_batond(p->pid);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", p->dir);
    assert_int_equal(system(cmd), 0);
}

#define NEED_PRIVATE_BATOND()                                                                                \
    do {                                                                                                     \
        NEED_SERVER();                                                                                       \
        if (getenv("BATOND") == NULL || getenv("BATON_TEST_REDIS_SOCK") == NULL)                             \
            skip();                                                                                          \
    } while (0)

/* A private batond and a client of it that has taken and released `key`
 * once, so its channel and a pooled session are up. */
static baton_client *private_client(struct private_batond *p, const char *key)
{
    private_start(p);
    baton_client *c = NULL;
    assert_int_equal(baton_client_new(p->addr, NULL, &c), 0);
    wait_serving(c);
    baton_lock *l = NULL;
    assert_int_equal(baton_try_acquire(c, key, NULL, &l), 0);
    assert_int_equal(baton_release(l), 0);
    baton_lock_free(l);
    return c;
}

/* Idle pooled sessions die with the batond that served them; after a
 * restart the next operations must not fail on them. */
static void test_sessions_survive_batond_restart(void **state)
{
    (void)state;
    NEED_PRIVATE_BATOND();
    struct private_batond p;
    baton_client *c = private_client(&p, "t:restart");
    baton_lock *l = NULL;

    stop_batond(p.pid);
    p.pid = spawn_batond(p.dir, p.port);
    wait_serving(c); /* the channel is connected again; its pooled session is not */
    for (int i = 0; i < 3; i++) {
        int err = baton_try_acquire(c, "t:restart", NULL, &l);
        if (err != 0)
            fail_msg("acquire %d after restart: %s: %s", i, baton_error_name(err), baton_last_error());
        assert_int_equal(baton_release(l), 0);
        baton_lock_free(l);
    }
    baton_client_free(c);
    private_end(&p);
}

/* A server that accepts TCP but never speaks HTTP/2: every operation must
 * end with the client's call timeout (TIMEOUT), sessions or not; a session
 * opened on that channel would wait for gRPC's 20 s connect timeout and
 * report UNAVAILABLE instead. */
static void test_call_timeout_holds_before_the_channel_is_up(void **state)
{
    (void)state;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(fd, 16), 0); /* never accepted: the kernel completes the handshake */
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", ntohs(a.sin_port));
    baton_client *c = NULL;
    baton_client_options o = {.call_timeout_ms = 300};
    assert_int_equal(baton_client_new(addr, &o, &c), 0);
    int err = baton_release_token(c, "t:silent", "00000000000000000000000000000000");
    if (err != BATON_ERR_TIMEOUT)
        fail_msg("release: %s: %s", baton_error_name(err), baton_last_error());
    int64_t granted = 0;
    err = baton_renew_token(c, "t:silent", "00000000000000000000000000000000", 0, &granted);
    if (err != BATON_ERR_TIMEOUT)
        fail_msg("renew: %s: %s", baton_error_name(err), baton_last_error());
    baton_client_free(c);
    close(fd);
}

/* ---- stream holds on the shared hold session ---- */

static int thread_count(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    int n = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "Threads: %d", &n) == 1)
            break;
    if (f)
        fclose(f);
    return n;
}

static int held_at_server(const char *key, uint64_t fencing)
{
    baton_description d;
    assert_int_equal(baton_describe(cb, key, &d), 0);
    return d.held && d.fencing == fencing;
}

/* Stream holds share one session and its reader: 40 of them start no
 * thread. Each still ends alone: lost (key deleted), released by token
 * elsewhere, detached, released; the others stay held at the server. */
static void test_stream_holds_share_one_session(void **state)
{
    (void)state;
    NEED_SERVER();
    enum { N = 40 };
    baton_client *c = NULL;
    baton_client_options co = {.owner = "holds"};
    assert_int_equal(baton_client_new(target, &co, &c), 0);
    struct lost_rec rec[N];
    baton_lock *l[N];
    char key[N][32];
    int before = 0;
    for (int i = 0; i < N; i++) {
        rec[i] = (struct lost_rec)LOST_REC_INIT;
        snprintf(key[i], sizeof key[i], "t:holds/%d", i);
        baton_acquire_options o = {.ttl_ms = 500, .mode = BATON_MODE_STREAM, .on_lost = on_lost,
                                   .lost_ud = &rec[i]};
        assert_int_equal(baton_try_acquire(c, key[i], &o, &l[i]), 0);
        if (i == 0)
            before = thread_count(); /* the first may run as its own RPC while the channel connects */
    }
    int after = thread_count();
    if (after > before + 4)
        fail_msg("%d stream holds started %d threads", N - 1, after - before);

    assert_int_equal(redis_cmd("DEL 'baton:{t:holds/0}:lock'"), 0);
    assert_int_equal(wait_lost(&rec[0]), 1);
    assert_int_equal(rec[0].err, BATON_ERR_LOST);
    assert_int_equal(baton_release_token(cb, key[1], baton_lock_token(l[1])), 0);
    assert_int_equal(wait_not_held(l[1]), BATON_LOCK_RELEASED);
    uint64_t f2 = baton_lock_fencing(l[2]);
    baton_lock_detach(l[2]);
    l[2] = NULL;
    baton_lock *b = NULL;
    assert_int_equal(baton_try_acquire(cb, key[2], NULL, &b), 0); /* detached = released */
    assert_true(baton_lock_fencing(b) > f2);
    assert_int_equal(baton_release(b), 0);
    baton_lock_free(b);
    assert_int_equal(baton_release(l[3]), 0);
    assert_int_equal(baton_lock_state_get(l[3]), BATON_LOCK_RELEASED);
    assert_false(held_at_server(key[3], baton_lock_fencing(l[3])));

    sleep_ms(1200); /* beyond the TTL: the rest are kept alive by the server */
    for (int i = 4; i < N; i++) {
        assert_int_equal(baton_lock_state_get(l[i]), BATON_LOCK_HELD);
        assert_true(held_at_server(key[i], baton_lock_fencing(l[i])));
        assert_int_equal(rec[i].calls, 0);
    }
    for (int i = 0; i < N; i++)
        baton_lock_free(l[i]); /* releases 4..N-1 */
    for (int i = 4; i < N; i++)
        assert_false(held_at_server(key[i], 0) || baton_try_acquire(cb, key[i], NULL, &b) != 0 ||
                     (baton_lock_free(b), 0));
    assert_int_equal(rec[1].calls + rec[3].calls, 0);
    baton_client_free(c);
}

/* An on_lost that takes another stream-mode lock: the callback runs off
 * the thread that reads the hold session, so the new acquire is answered
 * (not stuck until its timeout behind its own reader). */
struct reacquire_rec {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    baton_client *c;
    int done, err;
    int64_t ms;
    baton_lock *l;
};

static void on_lost_reacquire(baton_lock *lost, int err, const char *msg, void *ud)
{
    (void)lost, (void)err, (void)msg;
    struct reacquire_rec *r = ud;
    baton_acquire_options o = {.mode = BATON_MODE_STREAM, .wait_ms = 3000};
    int64_t t0 = now_ms();
    baton_lock *l = NULL;
    int e = baton_acquire(r->c, "t:reacq-b", &o, &l);
    pthread_mutex_lock(&r->mu);
    r->err = e;
    r->ms = now_ms() - t0;
    r->l = l;
    r->done = 1;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static void test_stream_on_lost_may_acquire_again(void **state)
{
    (void)state;
    NEED_SERVER();
    baton_client *c = NULL;
    baton_client_options co = {.owner = "reacq", .call_timeout_ms = 2000};
    assert_int_equal(baton_client_new(target, &co, &c), 0);
    struct reacquire_rec r = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, c, 0, 0, 0, NULL};
    baton_lock *warm = NULL, *a = NULL;
    baton_acquire_options so = {.mode = BATON_MODE_STREAM};
    assert_int_equal(baton_try_acquire(c, "t:reacq-w", &so, &warm), 0); /* the channel is up now */
    baton_acquire_options o = {.ttl_ms = 300, .mode = BATON_MODE_STREAM, .on_lost = on_lost_reacquire,
                               .lost_ud = &r};
    assert_int_equal(baton_try_acquire(c, "t:reacq-a", &o, &a), 0);
    assert_int_equal(redis_cmd("DEL 'baton:{t:reacq-a}:lock'"), 0);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += HANG_MS / 1000;
    pthread_mutex_lock(&r.mu);
    while (!r.done && pthread_cond_timedwait(&r.cv, &r.mu, &ts) == 0)
        ;
    pthread_mutex_unlock(&r.mu);
    assert_int_equal(r.done, 1);
    if (r.err != 0)
        fail_msg("acquire inside on_lost: %s after %lld ms", baton_error_name(r.err), (long long)r.ms);
    assert_int_equal(baton_lock_state_get(r.l), BATON_LOCK_HELD);
    baton_lock_free(r.l);
    baton_lock_free(a);
    baton_lock_free(warm);
    baton_client_free(c);
}

/* Threads of two clients take turns on one key in stream mode (one client's
 * holds multiplexed on its hold session): never two holders, fencing always
 * rising. */
struct mutex_run {
    pthread_mutex_t mu;
    int inside;
    uint64_t last;
    int errors;
    int cycles;
};

struct mutex_arg {
    struct mutex_run *run;
    baton_client *c;
};

static void *mutex_worker(void *arg)
{
    struct mutex_arg *a = arg;
    struct mutex_run *r = a->run;
    for (int i = 0; i < 25; i++) {
        baton_lock *l = NULL;
        baton_acquire_options o = {.mode = BATON_MODE_STREAM, .wait_ms = HANG_MS};
        if (baton_acquire(a->c, "t:smutex", &o, &l) != 0) {
            pthread_mutex_lock(&r->mu);
            r->errors++;
            pthread_mutex_unlock(&r->mu);
            continue;
        }
        pthread_mutex_lock(&r->mu);
        if (r->inside++ != 0 || baton_lock_fencing(l) <= r->last)
            r->errors++;
        r->last = baton_lock_fencing(l);
        pthread_mutex_unlock(&r->mu);
        usleep(200);
        pthread_mutex_lock(&r->mu);
        r->inside--;
        r->cycles++;
        pthread_mutex_unlock(&r->mu);
        if (baton_release(l) != 0) {
            pthread_mutex_lock(&r->mu);
            r->errors++;
            pthread_mutex_unlock(&r->mu);
        }
        baton_lock_free(l);
    }
    return NULL;
}

static void test_stream_holds_mutual_exclusion(void **state)
{
    (void)state;
    NEED_SERVER();
    struct mutex_run run = {PTHREAD_MUTEX_INITIALIZER, 0, 0, 0, 0};
    enum { T = 6 };
    pthread_t t[T];
    struct mutex_arg a[T];
    for (int i = 0; i < T; i++) {
        a[i] = (struct mutex_arg){&run, i < 4 ? ca : cb};
        assert_int_equal(pthread_create(&t[i], NULL, mutex_worker, &a[i]), 0);
    }
    for (int i = 0; i < T; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(run.errors, 0);
    assert_int_equal(run.cycles, T * 25);
}

/* A stream acquire that gets no answer in time (batond stopped) ends
 * alone: its cancel leaves the queue, and the hold already on the same
 * session stays held. */
static void test_stream_acquire_timeout_ends_only_itself(void **state)
{
    (void)state;
    NEED_PRIVATE_BATOND();
    struct private_batond p;
    private_start(&p);
    baton_client *c = NULL, *other = NULL;
    baton_client_options co = {.owner = "stopped", .call_timeout_ms = 300};
    assert_int_equal(baton_client_new(p.addr, &co, &c), 0);
    assert_int_equal(baton_client_new(p.addr, NULL, &other), 0);
    wait_serving(c);
    wait_serving(other);
    baton_lock *held = NULL, *blocker = NULL, *l = NULL;
    baton_acquire_options so = {.mode = BATON_MODE_STREAM, .ttl_ms = 2000};
    assert_int_equal(baton_try_acquire(c, "t:stop-held", &so, &held), 0);
    assert_int_equal(baton_try_acquire(other, "t:stop-wait", NULL, &blocker), 0);

    kill(p.pid, SIGSTOP);
    so.wait_ms = 200;
    int64_t t0 = now_ms();
    int err = baton_acquire(c, "t:stop-wait", &so, &l);
    if (err != BATON_ERR_TIMEOUT)
        fail_msg("acquire on a stopped batond: %s: %s", baton_error_name(err), baton_last_error());
    assert_true(now_ms() - t0 >= 500);
    kill(p.pid, SIGCONT);

    wait_waiters(other, "t:stop-wait", 0);
    baton_description d = {0};
    sleep_ms(2500); /* past the held lock's TTL: still renewed by the server */
    assert_int_equal(baton_lock_state_get(held), BATON_LOCK_HELD);
    assert_int_equal(baton_describe(other, "t:stop-held", &d), 0);
    assert_true(d.held && d.fencing == baton_lock_fencing(held));
    assert_int_equal(baton_release(blocker), 0);
    so.wait_ms = HANG_MS;
    assert_int_equal(baton_acquire(c, "t:stop-wait", &so, &l), 0); /* the session still works */
    baton_lock_free(l);
    baton_lock_free(held);
    baton_lock_free(blocker);
    baton_client_free(other);
    baton_client_free(c);
    private_end(&p);
}

/* A batond restart ends every stream hold of the session (UNAVAILABLE);
 * the next stream acquire opens a new session. */
static void test_stream_holds_lost_when_batond_stops(void **state)
{
    (void)state;
    NEED_PRIVATE_BATOND();
    struct private_batond p;
    private_start(&p);
    baton_client *c = NULL;
    assert_int_equal(baton_client_new(p.addr, NULL, &c), 0);
    wait_serving(c);
    struct lost_rec rec[3];
    baton_lock *l[3];
    for (int i = 0; i < 3; i++) {
        rec[i] = (struct lost_rec)LOST_REC_INIT;
        char key[32];
        snprintf(key, sizeof key, "t:restart-h/%d", i);
        baton_acquire_options o = {.mode = BATON_MODE_STREAM, .on_lost = on_lost, .lost_ud = &rec[i]};
        assert_int_equal(baton_try_acquire(c, key, &o, &l[i]), 0);
    }
    stop_batond(p.pid);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(wait_lost(&rec[i]), 1);
        assert_int_equal(rec[i].err, BATON_ERR_UNAVAILABLE);
        assert_int_equal(baton_lock_state_get(l[i]), BATON_LOCK_LOST);
        baton_lock_free(l[i]);
    }
    p.pid = spawn_batond(p.dir, p.port);
    wait_serving(c);
    assert_stream_lock_works(c, "t:restart-h/0", "after restart"); /* released at shutdown */
    baton_client_free(c);
    private_end(&p);
}

/* Returns once something accepts TCP connections on 127.0.0.1:port. */
static void wait_listening(int port)
{
    int64_t end = now_ms() + HANG_MS;
    for (;;) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        assert_true(fd >= 0);
        int ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
        close(fd);
        if (ok)
            return;
        assert_true(now_ms() < end);
        sleep_ms(10);
    }
}

/* batond is down for 20 s, then back. Meanwhile every operation fails with
 * UNAVAILABLE (none hangs or times out). Once batond listens again, the
 * client gets through within 2.5 s: its reconnect backoff is capped at 1 s
 * and a thread polls the connection back up. With gRPC's defaults (backoff
 * grown to 8-13 s by then, a new connection seen only when something polls)
 * this took 4-9 s. */
static void test_reconnects_soon_after_an_outage(void **state)
{
    (void)state;
    NEED_PRIVATE_BATOND();
    struct private_batond p;
    baton_client *c = private_client(&p, "t:outage");
    baton_lock *l = NULL;

    assert_int_equal(kill(p.pid, SIGKILL), 0);
    assert_int_equal(waitpid(p.pid, NULL, 0), p.pid);
    spawned = -1;
    int tries = 0;
    for (int64_t end = now_ms() + 20000; now_ms() < end; tries++) {
        int err = baton_try_acquire(c, "t:outage", NULL, &l);
        if (err != BATON_ERR_UNAVAILABLE)
            fail_msg("acquire %d while batond is down: %s: %s", tries, baton_error_name(err), baton_last_error());
        sleep_ms(100);
    }
    assert_true(tries > 10);

    p.pid = spawn_batond(p.dir, p.port);
    wait_listening(p.port);
    int64_t up = now_ms();
    int err;
    while ((err = baton_try_acquire(c, "t:outage", NULL, &l)) != 0 && now_ms() - up < HANG_MS) {
        assert_int_equal(err, BATON_ERR_UNAVAILABLE);
        sleep_ms(20);
    }
    int64_t took = now_ms() - up;
    if (getenv("BATON_TEST_VERBOSE"))
        fprintf(stderr, "reconnected %lld ms after batond was back\n", (long long)took);
    if (err != 0 || took > 2500)
        fail_msg("first acquire %lld ms after batond was back: %s", (long long)took, baton_error_name(err));
    assert_int_equal(baton_release(l), 0);
    baton_lock_free(l);
    baton_client_free(c);
    private_end(&p);
}

/* ---- a batond that hangs, a network that goes silent ---- */

/* A blocking acquire on another thread that records when it returned. */
struct timed_acquire {
    baton_client *c;
    const char *key;
    int64_t wait_ms;
    int err;
    baton_lock *lock;
    int64_t at_ms;
};

static void *timed_acquire_main(void *arg)
{
    struct timed_acquire *t = arg;
    baton_acquire_options o = {.wait_ms = t->wait_ms};
    t->err = baton_acquire(t->c, t->key, &o, &t->lock);
    t->at_ms = now_ms();
    return NULL;
}

/* The loss must reach the holder before the other client is granted; how
 * much before is the holder's time to stop using what the lock guards. */
static void assert_lost_first(const char *what, struct lost_rec *lost, int err, struct timed_acquire *next,
                              int64_t margin_ms, int64_t t0)
{
    if (getenv("BATON_TEST_VERBOSE"))
        fprintf(stderr, "%s: holder told after %lld ms, next holder granted after %lld ms\n", what,
                (long long)(lost->at_ms - t0), (long long)(next->at_ms - t0));
    assert_int_equal(lost->err, err);
    if (next->err != 0)
        fail_msg("%s: the waiter was not granted: %s: %s", what, baton_error_name(next->err),
                 baton_last_error());
    if (lost->at_ms + margin_ms > next->at_ms)
        fail_msg("%s: the next holder was granted %lld ms after t0, the holder told after %lld ms "
                 "(wanted %lld ms before)",
                 what, (long long)(next->at_ms - t0), (long long)(lost->at_ms - t0), (long long)margin_ms);
}

/*
 * batond hangs (SIGSTOP) while a client holds a stream lock through it.
 * It stops renewing the lock, so Redis lets the key go when its TTL runs
 * out (6-9 s here) and another batond grants it. The holder must have
 * heard that its lock is lost before then: its keepalive pings go
 * unanswered and it gives the connection up within 2 x 1.5 s (measured:
 * 1.6-3.1 s). Without pings it heard nothing for as long as batond stayed
 * frozen.
 */
static void test_stream_hold_lost_before_a_hung_batond_lets_go(void **state)
{
    (void)state;
    NEED_PRIVATE_BATOND();
    struct private_batond p;
    baton_client *c = private_client(&p, "t:hung");
    struct lost_rec rec = LOST_REC_INIT;
    baton_lock *l = NULL;
    baton_acquire_options o = {.mode = BATON_MODE_STREAM, .ttl_ms = 9000, .on_lost = on_lost, .lost_ud = &rec};
    assert_int_equal(baton_try_acquire(c, "t:hung", &o, &l), 0);
    /* The next holder waits at the suite's batond, on the same Redis. */
    struct timed_acquire next = {.c = cb, .key = "t:hung", .wait_ms = 30000};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, timed_acquire_main, &next), 0);
    wait_waiters(ca, "t:hung", 1);

    /* Held quietly for a while first: gRPC stops pinging after two pings
     * without data unless told otherwise (then this test failed). */
    sleep_ms(6000);
    int64_t t0 = now_ms();
    assert_int_equal(kill(p.pid, SIGSTOP), 0);
    if (wait_lost(&rec) != 1)
        fail_msg("the holder heard nothing within %d ms of the freeze", HANG_MS);
    assert_int_equal(baton_lock_state_get(l), BATON_LOCK_LOST);
    pthread_join(th, NULL);
    assert_lost_first("batond frozen", &rec, BATON_ERR_UNAVAILABLE, &next, 1, t0);
    assert_int_equal(baton_release(next.lock), 0);
    baton_lock_free(next.lock);
    baton_lock_free(l);

    /* Still frozen: a client's channel to it stays CONNECTING (TCP is
     * accepted, HTTP/2 never answers), for 20 s. Starting a stream, which
     * has no deadline, must still give up after the call timeout. */
    baton_client *late = NULL;
    baton_client_options lo = {.call_timeout_ms = 500};
    assert_int_equal(baton_client_new(p.addr, &lo, &late), 0);
    int64_t s0 = now_ms();
    int err = baton_try_acquire(late, "t:hung", &o, &l);
    int64_t took = now_ms() - s0;
    if (err != BATON_ERR_TIMEOUT && err != BATON_ERR_UNAVAILABLE)
        fail_msg("stream acquire on a frozen batond: %s: %s", baton_error_name(err), baton_last_error());
    if (took > 2500)
        fail_msg("stream acquire on a frozen batond returned after %lld ms (call timeout 500)", (long long)took);
    static struct watch_rec wr = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    baton_watcher *w = NULL;
    s0 = now_ms();
    assert_int_equal(baton_watch(late, "t:hung", NULL, on_event, &wr, &w), 0);
    took = now_ms() - s0;
    if (took > 2500)
        fail_msg("watch on a frozen batond returned after %lld ms (call timeout 500)", (long long)took);
    baton_watch_free(w);
    baton_client_free(late);

    /* Thawed, batond serves the same client again. */
    assert_int_equal(kill(p.pid, SIGCONT), 0);
    wait_serving(c);
    assert_stream_lock_works(c, "t:hung", "after the thaw");
    baton_client_free(c);
    private_end(&p);
}

/* A TCP relay that can go silent: it stops moving bytes but keeps every
 * socket open, as a network that drops packets does (no FIN, no RST). */
#define RELAY_MAX 8
struct relay {
    int lfd, port, upstream_port;
    int fds[RELAY_MAX][2]; /* client side, batond side */
    int n;
    volatile int silent, stop;
    pthread_t th;
};

static void relay_pump(int from, int to)
{
    char buf[65536];
    ssize_t got = recv(from, buf, sizeof buf, MSG_DONTWAIT);
    for (ssize_t off = 0; got > 0 && off < got;) {
        ssize_t put = send(to, buf + off, (size_t)(got - off), MSG_NOSIGNAL);
        if (put <= 0)
            break;
        off += put;
    }
}

static void *relay_main(void *arg)
{
    struct relay *r = arg;
    while (!r->stop) {
        if (r->silent) { /* new connections wait in the backlog */
            sleep_ms(20);
            continue;
        }
        struct pollfd pf[1 + 2 * RELAY_MAX];
        int n = 0;
        pf[n++] = (struct pollfd){.fd = r->lfd, .events = POLLIN};
        for (int i = 0; i < r->n; i++) {
            pf[n++] = (struct pollfd){.fd = r->fds[i][0], .events = POLLIN};
            pf[n++] = (struct pollfd){.fd = r->fds[i][1], .events = POLLIN};
        }
        if (poll(pf, (nfds_t)n, 20) <= 0 || r->silent)
            continue;
        if ((pf[0].revents & POLLIN) && r->n < RELAY_MAX) {
            int cfd = accept(r->lfd, NULL, NULL);
            int ufd = socket(AF_INET, SOCK_STREAM, 0);
            struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)r->upstream_port),
                                    .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
            if (cfd >= 0 && ufd >= 0 && connect(ufd, (struct sockaddr *)&a, sizeof a) == 0) {
                r->fds[r->n][0] = cfd;
                r->fds[r->n][1] = ufd;
                r->n++;
            } else {
                if (cfd >= 0)
                    close(cfd);
                if (ufd >= 0)
                    close(ufd);
            }
        }
        for (int i = 1; i < n; i++) {
            if (pf[i].revents & (POLLIN | POLLHUP | POLLERR)) {
                int pair = (i - 1) / 2, side = (i - 1) % 2;
                relay_pump(r->fds[pair][side], r->fds[pair][!side]);
            }
        }
    }
    return NULL;
}

static void relay_start(struct relay *r, int upstream_port)
{
    memset(r, 0, sizeof *r);
    r->upstream_port = upstream_port;
    r->lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    assert_true(r->lfd >= 0);
    assert_int_equal(bind(r->lfd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(r->lfd, 16), 0);
    assert_int_equal(getsockname(r->lfd, (struct sockaddr *)&a, &len), 0);
    r->port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(&r->th, NULL, relay_main, r), 0);
}

static void relay_stop(struct relay *r)
{
    r->stop = 1;
    pthread_join(r->th, NULL);
    for (int i = 0; i < r->n; i++) {
        close(r->fds[i][0]);
        close(r->fds[i][1]);
    }
    close(r->lfd);
}

/* The network between a holder (lock options `o`) and the suite's batond
 * goes silent while another client waits for the key at that batond. The
 * holder must be told (err) at least margin_ms before the other is granted. */
static void silent_network_case(const char *what, const char *key, baton_acquire_options *o, int err,
                                int64_t margin_ms)
{
    const char *colon = strrchr(target, ':');
    assert_non_null(colon);
    struct relay r;
    relay_start(&r, atoi(colon + 1));
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", r.port);
    baton_client *c = NULL;
    baton_client_options co = {.owner = "behind-the-relay"};
    assert_int_equal(baton_client_new(addr, &co, &c), 0);
    wait_serving(c);
    struct lost_rec rec = LOST_REC_INIT;
    baton_lock *l = NULL;
    o->on_lost = on_lost;
    o->lost_ud = &rec;
    assert_int_equal(baton_try_acquire(c, key, o, &l), 0);
    struct timed_acquire next = {.c = cb, .key = key, .wait_ms = 30000};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, timed_acquire_main, &next), 0);
    wait_waiters(ca, key, 1);

    int64_t t0 = now_ms();
    r.silent = 1;
    if (wait_lost(&rec) != 1)
        fail_msg("%s: the holder heard nothing within %d ms of the silence", what, HANG_MS);
    pthread_join(th, NULL);
    assert_lost_first(what, &rec, err, &next, margin_ms, t0);

    assert_int_equal(baton_release(next.lock), 0);
    baton_lock_free(next.lock);
    baton_lock_free(l);
    baton_client_free(c);
    relay_stop(&r);
}

/*
 * Stream mode: batond notices the silence with its own keepalive (10 s /
 * 5 s by default), releases the lock and grants it to the next waiter, 5-15
 * s later (measured: 15 s, as the client's pings keep batond's keepalive
 * from firing until the silence). The holder must have heard of the loss
 * first (its pings go unanswered: measured 3.0 s). Without pings it never
 * heard anything while the network stayed silent.
 */
static void test_stream_hold_lost_before_a_silent_network_lets_go(void **state)
{
    (void)state;
    NEED_SERVER();
    baton_acquire_options o = {.mode = BATON_MODE_STREAM};
    silent_network_case("stream, network silent", "t:silent", &o, BATON_ERR_UNAVAILABLE, 1);
}

/*
 * Lease mode with auto_renew: the renewals fail, and Redis grants the key to
 * the next waiter the moment the 3 s lease runs out. The holder must be told
 * a margin before that (it gives up a fifth of the TTL early, 600 ms here),
 * not at the same instant: it reported the loss when the lease ran out,
 * which left it 1-5 ms to stop.
 */
static void test_lease_lost_before_a_silent_network_lets_go(void **state)
{
    (void)state;
    NEED_SERVER();
    baton_acquire_options o = {.ttl_ms = 3000, .auto_renew = 1};
    silent_network_case("lease, network silent", "t:silent-lease", &o, BATON_ERR_LOST, 300);
}

/* ---- errors ---- */

static void test_errors(void **state)
{
    (void)state;
    baton_client *c = NULL;
    /* TLS and token options are checked when the client is made. */
    baton_client_options tls = {.tls_ca_file = "/nonexistent/ca.pem"}, auth = {.auth_token = "two words"};
    assert_int_equal(baton_client_new("127.0.0.1:1", &tls, &c), BATON_ERR_INVALID);
    assert_string_equal(baton_last_error(), "tls_ca_file: cannot read /nonexistent/ca.pem: No such file or directory");
    baton_client_options half = {.tls_cert_file = "/x.pem"};
    assert_int_equal(baton_client_new("127.0.0.1:1", &half, &c), BATON_ERR_INVALID);
    assert_non_null(strstr(baton_last_error(), "tls_cert_file and tls_key_file go together"));
    assert_int_equal(baton_client_new("127.0.0.1:1", &auth, &c), BATON_ERR_INVALID);
    assert_null(c);
    baton_client_options fine = {.tls = 1, .auth_token = "t0k"};
    assert_int_equal(baton_client_new("127.0.0.1:1", &fine, &c), 0);
    baton_client_free(c);
    c = NULL;
    assert_string_equal(baton_error_name(BATON_ERR_DENIED), "DENIED");
    assert_string_equal(baton_error_name(BATON_ERR_UNAUTHENTICATED), "UNAUTHENTICATED");
    assert_int_equal(baton_client_new(NULL, NULL, &c), BATON_ERR_INVALID);
    baton_client_options backoff = {.max_reconnect_backoff_ms = -1};
    assert_int_equal(baton_client_new("127.0.0.1:1", &backoff, &c), BATON_ERR_INVALID);
    assert_non_null(strstr(baton_last_error(), "max_reconnect_backoff_ms"));
    backoff.max_reconnect_backoff_ms = (int64_t)INT32_MAX + 1;
    assert_int_equal(baton_client_new("127.0.0.1:1", &backoff, &c), BATON_ERR_INVALID);
    assert_null(c);
    baton_client_options keepalive = {.keepalive_ms = 999};
    assert_int_equal(baton_client_new("127.0.0.1:1", &keepalive, &c), BATON_ERR_INVALID);
    assert_non_null(strstr(baton_last_error(), "keepalive_ms"));
    keepalive.keepalive_ms = -2;
    assert_int_equal(baton_client_new("127.0.0.1:1", &keepalive, &c), BATON_ERR_INVALID);
    keepalive.keepalive_ms = (int64_t)INT32_MAX + 1;
    assert_int_equal(baton_client_new("127.0.0.1:1", &keepalive, &c), BATON_ERR_INVALID);
    assert_null(c);
    keepalive.keepalive_ms = BATON_KEEPALIVE_OFF;
    assert_int_equal(baton_client_new("127.0.0.1:1", &keepalive, &c), 0);
    baton_client_free(c);
    c = NULL;

    /* Nobody listens on port 1: UNAVAILABLE at once. */
    assert_int_equal(baton_client_new("127.0.0.1:1", NULL, &c), 0);
    assert_non_null(strchr(baton_client_owner(c), '/'));
    baton_lock *l = NULL;
    assert_int_equal(baton_try_acquire(c, "k", NULL, &l), BATON_ERR_UNAVAILABLE);
    assert_int_equal(baton_release_token(c, "k", "00000000000000000000000000000000"), BATON_ERR_UNAVAILABLE);
    baton_client_free(c);

    assert_string_equal(baton_error_name(BATON_ERR_BUSY), "BUSY");
    assert_string_equal(baton_strerror(12345), "unknown error");
    assert_int_equal(baton_acquire(NULL, "k", NULL, &l), BATON_ERR_INVALID);
    assert_int_equal(baton_acquire_pool(ca, "p", 0, NULL, &l), BATON_ERR_INVALID);
    if (target == NULL)
        return;
    assert_int_equal(baton_try_acquire(ca, "bad key!", NULL, &l), BATON_ERR_INVALID);
    assert_non_null(strstr(baton_last_error(), "key"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_try_busy_names_holder),
        cmocka_unit_test(test_blocking_acquire_waits_for_release),
        cmocka_unit_test(test_wait_times_out_busy),
        cmocka_unit_test(test_huge_wait_refused),
        cmocka_unit_test(test_stale_token_not_held),
        cmocka_unit_test(test_renew_and_force_release),
        cmocka_unit_test(test_auto_renew_keeps_short_ttl_alive),
        cmocka_unit_test(test_lease_loss_reported_when_key_deleted),
        cmocka_unit_test(test_stream_loss_reported_when_key_deleted),
        cmocka_unit_test(test_stream_free_releases),
        cmocka_unit_test(test_stream_released_by_token_elsewhere),
        cmocka_unit_test(test_pool_grants_distinct_devices),
        cmocka_unit_test(test_pool_count_grants_every_device),
        cmocka_unit_test(test_watch_events_in_order),
        cmocka_unit_test(test_async_acquire_and_cancel),
        cmocka_unit_test(test_lease_ops_with_and_without_sessions),
        cmocka_unit_test_teardown(test_sessions_survive_batond_restart, spawned_teardown),
        cmocka_unit_test(test_call_timeout_holds_before_the_channel_is_up),
        cmocka_unit_test(test_stream_holds_share_one_session),
        cmocka_unit_test(test_stream_on_lost_may_acquire_again),
        cmocka_unit_test(test_stream_holds_mutual_exclusion),
        cmocka_unit_test_teardown(test_stream_acquire_timeout_ends_only_itself, spawned_teardown),
        cmocka_unit_test_teardown(test_stream_holds_lost_when_batond_stops, spawned_teardown),
        cmocka_unit_test_teardown(test_reconnects_soon_after_an_outage, spawned_teardown),
        cmocka_unit_test_teardown(test_stream_hold_lost_before_a_hung_batond_lets_go, spawned_teardown),
        cmocka_unit_test(test_stream_hold_lost_before_a_silent_network_lets_go),
        cmocka_unit_test(test_lease_lost_before_a_silent_network_lets_go),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
