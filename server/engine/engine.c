/*
 * The lock engine (see engine.h for the contract).
 *
 * Objects and who owns them:
 *   waiter   one Acquire. Lives in e->all from engine_acquire until it ends
 *            (finished or engine_acquire_end). While it waits it is also in
 *            its target's FIFO `waiters` list; while it holds a STREAM lock it
 *            is in the `holds` list of the target of the key it holds.
 *   target   "k:<key>" or "p:<pool>" in a hash table; freed when both lists
 *            are empty. Carries the retry timer of the store's retry_ms hint.
 *   op       one store call in flight (its `ud`). Linked in e->ops so
 *            shutdown knows when every reply is in and engine_free can orphan
 *            them (op->e = NULL: the late reply only frees the op).
 *   cleanup  "make sure this token neither holds nor waits": dequeue and/or
 *            token-checked releases. If Redis is unavailable it waits in
 *            e->pending and is sent again after the next reconnect. This is
 *            how every grant the store may have made without the engine
 *            delivering it is released.
 *
 * Re-entrancy rule: sink and watch callbacks may call back into the engine
 * (engine_acquire_end from inside `granted` or `queued`, for example). Every
 * function calls a sink last, after the engine state is consistent, and
 * never touches the waiter (or any target pointer) afterwards.
 */
#include "engine.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "log.h"

#define MSG_MAX 1024
#define TNAME_MAX (BATON_KEY_MAX + 8)
#define MSG_UNAVAILABLE "Redis unavailable"
#define MSG_SHUTDOWN "server shutting down"

/* The message for an op the store refused to send (its return code). */
static const char *refusal_msg(int rc)
{
    switch (rc) {
    case BATON_E_NOMEM: return "out of memory";
    case BATON_E_INVALID: return "invalid request";
    case BATON_E_UNAVAILABLE: return MSG_UNAVAILABLE;
    default: return "internal error";
    }
}

typedef enum wstate {
    W_ATTEMPTING,    /* one store acquire in flight */
    W_QUEUED,        /* in the Redis queue, sleeping until a kick */
    W_LEASE_GRANTED, /* LEASE grant delivered; waits for engine_acquire_end */
    W_HOLDING,       /* STREAM grant delivered; renewed until it ends */
} wstate;

typedef struct target target;
typedef struct attempt_op attempt_op;
typedef struct renew_op renew_op;

typedef struct wlist {
    engine_waiter *head, *tail;
} wlist;

/* A waiter sits in two lists at once (all waiters; its target's waiters or
 * holds), each through its own link. */
typedef struct wlink {
    engine_waiter *prev, *next;
} wlink;

struct engine_waiter {
    baton_engine *e;
    wstate state;
    unsigned dirty : 1;     /* kicked while attempting: attempt again after the reply */
    unsigned ended : 1;     /* no sink calls any more; the attempt reply cleans up */
    unsigned timed_out : 1; /* wait_ms passed while attempting */
    unsigned have_info : 1; /* holder_* below come from a store reply */
    engine_mode mode;
    char token[BATON_TOKEN_LEN + 1];
    char *key;  /* plain key, or NULL (owned) */
    char *pool; /* pool name, or NULL (owned) */
    int32_t devices;
    char *owner; /* owned */
    int64_t ttl_ms;
    int64_t wait_ms;
    engine_acquire_sink sink;
    void *ud;

    wlist *all_list; /* e->all, or e->todo during shutdown */
    wlink alink;
    target *tgt; /* target whose list `tlist` holds this waiter, or NULL */
    wlist *tlist;
    wlink tlink;

    struct event *wait_timer;
    attempt_op *attempt_op;
    int64_t attempt_sent_ms;
    int64_t last_position;
    /* last not-granted reply, for BUSY messages */
    char *holder_owner; /* owned, may be NULL */
    uint64_t holder_fencing;
    int64_t position;
    int64_t queue_len;

    /* granted */
    char *held_key; /* owned */
    uint64_t fencing;
    int64_t expiry_ms; /* STREAM: monotonic time by which the lock surely expired
                        * in Redis unless a renew succeeded since */
    struct event *renew_timer;
    renew_op *renew_op;
};

struct target {
    baton_engine *e;
    target *hnext;
    wlist waiters; /* FIFO of local waiters that wait (wait_ms > 0) */
    wlist holds;   /* STREAM holds of this key ("k:" targets) */
    struct event *retry;
    int64_t retry_at; /* monotonic ms the retry timer fires at; 0 = not armed */
    char name[];
};

typedef struct op {
    baton_engine *e; /* NULL once the engine is freed: the reply only frees the op */
    struct op *prev, *next;
} op;

struct attempt_op {
    op hdr;
    engine_waiter *w; /* NULL if the waiter was freed meanwhile (engine_free) */
};

struct renew_op {
    op hdr;
    engine_waiter *w; /* NULL once the waiter ended */
    int64_t sent_ms;
};

typedef struct cleanup {
    op hdr;
    struct cleanup *pnext; /* in e->pending while waiting for a reconnect */
    char token[BATON_TOKEN_LEN + 1];
    char *key;  /* release this key (a plain key, or a known device key) */
    char *pool; /* release every device of this pool (grant unknown) */
    int32_t devices;
    int dequeue;      /* also remove the token from the queue of key / pool */
    int handoff;      /* key is a known grant: its release may hand it on */
    attempt_op *next; /* the waiter the key's release hands it to, in flight */
    int outstanding;
    int failed;
} cleanup;

typedef enum unary_kind { U_RENEW, U_RELEASE, U_FORCE, U_DESCRIBE } unary_kind;

typedef struct unary_op {
    op hdr;
    unary_kind kind;
    engine_hold_cb hold_cb;
    engine_describe_cb describe_cb;
    void *ud;
    uint64_t fencing;
    attempt_op *next; /* U_RELEASE: the waiter it hands the key to, in flight */
    char key[];
} unary_op;

struct engine_watch {
    baton_engine *e;
    engine_watch *prev, *next;
    char *key;    /* owned, or NULL */
    char *prefix; /* owned, or NULL */
    size_t prefix_len;
    engine_watch_cb cb;
    engine_watch_ended_cb ended;
    void *ud;
    int stopped; /* stopped while events were being delivered */
};

struct baton_engine {
    struct event_base *base;
    baton_store *store;
    engine_config cfg;
    int up;
    int shutting_down;
    int serving; /* last value reported to serving_cb (engine_serving) */
    void (*serving_cb)(void *ud, int serving);
    void *serving_ud;

    wlist all;
    wlist todo; /* shutdown: waiters not yet visited */

    target **buckets;
    size_t nbuckets; /* power of two */
    size_t ntargets;

    op *ops; /* store calls in flight */
    cleanup *pending;

    engine_watch *watches;
    int delivering; /* > 0 while watch callbacks run */
    int watch_stopped;

    struct event *recheck_timer;
    struct event *liveness_timer;
    struct event *done_ev;
    void (*done_cb)(void *ud);
    void *done_ud;
    int done_scheduled;

    engine_stats stats;
};

/* ---------------------------------------------------------------- helpers */

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct timeval tv_of_ms(int64_t ms)
{
    if (ms < 0)
        ms = 0;
    struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)((ms % 1000) * 1000)};
    return tv;
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

/* 16 random bytes as 32 lowercase hex chars into out[BATON_TOKEN_LEN + 1]. */
static int make_token(char *out)
{
    unsigned char raw[BATON_TOKEN_LEN / 2];
    size_t got = 0;
    while (got < sizeof raw) {
        ssize_t n = getrandom(raw + got, sizeof raw - got, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        got += (size_t)n;
    }
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < sizeof raw; i++) {
        out[2 * i] = hex[raw[i] >> 4];
        out[2 * i + 1] = hex[raw[i] & 15];
    }
    out[BATON_TOKEN_LEN] = '\0';
    return 0;
}

/* If key is "<name>/<digits>", writes "p:<name>" (a pool whose device it may
 * be) into out and returns 1. */
static int pool_name_of_device(const char *key, char *out, size_t outlen)
{
    const char *slash = strrchr(key, '/');
    if (!slash || slash == key || slash[1] == '\0')
        return 0;
    for (const char *p = slash + 1; *p; p++)
        if (*p < '0' || *p > '9')
            return 0;
    int n = snprintf(out, outlen, "p:%.*s", (int)(slash - key), key);
    return n > 0 && (size_t)n < outlen;
}

/* --------------------------------------------------------------- lists */

#define WLINK(w, off) ((wlink *)((char *)(w) + (off)))

/* Appends w to l through the link at offset `off` in engine_waiter. */
static void wlist_push(wlist *l, engine_waiter *w, size_t off)
{
    WLINK(w, off)->prev = l->tail;
    WLINK(w, off)->next = NULL;
    if (l->tail)
        WLINK(l->tail, off)->next = w;
    else
        l->head = w;
    l->tail = w;
}

static void wlist_remove(wlist *l, engine_waiter *w, size_t off)
{
    wlink *k = WLINK(w, off);
    if (k->prev)
        WLINK(k->prev, off)->next = k->next;
    else
        l->head = k->next;
    if (k->next)
        WLINK(k->next, off)->prev = k->prev;
    else
        l->tail = k->prev;
    k->prev = k->next = NULL;
}

static void all_push(wlist *l, engine_waiter *w)
{
    wlist_push(l, w, offsetof(engine_waiter, alink));
    w->all_list = l;
}

static void all_remove(engine_waiter *w)
{
    if (!w->all_list)
        return;
    wlist_remove(w->all_list, w, offsetof(engine_waiter, alink));
    w->all_list = NULL;
}

static void ops_link(baton_engine *e, op *o)
{
    o->e = e;
    o->prev = NULL;
    o->next = e->ops;
    if (e->ops)
        e->ops->prev = o;
    e->ops = o;
}

static void ops_unlink(baton_engine *e, op *o)
{
    if (o->prev)
        o->prev->next = o->next;
    else
        e->ops = o->next;
    if (o->next)
        o->next->prev = o->prev;
    o->prev = o->next = NULL;
}

/* ------------------------------------------------------------- targets */

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

static void target_retry_cb(evutil_socket_t fd, short what, void *arg);

static target *target_find(baton_engine *e, const char *name)
{
    for (target *t = e->buckets[hash_str(name) & (e->nbuckets - 1)]; t; t = t->hnext)
        if (strcmp(t->name, name) == 0)
            return t;
    return NULL;
}

static void targets_grow(baton_engine *e)
{
    size_t n = e->nbuckets * 2;
    target **nb = calloc(n, sizeof *nb);
    if (!nb)
        return; /* keep the longer chains */
    for (size_t i = 0; i < e->nbuckets; i++) {
        target *t = e->buckets[i];
        while (t) {
            target *next = t->hnext;
            size_t b = hash_str(t->name) & (n - 1);
            t->hnext = nb[b];
            nb[b] = t;
            t = next;
        }
    }
    free(e->buckets);
    e->buckets = nb;
    e->nbuckets = n;
}

static target *target_get(baton_engine *e, const char *name)
{
    target *t = target_find(e, name);
    if (t)
        return t;
    size_t len = strlen(name);
    t = calloc(1, sizeof *t + len + 1);
    if (!t)
        return NULL;
    memcpy(t->name, name, len + 1);
    t->e = e;
    t->retry = evtimer_new(e->base, target_retry_cb, t);
    if (!t->retry) {
        free(t);
        return NULL;
    }
    if (e->ntargets >= e->nbuckets)
        targets_grow(e);
    size_t b = hash_str(name) & (e->nbuckets - 1);
    t->hnext = e->buckets[b];
    e->buckets[b] = t;
    e->ntargets++;
    return t;
}

/* Frees t if nothing uses it any more. */
static void target_maybe_free(target *t)
{
    if (t->waiters.head || t->holds.head)
        return;
    baton_engine *e = t->e;
    target **pp = &e->buckets[hash_str(t->name) & (e->nbuckets - 1)];
    while (*pp != t)
        pp = &(*pp)->hnext;
    *pp = t->hnext;
    e->ntargets--;
    event_free(t->retry);
    free(t);
}

static void target_add(target *t, wlist *l, engine_waiter *w)
{
    wlist_push(l, w, offsetof(engine_waiter, tlink));
    w->tgt = t;
    w->tlist = l;
}

/* Takes w out of its target list; frees the target if it became unused. */
static void target_remove(engine_waiter *w)
{
    target *t = w->tgt;
    if (!t)
        return;
    wlist_remove(w->tlist, w, offsetof(engine_waiter, tlink));
    w->tgt = NULL;
    w->tlist = NULL;
    target_maybe_free(t);
}

/* Name of the target of a plain key ("k:<key>") or a pool ("p:<pool>"). */
static void target_name(const char *key, const char *pool, char *out, size_t n)
{
    if (pool)
        snprintf(out, n, "p:%s", pool);
    else
        snprintf(out, n, "k:%s", key);
}

static void waiter_target_name(const engine_waiter *w, char *out, size_t n)
{
    target_name(w->key, w->pool, out, n);
}

/* The target of a plain key (pool == NULL) or a pool, if it exists. */
static target *target_of(baton_engine *e, const char *key, const char *pool)
{
    char name[TNAME_MAX];
    target_name(key, pool, name, sizeof name);
    return target_find(e, name);
}

/* ---------------------------------------------------------- waiters */

static void waiter_free(engine_waiter *w)
{
    target_remove(w);
    all_remove(w);
    if (w->wait_timer)
        event_free(w->wait_timer);
    if (w->renew_timer)
        event_free(w->renew_timer);
    if (w->renew_op)
        w->renew_op->w = NULL;
    if (w->attempt_op)
        w->attempt_op->w = NULL;
    free(w->key);
    free(w->pool);
    free(w->owner);
    free(w->holder_owner);
    free(w->held_key);
    free(w);
}

/* Frees w and then reports the end to its sink (the last thing a caller does). */
static void waiter_finish(engine_waiter *w, int err, const char *msg)
{
    engine_acquire_sink sink = w->sink;
    void *ud = w->ud;
    waiter_free(w);
    if (sink.finished)
        sink.finished(ud, err, msg);
}

/* Why w is not granted, from its last store reply. */
static void busy_reason(const engine_waiter *w, char *buf, size_t n)
{
    int64_t ahead = w->position > 0 ? w->position - 1 : w->queue_len;
    if (!w->have_info)
        snprintf(buf, n, "%s '%s' could not be checked: " MSG_UNAVAILABLE, w->pool ? "pool" : "lock",
                 w->pool ? w->pool : w->key);
    else if (w->pool && w->holder_fencing == 0 && ahead > 0)
        snprintf(buf, n, "pool '%s' has a free device but %" PRId64 " waiters are queued ahead", w->pool,
                 ahead);
    else if (w->pool)
        snprintf(buf, n, "all %" PRId32 " devices of pool '%s' are busy", w->devices, w->pool);
    else if (w->holder_fencing != 0)
        snprintf(buf, n, "lock '%s' is held by '%s' (fencing %" PRIu64 ")", w->key,
                 w->holder_owner ? w->holder_owner : "", w->holder_fencing);
    else
        snprintf(buf, n, "lock '%s' is free but %" PRId64 " waiters are queued ahead", w->key, ahead);
}

static void busy_timeout_msg(const engine_waiter *w, char *buf, size_t n)
{
    char reason[MSG_MAX - 64]; /* leaves room for the prefix; reasons are far shorter */
    busy_reason(w, reason, sizeof reason);
    snprintf(buf, n, "not acquired within %" PRId64 " ms: %s", w->wait_ms, reason);
}

/* ---------------------------------------------------------- cleanups */

static int release_send(baton_engine *e, const char *key, const char *token, int handoff, store_hold_cb cb,
                        void *ud, attempt_op **next);
static void handoff_done(attempt_op *o, int err, const char *emsg, const store_hold_res *res);

static void cleanup_send(baton_engine *e, cleanup *c);

static void cleanup_free(cleanup *c)
{
    free(c->key);
    free(c->pool);
    free(c);
}

static void maybe_shutdown_done(baton_engine *e);

static void cleanup_reply(cleanup *c, int err)
{
    if (err == BATON_E_UNAVAILABLE)
        c->failed = 1;
    if (--c->outstanding > 0)
        return;
    baton_engine *e = c->hdr.e;
    if (!e) {
        cleanup_free(c);
        return;
    }
    ops_unlink(e, &c->hdr);
    if (c->failed) {
        /* The outcome is unknown: send it all again after the reconnect
         * (dequeue and token-checked releases are idempotent). */
        c->failed = 0;
        c->pnext = e->pending;
        e->pending = c;
    } else {
        cleanup_free(c);
    }
    maybe_shutdown_done(e);
}

static void cleanup_done_cb(void *ud, int err, const char *msg)
{
    cleanup_reply(ud, err);
}

static void cleanup_hold_cb(void *ud, int err, const char *msg, const store_hold_res *res)
{
    cleanup *c = ud;
    attempt_op *next = c->next;
    c->next = NULL;
    handoff_done(next, err, msg, res);
    cleanup_reply(c, err);
}

/* Sends every part of c; parts the store refuses make c wait in e->pending. */
static void cleanup_send(baton_engine *e, cleanup *c)
{
    baton_store *s = e->store;
    c->outstanding = 1; /* guard: no reply may finish c while sending */
    c->failed = 0;
    ops_link(e, &c->hdr);
    if (c->dequeue) {
        store_target t = {.key = c->pool ? NULL : c->key, .pool = c->pool, .devices = c->devices};
        c->outstanding++;
        if (s->ops->dequeue(s, &t, c->token, cleanup_done_cb, c) != 0) {
            c->outstanding--;
            c->failed = 1;
        }
    }
    if (c->pool) {
        char dev[TNAME_MAX];
        for (int32_t i = 0; i < c->devices; i++) {
            snprintf(dev, sizeof dev, "%s/%" PRId32, c->pool, i);
            c->outstanding++;
            if (s->ops->release(s, dev, c->token, NULL, cleanup_hold_cb, c) != 0) {
                c->outstanding--;
                c->failed = 1;
            }
        }
    } else if (c->key) {
        c->outstanding++;
        if (release_send(e, c->key, c->token, c->handoff, cleanup_hold_cb, c, &c->next) != 0) {
            c->outstanding--;
            c->failed = 1;
        }
    }
    cleanup_reply(c, BATON_OK); /* drop the guard */
}

/*
 * Makes sure w's token neither waits nor holds in Redis.
 *   held_key != NULL: the store granted that key; release it.
 *   otherwise: dequeue (if w may be queued) and release whatever the token may
 *   have been granted without the engine learning it (all devices of a pool).
 * The cleanup copies what it needs; w may be freed right after.
 */
static void cleanup_for(baton_engine *e, const engine_waiter *w, const char *held_key, int dequeue)
{
    cleanup *c = calloc(1, sizeof *c);
    if (!c)
        goto fail;
    memcpy(c->token, w->token, sizeof c->token);
    if (held_key) {
        c->key = strdup(held_key);
        if (!c->key)
            goto fail;
        c->handoff = 1;
    } else {
        c->dequeue = dequeue;
        c->devices = w->devices;
        c->key = dup_or_null(w->key);
        c->pool = dup_or_null(w->pool);
        if (!c->key && !c->pool)
            goto fail;
    }
    if (e->up) {
        cleanup_send(e, c);
    } else {
        c->pnext = e->pending;
        e->pending = c;
    }
    return;
fail:
    /* Without memory the queue entry still dies with its liveness deadline
     * and a hold with its TTL. */
    LOG_ERROR("engine: out of memory: cannot clean up token %s", w->token);
    if (c)
        cleanup_free(c);
}

static void pending_flush(baton_engine *e)
{
    cleanup *list = e->pending;
    e->pending = NULL;
    while (list) {
        cleanup *c = list;
        list = c->pnext;
        c->pnext = NULL;
        cleanup_send(e, c);
    }
}

/* ---------------------------------------------------------- attempts */

static void attempt_reply_cb(void *ud, int err, const char *msg, const store_acquire_res *res);

static store_acquire_req attempt_req(const engine_waiter *w, int enqueue)
{
    store_acquire_req r = {
        .target = {.key = w->key, .pool = w->pool, .devices = w->devices},
        .token = w->token,
        .owner = w->owner,
        .ttl_ms = w->ttl_ms,
        .enqueue = enqueue,
        .liveness_ms = w->e->cfg.liveness_ms,
    };
    return r;
}

/* The store took o, sent at `sent_ms`, as w's attempt. */
static void attempt_started(engine_waiter *w, attempt_op *o, int64_t sent_ms)
{
    ops_link(w->e, &o->hdr);
    w->state = W_ATTEMPTING;
    w->dirty = 0;
    w->attempt_sent_ms = sent_ms;
    w->attempt_op = o;
}

/* Sends one store acquire for w. Returns 0, or the store's error (w stays
 * or becomes QUEUED and is retried on the next reconnect or re-check). */
static int attempt(engine_waiter *w, int enqueue)
{
    baton_engine *e = w->e;
    attempt_op *o = calloc(1, sizeof *o);
    if (!o)
        return BATON_E_NOMEM;
    o->w = w;
    store_acquire_req r = attempt_req(w, enqueue);
    int64_t now = mono_ms();
    int rc = e->store->ops->acquire(e->store, &r, attempt_reply_cb, o);
    if (rc != 0) {
        free(o);
        w->state = W_QUEUED;
        return rc;
    }
    attempt_started(w, o, now);
    return 0;
}

/* Attempts w again now, or right after the attempt it has in flight. */
static void waiter_kick(engine_waiter *w)
{
    if (w->state == W_ATTEMPTING)
        w->dirty = 1;
    else if (w->state == W_QUEUED)
        attempt(w, 1);
}

/* The local waiter of target t (may be NULL) with this token, or NULL. */
static engine_waiter *waiter_by_token(const target *t, const char *token)
{
    engine_waiter *w = t ? t->waiters.head : NULL;
    while (w && strcmp(w->token, token) != 0)
        w = w->tlink.next;
    return w;
}

/* Re-attempts the earliest local waiter of t: normally only it can be at the
 * head of the Redis queue, since this batond enqueued its waiters in order.
 * When the orders diverged, its reply names the real head (kick_head). */
static void kick(target *t)
{
    engine_waiter *w = t->waiters.head;
    if (w && t->e->up)
        waiter_kick(w);
}

/*
 * A reply to w said: the lock is free, but `head_token` (not w) heads the
 * Redis queue. If that waiter is local, attempt it now. kick() trusts the
 * local order, which can differ from the queue's: entries purged as dead
 * while this batond stalled past the liveness window are added again at the
 * tail by their next attempt, and after Redis loses its data waiters of
 * several batonds re-enqueue interleaved. Without this the real head would
 * sleep until the re-check while the lock stays free. A head on another
 * batond is its own; a dead one is purged when retry_ms fires.
 * Bounded: the head, attempted while the lock is free, is granted; a reply
 * that does not grant it means the lock was taken (no head_token then) or
 * the queue changed again, and every step is one attempt of another waiter.
 */
static void kick_head(const engine_waiter *w, const char *head_token)
{
    baton_engine *e = w->e;
    if (!head_token || !head_token[0] || strcmp(head_token, w->token) == 0 || !e->up)
        return;
    engine_waiter *h = waiter_by_token(target_of(e, w->key, w->pool), head_token);
    if (h)
        waiter_kick(h);
}

static void kick_name(baton_engine *e, const char *name)
{
    target *t = target_find(e, name);
    if (t)
        kick(t);
}

/* Re-attempts every waiting waiter of every target, in FIFO order. */
static void attempt_all(baton_engine *e)
{
    for (size_t b = 0; b < e->nbuckets; b++)
        for (target *t = e->buckets[b]; t; t = t->hnext)
            for (engine_waiter *w = t->waiters.head; w; w = w->tlink.next)
                waiter_kick(w);
}

static void target_retry_cb(evutil_socket_t fd, short what, void *arg)
{
    target *t = arg;
    t->retry_at = 0;
    kick(t);
}

/* Arms t's retry timer after retry_ms unless it fires earlier already. */
static void target_arm_retry(target *t, int64_t retry_ms)
{
    if (!t || retry_ms < 0)
        return;
    retry_ms += 1; /* the TTL has surely run out in Redis by then */
    int64_t at = mono_ms() + retry_ms;
    if (t->retry_at != 0 && t->retry_at <= at)
        return;
    struct timeval tv = tv_of_ms(retry_ms);
    if (evtimer_add(t->retry, &tv) == 0)
        t->retry_at = at;
}

static void renew_timer_cb(evutil_socket_t fd, short what, void *arg);
static void renew_send(engine_waiter *w);

/*
 * Why: a STREAM holder that cannot renew must hear "lost" before Redis can
 * give the key to someone else, not at the same instant: the ABORTED still
 * has to travel to the client, and the client has to stop. So the engine
 * gives up a margin before the TTL it could not extend runs out: a fifth of
 * the TTL, at most 2 s (renewals run every third, so at least one retry has
 * failed by then).
 */
static int64_t hold_give_up_ms(const engine_waiter *w)
{
    int64_t margin = w->ttl_ms / 5;
    if (margin > 2000)
        margin = 2000;
    return w->expiry_ms - margin;
}

static void renew_schedule(engine_waiter *w)
{
    int64_t step = w->ttl_ms / 3;
    if (step < 1)
        step = 1;
    int64_t left = hold_give_up_ms(w) - mono_ms();
    if (left < 0)
        left = 0;
    struct timeval tv = tv_of_ms(left < step ? left : step);
    evtimer_add(w->renew_timer, &tv);
}

/* The store granted w (not ended): deliver it. */
static void deliver_grant(engine_waiter *w, const store_acquire_res *res)
{
    baton_engine *e = w->e;
    char tname[TNAME_MAX];
    char key[BATON_KEY_MAX + 1];
    char token[BATON_TOKEN_LEN + 1];
    char msg[MSG_MAX];
    /* The acquire script publishes WAKE_POOL when waiters remain after a pool
     * grant; only a kick that landed on w while it attempted (the event came
     * before this reply) must be passed on, as attempt_end_* do. */
    int kick_pool = w->pool != NULL && w->dirty;
    waiter_target_name(w, tname, sizeof tname);
    snprintf(key, sizeof key, "%s", res->key ? res->key : (w->key ? w->key : ""));
    memcpy(token, w->token, sizeof token);

    target_remove(w);
    if (w->wait_timer)
        evtimer_del(w->wait_timer);
    w->held_key = strdup(key);
    w->fencing = res->fencing;
    w->expiry_ms = w->attempt_sent_ms + res->ttl_ms;
    if (!w->held_key)
        goto fail;
    if (w->mode == ENGINE_MODE_STREAM) {
        char hname[TNAME_MAX];
        target_name(key, NULL, hname, sizeof hname);
        target *ht = target_get(e, hname);
        w->renew_timer = evtimer_new(e->base, renew_timer_cb, w);
        if (!ht || !w->renew_timer) {
            if (ht)
                target_maybe_free(ht);
            goto fail;
        }
        target_add(ht, &ht->holds, w);
        w->state = W_HOLDING;
        renew_schedule(w);
    } else {
        w->state = W_LEASE_GRANTED;
    }
    if (kick_pool)
        kick_name(e, tname);
    engine_grant g = {
        .key = key, .token = token, .fencing = res->fencing, .ttl_ms = res->ttl_ms, .device = res->device};
    engine_acquire_sink sink = w->sink;
    void *ud = w->ud;
    if (sink.granted)
        sink.granted(ud, &g);
    return;
fail:
    cleanup_for(e, w, key, 0);
    if (kick_pool)
        kick_name(e, tname);
    snprintf(msg, sizeof msg, "out of memory delivering lock '%s'", key);
    waiter_finish(w, BATON_E_NOMEM, msg);
}

/* position < 0 marks a result that carries no queue information (a release
 * that did not hand w the key): w keeps what its last attempt learned. */
static void record_busy(engine_waiter *w, const store_acquire_res *res)
{
    if (res->position < 0)
        return;
    char *owner = res->holder_owner ? strdup(res->holder_owner) : NULL;
    free(w->holder_owner);
    w->holder_owner = owner;
    w->holder_fencing = res->holder_fencing;
    w->position = res->position;
    w->queue_len = res->queue_len;
    w->have_info = 1;
}

/* Ends an attempt that did not deliver a grant; kicks the target again if a
 * kick landed on w while it attempted (the next local waiter inherits it). */
static void attempt_end_quiet(engine_waiter *w)
{
    char tname[TNAME_MAX];
    int rekick = w->dirty && w->wait_ms > 0;
    waiter_target_name(w, tname, sizeof tname);
    baton_engine *e = w->e;
    waiter_free(w);
    if (rekick)
        kick_name(e, tname);
}

static void attempt_end_finish(engine_waiter *w, int err, const char *msg)
{
    char tname[TNAME_MAX];
    int rekick = w->dirty && w->wait_ms > 0;
    waiter_target_name(w, tname, sizeof tname);
    baton_engine *e = w->e;
    engine_acquire_sink sink = w->sink;
    void *ud = w->ud;
    waiter_free(w);
    if (rekick)
        kick_name(e, tname);
    if (sink.finished)
        sink.finished(ud, err, msg);
}

static void handle_attempt(engine_waiter *w, int err, const char *emsg, const store_acquire_res *res)
{
    baton_engine *e = w->e;
    char msg[MSG_MAX];
    int waiting = w->wait_ms > 0;

    if (err == BATON_OK && res && res->granted) {
        if (w->ended) {
            cleanup_for(e, w, res->key, 0);
            attempt_end_quiet(w);
            return;
        }
        deliver_grant(w, res);
        return;
    }
    if (err != BATON_OK || !res) {
        if (err == BATON_OK)
            err = BATON_E_INTERNAL;
        /* The outcome is unknown: the token may hold or wait in Redis. */
        if (w->ended) {
            cleanup_for(e, w, NULL, waiting);
            attempt_end_quiet(w);
            return;
        }
        if (err == BATON_E_UNAVAILABLE && waiting && !w->timed_out) {
            /* Stay in line: the reconnect (or the re-check) attempts again. */
            w->state = W_QUEUED;
            return;
        }
        cleanup_for(e, w, NULL, waiting);
        if (err == BATON_E_UNAVAILABLE) {
            snprintf(msg, sizeof msg, MSG_UNAVAILABLE);
        } else if (err == BATON_E_INVALID && emsg) {
            snprintf(msg, sizeof msg, "%s", emsg); /* e.g. a pool's device count (store) */
        } else {
            LOG_WARN("engine: acquire of token %s failed: %s", w->token, emsg ? emsg : "?");
            snprintf(msg, sizeof msg, "internal error: %s", emsg ? emsg : "unexpected store reply");
            err = BATON_E_INTERNAL;
        }
        attempt_end_finish(w, err, msg);
        return;
    }

    /* Not granted. First the real head, if local (before any sink call). */
    kick_head(w, res->head_token);
    record_busy(w, res);
    if (w->ended) {
        if (waiting)
            cleanup_for(e, w, NULL, 1);
        attempt_end_quiet(w);
        return;
    }
    if (!waiting) {
        busy_reason(w, msg, sizeof msg);
        attempt_end_finish(w, BATON_E_BUSY, msg);
        return;
    }
    if (w->timed_out) {
        cleanup_for(e, w, NULL, 1);
        busy_timeout_msg(w, msg, sizeof msg);
        attempt_end_finish(w, BATON_E_BUSY, msg);
        return;
    }
    w->state = W_QUEUED;
    target_arm_retry(w->tgt, res->retry_ms);
    int64_t pos = res->position;
    int report = pos > 0 && pos != w->last_position;
    if (report)
        w->last_position = pos;
    engine_acquire_sink sink = w->sink;
    void *ud = w->ud;
    if (w->dirty)
        attempt(w, 1);
    if (report && sink.queued)
        sink.queued(ud, pos);
}

/* Unlinks and frees attempt op o. Returns its waiter, or NULL when the
 * engine or the waiter is gone (nothing is left to do then). */
static engine_waiter *attempt_op_end(attempt_op *o)
{
    baton_engine *e = o->hdr.e;
    engine_waiter *w = o->w;
    if (e)
        ops_unlink(e, &o->hdr);
    free(o);
    if (!e || !w)
        return NULL;
    w->attempt_op = NULL;
    return w;
}

static void attempt_reply_cb(void *ud, int err, const char *msg, const store_acquire_res *res)
{
    engine_waiter *w = attempt_op_end(ud);
    if (!w)
        return;
    baton_engine *e = w->e;
    handle_attempt(w, err, msg, res);
    maybe_shutdown_done(e);
}

/* ---------------------------------------------------------- direct handoff */

/*
 * Why: after a release, the next waiter used to hear of its grant only after
 * a pub/sub event reached its batond and its own acquire script ran: a
 * Redis round trip and two thread wake-ups more on the path a GPU idles on.
 * Now a release carries the acquire request of the key's first local waiter
 * when that waiter is idle (store.h: release `next`), and counts as that
 * waiter's attempt: it is W_ATTEMPTING, kicks mark it dirty, and the outcome
 * goes through handle_attempt like any attempt reply. Redis grants it only
 * under acquire's own rule (the key is free and the token heads the queue,
 * dead entries purged), so a waiter of another batond at the head is not
 * passed over: the RELEASED event wakes it as before. Only releases of a
 * known grant hand on (Release, and a hold or lease that ends); a cleanup of
 * a waiter whose outcome is unknown does not.
 */
static engine_waiter *handoff_candidate(baton_engine *e, const char *key, const char *token)
{
    if (!e->up || e->shutting_down)
        return NULL;
    target *t = target_of(e, key, NULL);
    engine_waiter *w = t ? t->waiters.head : NULL;
    if (!w || w->state != W_QUEUED || w->ended || w->timed_out || strcmp(w->token, token) == 0)
        return NULL;
    return w;
}

/* Sends the release of key by token; with `handoff`, hands the key to its
 * first local waiter if that one is idle: *next is then that waiter's
 * attempt, to be passed to handoff_done with the reply. Returns 0 or the
 * store's refusal (nothing changed then). */
static int release_send(baton_engine *e, const char *key, const char *token, int handoff, store_hold_cb cb,
                        void *ud, attempt_op **next)
{
    *next = NULL;
    engine_waiter *w = handoff ? handoff_candidate(e, key, token) : NULL;
    attempt_op *o = w ? calloc(1, sizeof *o) : NULL;
    store_acquire_req r;
    if (o) {
        o->w = w;
        r = attempt_req(w, 1);
    }
    int64_t now = o ? mono_ms() : 0;
    int rc = e->store->ops->release(e->store, key, token, o ? &r : NULL, cb, ud);
    if (rc != 0) {
        free(o);
        return rc;
    }
    if (o) {
        attempt_started(w, o, now);
        *next = o;
    }
    return 0;
}

/* The reply to a release that carried o's waiter (o may be NULL). */
static void handoff_done(attempt_op *o, int err, const char *emsg, const store_hold_res *res)
{
    engine_waiter *w = o ? attempt_op_end(o) : NULL;
    if (!w)
        return;
    baton_engine *e = w->e;
    if (err == BATON_OK && res && res->next && res->next->granted) {
        e->stats.handoffs++;
        handle_attempt(w, BATON_OK, NULL, res->next);
        return;
    }
    if (err == BATON_E_UNAVAILABLE) {
        /* The outcome is unknown and the connection is gone: w stays in
         * line and its attempt after the reconnect (idempotent by token)
         * reports a grant if the script made one. */
        handle_attempt(w, err, emsg, NULL);
        return;
    }
    /* Not handed over: another waiter heads the queue, the release was
     * refused, or it failed in Redis (its outcome for w unknown). That was
     * the releaser's request, not w's: an ordinary attempt, at once, tells w
     * where it stands (and reports a grant the script may have made). An
     * ended or timed-out w is cleaned up instead, which releases anything
     * its token may hold. */
    if (err != BATON_OK && err != BATON_E_NOT_HOLDER)
        LOG_WARN("engine: release handing a key to token %s failed: %s", w->token, emsg ? emsg : "?");
    store_acquire_res busy = {.device = -1, .position = -1, .retry_ms = -1};
    w->dirty = 1;
    handle_attempt(w, BATON_OK, NULL, &busy);
}

static void wait_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    engine_waiter *w = arg;
    char msg[MSG_MAX];
    if (w->state == W_ATTEMPTING) {
        /* The reply decides; meanwhile kicks go to the next waiter. */
        w->timed_out = 1;
        target_remove(w);
        return;
    }
    if (w->state != W_QUEUED)
        return;
    cleanup_for(w->e, w, NULL, 1);
    busy_timeout_msg(w, msg, sizeof msg);
    waiter_finish(w, BATON_E_BUSY, msg);
}

/* ----------------------------------------------------------- holds */

/* Ends a STREAM hold with LOST; release_token: the token might still hold
 * the key in Redis (renew outcome unknown), so release it. */
static void hold_lost(engine_waiter *w, int release_token, const char *msg)
{
    if (release_token)
        cleanup_for(w->e, w, w->held_key, 0);
    waiter_finish(w, BATON_E_LOST, msg);
}

static void renew_reply_cb(void *ud, int err, const char *emsg, const store_hold_res *res)
{
    renew_op *o = ud;
    baton_engine *e = o->hdr.e;
    engine_waiter *w = o->w;
    int64_t sent = o->sent_ms;
    if (e)
        ops_unlink(e, &o->hdr);
    free(o);
    if (!e)
        return;
    if (w)
        w->renew_op = NULL;
    if (!w || w->state != W_HOLDING) {
        maybe_shutdown_done(e);
        return;
    }
    char msg[MSG_MAX];
    if (err == BATON_OK && res) {
        int64_t until = sent + res->ttl_ms;
        if (until > w->expiry_ms)
            w->expiry_ms = until;
    } else if (err == BATON_E_NOT_HOLDER && res) {
        if (res->holder_fencing != 0)
            snprintf(msg, sizeof msg, "lock '%s' lost: now held by '%s' (fencing %" PRIu64 ")", w->held_key,
                     res->holder_owner ? res->holder_owner : "", res->holder_fencing);
        else
            snprintf(msg, sizeof msg, "lock '%s' lost: it is no longer held (expired)", w->held_key);
        /* Let watchers see EXPIRED if the hold record is still there. */
        e->store->ops->reap(e->store, w->held_key);
        hold_lost(w, 0, msg);
    } else if (mono_ms() >= hold_give_up_ms(w)) {
        snprintf(msg, sizeof msg, "could not renew lock '%s' before its TTL ran out: " MSG_UNAVAILABLE,
                 w->held_key);
        hold_lost(w, 1, msg);
    }
    /* else: UNAVAILABLE / INTERNAL: the next tick tries again */
    maybe_shutdown_done(e);
}

static void renew_send(engine_waiter *w)
{
    baton_engine *e = w->e;
    if (w->renew_op)
        return;
    renew_op *o = calloc(1, sizeof *o);
    if (!o)
        return;
    o->w = w;
    o->sent_ms = mono_ms();
    if (e->store->ops->renew(e->store, w->held_key, w->token, w->ttl_ms, renew_reply_cb, o) != 0) {
        free(o);
        return;
    }
    ops_link(e, &o->hdr);
    w->renew_op = o;
}

static void renew_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    engine_waiter *w = arg;
    if (mono_ms() >= hold_give_up_ms(w)) {
        char msg[MSG_MAX];
        snprintf(msg, sizeof msg, "could not renew lock '%s' before its TTL ran out: " MSG_UNAVAILABLE,
                 w->held_key);
        hold_lost(w, 1, msg);
        return;
    }
    renew_send(w);
    renew_schedule(w);
}

/* A RELEASED / EXPIRED / FORCE_RELEASED event names a local STREAM hold. */
static void hold_event(baton_engine *e, const store_event *ev)
{
    char msg[MSG_MAX];
    target *t = target_of(e, ev->key, NULL);
    if (!t)
        return;
    engine_waiter *w = t->holds.head;
    while (w && w->fencing != ev->fencing)
        w = w->tlink.next;
    if (!w)
        return;
    switch (ev->type) {
    case STORE_EV_RELEASED: waiter_finish(w, BATON_OK, "released"); break;
    case STORE_EV_EXPIRED:
        snprintf(msg, sizeof msg, "lock '%s' lost: its TTL ran out before it was renewed", w->held_key);
        waiter_finish(w, BATON_E_LOST, msg);
        break;
    default:
        snprintf(msg, sizeof msg, "lock '%s' lost: force-released (fencing %" PRIu64 ")", w->held_key,
                 w->fencing);
        waiter_finish(w, BATON_E_LOST, msg);
        break;
    }
}

/* ---------------------------------------------------------- watches */

static void watch_free(engine_watch *w)
{
    free(w->key);
    free(w->prefix);
    free(w);
}

static void watch_unlink(engine_watch *w)
{
    baton_engine *e = w->e;
    if (w->prev)
        w->prev->next = w->next;
    else
        e->watches = w->next;
    if (w->next)
        w->next->prev = w->prev;
    w->prev = w->next = NULL;
}

static int watch_matches(const engine_watch *w, const char *key)
{
    if (w->key)
        return strcmp(w->key, key) == 0;
    return strncmp(w->prefix, key, w->prefix_len) == 0;
}

static void watches_deliver(baton_engine *e, const store_event *ev)
{
    e->delivering++;
    for (engine_watch *w = e->watches; w; w = w->next)
        if (!w->stopped && watch_matches(w, ev->key))
            w->cb(w->ud, ev);
    if (--e->delivering == 0 && e->watch_stopped) {
        e->watch_stopped = 0;
        engine_watch *w = e->watches;
        while (w) {
            engine_watch *next = w->next;
            if (w->stopped) {
                watch_unlink(w);
                watch_free(w);
            }
            w = next;
        }
    }
}

/* ---------------------------------------------------------- store hooks */

static void on_event(void *ud, const store_event *ev)
{
    baton_engine *e = ud;
    char name[TNAME_MAX];
    char pname[TNAME_MAX];
    if (!ev->key)
        return;
    switch (ev->type) {
    case STORE_EV_ACQUIRED: watches_deliver(e, ev); return;
    case STORE_EV_RELEASED:
    case STORE_EV_EXPIRED:
    case STORE_EV_FORCE_RELEASED:
        watches_deliver(e, ev);
        hold_event(e, ev);
        /* fall through */
    case STORE_EV_WAKE:
        /* Look targets up again: the callbacks above may have changed them. */
        target_name(ev->key, NULL, name, sizeof name);
        kick_name(e, name);
        if (pool_name_of_device(ev->key, pname, sizeof pname))
            kick_name(e, pname);
        return;
    case STORE_EV_WAKE_POOL:
        target_name(NULL, ev->key, name, sizeof name);
        kick_name(e, name);
        return;
    }
}

/* Reports a change of engine_serving() once, to the serving callback. */
static void serving_update(baton_engine *e)
{
    int s = e->up && !e->shutting_down;
    if (s == e->serving)
        return;
    e->serving = s;
    if (e->serving_cb)
        e->serving_cb(e->serving_ud, s);
}

static void on_state(void *ud, int up)
{
    baton_engine *e = ud;
    if (!up) {
        if (e->up)
            LOG_WARN("engine: store down; waiters keep their place, holds renew when it is back");
        e->up = 0;
        serving_update(e);
        return;
    }
    e->up = 1;
    serving_update(e);
    /* Redis may have lost its queues: every waiter joins again, in order. */
    attempt_all(e);
    for (engine_waiter *w = e->all.head; w; w = w->alink.next)
        if (w->state == W_HOLDING)
            renew_send(w);
    pending_flush(e);
}

/*
 * A refresh found no queue entry for one of this batond's waiters: it was
 * purged as dead (this batond stalled past the liveness window) or lost with
 * Redis' data while the connection stayed up. The waiter attempts again and
 * so rejoins the queue (at its tail); without this only the first waiter of
 * the target would, on its next kick.
 */
static void on_missing(void *ud, const store_target *t, const char *token)
{
    baton_engine *e = ud;
    engine_waiter *w = waiter_by_token(t->key || t->pool ? target_of(e, t->key, t->pool) : NULL, token);
    /* (An attempt in flight queues it anyway.) */
    if (w && w->state == W_QUEUED && e->up) {
        e->stats.requeued++;
        attempt(w, 1);
    }
}

static void noop_event(void *ud, const store_event *ev)
{
}

static void noop_state(void *ud, int up)
{
}

/* ---------------------------------------------------------- engine timers */

/*
 * The safety net for a missed wake-up: each target's first local waiter
 * attempts again (only it can be granted next; a reply naming another head
 * passes the kick on, and every grant or departure kicks the next one).
 * Not every waiter: with 10,000 waiting streams that was 10,000 scripts at
 * once every re-check, and handoffs stalled behind them for ~0.4 s.
 */
static void recheck_cb(evutil_socket_t fd, short what, void *arg)
{
    baton_engine *e = arg;
    if (!e->up)
        return;
    for (size_t b = 0; b < e->nbuckets; b++)
        for (target *t = e->buckets[b]; t; t = t->hnext)
            kick(t);
}

/* One batched refresh of every waiting waiter's queue liveness deadline,
 * grouped by target (the store sends one script per target and batch). */
static void liveness_cb(evutil_socket_t fd, short what, void *arg)
{
    baton_engine *e = arg;
    if (!e->up)
        return;
    size_t n = 0;
    for (size_t b = 0; b < e->nbuckets; b++)
        for (target *t = e->buckets[b]; t; t = t->hnext)
            for (engine_waiter *w = t->waiters.head; w; w = w->tlink.next)
                n++;
    if (n == 0)
        return;
    store_target *targets = calloc(n, sizeof *targets);
    const char **tokens = calloc(n, sizeof *tokens);
    if (targets && tokens) {
        size_t i = 0;
        for (size_t b = 0; b < e->nbuckets; b++)
            for (target *t = e->buckets[b]; t; t = t->hnext)
                for (engine_waiter *w = t->waiters.head; w && i < n; w = w->tlink.next) {
                    targets[i] = (store_target){.key = w->key, .pool = w->pool, .devices = w->devices};
                    tokens[i] = w->token;
                    i++;
                }
        e->store->ops->refresh(e->store, targets, (const char *const *)tokens, i, e->cfg.liveness_ms);
    }
    free(targets);
    free(tokens);
}

static void done_cb(evutil_socket_t fd, short what, void *arg)
{
    baton_engine *e = arg;
    void (*done)(void *) = e->done_cb;
    e->done_cb = NULL;
    if (done)
        done(e->done_ud);
}

static void schedule_done(baton_engine *e)
{
    if (e->done_scheduled || !e->done_cb)
        return;
    e->done_scheduled = 1;
    struct timeval tv = {0, 0};
    evtimer_add(e->done_ev, &tv);
}

static void maybe_shutdown_done(baton_engine *e)
{
    if (e->shutting_down && !e->ops)
        schedule_done(e);
}

/* ---------------------------------------------------------- public API */

baton_engine *engine_new(struct event_base *base, baton_store *store, const engine_config *cfg)
{
    baton_engine *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    e->base = base;
    e->store = store;
    e->cfg.recheck_ms = cfg && cfg->recheck_ms > 0 ? cfg->recheck_ms : 30000;
    e->cfg.liveness_ms = cfg && cfg->liveness_ms > 0 ? cfg->liveness_ms : 6000;
    e->nbuckets = 64;
    e->buckets = calloc(e->nbuckets, sizeof *e->buckets);
    e->recheck_timer = event_new(base, -1, EV_PERSIST, recheck_cb, e);
    e->liveness_timer = event_new(base, -1, EV_PERSIST, liveness_cb, e);
    e->done_ev = evtimer_new(base, done_cb, e);
    if (!e->buckets || !e->recheck_timer || !e->liveness_timer || !e->done_ev)
        goto fail;
    struct timeval rtv = tv_of_ms(e->cfg.recheck_ms);
    int64_t lstep = e->cfg.liveness_ms / 3 > 0 ? e->cfg.liveness_ms / 3 : 1;
    struct timeval ltv = tv_of_ms(lstep);
    if (evtimer_add(e->recheck_timer, &rtv) != 0 || evtimer_add(e->liveness_timer, &ltv) != 0)
        goto fail;
    store->hooks.on_event = on_event;
    store->hooks.on_state = on_state;
    store->hooks.on_missing = on_missing;
    store->hooks.ud = e;
    return e;
fail:
    if (e->recheck_timer)
        event_free(e->recheck_timer);
    if (e->liveness_timer)
        event_free(e->liveness_timer);
    if (e->done_ev)
        event_free(e->done_ev);
    free(e->buckets);
    free(e);
    return NULL;
}

void engine_free(baton_engine *e)
{
    if (!e)
        return;
    e->store->hooks.on_event = noop_event;
    e->store->hooks.on_state = noop_state;
    e->store->hooks.on_missing = NULL;
    e->store->hooks.ud = NULL;
    /* Replies still due free their op and nothing else. */
    for (op *o = e->ops; o; o = o->next)
        o->e = NULL;
    e->ops = NULL;
    engine_waiter *w;
    while ((w = e->todo.head))
        waiter_free(w);
    while ((w = e->all.head))
        waiter_free(w);
    while (e->pending) {
        cleanup *c = e->pending;
        e->pending = c->pnext;
        cleanup_free(c);
    }
    while (e->watches) {
        engine_watch *wt = e->watches;
        watch_unlink(wt);
        watch_free(wt);
    }
    for (size_t b = 0; b < e->nbuckets; b++) {
        /* Every target was freed with its last waiter; be defensive. */
        while (e->buckets[b]) {
            target *t = e->buckets[b];
            e->buckets[b] = t->hnext;
            event_free(t->retry);
            free(t);
        }
    }
    free(e->buckets);
    event_free(e->recheck_timer);
    event_free(e->liveness_timer);
    event_free(e->done_ev);
    free(e);
}

int engine_acquire(baton_engine *e, const engine_acquire_req *req, const engine_acquire_sink *sink, void *ud,
                   engine_waiter **out, const char **errmsg)
{
    char tname[TNAME_MAX];
    *out = NULL;
    if (e->shutting_down) {
        *errmsg = MSG_SHUTDOWN;
        return BATON_E_UNAVAILABLE;
    }
    if (!e->up) {
        *errmsg = MSG_UNAVAILABLE;
        return BATON_E_UNAVAILABLE;
    }
    if ((req->key == NULL) == (req->pool == NULL)) {
        *errmsg = "exactly one of key and pool must be set";
        return BATON_E_INVALID;
    }
    engine_waiter *w = calloc(1, sizeof *w);
    if (!w)
        goto nomem;
    w->e = e;
    w->mode = req->mode;
    w->key = dup_or_null(req->key);
    w->pool = dup_or_null(req->pool);
    w->devices = req->pool ? req->devices : 0;
    w->owner = strdup(req->owner ? req->owner : "");
    w->ttl_ms = req->ttl_ms;
    w->wait_ms = req->wait_ms > 0 ? req->wait_ms : 0;
    w->sink = *sink;
    w->ud = ud;
    w->last_position = -1;
    if ((req->key && !w->key) || (req->pool && !w->pool) || !w->owner)
        goto nomem;
    if (make_token(w->token) != 0) {
        waiter_free(w);
        *errmsg = "no random bytes for a token";
        return BATON_E_INTERNAL;
    }
    all_push(&e->all, w);
    if (w->wait_ms > 0) {
        waiter_target_name(w, tname, sizeof tname);
        target *t = target_get(e, tname);
        if (!t)
            goto nomem;
        target_add(t, &t->waiters, w);
        w->wait_timer = evtimer_new(e->base, wait_timer_cb, w);
        if (!w->wait_timer)
            goto nomem;
    }
    int rc = attempt(w, w->wait_ms > 0);
    if (rc != 0) {
        waiter_free(w);
        *errmsg = refusal_msg(rc);
        return rc;
    }
    if (w->wait_timer) {
        struct timeval tv = tv_of_ms(w->wait_ms);
        evtimer_add(w->wait_timer, &tv);
    }
    *out = w;
    return 0;
nomem:
    if (w)
        waiter_free(w);
    *errmsg = "out of memory";
    return BATON_E_NOMEM;
}

void engine_acquire_end(engine_waiter *w, int release_lease)
{
    baton_engine *e = w->e;
    switch (w->state) {
    case W_ATTEMPTING:
        /* The reply releases or dequeues; kicks go to the next waiter now. */
        w->ended = 1;
        target_remove(w);
        if (w->wait_timer)
            evtimer_del(w->wait_timer);
        return;
    case W_QUEUED: cleanup_for(e, w, NULL, w->wait_ms > 0); break;
    case W_HOLDING: cleanup_for(e, w, w->held_key, 0); break;
    case W_LEASE_GRANTED:
        if (release_lease)
            cleanup_for(e, w, w->held_key, 0);
        break;
    }
    waiter_free(w);
}

static unary_op *unary_new(baton_engine *e, unary_kind kind, const char *key, void *ud)
{
    size_t len = strlen(key);
    unary_op *o = calloc(1, sizeof *o + len + 1);
    if (!o)
        return NULL;
    o->kind = kind;
    o->ud = ud;
    memcpy(o->key, key, len + 1);
    return o;
}

/* Unlinks o; returns 0 if the engine is gone (then o is freed). */
static int unary_begin(unary_op *o)
{
    baton_engine *e = o->hdr.e;
    if (!e) {
        free(o);
        return 0;
    }
    ops_unlink(e, &o->hdr);
    return 1;
}

static void not_holder_msg(const unary_op *o, const store_hold_res *res, char *buf, size_t n)
{
    const char *owner = res && res->holder_owner ? res->holder_owner : "";
    uint64_t f = res ? res->holder_fencing : 0;
    if (f == 0)
        snprintf(buf, n, "lock '%s' is not held by anyone", o->key);
    else if (o->kind == U_FORCE)
        snprintf(buf, n, "lock '%s' is not held with fencing %" PRIu64 " (held by '%s', fencing %" PRIu64 ")",
                 o->key, o->fencing, owner, f);
    else
        snprintf(buf, n, "lock '%s' is not held by this token (held by '%s', fencing %" PRIu64 ")", o->key,
                 owner, f);
}

static void error_msg(int err, const char *emsg, char *buf, size_t n)
{
    if (err == BATON_E_UNAVAILABLE)
        snprintf(buf, n, MSG_UNAVAILABLE);
    else
        snprintf(buf, n, "internal error: %s", emsg ? emsg : "unexpected store reply");
}

static void unary_hold_reply(void *ud, int err, const char *emsg, const store_hold_res *res)
{
    unary_op *o = ud;
    /* The waiter first: its grant is what the handoff is timed by. */
    handoff_done(o->next, err, emsg, res);
    if (!unary_begin(o))
        return;
    baton_engine *e = o->hdr.e;
    char msg[MSG_MAX];
    const char *m = NULL;
    int64_t ttl = 0;
    if (err == BATON_OK) {
        ttl = res ? res->ttl_ms : 0;
    } else if (err == BATON_E_NOT_HOLDER) {
        not_holder_msg(o, res, msg, sizeof msg);
        m = msg;
    } else {
        if (err != BATON_E_UNAVAILABLE)
            err = BATON_E_INTERNAL;
        error_msg(err, emsg, msg, sizeof msg);
        m = msg;
    }
    engine_hold_cb cb = o->hold_cb;
    void *cud = o->ud;
    free(o);
    cb(cud, err, m, ttl);
    maybe_shutdown_done(e);
}

static void unary_describe_reply(void *ud, int err, const char *emsg, const store_describe_res *res)
{
    unary_op *o = ud;
    if (!unary_begin(o))
        return;
    baton_engine *e = o->hdr.e;
    char msg[MSG_MAX];
    const char *m = NULL;
    if (err != BATON_OK || !res) {
        if (err != BATON_E_UNAVAILABLE)
            err = BATON_E_INTERNAL;
        error_msg(err, emsg, msg, sizeof msg);
        m = msg;
        res = NULL;
    }
    engine_describe_cb cb = o->describe_cb;
    void *cud = o->ud;
    free(o);
    cb(cud, err, m, res);
    maybe_shutdown_done(e);
}

/* Common tail of the unary calls: link o if the store took it. */
static int unary_sent(baton_engine *e, unary_op *o, int rc, const char **errmsg)
{
    if (rc != 0) {
        free(o);
        rc = rc < 0 ? rc : BATON_E_UNAVAILABLE;
        *errmsg = refusal_msg(rc);
        return rc;
    }
    ops_link(e, &o->hdr);
    return 0;
}

int engine_renew(baton_engine *e, const char *key, const char *token, int64_t ttl_ms, engine_hold_cb cb,
                 void *ud, const char **errmsg)
{
    unary_op *o = unary_new(e, U_RENEW, key, ud);
    if (!o) {
        *errmsg = "out of memory";
        return BATON_E_NOMEM;
    }
    o->hold_cb = cb;
    int rc = e->store->ops->renew(e->store, key, token, ttl_ms, unary_hold_reply, o);
    return unary_sent(e, o, rc, errmsg);
}

int engine_release(baton_engine *e, const char *key, const char *token, engine_hold_cb cb, void *ud,
                   const char **errmsg)
{
    unary_op *o = unary_new(e, U_RELEASE, key, ud);
    if (!o) {
        *errmsg = "out of memory";
        return BATON_E_NOMEM;
    }
    o->hold_cb = cb;
    int rc = release_send(e, key, token, 1, unary_hold_reply, o, &o->next);
    return unary_sent(e, o, rc, errmsg);
}

int engine_force_release(baton_engine *e, const char *key, uint64_t fencing, engine_hold_cb cb, void *ud,
                         const char **errmsg)
{
    unary_op *o = unary_new(e, U_FORCE, key, ud);
    if (!o) {
        *errmsg = "out of memory";
        return BATON_E_NOMEM;
    }
    o->hold_cb = cb;
    o->fencing = fencing;
    int rc = e->store->ops->force_release(e->store, key, fencing, unary_hold_reply, o);
    return unary_sent(e, o, rc, errmsg);
}

int engine_describe(baton_engine *e, const char *key, engine_describe_cb cb, void *ud, const char **errmsg)
{
    unary_op *o = unary_new(e, U_DESCRIBE, key, ud);
    if (!o) {
        *errmsg = "out of memory";
        return BATON_E_NOMEM;
    }
    o->describe_cb = cb;
    int rc = e->store->ops->describe(e->store, key, unary_describe_reply, o);
    return unary_sent(e, o, rc, errmsg);
}

engine_watch *engine_watch_start(baton_engine *e, const char *key, const char *prefix, engine_watch_cb cb,
                                 engine_watch_ended_cb ended, void *ud)
{
    if (e->shutting_down || (key == NULL) == (prefix == NULL))
        return NULL;
    engine_watch *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->e = e;
    w->key = dup_or_null(key);
    w->prefix = dup_or_null(prefix);
    if (!w->key && !w->prefix) {
        free(w);
        return NULL;
    }
    w->prefix_len = prefix ? strlen(prefix) : 0;
    w->cb = cb;
    w->ended = ended;
    w->ud = ud;
    w->next = e->watches;
    if (e->watches)
        e->watches->prev = w;
    e->watches = w;
    return w;
}

void engine_watch_stop(engine_watch *w)
{
    baton_engine *e = w->e;
    if (e->delivering) {
        /* Freed once the event being delivered is done with the list. */
        w->stopped = 1;
        e->watch_stopped = 1;
        return;
    }
    watch_unlink(w);
    watch_free(w);
}

void engine_shutdown(baton_engine *e, void (*done)(void *ud), void *ud)
{
    if (e->shutting_down)
        return;
    e->shutting_down = 1;
    serving_update(e);
    e->done_cb = done;
    e->done_ud = ud;
    evtimer_del(e->recheck_timer);
    evtimer_del(e->liveness_timer);

    /* Visit each waiter once even if a sink ends others meanwhile: move them
     * all to e->todo and take them back one by one. */
    e->todo = e->all;
    e->all = (wlist){0};
    for (engine_waiter *w = e->todo.head; w; w = w->alink.next)
        w->all_list = &e->todo;
    engine_waiter *w;
    while ((w = e->todo.head)) {
        all_remove(w);
        all_push(&e->all, w);
        switch (w->state) {
        case W_QUEUED:
            cleanup_for(e, w, NULL, w->wait_ms > 0);
            waiter_finish(w, BATON_E_UNAVAILABLE, MSG_SHUTDOWN);
            break;
        case W_ATTEMPTING:
            if (!w->ended) {
                /* The reply releases a grant and dequeues (ended). */
                w->ended = 1;
                target_remove(w);
                if (w->wait_timer)
                    evtimer_del(w->wait_timer);
                if (w->sink.finished)
                    w->sink.finished(w->ud, BATON_E_UNAVAILABLE, MSG_SHUTDOWN);
            }
            break;
        case W_HOLDING:
            cleanup_for(e, w, w->held_key, 0);
            waiter_finish(w, BATON_E_UNAVAILABLE, MSG_SHUTDOWN);
            break;
        case W_LEASE_GRANTED: break; /* the transport still owns it (engine_acquire_end) */
        }
    }
    while (e->watches) {
        engine_watch *wt = e->watches;
        watch_unlink(wt);
        engine_watch_ended_cb ended = wt->ended;
        void *wud = wt->ud;
        watch_free(wt);
        if (ended)
            ended(wud, BATON_E_UNAVAILABLE, MSG_SHUTDOWN);
    }
    if (e->up)
        pending_flush(e);
    if (!e->up)
        schedule_done(e);
    else
        maybe_shutdown_done(e);
}

void engine_get_stats(const baton_engine *e, engine_stats *out)
{
    *out = e->stats;
    out->waiting = 0;
    out->stream_holds = 0;
    out->watches = 0;
    for (const engine_waiter *w = e->all.head; w; w = w->alink.next) {
        if (w->state == W_HOLDING)
            out->stream_holds++;
        else if ((w->state == W_ATTEMPTING || w->state == W_QUEUED) && !w->ended)
            out->waiting++;
    }
    for (const engine_watch *w = e->watches; w; w = w->next)
        if (!w->stopped)
            out->watches++;
}

int engine_serving(const baton_engine *e)
{
    return e->serving;
}

void engine_set_serving_cb(baton_engine *e, void (*cb)(void *ud, int serving), void *ud)
{
    e->serving_cb = cb;
    e->serving_ud = ud;
}
