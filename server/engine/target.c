/*
 * Targets: the waiters and STREAM holds of one key or pool, found by name,
 * and the kicks that make a target's first waiter attempt again.
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

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

static void retry_cb(evutil_socket_t fd, short what, void *arg);

/* The target named `name`, whose map_hash_str is `hash`, or NULL. */
static target *find_hashed(const baton_engine *e, const char *name, uint64_t hash)
{
    for (map_node *n = map_first(&e->targets, hash); n; n = map_next(n, hash)) {
        target *t = MAP_ENTRY(n, target, node);
        if (strcmp(t->name, name) == 0)
            return t;
    }
    return NULL;
}

static target *find(const baton_engine *e, const char *name)
{
    return find_hashed(e, name, map_hash_str(name));
}

target *target_get(baton_engine *e, const char *name)
{
    uint64_t hash = map_hash_str(name);
    target *t = find_hashed(e, name, hash);
    if (t)
        return t;
    size_t len = strlen(name);
    t = calloc(1, sizeof *t + len + 1);
    if (!t)
        return NULL;
    memcpy(t->name, name, len + 1);
    t->e = e;
    t->retry = evtimer_new(e->base, retry_cb, t);
    if (!t->retry) {
        free(t);
        return NULL;
    }
    if (map_insert(&e->targets, &t->node, hash) != 0) {
        event_free(t->retry);
        free(t);
        return NULL;
    }
    return t;
}

/* Frees t if nothing uses it any more. */
void target_maybe_free(target *t)
{
    if (t->waiters.head || t->holds.head)
        return;
    map_remove(&t->e->targets, &t->node);
    event_free(t->retry);
    free(t);
}

void target_add(target *t, wlist *l, engine_waiter *w)
{
    wlist_push(l, w, offsetof(engine_waiter, tlink));
    w->tgt = t;
    w->tlist = l;
}

/* Takes w out of its target list; frees the target if it became unused. */
void target_remove(engine_waiter *w)
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
void target_name(const char *key, const char *pool, char *out, size_t n)
{
    if (pool)
        snprintf(out, n, "p:%s", pool);
    else
        snprintf(out, n, "k:%s", key);
}

void target_name_of_waiter(const engine_waiter *w, char *out, size_t n)
{
    target_name(w->key, w->pool, out, n);
}

/* The target of a plain key (pool == NULL) or a pool, if it exists. */
target *target_of(baton_engine *e, const char *key, const char *pool)
{
    char name[TNAME_MAX];
    target_name(key, pool, name, sizeof name);
    return find(e, name);
}

/* The local waiter of target t (may be NULL) with this token, or NULL. */
engine_waiter *target_waiter_by_token(const target *t, const char *token)
{
    engine_waiter *w = t ? t->waiters.head : NULL;
    while (w && strcmp(w->token, token) != 0)
        w = w->tlink.next;
    return w;
}

/* Re-attempts the earliest local waiter of t: normally only it can be at the
 * head of the Redis queue, since this batond enqueued its waiters in order.
 * When the orders diverged, its reply names the real head
 * (target_kick_head). */
void target_kick(target *t)
{
    engine_waiter *w = t->waiters.head;
    if (w && t->e->up)
        attempt_again(w);
}

/*
 * A reply to w said: the lock is free, but `head_token` (not w) heads the
 * Redis queue. If that waiter is local, attempt it now. target_kick()
 * trusts the local order, which can differ from the queue's: entries purged
 * as dead while this batond stalled past the liveness window are added
 * again at the tail by their next attempt, and after Redis loses its data
 * waiters of several batonds re-enqueue interleaved. Without this the real
 * head would sleep until the re-check while the lock stays free. A head on
 * another batond is its own; a dead one is purged when retry_ms fires.
 * Bounded: the head, attempted while the lock is free, is granted; a reply
 * that does not grant it means the lock was taken (no head_token then) or
 * the queue changed again, and every step is one attempt of another waiter.
 */
void target_kick_head(const engine_waiter *w, const char *head_token)
{
    baton_engine *e = w->e;
    if (!head_token || !head_token[0] || strcmp(head_token, w->token) == 0 || !e->up)
        return;
    engine_waiter *h = target_waiter_by_token(target_of(e, w->key, w->pool), head_token);
    if (h)
        attempt_again(h);
}

void target_kick_name(baton_engine *e, const char *name)
{
    target *t = find(e, name);
    if (t)
        target_kick(t);
}

static void kick_every_waiter(target *t, void *ud)
{
    for (engine_waiter *w = t->waiters.head; w; w = w->tlink.next)
        attempt_again(w);
}

/* Kicks the target of plain key `key` and that of the pool `key` may be a
 * device of (an event for the key: it was released, expired or is free). */
void target_kick_key(baton_engine *e, const char *key)
{
    char name[TNAME_MAX];
    char pname[TNAME_MAX];
    target_name(key, NULL, name, sizeof name);
    target_kick_name(e, name);
    if (pool_name_of_device(key, pname, sizeof pname))
        target_kick_name(e, pname);
}

/* Re-attempts every waiting waiter of every target, in FIFO order. */
void target_kick_all_waiters(baton_engine *e)
{
    target_each(e, kick_every_waiter, NULL);
}

typedef struct each_ctx {
    void (*fn)(target *t, void *ud);
    void *ud;
} each_ctx;

static void each_node(map_node *n, void *arg)
{
    each_ctx *c = arg;
    c->fn(MAP_ENTRY(n, target, node), c->ud);
}

/* Calls fn on every target, in no set order; fn may not add or free targets. */
void target_each(baton_engine *e, void (*fn)(target *t, void *ud), void *ud)
{
    each_ctx c = {fn, ud};
    map_each(&e->targets, each_node, &c);
}

static void free_node(map_node *n, void *ud)
{
    target *t = MAP_ENTRY(n, target, node);
    event_free(t->retry);
    free(t);
}

/* engine_free: every target was freed with its last waiter; be defensive.
 * (map_each has read a node's successor before fn frees it.) */
void target_free_all(baton_engine *e)
{
    map_each(&e->targets, free_node, NULL);
    map_free(&e->targets);
}

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
    target *t = arg;
    t->retry_at = 0;
    target_kick(t);
}

/* Arms t's retry timer after retry_ms unless it fires earlier already. */
void target_arm_retry(target *t, int64_t retry_ms)
{
    if (!t || retry_ms < 0)
        return;
    retry_ms += 1; /* the TTL has surely run out in Redis by then */
    int64_t at = clock_add_ms(clock_mono_ms(), retry_ms);
    if (t->retry_at != 0 && t->retry_at <= at)
        return;
    struct timeval tv = tv_of_ms(retry_ms);
    if (evtimer_add(t->retry, &tv) == 0)
        t->retry_at = at;
}
