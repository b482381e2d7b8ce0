/* In-memory store for engine unit tests (see fake_store.h). */
#include "fake_store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#define NAME_MAX_ (BATON_KEY_MAX + 8)

typedef struct flock {
    char key[BATON_KEY_MAX + 1];
    int held;     /* P{K}:lock exists (if expires > now) */
    int hold_rec; /* P{K}:hold exists */
    char token[BATON_TOKEN_LEN + 1];
    char *owner;
    uint64_t fencing;
    uint64_t fence; /* counter; 0 = missing */
    int64_t expires;
    char *grant; /* a multi-device grant: all its device keys, space-separated (owned); else NULL */
} flock;

typedef struct fentry {
    char token[BATON_TOKEN_LEN + 1];
    int64_t seq;
    int64_t deadline;
    int32_t count; /* a pool waiter: the devices it waits for (acquire.lua's qc) */
} fentry;

typedef struct fqueue {
    char name[NAME_MAX_]; /* "k:<key>" or "p:<pool>" */
    fentry *v;
    size_t n, cap;
    int64_t seq;
    int32_t qn; /* a pool's queue: the device count its waiters use (0: unset) */
} fqueue;

typedef enum item_kind {
    I_ACQ,
    I_HOLD,
    I_DONE,
    I_DESC,
    I_STATE,
    I_EVENT,
    I_MISSING,
    I_PRIMARY,
    I_LIST
} item_kind;

typedef struct item {
    struct item *next;
    item_kind kind;
    int err;
    void *cb;
    void *ud;
    store_acquire_res ares;
    store_hold_res hres;
    store_describe_res dres;
    store_event ev;
    int up;
    char *s1; /* owned strings the result points at */
    char *s2;
    char *s3;
    int32_t *devs; /* ares.devices / fencings of a pool grant (owned) */
    uint64_t *fencs;
    store_list_res lres; /* I_LIST: locks (owned, with their strings) */
    char **lstrs;
    size_t nlstrs;
} item;

typedef struct ilist {
    item *head, *tail;
    size_t n;
} ilist;

typedef struct fake_store {
    baton_store base; /* first: baton_store * casts to fake_store * */
    struct event_base *evb;
    struct event *tick;
    int down;
    int paused;
    int shuffle;
    unsigned seed;
    flock *locks;
    size_t nlocks, caplocks;
    fqueue *queues;
    size_t nqueues, capqueues;
    ilist replies, events;
    uint64_t calls[FAKE_NOPS];
    int fail_err[FAKE_NOPS];
    uint64_t violations;
} fake_store;

static fake_store *FS(baton_store *s)
{
    return (fake_store *)s;
}

static const fake_store *CFS(const baton_store *s)
{
    return (const fake_store *)s;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void *xcalloc(size_t n, size_t sz)
{
    void *p = calloc(n, sz);
    if (!p)
        abort();
    return p;
}

static char *xstrdup(const char *s)
{
    char *p = strdup(s ? s : "");
    if (!p)
        abort();
    return p;
}

/* ------------------------------------------------------------ delivery */

static void tick_cb(evutil_socket_t fd, short what, void *arg);

static void arm(fake_store *f)
{
    if (f->paused || (!f->replies.head && !f->events.head))
        return;
    struct timeval tv = {0, 0};
    if (!evtimer_pending(f->tick, NULL))
        evtimer_add(f->tick, &tv);
}

static void push(ilist *l, item *it)
{
    it->next = NULL;
    if (l->tail)
        l->tail->next = it;
    else
        l->head = it;
    l->tail = it;
    l->n++;
}

static item *pop(ilist *l)
{
    item *it = l->head;
    if (!it)
        return NULL;
    l->head = it->next;
    if (!l->head)
        l->tail = NULL;
    l->n--;
    return it;
}

static void item_free(item *it)
{
    for (size_t i = 0; i < it->nlstrs; i++)
        free(it->lstrs[i]);
    free(it->lstrs);
    free((void *)it->lres.locks);
    free(it->s1);
    free(it->s2);
    free(it->s3);
    free(it->devs);
    free(it->fencs);
    free(it);
}

static void deliver(fake_store *f, item *it)
{
    switch (it->kind) {
    case I_ACQ:
        if (it->cb)
            ((store_acquire_cb)it->cb)(it->ud, it->err, it->err ? "fake error" : NULL,
                                       it->err ? NULL : &it->ares);
        break;
    case I_HOLD:
        if (it->cb)
            ((store_hold_cb)it->cb)(it->ud, it->err,
                                    it->err == BATON_E_NOT_HOLDER ? it->s3
                                    : it->err                     ? "fake error"
                                                                  : NULL,
                                    it->err && it->err != BATON_E_NOT_HOLDER ? NULL : &it->hres);
        break;
    case I_DONE:
        if (it->cb)
            ((store_done_cb)it->cb)(it->ud, it->err, it->err ? "fake error" : NULL);
        break;
    case I_LIST:
        if (it->cb)
            ((store_list_cb)it->cb)(it->ud, it->err, it->err ? "fake error" : NULL,
                                    it->err ? NULL : &it->lres);
        break;
    case I_DESC:
        if (it->cb)
            ((store_describe_cb)it->cb)(it->ud, it->err, it->err ? "fake error" : NULL,
                                        it->err ? NULL : &it->dres);
        break;
    case I_STATE:
        if (f->base.hooks.on_state)
            f->base.hooks.on_state(f->base.hooks.ud, it->up);
        break;
    case I_PRIMARY:
        if (f->base.hooks.on_new_primary)
            f->base.hooks.on_new_primary(f->base.hooks.ud);
        break;
    case I_EVENT:
        if (f->base.hooks.on_event)
            f->base.hooks.on_event(f->base.hooks.ud, &it->ev);
        break;
    case I_MISSING:
        if (f->base.hooks.on_missing) {
            store_target t = {.key = it->up ? NULL : it->s1, .pool = it->up ? it->s1 : NULL};
            f->base.hooks.on_missing(f->base.hooks.ud, &t, it->s2);
        }
        break;
    }
}

/* Delivers what was due when the tick fired; later items wait for the next. */
static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    fake_store *f = arg;
    size_t budget = f->replies.n + f->events.n;
    while (budget-- > 0 && !f->paused) {
        ilist *from;
        if (!f->replies.head)
            from = &f->events;
        else if (!f->events.head)
            from = &f->replies;
        else if (f->shuffle)
            from = (rand_r(&f->seed) & 1) ? &f->replies : &f->events;
        else
            from = &f->events; /* a script's PUBLISH reaches the subscriber first */
        item *it = pop(from);
        if (!it)
            break;
        deliver(f, it);
        item_free(it);
    }
    arm(f);
}

static item *new_item(item_kind kind, void *cb, void *ud)
{
    item *it = xcalloc(1, sizeof *it);
    it->kind = kind;
    it->cb = cb;
    it->ud = ud;
    return it;
}

static void reply(fake_store *f, item *it, fake_op op)
{
    if (f->fail_err[op]) {
        it->err = f->fail_err[op];
        f->fail_err[op] = 0;
    }
    push(&f->replies, it);
    arm(f);
}

static void publish(fake_store *f, store_event_type type, const char *key, const char *owner,
                    uint64_t fencing)
{
    if (f->down)
        return;
    item *it = new_item(I_EVENT, NULL, NULL);
    it->s1 = xstrdup(key);
    it->s2 = xstrdup(owner);
    it->ev.type = type;
    it->ev.key = it->s1;
    it->ev.owner = it->s2;
    it->ev.fencing = fencing;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    it->ev.at_unix_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    push(&f->events, it);
    arm(f);
}

static void push_state(fake_store *f, int up)
{
    item *it = new_item(I_STATE, NULL, NULL);
    it->up = up;
    push(&f->replies, it);
    arm(f);
}

/* ------------------------------------------------------------ data */

static flock *lock_get(fake_store *f, const char *key)
{
    for (size_t i = 0; i < f->nlocks; i++)
        if (strcmp(f->locks[i].key, key) == 0)
            return &f->locks[i];
    if (f->nlocks == f->caplocks) {
        f->caplocks = f->caplocks ? f->caplocks * 2 : 16;
        f->locks = realloc(f->locks, f->caplocks * sizeof *f->locks);
        if (!f->locks)
            abort();
    }
    flock *l = &f->locks[f->nlocks++];
    memset(l, 0, sizeof *l);
    snprintf(l->key, sizeof l->key, "%s", key);
    return l;
}

static const flock *lock_find(const fake_store *f, const char *key)
{
    for (size_t i = 0; i < f->nlocks; i++)
        if (strcmp(f->locks[i].key, key) == 0)
            return &f->locks[i];
    return NULL;
}

static int live(const flock *l, int64_t now)
{
    return l && l->held && l->expires > now;
}

static fqueue *queue_get(fake_store *f, const char *name)
{
    for (size_t i = 0; i < f->nqueues; i++)
        if (strcmp(f->queues[i].name, name) == 0)
            return &f->queues[i];
    if (f->nqueues == f->capqueues) {
        f->capqueues = f->capqueues ? f->capqueues * 2 : 16;
        f->queues = realloc(f->queues, f->capqueues * sizeof *f->queues);
        if (!f->queues)
            abort();
    }
    fqueue *q = &f->queues[f->nqueues++];
    memset(q, 0, sizeof *q);
    snprintf(q->name, sizeof q->name, "%s", name);
    return q;
}

/* As the Redis store: exactly one of key / pool, not empty; devices > 0. */
static int target_ok(const store_target *t)
{
    if (!t || (!t->key) == (!t->pool))
        return 0;
    return t->key ? t->key[0] != '\0' : (t->pool[0] != '\0' && t->devices > 0);
}

static void target_qname(const store_target *t, char *out, size_t n)
{
    if (t->pool)
        snprintf(out, n, "p:%s", t->pool);
    else
        snprintf(out, n, "k:%s", t->key);
}

static long q_index(const fqueue *q, const char *token)
{
    for (size_t i = 0; i < q->n; i++)
        if (strcmp(q->v[i].token, token) == 0)
            return (long)i;
    return -1;
}

static void q_remove_at(fqueue *q, size_t i)
{
    memmove(&q->v[i], &q->v[i + 1], (q->n - i - 1) * sizeof *q->v);
    q->n--;
}

static void q_drop_dead(fqueue *q, int64_t now)
{
    for (size_t i = 0; i < q->n;) {
        if (q->v[i].deadline <= now)
            q_remove_at(q, i);
        else
            i++;
    }
}

static void reap(fake_store *f, flock *l, int64_t now)
{
    if (l->hold_rec && !live(l, now)) {
        l->hold_rec = 0;
        l->held = 0;
        publish(f, STORE_EV_EXPIRED, l->key, l->owner, l->fencing);
    }
}

/* Key queue "k:<key>" is empty after dropping dead entries. */
static int key_queue_empty(fake_store *f, const char *key, int64_t now)
{
    char name[NAME_MAX_ + 8]; /* "k:" + a key that may itself fill NAME_MAX_ - 1 */
    snprintf(name, sizeof name, "k:%s", key);
    fqueue *q = queue_get(f, name);
    q_drop_dead(q, now);
    return q->n == 0;
}

/* Calls fn on every other device of the multi-device grant that lock `key`
 * (held by token) belongs to; the peers' keys are copied first, since
 * lock_get may move the array. */
static void grant_peers(fake_store *f, const char *key, void (*fn)(fake_store *, flock *, void *), void *arg)
{
    const flock *l = lock_find(f, key);
    if (!l || !l->grant)
        return;
    char *g = xstrdup(l->grant);
    for (char *save = NULL, *k = strtok_r(g, " ", &save); k; k = strtok_r(NULL, " ", &save))
        if (strcmp(k, key) != 0)
            fn(f, lock_get(f, k), arg);
    free(g);
}

typedef struct peer_end {
    const char *token;
    store_event_type type;
    int64_t now;
    int broken; /* renew: a peer is no longer the token's */
    int64_t ttl_ms;
} peer_end;

/* As b_end_peer: ends the token's hold of one peer with an event. */
static void end_peer(fake_store *f, flock *l, void *arg)
{
    peer_end *p = arg;
    if (live(l, p->now) && strcmp(l->token, p->token) == 0) {
        l->held = 0;
        l->hold_rec = 0;
        publish(f, p->type, l->key, l->owner, l->fencing);
    } else if (!live(l, p->now)) {
        reap(f, l, p->now);
    }
}

static void check_peer(fake_store *f, flock *l, void *arg)
{
    peer_end *p = arg;
    (void)f;
    if (!live(l, p->now) || strcmp(l->token, p->token) != 0)
        p->broken = 1;
}

static void renew_peer(fake_store *f, flock *l, void *arg)
{
    peer_end *p = arg;
    (void)f;
    l->expires = p->now + p->ttl_ms;
}

static void grant(fake_store *f, flock *l, const store_acquire_req *req, int64_t now, store_acquire_res *res)
{
    if (live(l, now))
        f->violations++; /* a second holder */
    uint64_t before = l->fencing;
    if (l->fence == 0)
        l->fence = 100;
    l->fence++;
    if (l->fence <= before)
        f->violations++;
    l->held = 1;
    l->hold_rec = 1;
    snprintf(l->token, sizeof l->token, "%s", req->token);
    free(l->owner);
    l->owner = xstrdup(req->owner);
    l->fencing = l->fence;
    l->expires = now + req->ttl_ms;
    free(l->grant);
    l->grant = NULL;
    res->granted = 1;
    res->key = l->key;
    res->fencing = l->fencing;
    res->ttl_ms = req->ttl_ms;
    publish(f, STORE_EV_ACQUIRED, l->key, l->owner, l->fencing);
}

/* ------------------------------------------------------------ ops */

static void device_key(const store_target *t, int32_t i, char *out, size_t n)
{
    if (t->pool)
        snprintf(out, n, "%s/%d", t->pool, (int)i);
    else
        snprintf(out, n, "%s", t->key);
}

/* retry = the smaller of retry and ms (ms < 0 counts as 0), as acquire.lua. */
static void sooner(int64_t *retry, int64_t ms)
{
    if (ms < 0)
        ms = 0;
    if (*retry < 0 || ms < *retry)
        *retry = ms;
}

/* Follows acquire.lua step by step (see store.h). */
static int f_acquire(baton_store *s, const store_acquire_req *req, store_acquire_cb cb, void *ud)
{
    fake_store *f = FS(s);
    /* Shared devices (weights) are not modelled here: the contract suite
     * covers them against Redis only (tests/store/redis/test_store_pools.c). */
    if (!req || !target_ok(&req->target) || !req->token || req->ttl_ms <= 0 || req->weight != 0 ||
        (req->target.pool && req->count > req->target.devices))
        return BATON_E_INVALID;
    if (f->down)
        return BATON_E_UNAVAILABLE;
    f->calls[FAKE_ACQUIRE]++;
    int64_t now = now_ms();
    item *it = new_item(I_ACQ, (void *)cb, ud);
    store_acquire_res *res = &it->ares;
    res->device = -1;
    res->retry_ms = -1;
    const store_target *t = &req->target;
    int32_t ndev = t->pool ? t->devices : 1;
    int32_t count = t->pool && req->count > 1 ? req->count : 1;
    char dkey[NAME_MAX_];
    if (t->pool) {
        it->devs = xcalloc((size_t)ndev, sizeof *it->devs);
        it->fencs = xcalloc((size_t)ndev, sizeof *it->fencs);
    }

    /* Idempotent by token: every device it holds (one grant). */
    for (int32_t i = 0; i < ndev; i++) {
        device_key(t, i, dkey, sizeof dkey);
        flock *l = lock_get(f, dkey);
        if (live(l, now) && strcmp(l->token, req->token) == 0) {
            if (!res->granted) {
                res->granted = 1;
                it->s2 = xstrdup(l->key); /* lock_get may move l */
                res->key = it->s2;
                res->device = t->pool ? i : -1;
                res->fencing = l->fencing;
                res->ttl_ms = l->expires - now;
            }
            if (t->pool) {
                it->devs[res->ndevices] = i;
                it->fencs[res->ndevices++] = l->fencing;
            }
        }
    }
    if (res->granted)
        goto done;
    /* Report expired holds; drop dead waiters of the devices' own queues. */
    for (int32_t i = 0; i < ndev; i++) {
        device_key(t, i, dkey, sizeof dkey);
        reap(f, lock_get(f, dkey), now);
        if (t->pool)
            key_queue_empty(f, dkey, now);
    }

    char qname[NAME_MAX_];
    target_qname(t, qname, sizeof qname);
    fqueue *q = queue_get(f, qname);
    q_drop_dead(q, now);
    int had_head = q->n > 0;
    /* A pool's live waiters fix its device count. */
    if (t->pool && had_head && q->qn && q->qn != t->devices) {
        it->err = BATON_E_INVALID;
        goto done;
    }
    /* The devices a grant may take now: free, and their own queue empty. */
    int32_t *usable = xcalloc((size_t)ndev, sizeof *usable);
    int32_t nusable = 0;
    for (int32_t i = 0; i < ndev; i++) {
        device_key(t, i, dkey, sizeof dkey);
        if (!live(lock_get(f, dkey), now) && (!t->pool || key_queue_empty(f, dkey, now)))
            usable[nusable++] = i;
    }
    q = queue_get(f, qname); /* key_queue_empty may have moved the array */
    /* Grant iff the token heads the queue (or it is empty) and `count`
     * devices are usable: the lowest ones, all at once (strict FIFO). */
    if ((!had_head || strcmp(q->v[0].token, req->token) == 0) && nusable >= count) {
        long idx = q_index(q, req->token);
        if (idx >= 0)
            q_remove_at(q, (size_t)idx);
        char *keys = NULL;
        if (count > 1) {
            size_t len = 0, cap = (size_t)count * (NAME_MAX_ + 1) + 1;
            keys = xcalloc(1, cap);
            for (int32_t j = 0; j < count; j++) {
                device_key(t, usable[j], dkey, sizeof dkey);
                len += (size_t)snprintf(keys + len, cap - len, "%s%s", j ? " " : "", dkey);
            }
        }
        store_acquire_res one;
        for (int32_t j = 0; j < count; j++) {
            device_key(t, usable[j], dkey, sizeof dkey);
            flock *l = lock_get(f, dkey);
            one = (store_acquire_res){0};
            grant(f, l, req, now, &one);
            if (keys)
                l->grant = xstrdup(keys);
            if (j == 0) {
                *res = one;
                it->s2 = xstrdup(l->key); /* lock_get may move l */
                res->key = it->s2;
                res->device = t->pool ? usable[0] : -1;
            }
            if (t->pool) {
                it->devs[j] = usable[j];
                it->fencs[j] = one.fencing;
            }
        }
        res->ndevices = t->pool ? count : 0;
        free(keys);
        free(usable);
        q = queue_get(f, qname);
        if (t->pool && q->n > 0)
            publish(f, STORE_EV_WAKE_POOL, t->pool, "", 0);
        goto done;
    }
    /* Not granted: join or stay in the queue. */
    q = queue_get(f, qname);
    if (req->enqueue) {
        if (t->pool && (!had_head || !q->qn))
            q->qn = t->devices;
        long idx = q_index(q, req->token);
        if (idx < 0) {
            if (q->n == q->cap) {
                q->cap = q->cap ? q->cap * 2 : 8;
                q->v = realloc(q->v, q->cap * sizeof *q->v);
                if (!q->v)
                    abort();
            }
            fentry *en = &q->v[q->n++];
            snprintf(en->token, sizeof en->token, "%s", req->token);
            en->seq = ++q->seq;
            en->deadline = now + req->liveness_ms;
            en->count = count;
        } else {
            q->v[idx].deadline = now + req->liveness_ms;
        }
    }
    /* When to try again without an event: the soonest holder TTL, or the
     * soonest moment a waiter ahead of a free device can be purged. The
     * holder named is the one whose TTL runs out first. */
    int64_t retry = -1, holder_ttl = -1;
    const char *holder = "";
    uint64_t holder_f = 0;
    int any_free = 0;
    for (int32_t i = 0; i < ndev; i++) {
        device_key(t, i, dkey, sizeof dkey);
        flock *l = lock_get(f, dkey);
        if (live(l, now)) {
            int64_t pttl = l->expires - now;
            sooner(&retry, pttl);
            if (holder_ttl < 0 || pttl < holder_ttl) {
                holder = l->owner;
                holder_f = l->fencing;
                holder_ttl = pttl;
            }
            continue;
        }
        any_free = 1;
        char kq[NAME_MAX_ + 8];
        snprintf(kq, sizeof kq, "k:%s", dkey);
        fqueue *dq = t->pool ? queue_get(f, kq) : NULL;
        if (dq && dq->n > 0)
            sooner(&retry, dq->v[0].deadline - now);
    }
    free(usable);
    q = queue_get(f, qname);
    int other_head = q->n > 0 && strcmp(q->v[0].token, req->token) != 0;
    /* The head could be granted now: enough usable devices for its count. */
    int grantable = other_head && nusable >= (q->v[0].count > 1 ? q->v[0].count : 1);
    if (any_free && other_head)
        sooner(&retry, q->v[0].deadline - now);
    long idx = q_index(q, req->token);
    res->position = idx >= 0 ? idx + 1 : 0;
    res->queue_len = (int64_t)q->n;
    res->retry_ms = retry;
    /* Name the head that could take it now. */
    if (grantable && other_head) {
        it->s3 = xstrdup(q->v[0].token);
        res->head_token = it->s3;
    }
    it->s1 = xstrdup(holder);
    res->holder_owner = it->s1;
    res->holder_fencing = holder_f;
done:
    if (res->granted) {
        res->devices = res->ndevices ? it->devs : NULL;
        res->fencings = res->ndevices ? it->fencs : NULL;
    }
    reply(f, it, FAKE_ACQUIRE);
    return 0;
}

static int f_dequeue(baton_store *s, const store_target *t, const char *token, store_done_cb cb, void *ud)
{
    fake_store *f = FS(s);
    if (!target_ok(t) || !token)
        return BATON_E_INVALID;
    if (f->down)
        return BATON_E_UNAVAILABLE;
    f->calls[FAKE_DEQUEUE]++;
    char qname[NAME_MAX_];
    target_qname(t, qname, sizeof qname);
    fqueue *q = queue_get(f, qname);
    long idx = q_index(q, token);
    if (idx >= 0) {
        q_remove_at(q, (size_t)idx);
        if (idx == 0 && q->n > 0) { /* as dequeue.lua: only when others remain */
            if (t->pool)
                publish(f, STORE_EV_WAKE_POOL, t->pool, "", 0);
            else
                publish(f, STORE_EV_WAKE, t->key, "", 0);
        }
    }
    reply(f, new_item(I_DONE, (void *)cb, ud), FAKE_DEQUEUE);
    return 0;
}

/* As the Lua scripts: a lock that is gone has its hold reaped (EXPIRED is
 * published if it had run out); the message is the Redis store's. */
static void not_holder(fake_store *f, item *it, flock *l, int64_t now)
{
    it->err = BATON_E_NOT_HOLDER;
    if (live(l, now)) {
        it->s1 = xstrdup(l->owner);
        it->hres.holder_fencing = l->fencing;
    } else {
        reap(f, l, now);
        it->s1 = xstrdup("");
    }
    it->hres.holder_owner = it->s1;
    char msg[BATON_OWNER_MAX + 96];
    if (it->hres.holder_fencing)
        snprintf(msg, sizeof msg, "not the holder: held by \"%s\" (fencing %llu)", it->s1,
                 (unsigned long long)it->hres.holder_fencing);
    else
        snprintf(msg, sizeof msg, "not the holder: the key is not held");
    it->s3 = xstrdup(msg);
}

static int f_renew(baton_store *s, const char *key, const char *token, int64_t ttl_ms, store_hold_cb cb,
                   void *ud)
{
    fake_store *f = FS(s);
    if (!key || !key[0] || !token || ttl_ms <= 0)
        return BATON_E_INVALID;
    if (f->down)
        return BATON_E_UNAVAILABLE;
    f->calls[FAKE_RENEW]++;
    int64_t now = now_ms();
    flock *l = lock_get(f, key);
    item *it = new_item(I_HOLD, (void *)cb, ud);
    if (live(l, now) && strcmp(l->token, token) == 0) {
        /* As renew.lua: every device of a multi-device grant, or, when one
         * is no longer the token's, none: the rest end EXPIRED. */
        peer_end p = {.token = token, .type = STORE_EV_EXPIRED, .now = now, .ttl_ms = ttl_ms};
        grant_peers(f, key, check_peer, &p);
        l = lock_get(f, key);
        if (p.broken) {
            grant_peers(f, key, end_peer, &p);
            l = lock_get(f, key);
            l->held = 0;
            l->hold_rec = 0;
            publish(f, STORE_EV_EXPIRED, l->key, l->owner, l->fencing);
            not_holder(f, it, l, now);
        } else {
            grant_peers(f, key, renew_peer, &p);
            l = lock_get(f, key);
            l->expires = now + ttl_ms;
            it->hres.ttl_ms = ttl_ms;
            it->hres.holder_owner = ""; /* as the Redis store */
        }
    } else {
        not_holder(f, it, l, now);
    }
    reply(f, it, FAKE_RENEW);
    return 0;
}

/* As reassert.lua. */
static int f_reassert(baton_store *s, const char *key, const char *token, const char *owner, uint64_t fencing,
                      int64_t ttl_ms, store_hold_cb cb, void *ud)
{
    fake_store *f = FS(s);
    if (!key || !key[0] || !token || fencing == 0 || ttl_ms <= 0)
        return BATON_E_INVALID;
    if (f->down)
        return BATON_E_UNAVAILABLE;
    f->calls[FAKE_REASSERT]++;
    int64_t now = now_ms();
    flock *l = lock_get(f, key);
    item *it = new_item(I_HOLD, (void *)cb, ud);
    if (live(l, now) && strcmp(l->token, token) != 0) {
        not_holder(f, it, l, now);
    } else {
        if (!live(l, now)) {
            l->held = 1;
            l->hold_rec = 1;
            snprintf(l->token, sizeof l->token, "%s", token);
            free(l->owner);
            l->owner = xstrdup(owner);
            l->fencing = fencing;
            if (l->fence < fencing)
                l->fence = fencing;
        }
        l->expires = now + ttl_ms;
        it->hres.ttl_ms = ttl_ms;
        it->hres.holder_owner = "";
    }
    reply(f, it, FAKE_REASSERT);
    return 0;
}

static int f_release(baton_store *s, const char *key, const char *token, const store_acquire_req *next,
                     store_hold_cb cb, void *ud)
{
    fake_store *f = FS(s);
    if (!key || !key[0] || !token)
        return BATON_E_INVALID;
    if (next &&
        (!next->token || !next->target.key || strcmp(next->target.key, key) != 0 || next->ttl_ms <= 0))
        return BATON_E_INVALID;
    if (f->down)
        return BATON_E_UNAVAILABLE;
    f->calls[FAKE_RELEASE]++;
    int64_t now = now_ms();
    flock *l = lock_get(f, key);
    item *it = new_item(I_HOLD, (void *)cb, ud);
    if (next) {
        it->ares.device = -1;
        it->ares.retry_ms = -1;
        it->hres.next = &it->ares;
    }
    if (live(l, now) && strcmp(l->token, token) == 0) {
        /* As release.lua: every device of a multi-device grant. */
        peer_end p = {.token = token, .type = STORE_EV_RELEASED, .now = now};
        grant_peers(f, key, end_peer, &p);
        l = lock_get(f, key);
        l->held = 0;
        l->hold_rec = 0;
        publish(f, STORE_EV_RELEASED, l->key, l->owner, l->fencing);
        if (next) {
            /* As release.lua: grant next iff it heads the queue now. */
            char qname[NAME_MAX_ + 8];
            snprintf(qname, sizeof qname, "k:%s", key);
            fqueue *q = queue_get(f, qname);
            q_drop_dead(q, now);
            if (q->n > 0 && strcmp(q->v[0].token, next->token) == 0) {
                q_remove_at(q, 0);
                grant(f, l, next, now, &it->ares);
                it->ares.device = -1;
                it->s2 = xstrdup(key);
                it->ares.key = it->s2;
                f->calls[FAKE_HANDOFF]++;
            }
        }
    } else {
        not_holder(f, it, l, now);
    }
    reply(f, it, FAKE_RELEASE);
    return 0;
}

static int f_force_release(baton_store *s, const char *key, uint64_t fencing, store_hold_cb cb, void *ud)
{
    fake_store *f = FS(s);
    if (!key || !key[0] || fencing == 0)
        return BATON_E_INVALID;
    if (f->down)
        return BATON_E_UNAVAILABLE;
    f->calls[FAKE_FORCE_RELEASE]++;
    int64_t now = now_ms();
    flock *l = lock_get(f, key);
    item *it = new_item(I_HOLD, (void *)cb, ud);
    if (live(l, now) && l->fencing == fencing) {
        /* As force_release.lua: the whole grant goes. */
        char token[BATON_TOKEN_LEN + 1];
        snprintf(token, sizeof token, "%s", l->token);
        peer_end p = {.token = token, .type = STORE_EV_FORCE_RELEASED, .now = now};
        grant_peers(f, key, end_peer, &p);
        l = lock_get(f, key);
        l->held = 0;
        l->hold_rec = 0;
        publish(f, STORE_EV_FORCE_RELEASED, l->key, l->owner, l->fencing);
    } else {
        not_holder(f, it, l, now);
    }
    reply(f, it, FAKE_FORCE_RELEASE);
    return 0;
}

static int f_describe(baton_store *s, const char *key, store_describe_cb cb, void *ud)
{
    fake_store *f = FS(s);
    if (!key || !key[0])
        return BATON_E_INVALID;
    if (f->down)
        return BATON_E_UNAVAILABLE;
    f->calls[FAKE_DESCRIBE]++;
    int64_t now = now_ms();
    flock *l = lock_get(f, key);
    item *it = new_item(I_DESC, (void *)cb, ud);
    char qname[NAME_MAX_];
    snprintf(qname, sizeof qname, "k:%s", key);
    fqueue *q = queue_get(f, qname);
    q_drop_dead(q, now);
    it->dres.waiters = (int64_t)q->n;
    if (live(l, now)) {
        it->dres.held = 1;
        it->s1 = xstrdup(l->owner);
        it->dres.fencing = l->fencing;
        it->dres.ttl_ms = l->expires - now;
    } else {
        it->s1 = xstrdup("");
    }
    it->dres.owner = it->s1;
    reply(f, it, FAKE_DESCRIBE);
    return 0;
}

/* List: the live locks whose key starts with prefix, in table order; the
 * cursor is the index to resume at ("0" = start and end, as SCAN's). */
static int f_list(baton_store *s, const char *prefix, int32_t limit, const char *cursor, store_list_cb cb,
                  void *ud)
{
    fake_store *f = FS(s);
    if (!prefix || !cursor || limit < 1)
        return BATON_E_INVALID;
    if (f->down)
        return BATON_E_UNAVAILABLE;
    f->calls[FAKE_LIST]++;
    int64_t now = now_ms();
    size_t at = (size_t)strtoull(cursor, NULL, 10), plen = strlen(prefix);
    item *it = new_item(I_LIST, (void *)cb, ud);
    store_lock_info *v = xcalloc((size_t)limit, sizeof *v);
    it->lstrs = xcalloc(2 * (size_t)limit, sizeof *it->lstrs);
    size_t n = 0;
    for (; at < f->nlocks && n < (size_t)limit; at++) {
        const flock *l = &f->locks[at];
        if (!live(l, now) || strncmp(l->key, prefix, plen) != 0)
            continue;
        v[n].key = it->lstrs[it->nlstrs++] = xstrdup(l->key);
        v[n].owner = it->lstrs[it->nlstrs++] = xstrdup(l->owner);
        v[n].fencing = l->fencing;
        v[n].ttl_ms = l->expires - now;
        v[n].waiters = 0;
        n++;
    }
    char next[24];
    snprintf(next, sizeof next, "%zu", at < f->nlocks ? at : (size_t)0);
    it->s1 = xstrdup(next);
    it->lres = (store_list_res){.locks = v, .n = n, .next_cursor = it->s1};
    reply(f, it, FAKE_LIST);
    return 0;
}

static int f_refresh(baton_store *s, const store_target *targets, const char *const *tokens, size_t n,
                     int64_t liveness_ms)
{
    fake_store *f = FS(s);
    if (n > 0 && (!targets || !tokens))
        return BATON_E_INVALID;
    if (f->down)
        return BATON_E_UNAVAILABLE;
    f->calls[FAKE_REFRESH]++;
    int64_t now = now_ms();
    for (size_t i = 0; i < n; i++) {
        char qname[NAME_MAX_];
        target_qname(&targets[i], qname, sizeof qname);
        fqueue *q = queue_get(f, qname);
        long idx = q_index(q, tokens[i]);
        if (idx >= 0) {
            q->v[idx].deadline = now + liveness_ms;
        } else {
            /* As refresh.lua: name the tokens without an entry (in the reply
             * stream, as the real store's reply does). */
            item *it = new_item(I_MISSING, NULL, NULL);
            it->up = targets[i].pool != NULL;
            it->s1 = xstrdup(targets[i].key ? targets[i].key : targets[i].pool);
            it->s2 = xstrdup(tokens[i]);
            push(&f->replies, it);
            arm(f);
        }
    }
    return 0;
}

void fake_store_drop_entry(baton_store *s, const char *key, const char *pool, size_t pos)
{
    fake_store *f = FS(s);
    store_target t = {.key = key, .pool = pool};
    char qname[NAME_MAX_];
    target_qname(&t, qname, sizeof qname);
    fqueue *q = queue_get(f, qname);
    if (pos >= 1 && pos <= q->n)
        q_remove_at(q, pos - 1);
}

static int f_reap(baton_store *s, const char *key)
{
    fake_store *f = FS(s);
    if (!key || !key[0])
        return BATON_E_INVALID;
    if (f->down)
        return BATON_E_UNAVAILABLE;
    f->calls[FAKE_REAP]++;
    reap(f, lock_get(f, key), now_ms());
    return 0;
}

static void drain_unavailable(fake_store *f)
{
    item *it;
    while ((it = pop(&f->replies))) {
        if (it->kind != I_STATE) {
            it->err = BATON_E_UNAVAILABLE;
            deliver(f, it);
        }
        item_free(it);
    }
    while ((it = pop(&f->events)))
        item_free(it);
}

static void f_free(baton_store *s)
{
    fake_store *f = FS(s);
    f->base.hooks.on_event = NULL;
    f->base.hooks.on_state = NULL;
    f->base.hooks.on_missing = NULL;
    drain_unavailable(f);
    event_free(f->tick);
    for (size_t i = 0; i < f->nlocks; i++) {
        free(f->locks[i].owner);
        free(f->locks[i].grant);
    }
    free(f->locks);
    for (size_t i = 0; i < f->nqueues; i++)
        free(f->queues[i].v);
    free(f->queues);
    free(f);
}

static const store_ops fake_ops = {
    .acquire = f_acquire,
    .dequeue = f_dequeue,
    .renew = f_renew,
    .release = f_release,
    .reassert = f_reassert,
    .force_release = f_force_release,
    .describe = f_describe,
    .list = f_list,
    .refresh = f_refresh,
    .reap = f_reap,
    .free = f_free,
};

/* ------------------------------------------------------------ controls */

baton_store *fake_store_new(struct event_base *base)
{
    fake_store *f = xcalloc(1, sizeof *f);
    f->base.ops = &fake_ops;
    f->evb = base;
    f->tick = evtimer_new(base, tick_cb, f);
    if (!f->tick)
        abort();
    push_state(f, 1);
    return &f->base;
}

void fake_store_set_down(baton_store *s, int down)
{
    fake_store *f = FS(s);
    if (down == f->down)
        return;
    f->down = down;
    if (down) {
        /* Replies due become "connection lost"; pub/sub messages are lost. */
        for (item *it = f->replies.head; it; it = it->next)
            if (it->kind != I_STATE)
                it->err = BATON_E_UNAVAILABLE;
        item *it;
        while ((it = pop(&f->events)))
            item_free(it);
    }
    push_state(f, !down);
}

void fake_store_new_primary(baton_store *s, int lose_data)
{
    fake_store *f = FS(s);
    fake_store_set_down(s, 1);
    if (lose_data)
        fake_store_lose_data(s);
    f->down = 0;
    push(&f->replies, new_item(I_PRIMARY, NULL, NULL));
    push_state(f, 1);
}

void fake_store_lose_data(baton_store *s)
{
    fake_store *f = FS(s);
    for (size_t i = 0; i < f->nlocks; i++) {
        f->locks[i].held = 0;
        f->locks[i].hold_rec = 0;
    }
    for (size_t i = 0; i < f->nqueues; i++)
        f->queues[i].n = 0;
}

void fake_store_requeue_tail(baton_store *s, const char *key, const char *pool, size_t pos)
{
    fake_store *f = FS(s);
    char name[NAME_MAX_];
    snprintf(name, sizeof name, pool ? "p:%s" : "k:%s", pool ? pool : key);
    fqueue *q = queue_get(f, name);
    if (pos < 1 || pos > q->n)
        abort(); /* a broken test */
    fentry en = q->v[pos - 1];
    q_remove_at(q, pos - 1);
    en.seq = ++q->seq;
    q->v[q->n++] = en; /* fits: it was just removed */
}

void fake_store_expire(baton_store *s, const char *key)
{
    fake_store *f = FS(s);
    int64_t now = now_ms();
    flock *l = lock_get(f, key);
    if (live(l, now))
        l->expires = now;
    reap(f, l, now);
}

void fake_store_fail_next(baton_store *s, fake_op op, int err)
{
    FS(s)->fail_err[op] = err;
}

void fake_store_set_shuffle(baton_store *s, unsigned seed)
{
    FS(s)->shuffle = 1;
    FS(s)->seed = seed;
}

void fake_store_pause(baton_store *s, int paused)
{
    fake_store *f = FS(s);
    f->paused = paused;
    arm(f);
}

int fake_store_step(baton_store *s)
{
    fake_store *f = FS(s);
    item *it = pop(&f->events);
    if (!it)
        it = pop(&f->replies);
    if (!it)
        return 0;
    deliver(f, it);
    item_free(it);
    return 1;
}

uint64_t fake_store_calls(const baton_store *s, fake_op op)
{
    return CFS(s)->calls[op];
}

int fake_store_holder(const baton_store *s, const char *key, uint64_t *fencing, char *token, size_t tokenlen)
{
    const flock *l = lock_find(CFS(s), key);
    if (!live(l, now_ms()))
        return 0;
    if (fencing)
        *fencing = l->fencing;
    if (token && tokenlen > 0)
        snprintf(token, tokenlen, "%s", l->token);
    return 1;
}

int64_t fake_store_queue_len(const baton_store *s, const char *key, const char *pool)
{
    const fake_store *f = CFS(s);
    char name[NAME_MAX_];
    if (pool)
        snprintf(name, sizeof name, "p:%s", pool);
    else
        snprintf(name, sizeof name, "k:%s", key);
    for (size_t i = 0; i < f->nqueues; i++)
        if (strcmp(f->queues[i].name, name) == 0)
            return (int64_t)f->queues[i].n;
    return 0;
}

uint64_t fake_store_violations(const baton_store *s)
{
    return CFS(s)->violations;
}

size_t fake_store_pending(const baton_store *s)
{
    return CFS(s)->replies.n + CFS(s)->events.n;
}

void fake_store_publish(baton_store *s, store_event_type type, const char *key, const char *owner,
                        uint64_t fencing)
{
    publish(FS(s), type, key, owner, fencing);
}

uint64_t fake_store_fence(const baton_store *s, const char *key)
{
    const flock *l = lock_find(CFS(s), key);
    return l ? l->fence : 0;
}
