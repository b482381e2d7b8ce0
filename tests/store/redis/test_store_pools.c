/*
 * Multi-device pool grants (Pool.count) of the Redis store against a real
 * private redis-server named by BATON_TEST_REDIS (skipped when unset): all or
 * nothing, one token for every device, per-device fencing and events, strict
 * FIFO per pool, and a randomized hammer whose checker proves that no device
 * is ever held twice and no grant is partial.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "redis_sync.h"
#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "store.h"

#define MAXDEV 64

typedef struct rec_event {
    store_event_type type;
    char key[BATON_KEY_MAX + 1];
    uint64_t fencing;
} rec_event;

typedef struct fixture {
    struct event_base *base;
    struct event *tick;
    redisContext *sync;
    baton_store *st;
    char prefix[64];
    rec_event ev[4096];
    int nev;
} fixture;

static int prefix_counter;

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
}

static void on_state(void *ud, int up)
{
    (void)ud, (void)up;
}

static void on_event(void *ud, const store_event *ev)
{
    fixture *f = ud;
    if (f->nev >= (int)(sizeof(f->ev) / sizeof(f->ev[0])))
        return;
    rec_event *r = &f->ev[f->nev++];
    r->type = ev->type;
    r->fencing = ev->fencing;
    snprintf(r->key, sizeof(r->key), "%s", ev->key);
}

static int find_event(const fixture *f, int from, store_event_type type, const char *key)
{
    for (int i = from; i < f->nev; i++)
        if (f->ev[i].type == type && strcmp(f->ev[i].key, key) == 0)
            return i;
    return -1;
}

static long long cmd_int(fixture *f, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(f->sync, fmt, ap);
    va_end(ap);
    assert_non_null(r);
    long long v = r->type == REDIS_REPLY_INTEGER  ? r->integer
                  : r->type == REDIS_REPLY_STRING ? atoll(r->str)
                                                  : -999;
    freeReplyObject(r);
    return v;
}

/* 1 if the lock of `key` is held by `token` (read with the sync connection). */
static int lock_is(fixture *f, const char *key, const char *token)
{
    redisReply *r = redisCommand(f->sync, "GET %s{%s}:lock", f->prefix, key);
    assert_non_null(r);
    int is = r->type == REDIS_REPLY_STRING && strcmp(r->str, token) == 0;
    freeReplyObject(r);
    return is;
}

/* 1 if `token` holds a live share of weight w of `key`'s device. */
static int share_is(fixture *f, const char *key, const char *token, int64_t w)
{
    redisReply *r = redisCommand(f->sync, "GET %s{%s}:share:%s", f->prefix, key, token);
    assert_non_null(r);
    int is = r->type == REDIS_REPLY_STRING && atoll(r->str) == w;
    freeReplyObject(r);
    return is && lock_is(f, key, "~shared");
}

static baton_store *new_store(fixture *f, const char *addr)
{
    store_redis_opts o = {.address = addr,
                          .key_prefix = f->prefix,
                          .command_timeout_ms = 5000,
                          .reconnect_ms = 50,
                          .keyspace_events = 0};
    baton_store *s = store_redis_new(f->base, &o);
    assert_non_null(s);
    s->hooks.on_event = on_event;
    s->hooks.on_state = on_state;
    s->hooks.ud = f;
    return s;
}

static fixture *fx_open(void)
{
    const char *addr = getenv("BATON_TEST_REDIS");
    if (!addr || !addr[0])
        return NULL;
    fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    snprintf(f->prefix, sizeof(f->prefix), "tp%ld.%d:", (long)getpid(), ++prefix_counter);
    f->base = event_base_new();
    f->tick = event_new(f->base, -1, EV_PERSIST, on_tick, NULL);
    struct timeval tv = {0, 5000};
    event_add(f->tick, &tv);
    f->sync = sync_connect(addr);
    f->st = new_store(f, addr);
    RUN_UNTIL(f, store_redis_is_up(f->st));
    return f;
}

#define FX_OPEN(f)                                                                                           \
    fixture *f = fx_open();                                                                                  \
    if (!f)                                                                                                  \
        skip();

static void fx_close(fixture *f)
{
    f->st->ops->free(f->st);
    redisFree(f->sync);
    event_free(f->tick);
    event_base_free(f->base);
    free(f);
}

static void make_token(char out[BATON_TOKEN_LEN + 1], unsigned n)
{
    snprintf(out, BATON_TOKEN_LEN + 1, "%032x", n);
}

/* ------------------------------------------------------ op wrappers */

typedef struct acq {
    int done, err;
    char msg[512];
    store_acquire_res res; /* pointers cleared; see key, dev, fenc, head */
    char key[BATON_KEY_MAX + 16];
    char head[BATON_TOKEN_LEN + 2];
    int32_t dev[MAXDEV];
    uint64_t fenc[MAXDEV];
} acq;

static void acq_copy(acq *a, int err, const char *msg, const store_acquire_res *res)
{
    a->done++;
    a->err = err;
    snprintf(a->msg, sizeof(a->msg), "%s", msg ? msg : "");
    if (!res)
        return;
    a->res = *res;
    snprintf(a->key, sizeof(a->key), "%s", res->key ? res->key : "");
    snprintf(a->head, sizeof(a->head), "%s", res->head_token ? res->head_token : "");
    assert_true(res->ndevices >= 0 && res->ndevices <= MAXDEV);
    for (int32_t i = 0; i < res->ndevices; i++) {
        a->dev[i] = res->devices[i];
        a->fenc[i] = res->fencings[i];
    }
    a->res.key = NULL;
    a->res.holder_owner = NULL;
    a->res.head_token = NULL;
    a->res.devices = NULL;
    a->res.fencings = NULL;
}

static void acq_cb(void *ud, int err, const char *msg, const store_acquire_res *res)
{
    acq_copy(ud, err, msg, res);
}

static acq acquire_share(fixture *f, const char *pool, int devices, int count, int64_t weight,
                         int64_t capacity, const char *token, const char *owner, int enqueue)
{
    acq a = {0};
    store_acquire_req req = {.target = {.pool = pool, .devices = devices},
                             .token = token,
                             .owner = owner,
                             .ttl_ms = 10000,
                             .enqueue = enqueue,
                             .liveness_ms = 10000,
                             .count = count,
                             .weight = weight,
                             .capacity = capacity};
    assert_int_equal(f->st->ops->acquire(f->st, &req, acq_cb, &a), 0);
    RUN_UNTIL(f, a.done);
    return a;
}

static acq acquire_pool(fixture *f, const char *pool, int devices, int count, const char *token,
                        const char *owner, int enqueue)
{
    return acquire_share(f, pool, devices, count, 0, 1, token, owner, enqueue);
}

typedef struct hold {
    int done, err;
    int64_t ttl_ms;
} hold;

static void hold_cb(void *ud, int err, const char *msg, const store_hold_res *res)
{
    hold *h = ud;
    (void)msg;
    h->done++;
    h->err = err;
    if (res)
        h->ttl_ms = res->ttl_ms;
}

static hold release(fixture *f, const char *key, const char *token)
{
    hold h = {0};
    assert_int_equal(f->st->ops->release(f->st, key, token, NULL, hold_cb, &h), 0);
    RUN_UNTIL(f, h.done);
    return h;
}

static hold renew(fixture *f, const char *key, const char *token, int64_t ttl)
{
    hold h = {0};
    assert_int_equal(f->st->ops->renew(f->st, key, token, ttl, hold_cb, &h), 0);
    RUN_UNTIL(f, h.done);
    return h;
}

static hold force_release(fixture *f, const char *key, uint64_t fencing)
{
    hold h = {0};
    assert_int_equal(f->st->ops->force_release(f->st, key, fencing, hold_cb, &h), 0);
    RUN_UNTIL(f, h.done);
    return h;
}

static const char *dkey(const char *pool, int i)
{
    static char buf[4][BATON_KEY_MAX + 1];
    static int n;
    n = (n + 1) % 4;
    snprintf(buf[n], sizeof(buf[n]), "%s/%d", pool, i);
    return buf[n];
}

/* ------------------------------------------------------------- tests */

/* count devices in one grant: the lowest free ones, each its own key with its
 * own fencing and ACQUIRED event, every one held by the one token. */
static void test_count_grants_all_devices_with_one_token(void **state)
{
    (void)state;
    FX_OPEN(f);
    char a[33], b[33];
    make_token(a, 1);
    make_token(b, 2);
    acq g = acquire_pool(f, "mg", 4, 3, a, "job-a", 1);
    assert_int_equal(g.err, 0);
    assert_int_equal(g.res.granted, 1);
    assert_int_equal(g.res.ndevices, 3);
    assert_int_equal(g.res.device, 0);
    assert_string_equal(g.key, "mg/0");
    for (int i = 0; i < 3; i++) {
        assert_int_equal(g.dev[i], i);
        assert_true(lock_is(f, dkey("mg", i), a));
        RUN_UNTIL(f, find_event(f, 0, STORE_EV_ACQUIRED, dkey("mg", i)) >= 0);
        assert_int_equal(f->ev[find_event(f, 0, STORE_EV_ACQUIRED, dkey("mg", i))].fencing, g.fenc[i]);
    }
    assert_int_equal(g.res.fencing, g.fenc[0]);
    assert_false(lock_is(f, "mg/3", a));

    /* Idempotent: the same token attempting again is told the same grant. */
    acq again = acquire_pool(f, "mg", 4, 3, a, "job-a", 1);
    assert_int_equal(again.res.granted, 1);
    assert_int_equal(again.res.ndevices, 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(again.fenc[i], g.fenc[i]);

    /* A single-device request takes the one left; count 1 reports one device. */
    acq one = acquire_pool(f, "mg", 4, 1, b, "job-b", 1);
    assert_int_equal(one.res.granted, 1);
    assert_int_equal(one.res.ndevices, 1);
    assert_int_equal(one.dev[0], 3);
    assert_string_equal(one.key, "mg/3");
    fx_close(f);
}

/* Never a partial grant: a request for more devices than are free takes
 * none of them, queued or not. */
static void test_count_is_all_or_nothing(void **state)
{
    (void)state;
    FX_OPEN(f);
    char a[33], b[33], c[33];
    make_token(a, 11);
    make_token(b, 12);
    make_token(c, 13);
    assert_int_equal(acquire_pool(f, "an", 4, 2, a, "two", 1).res.granted, 1);
    acq tr = acquire_pool(f, "an", 4, 3, b, "try", 0);
    assert_int_equal(tr.err, 0);
    assert_int_equal(tr.res.granted, 0);
    assert_int_equal(tr.res.position, 0);
    acq q = acquire_pool(f, "an", 4, 3, c, "three", 1);
    assert_int_equal(q.res.granted, 0);
    assert_int_equal(q.res.position, 1);
    for (int i = 0; i < 4; i++) {
        assert_false(lock_is(f, dkey("an", i), b));
        assert_false(lock_is(f, dkey("an", i), c));
    }
    assert_int_equal(cmd_int(f, "EXISTS %s{an/2}:lock", f->prefix), 0);
    assert_int_equal(cmd_int(f, "EXISTS %s{an/3}:lock", f->prefix), 0);
    /* Its count is recorded for the head check, and dropped with the grant. */
    assert_int_equal(cmd_int(f, "HGET %spool{an}:qc %s", f->prefix, c), 3);
    assert_int_equal(release(f, "an/0", a).err, 0);
    acq g = acquire_pool(f, "an", 4, 3, c, "three", 1);
    assert_int_equal(g.res.granted, 1);
    assert_int_equal(g.res.ndevices, 3);
    assert_int_equal(cmd_int(f, "EXISTS %spool{an}:qc", f->prefix), 0);
    fx_close(f);
}

/* Release, renew and force-release by token, naming any one device, act on
 * every device of the grant; fencing rises per device across grants. */
static void test_token_ops_cover_every_device(void **state)
{
    (void)state;
    FX_OPEN(f);
    char a[33], b[33], c[33];
    make_token(a, 21);
    make_token(b, 22);
    make_token(c, 23);
    acq ga = acquire_pool(f, "tk", 3, 2, a, "a", 1);
    assert_int_equal(ga.res.ndevices, 2);

    /* Renew through the second device: both TTLs move. */
    assert_int_equal(renew(f, "tk/1", a, 60000).err, 0);
    assert_true(cmd_int(f, "PTTL %s{tk/0}:lock", f->prefix) > 50000);
    assert_true(cmd_int(f, "PTTL %s{tk/1}:lock", f->prefix) > 50000);
    /* Another token renews nothing. */
    assert_int_equal(renew(f, "tk/0", b, 60000).err, BATON_E_NOT_HOLDER);

    /* Release through the second device: both go, RELEASED for each. */
    int from = f->nev;
    assert_int_equal(release(f, "tk/1", a).err, 0);
    assert_int_equal(cmd_int(f, "EXISTS %s{tk/0}:lock", f->prefix), 0);
    assert_int_equal(cmd_int(f, "EXISTS %s{tk/1}:lock", f->prefix), 0);
    assert_int_equal(cmd_int(f, "EXISTS %s{tk/0}:hold", f->prefix), 0);
    RUN_UNTIL(f, find_event(f, from, STORE_EV_RELEASED, "tk/0") >= 0 &&
                     find_event(f, from, STORE_EV_RELEASED, "tk/1") >= 0);
    assert_int_equal(f->ev[find_event(f, from, STORE_EV_RELEASED, "tk/0")].fencing, ga.fenc[0]);
    assert_int_equal(f->ev[find_event(f, from, STORE_EV_RELEASED, "tk/1")].fencing, ga.fenc[1]);
    assert_int_equal(release(f, "tk/0", a).err, BATON_E_NOT_HOLDER);

    /* The next grant of the same devices: each fencing above the last. */
    acq gb = acquire_pool(f, "tk", 3, 3, b, "b", 1);
    assert_int_equal(gb.res.ndevices, 3);
    assert_true(gb.fenc[0] > ga.fenc[0]);
    assert_true(gb.fenc[1] > ga.fenc[1]);

    /* Force-release of one device with its fencing ends the whole grant. */
    from = f->nev;
    assert_int_equal(force_release(f, "tk/2", gb.fenc[2]).err, 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(cmd_int(f, "EXISTS %s{tk/%d}:lock", f->prefix, i), 0);
    RUN_UNTIL(f, find_event(f, from, STORE_EV_FORCE_RELEASED, "tk/0") >= 0 &&
                     find_event(f, from, STORE_EV_FORCE_RELEASED, "tk/1") >= 0 &&
                     find_event(f, from, STORE_EV_FORCE_RELEASED, "tk/2") >= 0);

    /* A device lost on its own (TTL) breaks the grant: renew ends the rest
     * (EXPIRED) instead of keeping part of it. */
    acq gc = acquire_pool(f, "tk", 3, 2, c, "c", 1);
    assert_int_equal(gc.res.ndevices, 2);
    assert_int_equal(cmd_int(f, "DEL %s{tk/1}:lock", f->prefix), 1);
    from = f->nev;
    assert_int_equal(renew(f, "tk/0", c, 60000).err, BATON_E_NOT_HOLDER);
    assert_int_equal(cmd_int(f, "EXISTS %s{tk/0}:lock", f->prefix), 0);
    RUN_UNTIL(f, find_event(f, from, STORE_EV_EXPIRED, "tk/0") >= 0 &&
                     find_event(f, from, STORE_EV_EXPIRED, "tk/1") >= 0);
    fx_close(f);
}

/* Strict FIFO per pool: a head that waits for 3 devices keeps a later
 * 1-device request waiting although a device is free; once enough devices
 * are free the head is granted first. */
static void test_strict_fifo_head_is_not_passed(void **state)
{
    (void)state;
    FX_OPEN(f);
    char h[4][33], big[33], small[33];
    for (int i = 0; i < 4; i++)
        make_token(h[i], 31u + (unsigned)i);
    make_token(big, 40);
    make_token(small, 41);
    for (int i = 0; i < 4; i++)
        assert_int_equal(acquire_pool(f, "ff", 4, 1, h[i], "h", 1).res.device, i);
    acq b = acquire_pool(f, "ff", 4, 3, big, "big", 1);
    assert_int_equal(b.res.position, 1);
    assert_int_equal(release(f, "ff/0", h[0]).err, 0);
    acq s = acquire_pool(f, "ff", 4, 1, small, "small", 1);
    assert_int_equal(s.res.granted, 0); /* ff/0 is free, but big is ahead */
    assert_int_equal(s.res.position, 2);
    assert_string_equal(s.head, ""); /* big cannot be granted with one free device */
    assert_int_equal(release(f, "ff/1", h[1]).err, 0);
    assert_int_equal(release(f, "ff/2", h[2]).err, 0);
    s = acquire_pool(f, "ff", 4, 1, small, "small", 1);
    assert_int_equal(s.res.granted, 0);
    assert_string_equal(s.head, big); /* now it could: name it */
    b = acquire_pool(f, "ff", 4, 3, big, "big", 1);
    assert_int_equal(b.res.granted, 1);
    assert_int_equal(b.res.ndevices, 3);
    assert_int_equal(release(f, "ff/3", h[3]).err, 0);
    assert_int_equal(acquire_pool(f, "ff", 4, 1, small, "small", 1).res.device, 3);
    fx_close(f);
}

/* Shared devices: holders' weights sum to at most the capacity; each share
 * takes the device's next fencing; a shared device is held for whole-device
 * and plain-key acquires; release, renew, force-release and expiry of one
 * share leave the others. */
static void test_shares_by_capacity(void **state)
{
    (void)state;
    FX_OPEN(f);
    char t[6][33];
    for (int i = 0; i < 6; i++)
        make_token(t[i], 61u + (unsigned)i);
    acq a = acquire_share(f, "sh", 2, 1, 3, 4, t[0], "a", 1);
    assert_int_equal(a.res.granted, 1);
    assert_int_equal(a.res.device, 0);
    assert_true(share_is(f, "sh/0", t[0], 3));
    acq b = acquire_share(f, "sh", 2, 1, 2, 4, t[1], "b", 1); /* 3 + 2 > 4 on sh/0 */
    assert_int_equal(b.res.device, 1);
    acq c = acquire_share(f, "sh", 2, 1, 1, 4, t[2], "c", 1); /* 3 + 1 fits sh/0 */
    assert_int_equal(c.res.device, 0);
    assert_true(c.res.fencing > a.res.fencing);
    acq d = acquire_share(f, "sh", 2, 1, 3, 4, t[3], "d", 0); /* 4 + 3, 2 + 3: no room */
    assert_int_equal(d.res.granted, 0);
    acq whole = acquire_share(f, "sh", 2, 1, 0, 4, t[4], "whole", 0);
    assert_int_equal(whole.res.granted, 0);
    whole = acquire_share(f, "sh", 2, 1, 4, 4, t[4], "whole", 0); /* weight = capacity: whole */
    assert_int_equal(whole.res.granted, 0);
    assert_int_equal(acquire_pool(f, "sh", 2, 1, t[4], "whole", 0).res.granted, 0);

    /* B leaves: sh/1 has no share left and is free again. */
    int from = f->nev;
    assert_int_equal(release(f, "sh/1", t[1]).err, 0);
    RUN_UNTIL(f, find_event(f, from, STORE_EV_RELEASED, "sh/1") >= 0);
    assert_int_equal(f->ev[find_event(f, from, STORE_EV_RELEASED, "sh/1")].fencing, b.res.fencing);
    assert_int_equal(cmd_int(f, "EXISTS %s{sh/1}:lock", f->prefix), 0);
    assert_int_equal(acquire_share(f, "sh", 2, 1, 3, 4, t[3], "d", 0).res.device, 1);

    /* Renew one share: its TTL and the device's lock TTL move, not others'. */
    assert_int_equal(renew(f, "sh/0", t[0], 60000).err, 0);
    assert_true(cmd_int(f, "PTTL %s{sh/0}:share:%s", f->prefix, t[0]) > 50000);
    assert_true(cmd_int(f, "PTTL %s{sh/0}:lock", f->prefix) > 50000);
    assert_true(cmd_int(f, "PTTL %s{sh/0}:share:%s", f->prefix, t[2]) <= 10000);
    assert_int_equal(renew(f, "sh/0", t[4], 60000).err, BATON_E_NOT_HOLDER);
    assert_int_equal(release(f, "sh/0", t[4]).err, BATON_E_NOT_HOLDER);

    /* Force-release C by its fencing: A stays. */
    from = f->nev;
    assert_int_equal(force_release(f, "sh/0", c.res.fencing).err, 0);
    RUN_UNTIL(f, find_event(f, from, STORE_EV_FORCE_RELEASED, "sh/0") >= 0);
    assert_true(share_is(f, "sh/0", t[0], 3));
    assert_false(share_is(f, "sh/0", t[2], 1));
    assert_int_equal(force_release(f, "sh/0", c.res.fencing).err, BATON_E_NOT_HOLDER);

    /* A's share runs out (simulated): the next acquire reaps it (EXPIRED)
     * and the device is free for a whole-device hold. */
    assert_int_equal(cmd_int(f, "DEL %s{sh/0}:share:%s", f->prefix, t[0]), 1);
    from = f->nev;
    acq w = acquire_share(f, "sh", 2, 1, 0, 4, t[5], "whole2", 0);
    assert_int_equal(w.res.granted, 1);
    assert_int_equal(w.res.device, 0);
    assert_true(lock_is(f, "sh/0", t[5]));
    RUN_UNTIL(f, find_event(f, from, STORE_EV_EXPIRED, "sh/0") >= 0);
    assert_int_equal(f->ev[find_event(f, from, STORE_EV_EXPIRED, "sh/0")].fencing, a.res.fencing);
    assert_true(w.res.fencing > c.res.fencing);
    fx_close(f);
}

/* count and weight together: a share of each of several devices under one
 * token, all or nothing, released in one step. */
static void test_shares_of_several_devices(void **state)
{
    (void)state;
    FX_OPEN(f);
    char a[33], b[33], c[33];
    make_token(a, 71);
    make_token(b, 72);
    make_token(c, 73);
    acq ga = acquire_share(f, "sm", 3, 2, 2, 4, a, "a", 1);
    assert_int_equal(ga.res.ndevices, 2);
    assert_int_equal(ga.dev[0], 0);
    assert_int_equal(ga.dev[1], 1);
    assert_int_equal(acquire_share(f, "sm", 3, 1, 0, 4, b, "whole", 1).res.device, 2);
    /* 3 on each of 2 devices: only sm/0 and sm/1 are shared, with room 2. */
    acq gc = acquire_share(f, "sm", 3, 2, 3, 4, c, "c", 0);
    assert_int_equal(gc.res.granted, 0);
    assert_false(share_is(f, "sm/0", c, 3));
    gc = acquire_share(f, "sm", 3, 2, 2, 4, c, "c", 0);
    assert_int_equal(gc.res.ndevices, 2);
    /* Renew and release through the second device cover both. */
    assert_int_equal(renew(f, "sm/1", a, 60000).err, 0);
    assert_true(cmd_int(f, "PTTL %s{sm/0}:share:%s", f->prefix, a) > 50000);
    assert_int_equal(release(f, "sm/1", a).err, 0);
    assert_false(share_is(f, "sm/0", a, 2));
    assert_false(share_is(f, "sm/1", a, 2));
    assert_true(share_is(f, "sm/0", c, 2));
    assert_int_equal(release(f, "sm/0", c).err, 0);
    assert_int_equal(cmd_int(f, "EXISTS %s{sm/0}:lock", f->prefix), 0);
    assert_int_equal(cmd_int(f, "EXISTS %s{sm/1}:lock", f->prefix), 0);
    fx_close(f);
}

/* ---------------------------------------------------------- hammer */

/*
 * Clients on two store connections acquire 1..4 of 6 devices, queued or
 * try-once, hold for a moment and release through a random device of their
 * grant; some "crash" instead (never release; their short TTL frees the
 * devices). The checker's picture of who holds what is conservative: a
 * device counts as held from the grant reply (after Redis made the grant)
 * until the release is sent (before Redis frees it) or, for a crash, until
 * the TTL surely has not run out yet (sent + ttl - margin). Any device whose
 * holders' weights in that picture sum above its capacity (a whole-device
 * hold weighs the capacity; with capacity 1 any overlap) is a real
 * over-capacity grant. Each grant is also read back from Redis (every
 * device's lock, or share, is the token's: never partial), and each device's
 * fencing must rise from grant to grant.
 */
#define HN 8
#define HDEV 6
#define CRASH_TTL 120

typedef struct hammer hammer;
typedef struct hclient {
    hammer *h;
    baton_store *st;
    char token[33];
    unsigned gen;
    int count;
    int64_t weight; /* 0 = whole devices */
    int ndev;
    int32_t dev[HDEV];
    int64_t sent_ms;
    int crash;
    int fresh;   /* the next attempt is a new request with a new token */
    int abandon; /* this request goes away once queued */
} hclient;

struct hammer {
    fixture *f;
    int64_t capacity;
    /* per device and client: 0 = not held; INT64_MAX = held until released;
     * else a crash's end; with the weight held */
    int64_t held_until[HDEV][HN];
    int64_t held_weight[HDEV][HN];
    /* the last holds of each device that ended (release sent): a grant that
     * could not have coexisted with one must have a higher fencing */
    struct ended {
        uint64_t fencing;
        int64_t weight;
    } ended[HDEV][64];
    int nended[HDEV];
    uint64_t held_fencing[HDEV][HN];
    int grants, attempts, violations, fencing_back, partial, errors, target, crashes, multi, shared;
    unsigned seed;
    hclient c[HN];
};

static void h_attempt(hclient *c);

static void h_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    h_attempt(arg);
}

static void h_later(hclient *c, int64_t ms)
{
    struct timeval tv = {0, (suseconds_t)(ms * 1000)};
    event_base_once(c->h->f->base, -1, EV_TIMEOUT, h_retry, c, &tv);
}

static void h_released(void *ud, int err, const char *msg, const store_hold_res *res)
{
    hclient *c = ud;
    (void)msg, (void)res;
    if (err)
        c->h->errors++;
    c->fresh = 1;
    h_attempt(c);
}

/* Client k's hold of device d ends in the picture. */
static void h_end(hammer *h, int d, int k)
{
    struct ended *e = &h->ended[d][h->nended[d]++ % 64];
    e->fencing = h->held_fencing[d][k];
    e->weight = h->held_weight[d][k];
    h->held_until[d][k] = 0;
}

static void h_release_now(evutil_socket_t fd, short what, void *arg)
{
    hclient *c = arg;
    hammer *h = c->h;
    (void)fd, (void)what;
    for (int i = 0; i < c->ndev; i++)
        h_end(h, c->dev[i], (int)(c - h->c)); /* before Redis can grant anyone else */
    const char *key = dkey("hm", c->dev[rand_r(&h->seed) % (unsigned)c->ndev]);
    if (c->st->ops->release(c->st, key, c->token, NULL, h_released, c) != 0)
        h->errors++;
}

static void h_acquired(void *ud, int err, const char *msg, const store_acquire_res *res)
{
    hclient *c = ud;
    hammer *h = c->h;
    (void)msg;
    if (err) {
        h->errors++;
        return;
    }
    int64_t now = now_ms();
    if (!res->granted) {
        /* Now and then a waiter goes away without a word: its queue entry
         * dies with its liveness deadline. */
        c->fresh = res->position == 0 || c->abandon;
        h_later(c, 1);
        return;
    }
    if (res->ndevices != c->count || res->devices[0] != res->device || res->fencings[0] != res->fencing)
        h->partial++;
    c->ndev = res->ndevices;
    for (int i = 0; i < res->ndevices && i < HDEV; i++) {
        int32_t d = res->devices[i];
        c->dev[i] = d;
        if (d < 0 || d >= HDEV ||
            !(c->weight ? share_is(h->f, dkey("hm", d), c->token, c->weight)
                        : lock_is(h->f, dkey("hm", d), c->token))) {
            h->partial++;
            continue;
        }
        /* A crashed holder's devices count as held until its TTL may have run out. */
        int64_t w = c->weight ? c->weight : h->capacity;
        int64_t load = w;
        for (int k = 0; k < HN; k++) {
            if (h->held_until[d][k] == INT64_MAX || h->held_until[d][k] > now)
                load += h->held_weight[d][k];
            else if (h->held_until[d][k] != 0)
                h_end(h, d, k); /* a crash whose TTL may have run out by now */
        }
        if (load > h->capacity)
            h->violations++;
        /* Holds that ended and could not have coexisted with this one were
         * granted before it (replies of the two connections may arrive in
         * another order, so only those say anything about fencing). */
        int n = h->nended[d] < 64 ? h->nended[d] : 64;
        for (int j = 0; j < n; j++)
            if (h->ended[d][j].weight + w > h->capacity && h->ended[d][j].fencing >= res->fencings[i])
                h->fencing_back++;
        h->held_until[d][c - h->c] = c->crash ? c->sent_ms + CRASH_TTL - 20 : INT64_MAX;
        h->held_weight[d][c - h->c] = w;
        h->held_fencing[d][c - h->c] = res->fencings[i];
    }
    h->shared += c->weight > 0;
    h->grants++;
    h->multi += res->ndevices > 1;
    if (c->crash) {
        /* Never releases: a new token, as a new process would have. */
        h->crashes++;
        c->fresh = 1;
        h_later(c, 1);
        return;
    }
    struct timeval tv = {0, (suseconds_t)(rand_r(&h->seed) % 3) * 1000};
    event_base_once(h->f->base, -1, EV_TIMEOUT, h_release_now, c, &tv);
}

static void h_attempt(hclient *c)
{
    hammer *h = c->h;
    if (h->grants >= h->target)
        return;
    h->attempts++;
    if (c->fresh) {
        c->fresh = 0;
        c->count = 1 + (int)(rand_r(&h->seed) % 4);
        /* capacity 4: weight 0 (whole), 1, 2 or 3 */
        c->weight = h->capacity > 1 ? (int64_t)(rand_r(&h->seed) % (unsigned)h->capacity) : 0;
        c->crash = rand_r(&h->seed) % 10 == 0;
        c->abandon = rand_r(&h->seed) % 40 == 0;
        make_token(c->token, 1000u + c->gen++ * HN + (unsigned)(c - h->c));
    }
    c->sent_ms = now_ms();
    store_acquire_req req = {.target = {.pool = "hm", .devices = HDEV},
                             .token = c->token,
                             .owner = "hammer",
                             .ttl_ms = c->crash ? CRASH_TTL : 10000,
                             .enqueue = rand_r(&h->seed) % 5 != 0,
                             .liveness_ms = 300,
                             .count = c->count,
                             .weight = c->weight,
                             .capacity = h->capacity};
    if (c->st->ops->acquire(c->st, &req, h_acquired, c) != 0)
        h->errors++;
}

static void hammer_run(int64_t capacity)
{
    FX_OPEN(f);
    baton_store *st2 = new_store(f, getenv("BATON_TEST_REDIS"));
    RUN_UNTIL(f, store_redis_is_up(st2));
    hammer *h = calloc(1, sizeof(*h));
    h->f = f;
    h->capacity = capacity;
    h->target = 600;
    h->seed = (unsigned)time(NULL);
    print_message("hammer seed %u\n", h->seed);
    for (int i = 0; i < HN; i++) {
        h->c[i].h = h;
        h->c[i].st = (i % 2) ? st2 : f->st;
        h->c[i].fresh = 1;
    }
    for (int i = 0; i < HN; i++)
        h_attempt(&h->c[i]);
    int64_t deadline = now_ms() + 60000;
    while (h->grants < h->target && !h->errors && now_ms() < deadline)
        event_base_loop(f->base, EVLOOP_ONCE);
    int64_t end = now_ms() + 300;
    while (now_ms() < end)
        event_base_loop(f->base, EVLOOP_ONCE);
    print_message("hammer (capacity %" PRId64
                  "): %d grants (%d multi-device, %d shared, %d crashed holders), "
                  "%d attempts; %d over capacity, %d fencing going back, %d partial grants, %d errors\n",
                  capacity, h->grants, h->multi, h->shared, h->crashes, h->attempts, h->violations,
                  h->fencing_back, h->partial, h->errors);
    assert_int_equal(h->violations, 0);
    assert_int_equal(h->fencing_back, 0);
    assert_int_equal(h->partial, 0);
    assert_int_equal(h->errors, 0);
    assert_true(h->grants >= h->target);
    assert_true(h->multi > 0 && h->crashes > 0);
    assert_true(capacity == 1 || h->shared > 0);
    st2->ops->free(st2);
    free(h);
    fx_close(f);
}

static void test_hammer_no_device_held_twice_no_partial_grant(void **state)
{
    (void)state;
    hammer_run(1);
}

/* The same with capacity 4 and weights 0 (whole), 1, 2, 3 mixed. */
static void test_hammer_shared_devices_never_over_capacity(void **state)
{
    (void)state;
    hammer_run(4);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_count_grants_all_devices_with_one_token),
        cmocka_unit_test(test_count_is_all_or_nothing),
        cmocka_unit_test(test_token_ops_cover_every_device),
        cmocka_unit_test(test_strict_fifo_head_is_not_passed),
        cmocka_unit_test(test_hammer_no_device_held_twice_no_partial_grant),
        cmocka_unit_test(test_shares_by_capacity),
        cmocka_unit_test(test_shares_of_several_devices),
        cmocka_unit_test(test_hammer_shared_devices_never_over_capacity),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
