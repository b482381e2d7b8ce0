/*
 * The Redis store against a real private redis-server named by
 * BATON_TEST_REDIS ("unix:/path" or "host:port"); every test is skipped when
 * it is unset. Each test drives a real libevent loop until its callbacks
 * arrive (with a deadline that catches hangs) and uses its own key prefix;
 * a second, synchronous hiredis connection inspects and disturbs Redis.
 */
#include <setjmp.h>
#include <stdarg.h>
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


typedef struct rec_event {
    store_event_type type;
    char key[BATON_KEY_MAX + 1];
    char owner[BATON_OWNER_MAX + 1];
    uint64_t fencing;
} rec_event;

typedef struct fixture {
    struct event_base *base;
    struct event *tick;
    redisContext *sync;
    baton_store *st;
    char prefix[64];
    int db;
    int ups, downs;
    rec_event ev[512];
    int nev;
    int nmissing; /* on_missing calls */
    int new_primaries; /* on_new_primary calls */
    char missing_target[BATON_KEY_MAX + 8];
    char missing_token[BATON_TOKEN_LEN + 1];
} fixture;

static int prefix_counter;

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
}

static void on_state(void *ud, int up)
{
    fixture *f = ud;
    if (up)
        f->ups++;
    else
        f->downs++;
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
    snprintf(r->owner, sizeof(r->owner), "%s", ev->owner);
}

static void on_new_primary(void *ud)
{
    fixture *f = ud;
    f->new_primaries++;
}

static void on_missing(void *ud, const store_target *t, const char *token)
{
    fixture *f = ud;
    f->nmissing++;
    snprintf(f->missing_target, sizeof(f->missing_target), "%s:%s", t->key ? "k" : "p",
             t->key ? t->key : t->pool);
    snprintf(f->missing_token, sizeof(f->missing_token), "%s", token);
}

/* Index of the first event of `type` on `key` at or after `from`, or -1. */
static int find_event(const fixture *f, int from, store_event_type type, const char *key)
{
    for (int i = from; i < f->nev; i++)
        if (f->ev[i].type == type && strcmp(f->ev[i].key, key) == 0)
            return i;
    return -1;
}

/* The same, for the first event whose owner is `owner`. */
static int find_event_owner(const fixture *f, int from, store_event_type type, const char *key,
                            const char *owner)
{
    for (int i = from; i < f->nev; i++)
        if (f->ev[i].type == type && strcmp(f->ev[i].key, key) == 0 && strcmp(f->ev[i].owner, owner) == 0)
            return i;
    return -1;
}

static int count_events(const fixture *f, store_event_type type, const char *key)
{
    int n = 0;
    for (int i = 0; i < f->nev; i++)
        n += f->ev[i].type == type && strcmp(f->ev[i].key, key) == 0;
    return n;
}

static redisReply *cmd(fixture *f, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(f->sync, fmt, ap);
    va_end(ap);
    assert_non_null(r);
    return r;
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

static int next_min_replicas; /* min_replicas of the next store made */
static int64_t next_grace_ms; /* failover_grace_ms of the next store made */

static baton_store *new_store(fixture *f, const char *addr, int keyspace, int64_t timeout_ms)
{
    store_redis_opts o = {.address = addr,
                          .password = NULL,
                          .database = f->db,
                          .key_prefix = f->prefix,
                          .command_timeout_ms = timeout_ms,
                          .reconnect_ms = 50,
                          .keyspace_events = keyspace,
                          .min_replicas = next_min_replicas,
                          .replica_timeout_ms = 100,
                          .failover_grace_ms = next_grace_ms};
    baton_store *s = store_redis_new(f->base, &o);
    assert_non_null(s);
    s->hooks.on_event = on_event;
    s->hooks.on_state = on_state;
    s->hooks.on_missing = on_missing;
    s->hooks.on_new_primary = on_new_primary;
    s->hooks.ud = f;
    return s;
}

/* Skips when BATON_TEST_REDIS is unset; otherwise an up store on a fresh prefix. */
static fixture *fx_open_opts(int db, int keyspace, int64_t timeout_ms)
{
    const char *addr = getenv("BATON_TEST_REDIS");
    if (!addr || !addr[0])
        return NULL;
    fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->db = db;
    snprintf(f->prefix, sizeof(f->prefix), "t%ld.%d:", (long)getpid(), ++prefix_counter);
    f->base = event_base_new();
    assert_non_null(f->base);
    f->tick = event_new(f->base, -1, EV_PERSIST, on_tick, NULL);
    struct timeval tv = {0, 5000};
    event_add(f->tick, &tv);
    f->sync = sync_connect(addr);
    if (db) {
        redisReply *r = cmd(f, "SELECT %d", db);
        freeReplyObject(r);
    }
    f->st = new_store(f, addr, keyspace, timeout_ms);
    RUN_UNTIL(f, store_redis_is_up(f->st));
    assert_int_equal(f->ups, 1);
    return f;
}

#define FX_OPEN(f, db, keyspace, timeout)                                                                    \
    fixture *f = fx_open_opts(db, keyspace, timeout);                                                        \
    if (!f)                                                                                                  \
        skip();

static void fx_close(fixture *f)
{
    if (f->st)
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
    store_acquire_res res;
    char key[BATON_KEY_MAX + 16];
    char holder[BATON_OWNER_MAX + 1];
    char head[BATON_TOKEN_LEN + 2]; /* res->head_token; "" for NULL or "" */
} acq;

static void acq_cb(void *ud, int err, const char *msg, const store_acquire_res *res)
{
    acq *a = ud;
    a->done++;
    a->err = err;
    snprintf(a->msg, sizeof(a->msg), "%s", msg ? msg : "");
    if (res) {
        a->res = *res;
        snprintf(a->key, sizeof(a->key), "%s", res->key ? res->key : "");
        snprintf(a->holder, sizeof(a->holder), "%s", res->holder_owner ? res->holder_owner : "");
        snprintf(a->head, sizeof(a->head), "%s", res->head_token ? res->head_token : "");
        a->res.key = NULL;
        a->res.holder_owner = NULL;
        a->res.head_token = NULL;
    }
}

static acq acquire_full(fixture *f, baton_store *st, const char *key, const char *pool, int devices,
                        const char *token, const char *owner, int64_t ttl, int enqueue, int64_t liveness)
{
    acq a = {0};
    store_acquire_req req = {.target = {.key = key, .pool = pool, .devices = devices},
                             .token = token,
                             .owner = owner,
                             .ttl_ms = ttl,
                             .enqueue = enqueue,
                             .liveness_ms = liveness};
    assert_int_equal(st->ops->acquire(st, &req, acq_cb, &a), 0);
    assert_int_equal(a.done, 0); /* never called from inside the op */
    RUN_UNTIL(f, a.done);
    assert_int_equal(a.done, 1);
    return a;
}

static acq acquire(fixture *f, const char *key, const char *token, const char *owner, int enqueue)
{
    return acquire_full(f, f->st, key, NULL, 0, token, owner, 10000, enqueue, 10000);
}

static acq acquire_pool(fixture *f, const char *pool, int devices, const char *token, const char *owner,
                        int enqueue)
{
    return acquire_full(f, f->st, NULL, pool, devices, token, owner, 10000, enqueue, 10000);
}

typedef struct hold {
    int done, err;
    char msg[512];
    store_hold_res res;
    char holder[BATON_OWNER_MAX + 1];
    int has_next; /* res->next was set */
    store_acquire_res next;
    char next_key[BATON_KEY_MAX + 1];
} hold;

static void hold_cb(void *ud, int err, const char *msg, const store_hold_res *res)
{
    hold *h = ud;
    h->done++;
    h->err = err;
    snprintf(h->msg, sizeof(h->msg), "%s", msg ? msg : "");
    if (res) {
        h->res = *res;
        snprintf(h->holder, sizeof(h->holder), "%s", res->holder_owner ? res->holder_owner : "");
        h->res.holder_owner = NULL;
        h->res.next = NULL;
        if (res->next) {
            h->has_next = 1;
            h->next = *res->next;
            snprintf(h->next_key, sizeof(h->next_key), "%s", res->next->key ? res->next->key : "");
            h->next.key = NULL;
        }
    }
}

static hold release(fixture *f, const char *key, const char *token)
{
    hold h = {0};
    assert_int_equal(f->st->ops->release(f->st, key, token, NULL, hold_cb, &h), 0);
    RUN_UNTIL(f, h.done);
    return h;
}

/* Release that names `next_token` (owner "next", TTL next_ttl) as next waiter. */
static hold release_next(fixture *f, const char *key, const char *token, const char *next_token,
                         int64_t next_ttl)
{
    hold h = {0};
    store_acquire_req next = {
        .target = {.key = key}, .token = next_token, .owner = "next", .ttl_ms = next_ttl};
    assert_int_equal(f->st->ops->release(f->st, key, token, &next, hold_cb, &h), 0);
    RUN_UNTIL(f, h.done);
    assert_int_equal(h.has_next, h.err == BATON_OK || h.err == BATON_E_NOT_HOLDER);
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

typedef struct desc {
    int done, err;
    store_describe_res res;
    char owner[BATON_OWNER_MAX + 1];
} desc;

static void desc_cb(void *ud, int err, const char *msg, const store_describe_res *res)
{
    desc *d = ud;
    (void)msg;
    d->done++;
    d->err = err;
    if (res) {
        d->res = *res;
        snprintf(d->owner, sizeof(d->owner), "%s", res->owner ? res->owner : "");
        d->res.owner = NULL;
    }
}

static desc describe(fixture *f, const char *key)
{
    desc d = {0};
    assert_int_equal(f->st->ops->describe(f->st, key, desc_cb, &d), 0);
    RUN_UNTIL(f, d.done);
    assert_int_equal(d.err, 0);
    return d;
}

typedef struct done {
    int done, err;
} done;

static void done_cb(void *ud, int err, const char *msg)
{
    done *d = ud;
    (void)msg;
    d->done++;
    d->err = err;
}

static void dequeue(fixture *f, const char *key, const char *pool, const char *token)
{
    done d = {0};
    store_target t = {.key = key, .pool = pool, .devices = pool ? 3 : 0};
    assert_int_equal(f->st->ops->dequeue(f->st, &t, token, done_cb, &d), 0);
    RUN_UNTIL(f, d.done);
    assert_int_equal(d.err, 0);
}

/* Full Redis name of a record of `key`. */
static const char *rec(fixture *f, const char *key, const char *what)
{
    static char buf[4][512];
    static int i;
    i = (i + 1) % 4;
    snprintf(buf[i], sizeof(buf[i]), "%s{%s}:%s", f->prefix, key, what);
    return buf[i];
}

/* ------------------------------------------------------------- tests */

static void test_grant_and_fencing(void **state)
{
    (void)state;
    FX_OPEN(f, 0, 0, 3000);
    char t1[33], t2[33];
    make_token(t1, 1);
    make_token(t2, 2);

    acq a = acquire(f, "video:1", t1, "alice on host7", 0);
    assert_int_equal(a.err, 0);
    assert_int_equal(a.res.granted, 1);
    assert_string_equal(a.key, "video:1");
    assert_int_equal(a.res.device, -1);
    assert_true(a.res.fencing > 0);
    assert_true(a.res.ttl_ms == 10000);
    redisReply *r = cmd(f, "GET %s", rec(f, "video:1", "lock"));
    assert_string_equal(r->str, t1);
    freeReplyObject(r);
    assert_true((uint64_t)cmd_int(f, "HGET %s fencing", rec(f, "video:1", "hold")) == a.res.fencing);
    long long pttl = cmd_int(f, "PTTL %s", rec(f, "video:1", "lock"));
    assert_true(pttl > 0 && pttl <= 10000);

    RUN_UNTIL(f, find_event(f, 0, STORE_EV_ACQUIRED, "video:1") >= 0);
    rec_event *e = &f->ev[find_event(f, 0, STORE_EV_ACQUIRED, "video:1")];
    assert_string_equal(e->owner, "alice on host7");
    assert_true(e->fencing == a.res.fencing);

    hold h = release(f, "video:1", t1);
    assert_int_equal(h.err, 0);
    assert_true(h.res.holder_fencing == a.res.fencing);
    RUN_UNTIL(f, find_event(f, 0, STORE_EV_RELEASED, "video:1") >= 0);
    assert_string_equal(f->ev[find_event(f, 0, STORE_EV_RELEASED, "video:1")].owner, "alice on host7");
    assert_int_equal(cmd_int(f, "EXISTS %s", rec(f, "video:1", "hold")), 0);

    acq b = acquire(f, "video:1", t2, "", 0);
    assert_int_equal(b.res.granted, 1);
    assert_true(b.res.fencing == a.res.fencing + 1);
    fx_close(f);
}

static void test_busy_reports_holder(void **state)
{
    (void)state;
    FX_OPEN(f, 0, 0, 3000);
    char t1[33], t2[33];
    make_token(t1, 1);
    make_token(t2, 2);
    acq a = acquire(f, "k", t1, "alice", 0);
    assert_int_equal(a.res.granted, 1);
    acq b = acquire(f, "k", t2, "bob", 0);
    assert_int_equal(b.err, 0);
    assert_int_equal(b.res.granted, 0);
    assert_int_equal(b.res.position, 0); /* try-only: not queued */
    assert_int_equal(b.res.queue_len, 0);
    assert_string_equal(b.holder, "alice");
    assert_true(b.res.holder_fencing == a.res.fencing);
    assert_true(b.res.retry_ms > 0 && b.res.retry_ms <= 10000);
    assert_int_equal(cmd_int(f, "EXISTS %s", rec(f, "k", "q")), 0);
    fx_close(f);
}

static void test_idempotent_reacquire(void **state)
{
    (void)state;
    FX_OPEN(f, 0, 0, 3000);
    char t1[33];
    make_token(t1, 1);
    acq a = acquire(f, "k", t1, "alice", 1);
    acq b = acquire(f, "k", t1, "alice", 1);
    assert_int_equal(b.res.granted, 1);
    assert_true(b.res.fencing == a.res.fencing);
    assert_true(b.res.ttl_ms > 0 && b.res.ttl_ms <= 10000);
    assert_true((uint64_t)cmd_int(f, "GET %s", rec(f, "k", "fence")) == a.res.fencing);
    /* A later event proves the second attempt published nothing. */
    release(f, "k", t1);
    RUN_UNTIL(f, find_event(f, 0, STORE_EV_RELEASED, "k") >= 0);
    assert_int_equal(count_events(f, STORE_EV_ACQUIRED, "k"), 1);
    fx_close(f);
}

static void test_fifo_order(void **state)
{
    (void)state;
    FX_OPEN(f, 0, 0, 3000);
    char h[33], t[3][33];
    make_token(h, 100);
    for (int i = 0; i < 3; i++)
        make_token(t[i], (unsigned)i + 1);
    assert_int_equal(acquire(f, "k", h, "holder", 1).res.granted, 1);
    for (int i = 0; i < 3; i++) {
        acq a = acquire(f, "k", t[i], "w", 1);
        assert_int_equal(a.res.granted, 0);
        assert_int_equal(a.res.position, i + 1);
        assert_int_equal(a.res.queue_len, i + 1);
        assert_string_equal(a.holder, "holder");
    }
    /* Re-attempts keep their place. */
    assert_int_equal(acquire(f, "k", t[1], "w", 1).res.position, 2);
    assert_int_equal(release(f, "k", h).err, 0);
    /* Free, but only the head may take it. */
    acq late = acquire(f, "k", t[2], "w", 1);
    assert_int_equal(late.res.granted, 0);
    assert_int_equal(late.res.position, 3);
    assert_string_equal(late.holder, "");
    assert_true(late.res.holder_fencing == 0);
    assert_true(late.res.retry_ms >= 0 && late.res.retry_ms <= 10000); /* head's liveness */
    for (int i = 0; i < 3; i++) {
        for (int j = i + 1; j < 3; j++)
            assert_int_equal(acquire(f, "k", t[j], "w", 1).res.granted, 0);
        acq a = acquire(f, "k", t[i], "w", 1);
        assert_int_equal(a.res.granted, 1);
        assert_int_equal(release(f, "k", t[i]).err, 0);
    }
    assert_int_equal(cmd_int(f, "EXISTS %s", rec(f, "k", "q")), 0);
    assert_int_equal(cmd_int(f, "EXISTS %s", rec(f, "k", "qt")), 0);
    fx_close(f);
}

/* A reply names the queue head only when the head could take the lock now
 * (free, someone else at the head): the engine attempts that waiter when its
 * local order put another one first. */
static void test_head_token(void **state)
{
    (void)state;
    FX_OPEN(f, 0, 0, 3000);
    char h[33], t1[33], t2[33], t3[33];
    make_token(h, 100);
    make_token(t1, 1);
    make_token(t2, 2);
    make_token(t3, 3);
    assert_int_equal(acquire(f, "k", h, "holder", 1).res.granted, 1);
    acq a = acquire(f, "k", t1, "w1", 1);
    assert_int_equal(a.err, 0);
    assert_string_equal(a.head, ""); /* held */
    a = acquire(f, "k", t2, "w2", 1);
    assert_int_equal(a.res.position, 2);
    assert_string_equal(a.head, ""); /* held, though t1 is ahead */
    assert_int_equal(release(f, "k", h).err, 0);
    a = acquire(f, "k", t2, "w2", 1);
    assert_int_equal(a.res.granted, 0);
    assert_string_equal(a.head, t1); /* free, t1 at the head */
    a = acquire(f, "k", t3, "try", 0);
    assert_int_equal(a.res.granted, 0);
    assert_string_equal(a.head, t1); /* try-only callers learn it too */
    a = acquire(f, "k", t1, "w1", 1);
    assert_int_equal(a.res.granted, 1);
    assert_null(a.res.head_token);
    assert_string_equal(a.head, "");
    a = acquire(f, "k", t2, "w2", 1);
    assert_int_equal(a.res.granted, 0);
    assert_string_equal(a.head, ""); /* held by t1 */
    fx_close(f);
}

/* Pools: the pool queue's head is named only when a device it could take is
 * free (free and its own key queue empty); a device queue's head is named to
 * the direct waiters of that device key. */
static void test_head_token_pool(void **state)
{
    (void)state;
    FX_OPEN(f, 0, 0, 3000);
    char p0[33], p1[33], d1[33], d2[33], q1[33], q2[33];
    make_token(p0, 1);
    make_token(p1, 2);
    make_token(d1, 3);
    make_token(d2, 4);
    make_token(q1, 5);
    make_token(q2, 6);
    assert_int_equal(acquire_pool(f, "gp", 2, p0, "job0", 1).res.device, 0);
    assert_int_equal(acquire_pool(f, "gp", 2, p1, "job1", 1).res.device, 1);
    assert_int_equal(acquire(f, "gp/1", d1, "direct1", 1).res.position, 1);
    assert_int_equal(acquire(f, "gp/1", d2, "direct2", 1).res.position, 2);
    acq a = acquire_pool(f, "gp", 2, q1, "pooled1", 1);
    assert_int_equal(a.res.position, 1);
    assert_string_equal(a.head, "");
    a = acquire_pool(f, "gp", 2, q2, "pooled2", 1);
    assert_int_equal(a.res.position, 2);
    assert_string_equal(a.head, ""); /* every device held */

    /* gp/1 frees, but its direct waiters go first: no pool head to name. */
    assert_int_equal(release(f, "gp/1", p1).err, 0);
    a = acquire_pool(f, "gp", 2, q2, "pooled2", 1);
    assert_int_equal(a.res.granted, 0);
    assert_string_equal(a.head, "");
    a = acquire(f, "gp/1", d2, "direct2", 1);
    assert_int_equal(a.res.granted, 0);
    assert_string_equal(a.head, d1); /* the device key's own queue */
    assert_int_equal(acquire(f, "gp/1", d1, "direct1", 1).res.granted, 1);

    /* gp/0 frees with no direct waiter: the pool head is named. */
    assert_int_equal(release(f, "gp/0", p0).err, 0);
    a = acquire_pool(f, "gp", 2, q2, "pooled2", 1);
    assert_int_equal(a.res.granted, 0);
    assert_string_equal(a.head, q1);
    a = acquire_pool(f, "gp", 2, q1, "pooled1", 1);
    assert_int_equal(a.res.granted, 1);
    assert_string_equal(a.key, "gp/0");
    fx_close(f);
}

static void test_stale_token_not_holder(void **state)
{
    (void)state;
    FX_OPEN(f, 0, 0, 3000);
    char t1[33], t2[33];
    make_token(t1, 1);
    make_token(t2, 2);
    acq a = acquire(f, "k", t1, "alice", 0);
    hold r = release(f, "k", t2);
    assert_int_equal(r.err, BATON_E_NOT_HOLDER);
    assert_string_equal(r.holder, "alice");
    assert_true(r.res.holder_fencing == a.res.fencing);
    assert_non_null(strstr(r.msg, "alice"));
    hold n = renew(f, "k", t2, 60000);
    assert_int_equal(n.err, BATON_E_NOT_HOLDER);
    assert_string_equal(n.holder, "alice");
    /* The holder is untouched: same token, TTL not extended. */
    redisReply *g = cmd(f, "GET %s", rec(f, "k", "lock"));
    assert_string_equal(g->str, t1);
    freeReplyObject(g);
    assert_true(cmd_int(f, "PTTL %s", rec(f, "k", "lock")) <= 10000);
    hold ok = renew(f, "k", t1, 60000);
    assert_int_equal(ok.err, 0);
    assert_true(ok.res.ttl_ms == 60000);
    assert_true(cmd_int(f, "PTTL %s", rec(f, "k", "lock")) > 10000);
    /* Not held at all. */
    release(f, "k", t1);
    hold none = release(f, "k", t1);
    assert_int_equal(none.err, BATON_E_NOT_HOLDER);
    assert_string_equal(none.holder, "");
    assert_true(none.res.holder_fencing == 0);
    fx_close(f);
}

static int expirations_notified(fixture *f)
{
    redisReply *c = cmd(f, "CONFIG GET notify-keyspace-events");
    int ok = c->elements == 2 && strchr(c->element[1]->str, 'E') &&
             (strchr(c->element[1]->str, 'x') || strchr(c->element[1]->str, 'A'));
    freeReplyObject(c);
    return ok;
}

/* Keyspace notifications make the store reap by itself. */
static void test_expiry_publishes_expired(void **state)
{
    (void)state;
    FX_OPEN(f, 0, 1, 3000);
    char t1[33];
    make_token(t1, 1);
    /* The CONFIG SET is best effort and may land after "up". */
    RUN_UNTIL(f, expirations_notified(f));
    acq a = acquire_full(f, f->st, "short", NULL, 0, t1, "alice", 100, 0, 1000);
    assert_int_equal(a.res.granted, 1);
    RUN_UNTIL(f, find_event(f, 0, STORE_EV_EXPIRED, "short") >= 0);
    rec_event *e = &f->ev[find_event(f, 0, STORE_EV_EXPIRED, "short")];
    assert_string_equal(e->owner, "alice");
    assert_true(e->fencing == a.res.fencing);
    assert_int_equal(cmd_int(f, "EXISTS %s", rec(f, "short", "hold")), 0);
    hold n = renew(f, "short", t1, 1000);
    assert_int_equal(n.err, BATON_E_NOT_HOLDER);
    assert_string_equal(n.holder, "");
    fx_close(f);
}

/* Without notifications: an explicit reap, and EXPIRED exactly once. */
static void test_reap_once(void **state)
{
    (void)state;
    FX_OPEN(f, 0, 0, 3000);
    char t1[33], t2[33];
    make_token(t1, 1);
    make_token(t2, 2);
    acq a = acquire_full(f, f->st, "short", NULL, 0, t1, "bob", 30, 0, 1000);
    assert_int_equal(a.res.granted, 1);
    RUN_UNTIL(f, cmd_int(f, "PTTL %s", rec(f, "short", "lock")) == -2);
    assert_int_equal(cmd_int(f, "EXISTS %s", rec(f, "short", "hold")), 1);
    assert_int_equal(f->st->ops->reap(f->st, "short"), 0);
    RUN_UNTIL(f, find_event(f, 0, STORE_EV_EXPIRED, "short") >= 0);
    assert_string_equal(f->ev[find_event(f, 0, STORE_EV_EXPIRED, "short")].owner, "bob");
    assert_int_equal(f->st->ops->reap(f->st, "short"), 0);
    /* A later event proves the second reap (and this acquire's own) published nothing. */
    assert_int_equal(acquire(f, "short", t2, "carol", 0).res.granted, 1);
    RUN_UNTIL(f, find_event(f, 0, STORE_EV_ACQUIRED, "short") >= 0);
    assert_int_equal(count_events(f, STORE_EV_EXPIRED, "short"), 1);
    fx_close(f);
}

/* The fence counter is seeded from Redis time when missing (data loss).
 * FLUSHDB of a test-only database stands in for FLUSHALL so that other
 * tests sharing the server keep their data. */
static void test_fencing_survives_flush(void **state)
{
    (void)state;
    FX_OPEN(f, 7, 0, 3000);
    char t1[33], t2[33];
    make_token(t1, 1);
    make_token(t2, 2);
    acq a = acquire(f, "k", t1, "alice", 0);
    assert_int_equal(a.res.granted, 1);
    redisReply *tm = cmd(f, "TIME");
    uint64_t us = (uint64_t)atoll(tm->element[0]->str) * 1000000u + (uint64_t)atoll(tm->element[1]->str);
    freeReplyObject(tm);
    assert_true(a.res.fencing <= us && a.res.fencing > us - 60u * 1000000u);
    assert_true(a.res.fencing < (1ULL << 53));
    freeReplyObject(cmd(f, "FLUSHDB"));
    assert_int_equal(cmd_int(f, "EXISTS %s", rec(f, "k", "lock")), 0);
    acq b = acquire(f, "k", t2, "bob", 0);
    assert_int_equal(b.res.granted, 1);
    assert_true(b.res.fencing > a.res.fencing);
    freeReplyObject(cmd(f, "FLUSHDB"));
    fx_close(f);
}

/* A store that reconnects to the same address, as batond does after a drop. */
static void reconnect(fixture *f)
{
    f->st->ops->free(f->st);
    f->ups = 0;
    f->st = new_store(f, getenv("BATON_TEST_REDIS"), 0, 3000);
    RUN_UNTIL(f, store_redis_is_up(f->st));
}

/* The failover probe of issue 16 at the store's level: a promoted replica
 * that missed the last grants holds a fence counter behind tokens already
 * given out, and the run_id batond recorded is the old primary's. The first
 * grant on it must still go above every earlier token; a reconnect to the
 * same Redis must not move the floor (tokens keep rising by one). */
static void test_fencing_floor_after_primary_change(void **state)
{
    (void)state;
    FX_OPEN(f, 0, 0, 3000);
    char t[6][33];
    for (int i = 0; i < 6; i++)
        make_token(t[i], (unsigned)i + 1);
    acq a = acquire(f, "fk", t[0], "a", 0);
    assert_int_equal(a.res.granted, 1);
    release(f, "fk", t[0]);
    acq b = acquire(f, "fk", t[1], "b", 0);
    release(f, "fk", t[1]);
    acq c = acquire(f, "fk", t[2], "c", 0);
    release(f, "fk", t[2]);
    assert_true(c.res.fencing == a.res.fencing + 2 && b.res.fencing == a.res.fencing + 1);

    /* What the promoted replica holds: the counter as of grant a, and the
     * old primary's run_id in the epoch record (it replicated from there). */
    freeReplyObject(cmd(f, "SET %s %llu", rec(f, "fk", "fence"), (unsigned long long)a.res.fencing));
    freeReplyObject(cmd(f, "HSET %sepoch run_id old-primary", f->prefix));
    reconnect(f);
    acq d = acquire(f, "fk", t[3], "d", 0);
    assert_int_equal(d.res.granted, 1);
    assert_true(d.res.fencing > c.res.fencing);
    release(f, "fk", t[3]);

    /* The same Redis again: no jump, one more. */
    reconnect(f);
    acq e = acquire(f, "fk", t[4], "e", 0);
    assert_int_equal(e.res.fencing, d.res.fencing + 1);
    fx_close(f);
}

/* redis.min_replicas with no replica to confirm: the grant is taken back
 * before anyone hears of it and the acquire fails UNAVAILABLE; a renewal
 * fails the same way; a release carries no handoff. */
static void test_min_replicas_unconfirmed(void **state)
{
    (void)state;
    FX_OPEN(f, 0, 0, 3000);
    char t1[33], t2[33];
    make_token(t1, 1);
    make_token(t2, 2);
    /* A lock taken before, without confirmation, to renew below. */
    assert_int_equal(acquire(f, "held", t2, "plain", 0).res.granted, 1);
    next_min_replicas = 1;
    reconnect(f);
    next_min_replicas = 0;
    acq a = acquire(f, "mr", t1, "alice", 0);
    assert_int_equal(a.err, BATON_E_UNAVAILABLE);
    assert_string_equal(a.msg, "grant not confirmed by 1 replica within 100 ms (0 did)");
    RUN_UNTIL(f, cmd_int(f, "EXISTS %s", rec(f, "mr", "lock")) == 0);
    assert_int_equal(cmd_int(f, "EXISTS %s", rec(f, "mr", "hold")), 0);
    hold r = renew(f, "held", t2, 5000);
    assert_int_equal(r.err, BATON_E_UNAVAILABLE);
    assert_string_equal(r.msg, "renewal not confirmed by 1 replica within 100 ms (0 did)");
    fx_close(f);
}

/* CLIENT KILL ID of every connection named `name`; returns how many. */
static int kill_by_name(fixture *f, const char *name);

/* The same store reaches a Redis it did not write to before: the epoch
 * record names another run_id (as on a promoted replica) and the command
 * connection is dropped, so the reconnect's epoch.lua moves the floor. */
static void see_new_primary(fixture *f)
{
    char name[64];
    int ups = f->ups;
    freeReplyObject(cmd(f, "HSET %sepoch run_id other-primary", f->prefix));
    snprintf(name, sizeof(name), "baton-cmd-%ld", (long)getpid());
    assert_true(kill_by_name(f, name) >= 1);
    RUN_UNTIL(f, f->ups == ups + 1);
}

static hold reassert(fixture *f, const char *key, const char *token, const char *owner, uint64_t fencing)
{
    hold h = {0};
    assert_int_equal(f->st->ops->reassert(f->st, key, token, owner, fencing, 10000, hold_cb, &h), 0);
    RUN_UNTIL(f, h.done);
    return h;
}

/* redis.failover_grace_ms (lock-delay): after a change of primary nothing
 * free is granted for the grace, so a hold the new primary lost can be
 * re-asserted by its batond before anyone else takes the key. A waiter keeps
 * its place and is told to try again within the grace; after it, the same
 * waiter is granted above the new floor. The first connection opens no
 * window. (Grace 3 s: the steps inside the window take milliseconds.) */
static void test_failover_grace(void **state)
{
    (void)state;
    next_grace_ms = 3000;
    fixture *f = fx_open_opts(0, 0, 5000);
    next_grace_ms = 0;
    if (!f)
        skip();
    char t1[33], t2[33], t3[33], t4[33];
    make_token(t1, 1);
    make_token(t2, 2);
    make_token(t3, 3);
    make_token(t4, 4);
    acq held = acquire(f, "gh", t1, "holder", 1); /* first connection: no grace */
    assert_int_equal(held.res.granted, 1);
    assert_int_equal(acquire(f, "gp", t4, "other", 1).res.granted, 1);
    /* The promoted replica lacks gh's hold (its grant was among the last writes). */
    freeReplyObject(cmd(f, "DEL %s %s", rec(f, "gh", "lock"), rec(f, "gh", "hold")));
    see_new_primary(f);
    assert_int_equal(f->new_primaries, 1);
    long long floor = cmd_int(f, "HGET %sepoch floor", f->prefix);
    assert_true(floor > (long long)held.res.fencing);

    /* A batond that starts now (its first connection, nothing of its own
     * to lose) keeps the rest of the window: others' lost holds may still
     * be re-asserted. */
    next_grace_ms = 3000;
    baton_store *late = new_store(f, getenv("BATON_TEST_REDIS"), 0, 5000);
    next_grace_ms = 0;
    RUN_UNTIL(f, store_redis_is_up(late));
    baton_store *first = f->st;
    f->st = late;
    char t5[33];
    make_token(t5, 5);
    acq l = acquire(f, "gl", t5, "late", 0);
    assert_int_equal(l.err, BATON_OK);
    assert_int_equal(l.res.granted, 0);
    assert_true(l.res.retry_ms > 0 && l.res.retry_ms <= 3000);
    f->st = first;
    late->ops->free(late);

    /* In the window: a free key is not granted; the waiter is queued. */
    acq a = acquire(f, "gk", t2, "waiter", 1);
    assert_int_equal(a.err, BATON_OK);
    assert_int_equal(a.res.granted, 0);
    assert_int_equal(a.res.position, 1);
    assert_true(a.res.retry_ms >= 0 && a.res.retry_ms <= 3000);
    assert_string_equal(a.head, "");
    assert_int_equal(cmd_int(f, "EXISTS %s", rec(f, "gk", "lock")), 0);
    /* Nor is the lost hold's key; a try-only attempt is not queued. */
    acq lost = acquire(f, "gh", t3, "thief", 1);
    assert_int_equal(lost.res.granted, 0);
    assert_true(lost.res.retry_ms >= 0 && lost.res.retry_ms <= 3000);
    assert_int_equal(acquire(f, "gt", t3, "try", 0).res.granted, 0);
    assert_int_equal(acquire_pool(f, "gpool", 3, t3, "pool", 1).res.granted, 0);
    assert_int_equal(cmd_int(f, "EXISTS %s", rec(f, "gt", "q")), 0);
    /* The holder's batond re-asserts it, with its fencing; its own attempt
     * reports the grant again; a hold that survived renews as before. */
    hold r = reassert(f, "gh", t1, "holder", held.res.fencing);
    assert_int_equal(r.err, BATON_OK);
    acq again = acquire(f, "gh", t1, "holder", 1);
    assert_int_equal(again.res.granted, 1);
    assert_int_equal(again.res.fencing, held.res.fencing);
    assert_int_equal(renew(f, "gp", t4, 10000).err, BATON_OK);
    /* A release hands nothing over in the window: t3 heads gh's queue. */
    hold rel = {0};
    store_acquire_req next = {.target = {.key = "gh"}, .token = t3, .owner = "thief", .ttl_ms = 5000};
    assert_int_equal(f->st->ops->release(f->st, "gh", t1, &next, hold_cb, &rel), 0);
    RUN_UNTIL(f, rel.done);
    assert_int_equal(rel.err, BATON_OK);
    assert_int_equal(rel.has_next, 0);
    assert_int_equal(cmd_int(f, "EXISTS %s", rec(f, "gh", "lock")), 0);
    assert_int_equal(cmd_int(f, "ZCARD %s", rec(f, "gh", "q")), 1);

    /* After the window, as retry_ms says: the same waiters are granted,
     * above the floor. */
    int tries = 0;
    while (!a.res.granted) {
        assert_true(++tries < 10);
        assert_true(a.res.retry_ms >= 0 && a.res.retry_ms <= 3000);
        run_for(f, a.res.retry_ms + 1);
        a = acquire(f, "gk", t2, "waiter", 1);
    }
    assert_true(a.res.fencing > (unsigned long long)floor);
    acq b = acquire(f, "gh", t3, "thief", 1);
    assert_int_equal(b.res.granted, 1);
    assert_true(b.res.fencing > (unsigned long long)floor);
    assert_int_equal(acquire_pool(f, "gpool", 3, t3, "pool", 1).res.granted, 1);
    fx_close(f);
}

static void test_pool(void **state)
{
    (void)state;
    FX_OPEN(f, 0, 0, 3000);
    char t[6][33];
    for (int i = 0; i < 6; i++)
        make_token(t[i], (unsigned)i + 1);
    uint64_t seen = 0;
    acq got[3];
    for (int i = 0; i < 3; i++) {
        got[i] = acquire_pool(f, "gpus", 3, t[i], "job", 1);
        assert_int_equal(got[i].res.granted, 1);
        assert_true(got[i].res.device >= 0 && got[i].res.device < 3);
        assert_false(seen & (1u << got[i].res.device));
        seen |= 1u << got[i].res.device;
        char want[32];
        snprintf(want, sizeof(want), "gpus/%d", got[i].res.device);
        assert_string_equal(got[i].key, want);
    }
    assert_int_equal(got[0].res.device, 0); /* lowest free device first */
    acq d = acquire_pool(f, "gpus", 3, t[3], "waiter-d", 1);
    assert_int_equal(d.res.granted, 0);
    assert_int_equal(d.res.position, 1);
    assert_true(d.res.holder_fencing > 0);
    assert_true(d.res.retry_ms > 0 && d.res.retry_ms <= 10000);
    acq e = acquire_pool(f, "gpus", 3, t[4], "waiter-e", 1);
    assert_int_equal(e.res.position, 2);
    acq g = acquire_pool(f, "gpus", 3, t[5], "try", 0);
    assert_int_equal(g.res.granted, 0);
    assert_int_equal(g.res.position, 0);

    /* Device 1 frees up: only the pool queue's head takes it. */
    assert_int_equal(release(f, got[1].key, t[1]).err, 0);
    assert_int_equal(acquire_pool(f, "gpus", 3, t[4], "waiter-e", 1).res.granted, 0);
    int from = f->nev;
    acq d2 = acquire_pool(f, "gpus", 3, t[3], "waiter-d", 1);
    assert_int_equal(d2.res.granted, 1);
    assert_string_equal(d2.key, got[1].key);
    /* Waiters remain in the pool queue: WAKE_POOL. */
    RUN_UNTIL(f, find_event(f, from, STORE_EV_WAKE_POOL, "gpus") >= 0);
    acq e2 = acquire_pool(f, "gpus", 3, t[4], "waiter-e", 1);
    assert_int_equal(e2.res.granted, 0);
    assert_int_equal(e2.res.position, 1);
    fx_close(f);
}

/* One queue serves a pool name. A waiter that asked for fewer devices heads
 * it and can use none of the free ones: a request with another count must be
 * refused while it waits, not queued behind it for ever with devices free. */
static void test_pool_device_count_fixed_by_waiters(void **state)
{
    (void)state;
    FX_OPEN(f, 0, 0, 3000);
    char t[5][33];
    for (int i = 0; i < 5; i++)
        make_token(t[i], (unsigned)i + 101);
    acq h = acquire_pool(f, "gp", 1, t[0], "holder", 1);
    assert_int_equal(h.res.granted, 1);
    assert_int_equal(h.res.device, 0);
    acq a = acquire_pool(f, "gp", 1, t[1], "waiter-a", 1);
    assert_int_equal(a.err, 0);
    assert_int_equal(a.res.granted, 0);
    assert_int_equal(a.res.position, 1);

    /* gp/1..3 are free, but B's count differs from A's: refused, not queued. */
    acq b = acquire_pool(f, "gp", 4, t[2], "waiter-b", 1);
    assert_int_equal(b.err, BATON_E_INVALID);
    assert_non_null(strstr(b.msg, "pool 'gp' has waiters that use 1 devices"));
    acq b0 = acquire_pool(f, "gp", 4, t[2], "try-b", 0);
    assert_int_equal(b0.err, BATON_E_INVALID);
    /* The same count as the waiters is served as before. */
    acq c = acquire_pool(f, "gp", 1, t[3], "waiter-c", 1);
    assert_int_equal(c.err, 0);
    assert_int_equal(c.res.position, 2);

    /* Once nobody waits, any count is welcome again and the free device goes. */
    assert_int_equal(release(f, h.key, t[0]).err, 0);
    acq a2 = acquire_pool(f, "gp", 1, t[1], "waiter-a", 1);
    assert_int_equal(a2.res.granted, 1);
    acq c2 = acquire_pool(f, "gp", 1, t[3], "waiter-c", 1);
    assert_int_equal(c2.res.granted, 0); /* gp/0 is A's now */
    dequeue(f, NULL, "gp", t[3]);
    acq b2 = acquire_pool(f, "gp", 4, t[4], "waiter-b", 1);
    assert_int_equal(b2.err, 0);
    assert_int_equal(b2.res.granted, 1);
    assert_int_equal(b2.res.device, 1);
    fx_close(f);
}

static void test_direct_waiter_beats_pool(void **state)
{
    (void)state;
    FX_OPEN(f, 0, 0, 3000);
    char t[5][33];
    for (int i = 0; i < 5; i++)
        make_token(t[i], (unsigned)i + 1);
    for (int i = 0; i < 3; i++)
        assert_int_equal(acquire_pool(f, "gpus", 3, t[i], "job", 1).res.granted, 1);
    /* A direct waiter on device 2's key, then a pool waiter. */
    assert_int_equal(acquire(f, "gpus/2", t[3], "direct", 1).res.position, 1);
    assert_int_equal(acquire_pool(f, "gpus", 3, t[4], "pooled", 1).res.position, 1);
    assert_int_equal(release(f, "gpus/2", t[2]).err, 0);
    acq p = acquire_pool(f, "gpus", 3, t[4], "pooled", 1);
    assert_int_equal(p.res.granted, 0);
    acq direct = acquire(f, "gpus/2", t[3], "direct", 1);
    assert_int_equal(direct.res.granted, 1);
    assert_int_equal(direct.res.device, -1);
    /* Device 0 frees up with no direct waiter: the pool head takes it. */
    assert_int_equal(release(f, "gpus/0", t[0]).err, 0);
    acq p2 = acquire_pool(f, "gpus", 3, t[4], "pooled", 1);
    assert_int_equal(p2.res.granted, 1);
    assert_string_equal(p2.key, "gpus/0");
    fx_close(f);
}

static void test_dequeue_head_wakes(void **state)
{
    (void)state;
    FX_OPEN(f, 0, 0, 3000);
    char h[33], t[3][33];
    make_token(h, 100);
    for (int i = 0; i < 3; i++)
        make_token(t[i], (unsigned)i + 1);
    acquire(f, "k", h, "holder", 1);
    for (int i = 0; i < 3; i++)
        acquire(f, "k", t[i], "w", 1);
    dequeue(f, "k", NULL, t[1]); /* not the head: silent */
    dequeue(f, "k", NULL, t[0]); /* the head: WAKE */
    RUN_UNTIL(f, find_event(f, 0, STORE_EV_WAKE, "k") >= 0);
    assert_int_equal(count_events(f, STORE_EV_WAKE, "k"), 1);
    acq a = acquire(f, "k", t[2], "w", 1);
    assert_int_equal(a.res.position, 1);
    assert_int_equal(a.res.queue_len, 1);
    /* Pools: WAKE_POOL. */
    char p[3][33];
    for (int i = 0; i < 3; i++) {
        make_token(p[i], 200u + (unsigned)i);
        acquire_pool(f, "pl", 3, p[i], "x", 1);
    }
    char q1[33], q2[33];
    make_token(q1, 301);
    make_token(q2, 302);
    acquire_pool(f, "pl", 3, q1, "x", 1);
    acquire_pool(f, "pl", 3, q2, "x", 1);
    dequeue(f, NULL, "pl", q1);
    RUN_UNTIL(f, find_event(f, 0, STORE_EV_WAKE_POOL, "pl") >= 0);
    fx_close(f);
}

static void test_dead_waiter_purged(void **state)
{
    (void)state;
    FX_OPEN(f, 0, 0, 3000);
    char h[33], dead[33], live[33];
    make_token(h, 1);
    make_token(dead, 2);
    make_token(live, 3);
    acquire(f, "k", h, "holder", 1);
    assert_int_equal(acquire_full(f, f->st, "k", NULL, 0, dead, "dead", 10000, 1, 100).res.position, 1);
    assert_int_equal(acquire(f, "k", live, "live", 1).res.position, 2);
    release(f, "k", h);
    acq blocked = acquire(f, "k", live, "live", 1);
    assert_int_equal(blocked.res.granted, 0);
    assert_true(blocked.res.retry_ms >= 0 && blocked.res.retry_ms <= 100);
    run_for(f, blocked.res.retry_ms + 20);
    acq a = acquire(f, "k", live, "live", 1);
    assert_int_equal(a.res.granted, 1);
    long long score = cmd_int(f, "ZSCORE %s %s", rec(f, "k", "q"), dead);
    assert_int_equal(score, -999); /* purged */
    fx_close(f);
}

/* refresh keeps an entry alive past its first deadline and never re-creates one. */
static void test_refresh(void **state)
{
    (void)state;
    FX_OPEN(f, 0, 0, 3000);
    char h[33], w[33], gone[33];
    make_token(h, 1);
    make_token(w, 2);
    make_token(gone, 3);
    acquire(f, "k", h, "holder", 1);
    acquire_full(f, f->st, "k", NULL, 0, w, "w", 10000, 1, 200);
    store_target tg[2] = {{.key = "k"}, {.key = "k"}};
    const char *tokens[2] = {w, gone};
    assert_int_equal(f->st->ops->refresh(f->st, tg, tokens, 2, 60000), 0);
    desc d;
    d = describe(f, "k"); /* same connection: the refresh ran before */
    assert_int_equal(d.res.waiters, 1);
    long long dl = cmd_int(f, "ZSCORE %s %s", rec(f, "k", "qt"), w);
    redisReply *tm = cmd(f, "TIME");
    long long now = atoll(tm->element[0]->str) * 1000;
    freeReplyObject(tm);
    assert_true(dl > now + 50000);
    assert_int_equal(cmd_int(f, "ZSCORE %s %s", rec(f, "k", "qt"), gone), -999);
    /* The token without an entry is named, with its target. */
    assert_int_equal(f->nmissing, 1);
    assert_string_equal(f->missing_target, "k:k");
    assert_string_equal(f->missing_token, gone);
    /* ... also for a pool's queue. */
    store_target ptg = {.pool = "gpu", .devices = 2};
    const char *ptok[1] = {gone};
    assert_int_equal(f->st->ops->refresh(f->st, &ptg, ptok, 1, 60000), 0);
    RUN_UNTIL(f, f->nmissing == 2);
    assert_string_equal(f->missing_target, "p:gpu");
    assert_string_equal(f->missing_token, gone);
    assert_int_equal(cmd_int(f, "ZSCORE %s %s", rec(f, "k", "qt"), gone), -999); /* not re-created */
    f->nmissing = 0;

    /* Many entries of two targets, interleaved: every one is refreshed, in
     * batches (1,100 tokens of "m" span three scripts). */
    enum { NM = 1100 };
    static char mtok[NM][33];
    store_target *mt = calloc(NM + 2, sizeof(*mt));
    const char **mtoks = calloc(NM + 2, sizeof(*mtoks));
    assert_non_null(mt);
    assert_non_null(mtoks);
    size_t n = 0;
    for (int i = 0; i < NM; i++) {
        make_token(mtok[i], 1000u + (unsigned)i);
        redisReply *r = cmd(f, "ZADD %s 1 %s", rec(f, "m", "qt"), mtok[i]);
        freeReplyObject(r);
        if (i == 600) { /* an entry of another target in between */
            mt[n] = (store_target){.key = "k"};
            mtoks[n++] = w;
        }
        mt[n] = (store_target){.key = "m"};
        mtoks[n++] = mtok[i];
    }
    assert_int_equal(f->st->ops->refresh(f->st, mt, mtoks, n, 60000), 0);
    /* Batches go one at a time, in order: the last one done means all are. */
    RUN_UNTIL(f, cmd_int(f, "ZSCORE %s %s", rec(f, "m", "qt"), mtok[NM - 1]) > now + 50000);
    for (int i = 0; i < NM; i++)
        assert_true(cmd_int(f, "ZSCORE %s %s", rec(f, "m", "qt"), mtok[i]) > now + 50000);
    assert_true(cmd_int(f, "ZSCORE %s %s", rec(f, "k", "qt"), w) > now + 50000);

    /* One batch in flight at a time: a command sent right after a refresh
     * round is answered before the round's last batch even left. */
    assert_int_equal(f->st->ops->refresh(f->st, mt, mtoks, n, 90000), 0);
    d = describe(f, "m");
    assert_true(cmd_int(f, "ZSCORE %s %s", rec(f, "m", "qt"), mtok[NM - 1]) < now + 80000);
    RUN_UNTIL(f, cmd_int(f, "ZSCORE %s %s", rec(f, "m", "qt"), mtok[NM - 1]) > now + 80000);

    /* A round called while the last one is still sending is skipped, not
     * the tail of the last one dropped: replacing it would drop the same tail
     * at every round and let those entries expire. Two back-to-back rounds of
     * 7 batches cost 7 scripts, and every entry gets the first round's
     * deadline. */
    d = describe(f, "m"); /* its reply follows the last batch's: none in flight */
    redisReply *rs = cmd(f, "CONFIG RESETSTAT");
    freeReplyObject(rs);
    assert_int_equal(f->st->ops->refresh(f->st, mt, mtoks, n, 100000), 0);
    assert_int_equal(f->st->ops->refresh(f->st, mt, mtoks, n, 120000), 0);
    RUN_UNTIL(f, cmd_int(f, "ZSCORE %s %s", rec(f, "m", "qt"), mtok[NM - 1]) > now + 95000);
    d = describe(f, "m");
    rs = cmd(f, "INFO commandstats");
    const char *ev = strstr(rs->str, "cmdstat_evalsha:calls=");
    assert_non_null(ev);
    long calls = atol(ev + strlen("cmdstat_evalsha:calls="));
    freeReplyObject(rs);
    assert_int_equal(calls, 7 + 1); /* 600 + 1 (the other key) + 500 tokens, and the describe */
    for (int i = 0; i < NM; i++) {
        long long sc = cmd_int(f, "ZSCORE %s %s", rec(f, "m", "qt"), mtok[i]);
        assert_true(sc > now + 95000 && sc < now + 110000);
    }
    free(mt);
    free(mtoks);
    fx_close(f);
}

/* Score of tok in the liveness zset of key "r<i>". */
static long long r_score(fixture *f, int i, const char *tok)
{
    char key[16];
    snprintf(key, sizeof(key), "r%d", i);
    return cmd_int(f, "ZSCORE %s %s", rec(f, key, "qt"), tok);
}

/* Many keys with one waiter each: small batches go out together (up to 200
 * tokens in flight). A command sent right after the round is answered after
 * the first 200 batches ran (one at a time: only the first would have) and
 * before the last ones were even sent (no pacing: all would have). */
static void test_refresh_many_keys(void **state)
{
    (void)state;
    FX_OPEN(f, 0, 0, 3000);
    enum { NK = 1000 };
    static char keys[NK][16];
    static store_target tg[NK];
    static const char *toks[NK];
    char tok[33];
    make_token(tok, 7);
    for (int i = 0; i < NK; i++) {
        snprintf(keys[i], sizeof(keys[i]), "r%d", i);
        char key[16];
        snprintf(key, sizeof(key), "r%d", i);
        redisReply *r = cmd(f, "ZADD %s 1 %s", rec(f, key, "qt"), tok);
        freeReplyObject(r);
        tg[i] = (store_target){.key = keys[i]};
        toks[i] = tok;
    }
    redisReply *tm = cmd(f, "TIME");
    long long now = atoll(tm->element[0]->str) * 1000;
    freeReplyObject(tm);
    assert_int_equal(f->st->ops->refresh(f->st, tg, toks, NK, 60000), 0);
    desc d = describe(f, "r0");
    (void)d;
    assert_true(r_score(f, 199, tok) > now + 50000);
    assert_true(r_score(f, NK - 1, tok) < now + 50000);
    RUN_UNTIL(f, r_score(f, NK - 1, tok) > now + 50000);
    for (int i = 0; i < NK; i++)
        assert_true(r_score(f, i, tok) > now + 50000);
    fx_close(f);
}

static void test_force_release(void **state)
{
    (void)state;
    FX_OPEN(f, 0, 0, 3000);
    char t1[33];
    make_token(t1, 1);
    acq a = acquire(f, "k", t1, "alice", 0);
    hold wrong = force_release(f, "k", a.res.fencing + 1);
    assert_int_equal(wrong.err, BATON_E_NOT_HOLDER);
    assert_string_equal(wrong.holder, "alice");
    assert_true(wrong.res.holder_fencing == a.res.fencing);
    assert_int_equal(cmd_int(f, "EXISTS %s", rec(f, "k", "lock")), 1);
    hold right = force_release(f, "k", a.res.fencing);
    assert_int_equal(right.err, 0);
    assert_int_equal(cmd_int(f, "EXISTS %s", rec(f, "k", "lock")), 0);
    assert_int_equal(cmd_int(f, "EXISTS %s", rec(f, "k", "hold")), 0);
    RUN_UNTIL(f, find_event(f, 0, STORE_EV_FORCE_RELEASED, "k") >= 0);
    rec_event *e = &f->ev[find_event(f, 0, STORE_EV_FORCE_RELEASED, "k")];
    assert_string_equal(e->owner, "alice");
    assert_true(e->fencing == a.res.fencing);
    hold again = force_release(f, "k", a.res.fencing);
    assert_int_equal(again.err, BATON_E_NOT_HOLDER);
    /* The holder's own release now fails. */
    assert_int_equal(release(f, "k", t1).err, BATON_E_NOT_HOLDER);
    fx_close(f);
}

static void test_describe(void **state)
{
    (void)state;
    FX_OPEN(f, 0, 0, 3000);
    char t1[33], t2[33];
    make_token(t1, 1);
    make_token(t2, 2);
    desc d = describe(f, "k");
    assert_int_equal(d.res.held, 0);
    assert_string_equal(d.owner, "");
    assert_int_equal(d.res.waiters, 0);
    acq a = acquire(f, "k", t1, "alice smith", 1);
    acquire(f, "k", t2, "bob", 1);
    d = describe(f, "k");
    assert_int_equal(d.res.held, 1);
    assert_string_equal(d.owner, "alice smith");
    assert_true(d.res.fencing == a.res.fencing);
    assert_true(d.res.ttl_ms > 0 && d.res.ttl_ms <= 10000);
    assert_int_equal(d.res.waiters, 1);
    fx_close(f);
}

/* CLIENT KILL ID of every connection named `name`; returns how many. */
static int kill_by_name(fixture *f, const char *name)
{
    redisReply *r = cmd(f, "CLIENT LIST");
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    int killed = 0;
    char want[96];
    snprintf(want, sizeof(want), " name=%s ", name);
    for (char *line = strtok(r->str, "\n"); line; line = strtok(NULL, "\n")) {
        if (!strstr(line, want))
            continue;
        long long id = atoll(line + 3); /* "id=N ..." */
        killed += (int)cmd_int(f, "CLIENT KILL ID %lld", id);
    }
    freeReplyObject(r);
    return killed;
}

static void test_connection_drop(void **state)
{
    (void)state;
    FX_OPEN(f, 0, 0, 3000);
    char name[64], t1[33], t2[33];
    make_token(t1, 1);
    make_token(t2, 2);

    /* Command connection, with an op held in flight by CLIENT PAUSE. */
    freeReplyObject(cmd(f, "CLIENT PAUSE 3000 WRITE"));
    acq inflight = {0};
    store_acquire_req req = {
        .target = {.key = "k"}, .token = t1, .owner = "a", .ttl_ms = 10000, .liveness_ms = 1000};
    assert_int_equal(f->st->ops->acquire(f->st, &req, acq_cb, &inflight), 0);
    run_for(f, 50);
    assert_int_equal(inflight.done, 0);
    snprintf(name, sizeof(name), "baton-cmd-%ld", (long)getpid());
    assert_true(kill_by_name(f, name) >= 1);
    RUN_UNTIL(f, inflight.done);
    assert_int_equal(inflight.done, 1);
    assert_int_equal(inflight.err, BATON_E_UNAVAILABLE);
    RUN_UNTIL(f, f->downs == 1);
    /* While down: refused, no callback. */
    acq refused = {0};
    if (!store_redis_is_up(f->st)) {
        assert_int_equal(f->st->ops->acquire(f->st, &req, acq_cb, &refused), BATON_E_UNAVAILABLE);
        assert_int_equal(f->st->ops->reap(f->st, "k"), BATON_E_UNAVAILABLE);
    }
    freeReplyObject(cmd(f, "CLIENT UNPAUSE"));
    RUN_UNTIL(f, f->ups == 2);
    assert_int_equal(refused.done, 0);
    /* The outcome of the lost op is unknown; either way the store works. */
    acq after = acquire(f, "k2", t2, "b", 0);
    assert_int_equal(after.res.granted, 1);

    /* Pub/sub connection. */
    snprintf(name, sizeof(name), "baton-sub-%ld", (long)getpid());
    assert_true(kill_by_name(f, name) >= 1);
    RUN_UNTIL(f, f->downs == 2);
    RUN_UNTIL(f, f->ups == 3);
    int from = f->nev;
    release(f, "k2", t2);
    RUN_UNTIL(f, find_event(f, from, STORE_EV_RELEASED, "k2") >= 0);
    assert_int_equal(refused.done, 0);
    fx_close(f);
}

/* A reply overdue by command_timeout_ms drops the connections. */
static void test_command_timeout(void **state)
{
    (void)state;
    FX_OPEN(f, 0, 0, 300);
    char t1[33];
    make_token(t1, 1);
    freeReplyObject(cmd(f, "CLIENT PAUSE 1500 WRITE"));
    acq a = {0};
    store_acquire_req req = {
        .target = {.key = "k"}, .token = t1, .owner = "a", .ttl_ms = 10000, .liveness_ms = 1000};
    assert_int_equal(f->st->ops->acquire(f->st, &req, acq_cb, &a), 0);
    RUN_UNTIL(f, a.done);
    assert_int_equal(a.err, BATON_E_UNAVAILABLE);
    assert_true(f->downs >= 1);
    freeReplyObject(cmd(f, "CLIENT UNPAUSE"));
    RUN_UNTIL(f, store_redis_is_up(f->st));
    assert_int_equal(acquire(f, "k9", t1, "a", 0).res.granted, 1);
    fx_close(f);
}

/* SCRIPT FLUSH: the store falls back to EVAL once per op. */
static void test_noscript_fallback(void **state)
{
    (void)state;
    FX_OPEN(f, 0, 0, 3000);
    char t1[33];
    make_token(t1, 1);
    freeReplyObject(cmd(f, "SCRIPT FLUSH"));
    acq a = acquire(f, "k", t1, "alice", 0);
    assert_int_equal(a.err, 0);
    assert_int_equal(a.res.granted, 1);
    fx_close(f);
}

/* A store that cannot connect refuses ops and never calls back. */
static void test_down_store(void **state)
{
    (void)state;
    if (!getenv("BATON_TEST_REDIS"))
        skip();
    struct event_base *base = event_base_new();
    store_redis_opts o = {.address = "unix:/nonexistent/baton.sock",
                          .key_prefix = "x:",
                          .command_timeout_ms = 100,
                          .reconnect_ms = 20};
    baton_store *st = store_redis_new(base, &o);
    assert_non_null(st);
    acq a = {0};
    store_acquire_req req = {
        .target = {.key = "k"}, .token = "0123456789abcdef0123456789abcdef", .owner = "", .ttl_ms = 1000};
    assert_int_equal(st->ops->acquire(st, &req, acq_cb, &a), BATON_E_UNAVAILABLE);
    struct timeval tv = {0, 200000};
    event_base_loopexit(base, &tv);
    event_base_dispatch(base); /* several reconnect attempts */
    assert_false(store_redis_is_up(st));
    assert_int_equal(a.done, 0);
    st->ops->free(st);

    store_redis_opts bad = o;
    bad.address = "nocolon";
    assert_null(store_redis_new(base, &bad));
    bad.address = "host:0";
    assert_null(store_redis_new(base, &bad));
    bad.address = "unix:";
    assert_null(store_redis_new(base, &bad));
    bad = o;
    bad.command_timeout_ms = 0;
    assert_null(store_redis_new(base, &bad));
    event_base_free(base);
}

/* Freeing with an op in flight drops its callback (and leaks nothing). */
static void test_free_with_op_in_flight(void **state)
{
    (void)state;
    FX_OPEN(f, 0, 0, 3000);
    char t1[33];
    make_token(t1, 1);
    acq a = {0};
    store_acquire_req req = {.target = {.key = "k"}, .token = t1, .owner = "a", .ttl_ms = 10000};
    assert_int_equal(f->st->ops->acquire(f->st, &req, acq_cb, &a), 0);
    f->st->ops->free(f->st);
    f->st = NULL;
    run_for(f, 50);
    assert_int_equal(a.done, 0);
    fx_close(f);
}

/* free() from inside a callback is deferred to the next loop turn. */
typedef struct free_in_cb {
    baton_store *st;
    int calls;
} free_in_cb;

static void free_from_cb(void *ud, int err, const char *msg, const store_acquire_res *res)
{
    free_in_cb *x = ud;
    (void)err, (void)msg, (void)res;
    x->calls++;
    x->st->ops->free(x->st);
}

static void test_free_inside_callback(void **state)
{
    (void)state;
    FX_OPEN(f, 0, 0, 3000);
    char t1[33], t2[33];
    make_token(t1, 1);
    make_token(t2, 2);
    free_in_cb x = {.st = f->st};
    acq second = {0};
    store_acquire_req req = {.target = {.key = "k"}, .token = t1, .owner = "a", .ttl_ms = 10000};
    assert_int_equal(f->st->ops->acquire(f->st, &req, free_from_cb, &x), 0);
    req.token = t2;
    assert_int_equal(f->st->ops->acquire(f->st, &req, acq_cb, &second), 0);
    f->st = NULL;
    RUN_UNTIL(f, x.calls == 1);
    run_for(f, 50);
    assert_int_equal(x.calls, 1);
    assert_int_equal(second.done, 0); /* dropped once free() was asked for */
    fx_close(f);
}

/* Direct handoff: a release grants `next` only when it heads the queue. */
static void test_release_hands_off(void **state)
{
    (void)state;
    FX_OPEN(f, 0, 0, 3000);
    char t1[33], t2[33], t3[33], t4[33];
    make_token(t1, 1);
    make_token(t2, 2);
    make_token(t3, 3);
    make_token(t4, 4);
    acq a1 = acquire(f, "k", t1, "one", 1);
    assert_int_equal(a1.res.granted, 1);
    assert_int_equal(acquire(f, "k", t2, "two", 1).res.position, 1);
    assert_int_equal(acquire(f, "k", t3, "three", 1).res.position, 2);

    /* t3 is not the head: released, not handed over, t3 still queued. */
    hold h = release_next(f, "k", t1, t3, 5000);
    assert_int_equal(h.err, BATON_OK);
    assert_int_equal(h.next.granted, 0);
    assert_int_equal(cmd_int(f, "EXISTS %s{k}:lock", f->prefix), 0);
    assert_int_equal(cmd_int(f, "ZCARD %s{k}:q", f->prefix), 2);

    acq a2 = acquire(f, "k", t2, "two", 1);
    assert_int_equal(a2.res.granted, 1);
    int from = f->nev;

    /* t3 heads now: granted by the release, as acquire would. */
    h = release_next(f, "k", t2, t3, 5000);
    assert_int_equal(h.err, BATON_OK);
    assert_int_equal(h.next.granted, 1);
    assert_string_equal(h.next_key, "k");
    assert_int_equal(h.next.device, -1);
    assert_true(h.next.fencing > a2.res.fencing);
    assert_int_equal(h.next.ttl_ms, 5000);
    redisReply *r = cmd(f, "GET %s{k}:lock", f->prefix);
    assert_string_equal(r->str, t3);
    freeReplyObject(r);
    long long pttl = cmd_int(f, "PTTL %s{k}:lock", f->prefix);
    assert_true(pttl > 4000 && pttl <= 5000);
    assert_int_equal(cmd_int(f, "HGET %s{k}:hold fencing", f->prefix), (long long)h.next.fencing);
    assert_int_equal(cmd_int(f, "EXISTS %s{k}:q", f->prefix), 0);
    assert_int_equal(cmd_int(f, "EXISTS %s{k}:qt", f->prefix), 0);
    /* Watchers see RELEASED (two) then ACQUIRED (next). Events of earlier
     * steps may still arrive after `from`: match by owner. */
    RUN_UNTIL(f, find_event_owner(f, from, STORE_EV_ACQUIRED, "k", "next") >= 0);
    int rel = find_event_owner(f, from, STORE_EV_RELEASED, "k", "two");
    int got = find_event_owner(f, from, STORE_EV_ACQUIRED, "k", "next");
    assert_true(rel >= 0 && rel < got);
    assert_int_equal(f->ev[rel].fencing, a2.res.fencing);
    assert_int_equal(f->ev[got].fencing, h.next.fencing);

    /* The grant is t3's: its own attempt reports it again (idempotent). */
    acq a3 = acquire(f, "k", t3, "three", 1);
    assert_int_equal(a3.res.granted, 1);
    assert_int_equal(a3.res.fencing, h.next.fencing);

    /* A stale token releases nothing and hands nothing over. */
    assert_int_equal(acquire(f, "k", t4, "four", 1).res.position, 1);
    h = release_next(f, "k", t1, t4, 5000);
    assert_int_equal(h.err, BATON_E_NOT_HOLDER);
    assert_int_equal(h.next.granted, 0);
    r = cmd(f, "GET %s{k}:lock", f->prefix);
    assert_string_equal(r->str, t3);
    freeReplyObject(r);
    fx_close(f);
}

/* A dead head is purged before the handoff; a waiter that is not queued at
 * all (dequeued, or never enqueued) is never granted by a release. */
static void test_release_handoff_purges_dead_head(void **state)
{
    (void)state;
    FX_OPEN(f, 0, 0, 3000);
    char t1[33], t2[33], t3[33], t4[33];
    make_token(t1, 1);
    make_token(t2, 2);
    make_token(t3, 3);
    make_token(t4, 4);
    assert_int_equal(acquire(f, "k", t1, "one", 1).res.granted, 1);
    assert_int_equal(acquire_full(f, f->st, "k", NULL, 0, t2, "dead", 10000, 1, 50).res.position, 1);
    assert_int_equal(acquire(f, "k", t3, "three", 1).res.position, 2);
    run_for(f, 120); /* t2's liveness deadline passes */
    hold h = release_next(f, "k", t1, t3, 5000);
    assert_int_equal(h.err, BATON_OK);
    assert_int_equal(h.next.granted, 1);
    assert_int_equal(cmd_int(f, "ZSCORE %s{k}:q %s", f->prefix, t2), -999); /* purged */

    /* Nobody queued: t4 was never enqueued, so it is not granted. */
    h = release_next(f, "k", t3, t4, 5000);
    assert_int_equal(h.err, BATON_OK);
    assert_int_equal(h.next.granted, 0);
    assert_int_equal(cmd_int(f, "EXISTS %s{k}:lock", f->prefix), 0);
    fx_close(f);
}

/* ---------------------------------------------------------- hammer */

typedef struct hammer hammer;
typedef struct hclient {
    hammer *h;
    baton_store *st;
    char token[33];
    int holding;
    int parked; /* queued; retries after 1 ms unless a release hands it the key */
    int grants;
} hclient;

struct hammer {
    fixture *f;
    int holders;
    uint64_t last_fencing;
    int grants, attempts, violations, errors, target;
    int offers, handoffs; /* releases that named a parked client; grants they made */
    unsigned seed;
    hclient c[6];
};

static void h_attempt(hclient *c);
static void h_granted(hclient *c, uint64_t fencing);

typedef struct hrel {
    hclient *c;    /* the releaser */
    hclient *next; /* the parked client the release named, or NULL */
} hrel;

static void h_released(void *ud, int err, const char *msg, const store_hold_res *res)
{
    hrel *r = ud;
    hclient *c = r->c, *n = r->next;
    (void)msg;
    free(r);
    if (err)
        c->h->errors++;
    if (n) {
        if (!err && res && res->next && res->next->granted) {
            c->h->handoffs++;
            h_granted(n, res->next->fencing);
        } else {
            h_attempt(n);
        }
    }
    h_attempt(c);
}

/* Releases one loop turn after the grant, so attempts of others interleave.
 * Half the releases name a parked client (possibly of the other store) as
 * `next`: a direct handoff must never make a second holder either. */
static void h_release_now(evutil_socket_t fd, short what, void *arg)
{
    hclient *c = arg;
    hammer *h = c->h;
    (void)fd, (void)what;
    /* Stop believing we hold before Redis can grant anyone else. */
    c->holding = 0;
    h->holders--;
    hrel *r = calloc(1, sizeof(*r));
    assert_non_null(r);
    r->c = c;
    if (rand_r(&h->seed) & 1) {
        int start = (int)(rand_r(&h->seed) % 6);
        for (int i = 0; i < 6 && !r->next; i++)
            if (h->c[(start + i) % 6].parked)
                r->next = &h->c[(start + i) % 6];
    }
    store_acquire_req next = {.target = {.key = "hot"}, .owner = "hammer", .ttl_ms = 10000};
    if (r->next) {
        r->next->parked = 0; /* its retry timer now does nothing */
        next.token = r->next->token;
        h->offers++;
    }
    if (c->st->ops->release(c->st, "hot", c->token, r->next ? &next : NULL, h_released, r) != 0) {
        h->errors++;
        free(r);
    }
}

static void h_granted(hclient *c, uint64_t fencing)
{
    hammer *h = c->h;
    if (h->holders != 0)
        h->violations++;
    if (fencing <= h->last_fencing)
        h->violations++;
    h->last_fencing = fencing;
    h->holders++;
    h->grants++;
    c->grants++;
    c->holding = 1;
    struct timeval zero = {0, 0};
    event_base_once(h->f->base, -1, EV_TIMEOUT, h_release_now, c, &zero);
}

static void h_retry(evutil_socket_t fd, short what, void *arg)
{
    hclient *c = arg;
    (void)fd, (void)what;
    if (!c->parked)
        return;
    c->parked = 0;
    h_attempt(c);
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
    if (res->granted) {
        h_granted(c, res->fencing);
        return;
    }
    if (res->position > 0) {
        c->parked = 1;
        struct timeval ms = {0, 1000};
        event_base_once(h->f->base, -1, EV_TIMEOUT, h_retry, c, &ms);
        return;
    }
    h_attempt(c);
}

static void h_attempt(hclient *c)
{
    hammer *h = c->h;
    if (h->grants >= h->target)
        return;
    h->attempts++;
    store_acquire_req req = {.target = {.key = "hot"},
                             .token = c->token,
                             .owner = "hammer",
                             .ttl_ms = 10000,
                             .enqueue = (h->attempts % 3) != 0,
                             .liveness_ms = 10000};
    if (c->st->ops->acquire(c->st, &req, h_acquired, c) != 0)
        h->errors++;
}

static void test_hammer_two_stores(void **state)
{
    (void)state;
    FX_OPEN(f, 0, 0, 5000);
    baton_store *st2 = new_store(f, getenv("BATON_TEST_REDIS"), 0, 5000);
    RUN_UNTIL(f, store_redis_is_up(st2));
    hammer *h = calloc(1, sizeof(*h));
    h->f = f;
    h->target = 300;
    h->seed = 7;
    for (int i = 0; i < 6; i++) {
        h->c[i].h = h;
        h->c[i].st = (i % 2) ? st2 : f->st;
        make_token(h->c[i].token, 1000u + (unsigned)i);
    }
    for (int i = 0; i < 6; i++)
        h_attempt(&h->c[i]);
    int64_t deadline = now_ms() + 30000;
    while (h->grants < h->target && !h->errors && now_ms() < deadline)
        event_base_loop(f->base, EVLOOP_ONCE);
    run_for(f, 100); /* let the last releases land */
    assert_int_equal(h->errors, 0);
    assert_int_equal(h->violations, 0);
    assert_true(h->grants >= h->target);
    assert_true(h->attempts > h->grants); /* contention really happened */
    assert_true(h->handoffs > 0);         /* and releases handed the key on */
    print_message("hammer: %d grants, %d attempts, %d handoffs of %d offers\n", h->grants, h->attempts,
                  h->handoffs, h->offers);
    /* Every client got turns (FIFO queue). */
    for (int i = 0; i < 6; i++)
        assert_true(h->c[i].grants > 0);
    st2->ops->free(st2);
    free(h);
    fx_close(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grant_and_fencing),
        cmocka_unit_test(test_busy_reports_holder),
        cmocka_unit_test(test_idempotent_reacquire),
        cmocka_unit_test(test_fifo_order),
        cmocka_unit_test(test_head_token),
        cmocka_unit_test(test_head_token_pool),
        cmocka_unit_test(test_stale_token_not_holder),
        cmocka_unit_test(test_expiry_publishes_expired),
        cmocka_unit_test(test_reap_once),
        cmocka_unit_test(test_fencing_survives_flush),
        cmocka_unit_test(test_fencing_floor_after_primary_change),
        cmocka_unit_test(test_min_replicas_unconfirmed),
        cmocka_unit_test(test_failover_grace),
        cmocka_unit_test(test_pool),
        cmocka_unit_test(test_direct_waiter_beats_pool),
        cmocka_unit_test(test_pool_device_count_fixed_by_waiters),
        cmocka_unit_test(test_dequeue_head_wakes),
        cmocka_unit_test(test_dead_waiter_purged),
        cmocka_unit_test(test_refresh),
        cmocka_unit_test(test_refresh_many_keys),
        cmocka_unit_test(test_force_release),
        cmocka_unit_test(test_describe),
        cmocka_unit_test(test_connection_drop),
        cmocka_unit_test(test_command_timeout),
        cmocka_unit_test(test_noscript_fallback),
        cmocka_unit_test(test_down_store),
        cmocka_unit_test(test_free_with_op_in_flight),
        cmocka_unit_test(test_free_inside_callback),
        cmocka_unit_test(test_release_hands_off),
        cmocka_unit_test(test_release_handoff_purges_dead_head),
        cmocka_unit_test(test_hammer_two_stores),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
