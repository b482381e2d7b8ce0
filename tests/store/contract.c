/* The store contract's cases (see contract.h). */
#include "contract.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <event2/event.h>

#define WAIT_MS 5000 /* generous: only catches hangs */
#define LONG_TTL 30000

typedef struct rec_event {
    store_event_type type;
    char key[BATON_KEY_MAX + 1];
    char owner[BATON_OWNER_MAX + 1];
    uint64_t fencing;
} rec_event;

typedef struct ct {
    struct event_base *base;
    struct event *tick;
    baton_store *st;
    int ups;
    rec_event ev[256];
    int nev;
    int nmissing;
    char missing[BATON_KEY_MAX + BATON_TOKEN_LEN + 8]; /* "k:<key> <token>" of the last */
} ct;

static const contract_backend *backend;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#define RUN_UNTIL(t, cond)                                                                                   \
    do {                                                                                                     \
        int64_t deadline_ = now_ms() + WAIT_MS;                                                              \
        while (!(cond) && now_ms() < deadline_)                                                              \
            event_base_loop((t)->base, EVLOOP_ONCE);                                                         \
        if (!(cond))                                                                                         \
            fail_msg("%s: timed out waiting for %s", backend->name, #cond);                                  \
    } while (0)

static void run_for(ct *t, int64_t ms)
{
    int64_t deadline = now_ms() + ms;
    while (now_ms() < deadline)
        event_base_loop(t->base, EVLOOP_ONCE);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
}

static void on_state(void *ud, int up)
{
    ((ct *)ud)->ups += up ? 1 : 0;
}

static void on_event(void *ud, const store_event *ev)
{
    ct *t = ud;
    if (t->nev >= (int)(sizeof t->ev / sizeof t->ev[0]))
        return;
    rec_event *r = &t->ev[t->nev++];
    r->type = ev->type;
    r->fencing = ev->fencing;
    snprintf(r->key, sizeof r->key, "%s", ev->key);
    snprintf(r->owner, sizeof r->owner, "%s", ev->owner);
}

static void on_missing(void *ud, const store_target *tg, const char *token)
{
    ct *t = ud;
    t->nmissing++;
    snprintf(t->missing, sizeof t->missing, "%s:%s %s", tg->key ? "k" : "p", tg->key ? tg->key : tg->pool,
             token);
}

/* Index of the first event of `type` on `key` at or after `from`, or -1. */
static int find_event(const ct *t, int from, store_event_type type, const char *key)
{
    for (int i = from; i < t->nev; i++)
        if (t->ev[i].type == type && strcmp(t->ev[i].key, key) == 0)
            return i;
    return -1;
}

static int setup(void **state)
{
    ct *t = calloc(1, sizeof *t);
    assert_non_null(t);
    t->base = event_base_new();
    assert_non_null(t->base);
    t->tick = event_new(t->base, -1, EV_PERSIST, on_tick, NULL);
    struct timeval tv = {0, 5000};
    event_add(t->tick, &tv);
    t->st = backend->open(t->base);
    if (t->st) {
        t->st->hooks.on_event = on_event;
        t->st->hooks.on_state = on_state;
        t->st->hooks.on_missing = on_missing;
        t->st->hooks.ud = t;
    }
    *state = t;
    return 0;
}

static int teardown(void **state)
{
    ct *t = *state;
    if (t->st)
        t->st->ops->free(t->st);
    event_free(t->tick);
    event_base_free(t->base);
    free(t);
    return 0;
}

/* The case's fixture, its store up; skips when the backend is unavailable. */
static ct *up(void **state)
{
    ct *t = *state;
    if (!t->st)
        skip();
    RUN_UNTIL(t, t->ups > 0);
    return t;
}

static const char *tok(unsigned n)
{
    static char buf[8][BATON_TOKEN_LEN + 1];
    static int next;
    char *b = buf[next++ % 8];
    snprintf(b, BATON_TOKEN_LEN + 1, "%032x", n);
    return b;
}

/* ------------------------------------------------------------ op wrappers */

typedef struct acq {
    int done, err;
    store_acquire_res res;
    char key[BATON_KEY_MAX + 16];
    char holder[BATON_OWNER_MAX + 1];
    char head[BATON_TOKEN_LEN + 2]; /* "" for NULL or "" */
    int32_t dev[16];                /* res.devices / fencings of a pool grant */
    uint64_t fenc[16];
} acq;

static void acq_cb(void *ud, int err, const char *msg, const store_acquire_res *res)
{
    acq *a = ud;
    a->done++;
    a->err = err;
    if (err == BATON_OK)
        assert_null(msg);
    else
        assert_non_null(msg);
    if (res) {
        a->res = *res;
        snprintf(a->key, sizeof a->key, "%s", res->key ? res->key : "");
        snprintf(a->holder, sizeof a->holder, "%s", res->holder_owner ? res->holder_owner : "");
        snprintf(a->head, sizeof a->head, "%s", res->head_token ? res->head_token : "");
        a->res.key = a->res.holder_owner = a->res.head_token = NULL;
        assert_true(res->ndevices >= 0 && res->ndevices <= 16);
        for (int32_t i = 0; i < res->ndevices; i++) {
            a->dev[i] = res->devices[i];
            a->fenc[i] = res->fencings[i];
        }
        a->res.devices = NULL;
        a->res.fencings = NULL;
    }
}

static acq acquire_count(ct *t, const char *key, const char *pool, int devices, int count, const char *token,
                         const char *owner, int64_t ttl, int enqueue, int64_t liveness)
{
    acq a = {0};
    store_acquire_req req = {.target = {.key = key, .pool = pool, .devices = devices},
                             .token = token,
                             .owner = owner,
                             .ttl_ms = ttl,
                             .enqueue = enqueue,
                             .liveness_ms = liveness,
                             .count = count};
    assert_int_equal(t->st->ops->acquire(t->st, &req, acq_cb, &a), 0);
    assert_int_equal(a.done, 0); /* never from inside the op */
    RUN_UNTIL(t, a.done);
    assert_int_equal(a.done, 1);
    return a;
}

static acq acquire_full(ct *t, const char *key, const char *pool, int devices, const char *token,
                        const char *owner, int64_t ttl, int enqueue, int64_t liveness)
{
    return acquire_count(t, key, pool, devices, 0, token, owner, ttl, enqueue, liveness);
}

static acq acquire(ct *t, const char *key, const char *token, const char *owner, int enqueue)
{
    return acquire_full(t, key, NULL, 0, token, owner, LONG_TTL, enqueue, LONG_TTL);
}

static acq acquire_pool(ct *t, const char *pool, int devices, const char *token, const char *owner,
                        int enqueue)
{
    return acquire_full(t, NULL, pool, devices, token, owner, LONG_TTL, enqueue, LONG_TTL);
}

typedef struct hold {
    int done, err;
    char msg[512];
    store_hold_res res;
    char holder[BATON_OWNER_MAX + 1];
    int has_next;
    store_acquire_res next;
    char next_key[BATON_KEY_MAX + 1];
} hold;

static void hold_cb(void *ud, int err, const char *msg, const store_hold_res *res)
{
    hold *h = ud;
    h->done++;
    h->err = err;
    snprintf(h->msg, sizeof h->msg, "%s", msg ? msg : "");
    if (err == BATON_OK)
        assert_null(msg);
    else
        assert_non_null(msg);
    if (res) {
        h->res = *res;
        snprintf(h->holder, sizeof h->holder, "%s", res->holder_owner ? res->holder_owner : "");
        h->res.holder_owner = NULL;
        h->res.next = NULL;
        if (res->next) {
            h->has_next = 1;
            h->next = *res->next;
            snprintf(h->next_key, sizeof h->next_key, "%s", res->next->key ? res->next->key : "");
            h->next.key = NULL;
        }
    }
}

#define HOLD_WAIT(t, h)                                                                                      \
    do {                                                                                                     \
        assert_int_equal((h).done, 0);                                                                       \
        RUN_UNTIL(t, (h).done);                                                                              \
        assert_int_equal((h).done, 1);                                                                       \
    } while (0)

static hold renew(ct *t, const char *key, const char *token, int64_t ttl)
{
    hold h = {0};
    assert_int_equal(t->st->ops->renew(t->st, key, token, ttl, hold_cb, &h), 0);
    HOLD_WAIT(t, h);
    return h;
}

static hold release_next(ct *t, const char *key, const char *token, const char *next_token,
                         const char *next_owner)
{
    hold h = {0};
    store_acquire_req next = {.target = {.key = key},
                              .token = next_token,
                              .owner = next_owner,
                              .ttl_ms = LONG_TTL,
                              .liveness_ms = LONG_TTL};
    assert_int_equal(t->st->ops->release(t->st, key, token, next_token ? &next : NULL, hold_cb, &h), 0);
    HOLD_WAIT(t, h);
    return h;
}

static hold release(ct *t, const char *key, const char *token)
{
    return release_next(t, key, token, NULL, NULL);
}

static hold force_release(ct *t, const char *key, uint64_t fencing)
{
    hold h = {0};
    assert_int_equal(t->st->ops->force_release(t->st, key, fencing, hold_cb, &h), 0);
    HOLD_WAIT(t, h);
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
    d->done++;
    d->err = err;
    if (res) {
        d->res = *res;
        snprintf(d->owner, sizeof d->owner, "%s", res->owner ? res->owner : "");
        d->res.owner = NULL;
    }
}

static desc describe(ct *t, const char *key)
{
    desc d = {0};
    assert_int_equal(t->st->ops->describe(t->st, key, desc_cb, &d), 0);
    RUN_UNTIL(t, d.done);
    assert_int_equal(d.err, BATON_OK);
    return d;
}

static void done_cb(void *ud, int err, const char *msg)
{
    int *d = ud;
    assert_int_equal(err, BATON_OK);
    (*d)++;
}

static void dequeue(ct *t, const char *key, const char *pool, int devices, const char *token)
{
    int d = 0;
    store_target tg = {.key = key, .pool = pool, .devices = devices};
    assert_int_equal(t->st->ops->dequeue(t->st, &tg, token, done_cb, &d), 0);
    RUN_UNTIL(t, d);
}

/* ------------------------------------------------------------ cases */

/* A free key is granted with a fencing token; ACQUIRED is published. */
static void c_grant(void **state)
{
    ct *t = up(state);
    acq a = acquire(t, "k", tok(1), "alice", 0);
    assert_int_equal(a.err, BATON_OK);
    assert_int_equal(a.res.granted, 1);
    assert_string_equal(a.key, "k");
    assert_int_equal(a.res.device, -1);
    assert_true(a.res.fencing > 0);
    assert_int_equal(a.res.ttl_ms, LONG_TTL);
    RUN_UNTIL(t, find_event(t, 0, STORE_EV_ACQUIRED, "k") >= 0);
    int i = find_event(t, 0, STORE_EV_ACQUIRED, "k");
    assert_string_equal(t->ev[i].owner, "alice");
    assert_true(t->ev[i].fencing == a.res.fencing);
    /* idempotent by token: the same grant again, nothing new published */
    acq again = acquire(t, "k", tok(1), "alice", 0);
    assert_int_equal(again.res.granted, 1);
    assert_true(again.res.fencing == a.res.fencing);
    assert_true(again.res.ttl_ms > 0 && again.res.ttl_ms <= LONG_TTL);
}

/* A held key is not granted to another token; the holder is named. */
static void c_conflict(void **state)
{
    ct *t = up(state);
    acq a = acquire(t, "k", tok(1), "alice", 0);
    acq b = acquire(t, "k", tok(2), "bob", 0);
    assert_int_equal(b.err, BATON_OK);
    assert_int_equal(b.res.granted, 0);
    assert_int_equal(b.res.position, 0); /* not enqueued */
    assert_int_equal(b.res.queue_len, 0);
    assert_string_equal(b.holder, "alice");
    assert_true(b.res.holder_fencing == a.res.fencing);
    assert_true(b.res.retry_ms > 0 && b.res.retry_ms <= LONG_TTL); /* the holder's TTL */
    assert_string_equal(b.head, "");
    desc d = describe(t, "k");
    assert_int_equal(d.res.waiters, 0);
}

/* Waiters are granted in arrival order; a free key with another entry at
 * the head names that entry. */
static void c_fifo(void **state)
{
    ct *t = up(state);
    acq a = acquire(t, "k", tok(1), "h", 0);
    acq w1 = acquire_full(t, "k", NULL, 0, tok(2), "w1", LONG_TTL, 1, 5000);
    acq w2 = acquire(t, "k", tok(3), "w2", 1);
    assert_int_equal(w1.res.position, 1);
    assert_int_equal(w2.res.position, 2);
    assert_int_equal(w2.res.queue_len, 2);
    /* while the key is held, retry when the holder's TTL runs out, not when
     * the head's liveness does (no device is free to take) */
    assert_true(w2.res.retry_ms > 10000);
    /* staying in the queue keeps the place */
    acq again = acquire(t, "k", tok(2), "w1", 1);
    assert_int_equal(again.res.position, 1);
    assert_int_equal(release(t, "k", tok(1)).err, BATON_OK);
    acq early = acquire(t, "k", tok(3), "w2", 1);
    assert_int_equal(early.res.granted, 0);
    assert_int_equal(early.res.position, 2);
    assert_string_equal(early.head, tok(2));
    assert_string_equal(early.holder, "");
    assert_true(early.res.holder_fencing == 0);
    acq g1 = acquire(t, "k", tok(2), "w1", 1);
    assert_int_equal(g1.res.granted, 1);
    assert_true(g1.res.fencing > a.res.fencing);
    acq next = acquire(t, "k", tok(3), "w2", 1);
    assert_int_equal(next.res.position, 1);
    assert_int_equal(next.res.queue_len, 1);
    assert_string_equal(next.head, "");
    assert_int_equal(release(t, "k", tok(2)).err, BATON_OK);
    acq g2 = acquire(t, "k", tok(3), "w2", 1);
    assert_int_equal(g2.res.granted, 1);
    assert_true(g2.res.fencing > g1.res.fencing);
}

/* A lock whose TTL ran out is free; the next op reports EXPIRED once, naming
 * the holder. */
static void c_expiry(void **state)
{
    ct *t = up(state);
    acq a = acquire_full(t, "k", NULL, 0, tok(1), "alice", 100, 0, LONG_TTL);
    assert_int_equal(a.res.granted, 1);
    run_for(t, 250);
    desc d = describe(t, "k");
    assert_int_equal(d.res.held, 0);
    acq b = acquire(t, "k", tok(2), "bob", 0);
    assert_int_equal(b.res.granted, 1);
    assert_true(b.res.fencing > a.res.fencing);
    RUN_UNTIL(t, find_event(t, 0, STORE_EV_EXPIRED, "k") >= 0);
    int i = find_event(t, 0, STORE_EV_EXPIRED, "k");
    assert_string_equal(t->ev[i].owner, "alice");
    assert_true(t->ev[i].fencing == a.res.fencing);
    run_for(t, 50);
    assert_int_equal(find_event(t, i + 1, STORE_EV_EXPIRED, "k"), -1);
}

/* Any op on a key whose lock expired reports EXPIRED (renew here); reap too. */
static void c_expiry_seen_by_renew_and_reap(void **state)
{
    ct *t = up(state);
    acq a = acquire_full(t, "k", NULL, 0, tok(1), "alice", 100, 0, LONG_TTL);
    acq b = acquire_full(t, "j", NULL, 0, tok(2), "bob", 100, 0, LONG_TTL);
    run_for(t, 250);
    hold h = renew(t, "k", tok(1), LONG_TTL);
    assert_int_equal(h.err, BATON_E_NOT_HOLDER);
    assert_string_equal(h.holder, "");
    assert_true(h.res.holder_fencing == 0);
    RUN_UNTIL(t, find_event(t, 0, STORE_EV_EXPIRED, "k") >= 0);
    assert_true(t->ev[find_event(t, 0, STORE_EV_EXPIRED, "k")].fencing == a.res.fencing);
    assert_int_equal(t->st->ops->reap(t->st, "j"), 0);
    RUN_UNTIL(t, find_event(t, 0, STORE_EV_EXPIRED, "j") >= 0);
    assert_true(t->ev[find_event(t, 0, STORE_EV_EXPIRED, "j")].fencing == b.res.fencing);
    /* once only */
    assert_int_equal(t->st->ops->reap(t->st, "j"), 0);
    run_for(t, 50);
    int i = find_event(t, 0, STORE_EV_EXPIRED, "j");
    assert_int_equal(find_event(t, i + 1, STORE_EV_EXPIRED, "j"), -1);
}

/* The token of an expired grant holds nothing once another holds the key. */
static void c_stale_token(void **state)
{
    ct *t = up(state);
    acquire_full(t, "k", NULL, 0, tok(1), "alice", 100, 0, LONG_TTL);
    run_for(t, 250);
    acq b = acquire(t, "k", tok(2), "bob", 0);
    assert_int_equal(b.res.granted, 1);
    hold r = renew(t, "k", tok(1), LONG_TTL);
    assert_int_equal(r.err, BATON_E_NOT_HOLDER);
    assert_string_equal(r.holder, "bob");
    assert_true(r.res.holder_fencing == b.res.fencing);
    hold l = release(t, "k", tok(1));
    assert_int_equal(l.err, BATON_E_NOT_HOLDER);
    assert_string_equal(l.holder, "bob");
    assert_true(l.res.holder_fencing == b.res.fencing);
    desc d = describe(t, "k");
    assert_int_equal(d.res.held, 1);
    assert_string_equal(d.owner, "bob");
}

/* Every grant of a key has a higher fencing token than the one before,
 * however the previous hold ended. */
static void c_fencing_rises(void **state)
{
    ct *t = up(state);
    uint64_t last = 0;
    for (unsigned i = 1; i <= 6; i++) {
        acq a = acquire(t, "k", tok(i), "o", 0);
        assert_int_equal(a.res.granted, 1);
        assert_true(a.res.fencing > last);
        last = a.res.fencing;
        if (i % 2)
            assert_int_equal(release(t, "k", tok(i)).err, BATON_OK);
        else
            assert_int_equal(force_release(t, "k", a.res.fencing).err, BATON_OK);
    }
    /* each key has its own counter, which also rises */
    acq other = acquire(t, "other", tok(9), "o", 0);
    assert_true(other.res.fencing > 0);
}

/* A pool grants its lowest free device; its FIFO queue works as a key's. */
static void c_pool(void **state)
{
    ct *t = up(state);
    acq a = acquire_pool(t, "gpu", 2, tok(1), "a", 1);
    assert_int_equal(a.res.granted, 1);
    assert_string_equal(a.key, "gpu/0");
    assert_int_equal(a.res.device, 0);
    acq b = acquire_pool(t, "gpu", 2, tok(2), "b", 1);
    assert_int_equal(b.res.granted, 1);
    assert_string_equal(b.key, "gpu/1");
    assert_int_equal(b.res.device, 1);
    acq c = acquire_pool(t, "gpu", 2, tok(3), "c", 1);
    assert_int_equal(c.res.granted, 0);
    assert_int_equal(c.res.position, 1);
    assert_int_equal(c.res.queue_len, 1);
    assert_true(c.res.holder_fencing == a.res.fencing || c.res.holder_fencing == b.res.fencing);
    /* the pool's waiters fix its device count while they wait */
    acq bad = acquire_pool(t, "gpu", 3, tok(4), "d", 1);
    assert_int_equal(bad.err, BATON_E_INVALID);
    /* a device is an ordinary key */
    desc d = describe(t, "gpu/1");
    assert_int_equal(d.res.held, 1);
    assert_string_equal(d.owner, "b");
    assert_int_equal(release(t, "gpu/1", tok(2)).err, BATON_OK);
    acq g = acquire_pool(t, "gpu", 2, tok(3), "c", 1);
    assert_int_equal(g.res.granted, 1);
    assert_string_equal(g.key, "gpu/1");
    assert_true(g.res.fencing > b.res.fencing);
    /* idempotent for a pool too */
    acq again = acquire_pool(t, "gpu", 2, tok(3), "c", 1);
    assert_int_equal(again.res.granted, 1);
    assert_int_equal(again.res.device, 1);
    assert_true(again.res.fencing == g.res.fencing);
    /* the queue is empty again: another count is accepted */
    acq other = acquire_pool(t, "gpu", 3, tok(5), "e", 0);
    assert_int_equal(other.res.granted, 1);
    assert_string_equal(other.key, "gpu/2");
}

/* Pool.count: that many devices in one grant, all or none, one token; a
 * release, renew or force-release naming any of them covers all; each device
 * has its own fencing and events. */
static void c_pool_count(void **state)
{
    ct *t = up(state);
    acq a = acquire_count(t, NULL, "gpu", 4, 2, tok(1), "a", LONG_TTL, 1, LONG_TTL);
    assert_int_equal(a.res.granted, 1);
    assert_int_equal(a.res.ndevices, 2);
    assert_int_equal(a.dev[0], 0);
    assert_int_equal(a.dev[1], 1);
    assert_string_equal(a.key, "gpu/0");
    assert_true(a.fenc[0] == a.res.fencing);
    RUN_UNTIL(t, find_event(t, 0, STORE_EV_ACQUIRED, "gpu/1") >= 0);
    assert_true(t->ev[find_event(t, 0, STORE_EV_ACQUIRED, "gpu/1")].fencing == a.fenc[1]);
    /* idempotent: the whole grant again */
    acq again = acquire_count(t, NULL, "gpu", 4, 2, tok(1), "a", LONG_TTL, 1, LONG_TTL);
    assert_int_equal(again.res.ndevices, 2);
    assert_true(again.fenc[1] == a.fenc[1]);
    /* 3 wanted, 2 free: nothing taken */
    acq b = acquire_count(t, NULL, "gpu", 4, 3, tok(2), "b", LONG_TTL, 0, LONG_TTL);
    assert_int_equal(b.res.granted, 0);
    assert_int_equal(describe(t, "gpu/2").res.held, 0);
    /* renew and release by the second device cover both */
    assert_int_equal(renew(t, "gpu/1", tok(1), LONG_TTL).err, BATON_OK);
    int from = t->nev;
    assert_int_equal(release(t, "gpu/1", tok(1)).err, BATON_OK);
    assert_int_equal(describe(t, "gpu/0").res.held, 0);
    RUN_UNTIL(t, find_event(t, from, STORE_EV_RELEASED, "gpu/0") >= 0);
    acq c = acquire_count(t, NULL, "gpu", 4, 4, tok(3), "c", LONG_TTL, 0, LONG_TTL);
    assert_int_equal(c.res.ndevices, 4);
    assert_true(c.fenc[0] > a.fenc[0] && c.fenc[1] > a.fenc[1]);
    /* force-release of one device ends the grant */
    assert_int_equal(force_release(t, "gpu/3", c.fenc[3]).err, BATON_OK);
    for (int i = 0; i < 4; i++) {
        char k[16];
        snprintf(k, sizeof k, "gpu/%d", i);
        assert_int_equal(describe(t, k).res.held, 0);
    }
}

/* Strict FIFO per pool: a head waiting for 3 devices is not passed by a
 * later request for 1; the head is named only once it could be granted. */
static void c_pool_count_fifo(void **state)
{
    ct *t = up(state);
    for (int i = 0; i < 3; i++)
        assert_int_equal(acquire_pool(t, "gpu", 3, tok(10 + i), "h", 1).res.granted, 1);
    acq big = acquire_count(t, NULL, "gpu", 3, 3, tok(20), "big", LONG_TTL, 1, LONG_TTL);
    assert_int_equal(big.res.position, 1);
    assert_int_equal(release(t, "gpu/0", tok(10)).err, BATON_OK);
    acq small = acquire_pool(t, "gpu", 3, tok(21), "small", 1);
    assert_int_equal(small.res.granted, 0);
    assert_int_equal(small.res.position, 2);
    assert_string_equal(small.head, "");
    assert_int_equal(release(t, "gpu/1", tok(11)).err, BATON_OK);
    assert_int_equal(release(t, "gpu/2", tok(12)).err, BATON_OK);
    small = acquire_pool(t, "gpu", 3, tok(21), "small", 1);
    assert_int_equal(small.res.granted, 0);
    assert_string_equal(small.head, tok(20));
    big = acquire_count(t, NULL, "gpu", 3, 3, tok(20), "big", LONG_TTL, 1, LONG_TTL);
    assert_int_equal(big.res.ndevices, 3);
}

/* A waiter on a device's own key goes before the pool's waiters. */
static void c_pool_direct_waiter_first(void **state)
{
    ct *t = up(state);
    acq a = acquire_pool(t, "gpu", 1, tok(1), "a", 1);
    assert_string_equal(a.key, "gpu/0");
    acq direct = acquire(t, "gpu/0", tok(2), "direct", 1);
    assert_int_equal(direct.res.position, 1);
    assert_int_equal(release(t, "gpu/0", tok(1)).err, BATON_OK);
    acq p = acquire_pool(t, "gpu", 1, tok(3), "p", 1);
    assert_int_equal(p.res.granted, 0);
    acq g = acquire(t, "gpu/0", tok(2), "direct", 1);
    assert_int_equal(g.res.granted, 1);
}

/* Queue entries not refreshed within their liveness window are purged: a
 * dead waiter neither blocks the key nor counts once purged. */
static void c_dead_waiter_purged(void **state)
{
    ct *t = up(state);
    acquire(t, "k", tok(1), "h", 0);
    acquire_full(t, "k", NULL, 0, tok(2), "dead", LONG_TTL, 1, 100);
    acq live = acquire(t, "k", tok(3), "live", 1);
    assert_int_equal(live.res.position, 2);
    run_for(t, 250);
    acq again = acquire(t, "k", tok(3), "live", 1);
    assert_int_equal(again.res.position, 1);
    assert_int_equal(again.res.queue_len, 1);
    assert_int_equal(release(t, "k", tok(1)).err, BATON_OK);
    acq g = acquire(t, "k", tok(3), "live", 1);
    assert_int_equal(g.res.granted, 1);
    desc d = describe(t, "k");
    assert_int_equal(d.res.waiters, 0);
}

/* A dead entry at the head of a free key's queue does not block it. */
static void c_dead_head_does_not_block(void **state)
{
    ct *t = up(state);
    acquire(t, "k", tok(1), "h", 0);
    acquire_full(t, "k", NULL, 0, tok(2), "dead", LONG_TTL, 1, 100);
    assert_int_equal(release(t, "k", tok(1)).err, BATON_OK);
    acq early = acquire(t, "k", tok(3), "late", 0);
    assert_int_equal(early.res.granted, 0);
    assert_string_equal(early.head, tok(2));
    /* the head's liveness runs out within the retry hint */
    assert_true(early.res.retry_ms >= 0 && early.res.retry_ms <= 100);
    run_for(t, 250);
    acq g = acquire(t, "k", tok(3), "late", 0);
    assert_int_equal(g.res.granted, 1);
}

/* refresh keeps entries alive and names those that are gone. */
static void c_refresh(void **state)
{
    ct *t = up(state);
    acquire(t, "k", tok(1), "h", 0);
    acquire_full(t, "k", NULL, 0, tok(2), "w", LONG_TTL, 1, 200);
    acquire(t, "other", tok(5), "h", 0);
    acquire_full(t, "other", NULL, 0, tok(6), "w", LONG_TTL, 1, 200);
    store_target tg[3] = {{.key = "k"}, {.key = "k"}, {.key = "other"}};
    const char *toks[3] = {tok(2), tok(3), tok(6)};
    assert_int_equal(t->st->ops->refresh(t->st, tg, toks, 3, LONG_TTL), 0);
    RUN_UNTIL(t, t->nmissing == 1);
    char want[128];
    snprintf(want, sizeof want, "k:k %s", tok(3));
    assert_string_equal(t->missing, want);
    run_for(t, 350);
    assert_int_equal(t->nmissing, 1);
    acq a = acquire(t, "k", tok(4), "x", 1);
    assert_int_equal(a.res.position, 2); /* tok(2) is still there */
    acq b = acquire(t, "other", tok(7), "x", 1);
    assert_int_equal(b.res.position, 2);
}

/* renew extends the holder's TTL only. */
static void c_renew(void **state)
{
    ct *t = up(state);
    acq a = acquire_full(t, "k", NULL, 0, tok(1), "alice", 1000, 0, LONG_TTL);
    hold r = renew(t, "k", tok(1), LONG_TTL);
    assert_int_equal(r.err, BATON_OK);
    assert_int_equal(r.res.ttl_ms, LONG_TTL);
    assert_int_equal(r.has_next, 0);
    desc d = describe(t, "k");
    assert_true(d.res.ttl_ms > 1000 && d.res.ttl_ms <= LONG_TTL);
    hold other = renew(t, "k", tok(2), LONG_TTL);
    assert_int_equal(other.err, BATON_E_NOT_HOLDER);
    assert_string_equal(other.holder, "alice");
    assert_true(other.res.holder_fencing == a.res.fencing);
    assert_non_null(strstr(other.msg, "alice"));
    hold none = renew(t, "free", tok(1), LONG_TTL);
    assert_int_equal(none.err, BATON_E_NOT_HOLDER);
    assert_string_equal(none.holder, "");
    assert_true(none.res.holder_fencing == 0);
}

static hold reassert(ct *t, const char *key, const char *token, const char *owner, uint64_t fencing)
{
    hold h = {0};
    assert_int_equal(t->st->ops->reassert(t->st, key, token, owner, fencing, LONG_TTL, hold_cb, &h), 0);
    HOLD_WAIT(t, h);
    return h;
}

/* reassert re-creates a hold on a free key with the fencing it is given
 * (and no event), extends its own token's hold, and refuses a key another
 * token holds; the key's next grant goes above the re-asserted fencing. */
static void c_reassert(void **state)
{
    ct *t = up(state);
    uint64_t big = 4000000000000000ull; /* above any clock-seeded counter */
    hold h = reassert(t, "k", tok(1), "alice", big);
    assert_int_equal(h.err, BATON_OK);
    assert_int_equal(h.res.ttl_ms, LONG_TTL);
    desc d = describe(t, "k");
    assert_int_equal(d.res.held, 1);
    assert_string_equal(d.owner, "alice");
    assert_true(d.res.fencing == big);
    assert_int_equal(renew(t, "k", tok(1), LONG_TTL).err, BATON_OK);
    assert_int_equal(reassert(t, "k", tok(1), "alice", big).err, BATON_OK);
    hold other = reassert(t, "k", tok(2), "bob", big + 5);
    assert_int_equal(other.err, BATON_E_NOT_HOLDER);
    assert_string_equal(other.holder, "alice");
    assert_true(other.res.holder_fencing == big);
    run_for(t, 20);
    assert_int_equal(t->nev, 0); /* to watchers the hold never ended */
    assert_int_equal(release(t, "k", tok(1)).err, BATON_OK);
    acq b = acquire(t, "k", tok(3), "carol", 0);
    assert_int_equal(b.res.granted, 1);
    assert_true(b.res.fencing > big);
}

/* release frees the key for its holder only; RELEASED is published. */
static void c_release(void **state)
{
    ct *t = up(state);
    acq a = acquire(t, "k", tok(1), "alice", 0);
    hold other = release(t, "k", tok(2));
    assert_int_equal(other.err, BATON_E_NOT_HOLDER);
    assert_string_equal(other.holder, "alice");
    assert_true(other.res.holder_fencing == a.res.fencing);
    hold r = release(t, "k", tok(1));
    assert_int_equal(r.err, BATON_OK);
    assert_int_equal(r.has_next, 0);
    RUN_UNTIL(t, find_event(t, 0, STORE_EV_RELEASED, "k") >= 0);
    int i = find_event(t, 0, STORE_EV_RELEASED, "k");
    assert_string_equal(t->ev[i].owner, "alice");
    assert_true(t->ev[i].fencing == a.res.fencing);
    assert_int_equal(describe(t, "k").res.held, 0);
    hold again = release(t, "k", tok(1));
    assert_int_equal(again.err, BATON_E_NOT_HOLDER);
    assert_string_equal(again.holder, "");
    assert_true(again.res.holder_fencing == 0);
}

/* release with `next` grants the next waiter in the same script iff it heads
 * the queue. */
static void c_release_handoff(void **state)
{
    ct *t = up(state);
    acq a = acquire(t, "k", tok(1), "alice", 0);
    acquire(t, "k", tok(2), "bob", 1);
    acquire(t, "k", tok(3), "carol", 1);
    /* carol is not at the head: released, not handed off */
    hold r = release_next(t, "k", tok(1), tok(3), "carol");
    assert_int_equal(r.err, BATON_OK);
    assert_int_equal(r.has_next, 1);
    assert_int_equal(r.next.granted, 0);
    assert_int_equal(describe(t, "k").res.held, 0);
    acq b = acquire(t, "k", tok(2), "bob", 1);
    assert_int_equal(b.res.granted, 1);
    hold h = release_next(t, "k", tok(2), tok(3), "carol");
    assert_int_equal(h.err, BATON_OK);
    assert_int_equal(h.has_next, 1);
    assert_int_equal(h.next.granted, 1);
    assert_string_equal(h.next_key, "k");
    assert_int_equal(h.next.device, -1);
    assert_true(h.next.fencing > b.res.fencing && b.res.fencing > a.res.fencing);
    assert_int_equal(h.next.ttl_ms, LONG_TTL);
    desc d = describe(t, "k");
    assert_string_equal(d.owner, "carol");
    assert_int_equal(d.res.waiters, 0);
    /* not the holder: the release fails and next is not granted */
    hold bad = release_next(t, "k", tok(2), tok(4), "dave");
    assert_int_equal(bad.err, BATON_E_NOT_HOLDER);
    assert_int_equal(bad.has_next, 1);
    assert_int_equal(bad.next.granted, 0);
}

/* force_release frees the key only for the holder's fencing token. */
static void c_force_release(void **state)
{
    ct *t = up(state);
    acq a = acquire(t, "k", tok(1), "alice", 0);
    hold wrong = force_release(t, "k", a.res.fencing + 1);
    assert_int_equal(wrong.err, BATON_E_NOT_HOLDER);
    assert_string_equal(wrong.holder, "alice");
    assert_true(wrong.res.holder_fencing == a.res.fencing);
    hold f = force_release(t, "k", a.res.fencing);
    assert_int_equal(f.err, BATON_OK);
    RUN_UNTIL(t, find_event(t, 0, STORE_EV_FORCE_RELEASED, "k") >= 0);
    int i = find_event(t, 0, STORE_EV_FORCE_RELEASED, "k");
    assert_string_equal(t->ev[i].owner, "alice");
    assert_true(t->ev[i].fencing == a.res.fencing);
    assert_int_equal(renew(t, "k", tok(1), LONG_TTL).err, BATON_E_NOT_HOLDER);
    hold again = force_release(t, "k", a.res.fencing);
    assert_int_equal(again.err, BATON_E_NOT_HOLDER);
    assert_string_equal(again.holder, "");
}

/* describe: holder, fencing, TTL and the number of waiters. */
static void c_describe(void **state)
{
    ct *t = up(state);
    desc free_key = describe(t, "k");
    assert_int_equal(free_key.res.held, 0);
    assert_string_equal(free_key.owner, "");
    assert_true(free_key.res.fencing == 0);
    assert_int_equal(free_key.res.waiters, 0);
    acq a = acquire(t, "k", tok(1), "alice", 0);
    acquire(t, "k", tok(2), "w", 1);
    acquire(t, "k", tok(3), "w", 1);
    desc d = describe(t, "k");
    assert_int_equal(d.res.held, 1);
    assert_string_equal(d.owner, "alice");
    assert_true(d.res.fencing == a.res.fencing);
    assert_true(d.res.ttl_ms > 0 && d.res.ttl_ms <= LONG_TTL);
    assert_int_equal(d.res.waiters, 2);
}

/* ---- List (issue #18) ---- */

typedef struct listed {
    int done, err, n;
    char keys[8][32], owners[8][32];
    uint64_t fencing[8];
    char cursor[24];
} listed;

static void list_cb(void *ud, int err, const char *msg, const store_list_res *res)
{
    listed *l = ud;
    l->done++;
    l->err = err;
    for (size_t i = 0; res && i < res->n && l->n < 8; i++, l->n++) {
        snprintf(l->keys[l->n], sizeof l->keys[0], "%s", res->locks[i].key);
        snprintf(l->owners[l->n], sizeof l->owners[0], "%s", res->locks[i].owner);
        l->fencing[l->n] = res->locks[i].fencing;
        assert_true(res->locks[i].ttl_ms > 0);
    }
    snprintf(l->cursor, sizeof l->cursor, "%s", res ? res->next_cursor : "0");
}

/* Every page from cursor "0" until the cursor is "0" again. */
static listed list_all(ct *t, const char *prefix, int32_t limit)
{
    listed l = {0};
    snprintf(l.cursor, sizeof l.cursor, "0");
    do {
        int before = l.done;
        char cursor[24];
        snprintf(cursor, sizeof cursor, "%s", l.cursor);
        assert_int_equal(t->st->ops->list(t->st, prefix, limit, cursor, list_cb, &l), 0);
        RUN_UNTIL(t, l.done > before);
        assert_int_equal(l.err, BATON_OK);
    } while (strcmp(l.cursor, "0") != 0);
    return l;
}

/* list: the live locks whose key starts with the prefix, each once, over
 * pages; released ones are gone. */
static void c_list(void **state)
{
    ct *t = up(state);
    acq a = acquire(t, "ls:a", tok(1), "alice", 0);
    acq b = acquire(t, "ls:b", tok(2), "bob", 0);
    acquire(t, "other", tok(3), "carol", 0);
    release(t, "ls:b", tok(2));
    listed l = list_all(t, "ls:", 1);
    assert_int_equal(l.n, 1);
    assert_string_equal(l.keys[0], "ls:a");
    assert_string_equal(l.owners[0], "alice");
    assert_true(l.fencing[0] == a.res.fencing);
    (void)b;
    l = list_all(t, "", 100);
    assert_int_equal(l.n, 2);
    int seen_a = 0, seen_other = 0;
    for (int i = 0; i < l.n; i++) {
        seen_a += strcmp(l.keys[i], "ls:a") == 0;
        seen_other += strcmp(l.keys[i], "other") == 0;
    }
    assert_int_equal(seen_a, 1);
    assert_int_equal(seen_other, 1);
    int d = 0;
    assert_int_equal(t->st->ops->list(t->st, "", 0, "0", list_cb, &d), BATON_E_INVALID);
}

/* dequeue removes an entry; removing the head publishes WAKE. */
static void c_dequeue(void **state)
{
    ct *t = up(state);
    acquire(t, "k", tok(1), "h", 0);
    acquire(t, "k", tok(2), "w1", 1);
    acquire(t, "k", tok(3), "w2", 1);
    acquire(t, "k", tok(4), "w3", 1);
    int from = t->nev;
    dequeue(t, "k", NULL, 0, tok(3)); /* not the head: no WAKE */
    dequeue(t, "k", NULL, 0, tok(2));
    RUN_UNTIL(t, find_event(t, from, STORE_EV_WAKE, "k") >= 0);
    int i = find_event(t, from, STORE_EV_WAKE, "k"), i_key = i;
    assert_int_equal(find_event(t, i + 1, STORE_EV_WAKE, "k"), -1);
    acq w = acquire(t, "k", tok(4), "w3", 1);
    assert_int_equal(w.res.position, 1);
    assert_int_equal(w.res.queue_len, 1);
    /* the last entry leaves: nobody to wake */
    dequeue(t, "k", NULL, 0, tok(4));
    acquire_pool(t, "gpu", 1, tok(5), "p", 1);
    acquire_pool(t, "gpu", 1, tok(6), "p", 1);
    acquire_pool(t, "gpu", 1, tok(7), "p", 1);
    dequeue(t, NULL, "gpu", 1, tok(6));
    RUN_UNTIL(t, find_event(t, 0, STORE_EV_WAKE_POOL, "gpu") >= 0);
    i = find_event(t, 0, STORE_EV_WAKE_POOL, "gpu");
    dequeue(t, NULL, "gpu", 1, tok(7));
    run_for(t, 50);
    assert_int_equal(find_event(t, i + 1, STORE_EV_WAKE_POOL, "gpu"), -1);
    assert_int_equal(find_event(t, from, STORE_EV_WAKE, "k"), i_key);
}

/* Calling convention: invalid requests are refused at once. */
static void c_invalid(void **state)
{
    ct *t = up(state);
    acq a = {0};
    store_acquire_req req = {.target = {.key = "k"}, .token = tok(1), .owner = "o", .ttl_ms = 0};
    assert_int_equal(t->st->ops->acquire(t->st, &req, acq_cb, &a), BATON_E_INVALID);
    req.ttl_ms = 1000;
    req.target.pool = "p";
    assert_int_equal(t->st->ops->acquire(t->st, &req, acq_cb, &a), BATON_E_INVALID);
    hold h = {0};
    assert_int_equal(t->st->ops->force_release(t->st, "k", 0, hold_cb, &h), BATON_E_INVALID);
    store_acquire_req next = {.target = {.key = "other"}, .token = tok(2), .ttl_ms = 1000};
    assert_int_equal(t->st->ops->release(t->st, "k", tok(1), &next, hold_cb, &h), BATON_E_INVALID);
    run_for(t, 20);
    assert_int_equal(a.done + h.done, 0);
}

int contract_run(const contract_backend *b)
{
    backend = b;
#define CASE(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest cases[] = {
        CASE(c_grant),
        CASE(c_conflict),
        CASE(c_fifo),
        CASE(c_expiry),
        CASE(c_expiry_seen_by_renew_and_reap),
        CASE(c_stale_token),
        CASE(c_fencing_rises),
        CASE(c_pool),
        CASE(c_pool_direct_waiter_first),
        CASE(c_pool_count),
        CASE(c_pool_count_fifo),
        CASE(c_dead_waiter_purged),
        CASE(c_dead_head_does_not_block),
        CASE(c_refresh),
        CASE(c_renew),
        CASE(c_reassert),
        CASE(c_release),
        CASE(c_release_handoff),
        CASE(c_force_release),
        CASE(c_describe),
        CASE(c_list),
        CASE(c_dequeue),
        CASE(c_invalid),
    };
#undef CASE
    return _cmocka_run_group_tests(b->name, cases, sizeof cases / sizeof cases[0], NULL, NULL);
}
