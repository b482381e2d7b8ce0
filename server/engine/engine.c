/*
 * The engine's lifecycle, its public Acquire and shutdown calls, the store's
 * hooks and the engine-wide timers (see engine.h for the contract and
 * internal.h for the objects).
 */
#include "internal.h"

#include <stdlib.h>

#include <event2/event.h>

#include "lock_view.h"
#include "log.h"
#include "metrics.h"

/* The message for a call the store refused to send (its return code). */
const char *engine__refusal_msg(int rc)
{
    switch (rc) {
    case BATON_E_NOMEM: return "out of memory";
    case BATON_E_INVALID: return "invalid request";
    case BATON_E_UNAVAILABLE: return MSG_UNAVAILABLE;
    default: return "internal error";
    }
}

/* For the lock view's handoff timing: does a local waiter wait for key? */
static int key_has_waiters(baton_engine *e, const char *key)
{
    target *t = target_of(e, key, NULL);
    return t != NULL && t->waiters.head != NULL;
}

static void on_event(void *ud, const store_event *ev)
{
    baton_engine *e = ud;
    char name[TNAME_MAX];
    lock_view_event(ev); /* metrics and alerts: holds as the channel tells them */
    if (!ev->key)
        return;
    switch (ev->type) {
    case STORE_EV_ACQUIRED: watch_deliver(e, ev); return;
    case STORE_EV_RELEASED:
    case STORE_EV_EXPIRED:
    case STORE_EV_FORCE_RELEASED:
        watch_deliver(e, ev);
        hold_event(e, ev);
        if (lock_view_enabled() && key_has_waiters(e, ev->key))
            lock_view_key_freed(ev->key);
        /* fall through */
    case STORE_EV_WAKE:
        /* Look targets up again: the callbacks above may have changed them. */
        target_kick_key(e, ev->key);
        return;
    case STORE_EV_WAKE_POOL:
        target_name(NULL, ev->key, name, sizeof name);
        target_kick_name(e, name);
        return;
    case STORE_EV_LONG_HELD: return; /* batond-local, never from the store */
    }
}

void engine_watch_notify(baton_engine *e, const store_event *ev)
{
    if (ev->key)
        watch_deliver(e, ev);
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
    /* Holds first: a renewal (or re-assertion) of a hold reaches Redis before
     * this batond's own waiters of the same key attempt it. */
    for (engine_waiter *w = e->all.head; w; w = w->alink.next)
        if (w->state == W_HOLDING)
            hold_renew(w);
    /* Redis may have lost its queues: every waiter joins again, in order. */
    target_kick_all_waiters(e);
    cleanup_flush_pending(e);
}

/*
 * A pool hold of several devices, or a share of devices, is not re-asserted:
 * reassert re-creates one key's hold with one fencing, which would bring back
 * the first device alone (the others, and their fencings, lost with the
 * writes) or, for a shared device, find the sentinel and call it someone
 * else's. Its next renewal is an ordinary one instead: renew.lua extends every
 * device while the grant is intact, and when the failover lost any of it the
 * hold ends LOST for all of them, never partly kept.
 */
static int reassert_would_split(const engine_waiter *w)
{
    return w->pool != NULL && (w->count > 1 || w->weight > 0);
}

/*
 * The store now talks to a Redis it did not write to before (a failover, a
 * restart, a restored snapshot): a hold granted or renewed in the writes it
 * lost is missing there although its holder is alive and its stream open.
 * Such a hold is re-asserted (token-checked, keeping its fencing) instead of
 * reported lost when its next renewal finds the key free.
 */
static void on_new_primary(void *ud)
{
    baton_engine *e = ud;
    for (engine_waiter *w = e->all.head; w; w = w->alink.next)
        if (w->state == W_HOLDING && !reassert_would_split(w))
            w->may_reassert = 1;
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
    engine_waiter *w =
        target_waiter_by_token(t->key || t->pool ? target_of(e, t->key, t->pool) : NULL, token);
    /* (An attempt in flight queues it anyway.) */
    if (w && w->state == W_QUEUED && e->up) {
        e->stats.requeued++;
        attempt_send(w, 1);
    }
}

static void noop_event(void *ud, const store_event *ev)
{
}

static void noop_state(void *ud, int up)
{
}

static void kick_first(target *t, void *ud)
{
    target_kick(t);
}

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
    target_each(e, kick_first, NULL);
}

typedef struct refresh_batch {
    store_target *targets;
    const char **tokens;
    size_t n, cap;
} refresh_batch;

static void count_waiters(target *t, void *ud)
{
    size_t *n = ud;
    for (engine_waiter *w = t->waiters.head; w; w = w->tlink.next)
        (*n)++;
}

static void collect_waiters(target *t, void *ud)
{
    refresh_batch *b = ud;
    for (engine_waiter *w = t->waiters.head; w && b->n < b->cap; w = w->tlink.next) {
        b->targets[b->n] = (store_target){.key = w->key, .pool = w->pool, .devices = w->devices};
        b->tokens[b->n] = w->token;
        b->n++;
    }
}

/* One batched refresh of every waiting waiter's queue liveness deadline,
 * grouped by target (the store sends one script per target and batch). */
static void liveness_cb(evutil_socket_t fd, short what, void *arg)
{
    baton_engine *e = arg;
    if (!e->up)
        return;
    refresh_batch b = {0};
    target_each(e, count_waiters, &b.cap);
    if (b.cap == 0)
        return;
    b.targets = calloc(b.cap, sizeof *b.targets);
    b.tokens = calloc(b.cap, sizeof *b.tokens);
    if (b.targets && b.tokens) {
        target_each(e, collect_waiters, &b);
        e->store->ops->refresh(e->store, b.targets, (const char *const *)b.tokens, b.n, e->cfg.liveness_ms);
    }
    free(b.targets);
    free(b.tokens);
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

void engine__maybe_shutdown_done(baton_engine *e)
{
    if (e->shutting_down && !e->calls)
        schedule_done(e);
}

baton_engine *engine_new(struct event_base *base, baton_store *store, const engine_config *cfg)
{
    baton_engine *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    e->base = base;
    e->store = store;
    e->cfg.recheck_ms = cfg && cfg->recheck_ms > 0 ? cfg->recheck_ms : 30000;
    e->cfg.liveness_ms = cfg && cfg->liveness_ms > 0 ? cfg->liveness_ms : 6000;
    e->recheck_timer = event_new(base, -1, EV_PERSIST, recheck_cb, e);
    e->liveness_timer = event_new(base, -1, EV_PERSIST, liveness_cb, e);
    e->done_ev = evtimer_new(base, done_cb, e);
    if (!e->recheck_timer || !e->liveness_timer || !e->done_ev)
        goto fail;
    struct timeval rtv = tv_of_ms(e->cfg.recheck_ms);
    int64_t lstep = e->cfg.liveness_ms / 3 > 0 ? e->cfg.liveness_ms / 3 : 1;
    struct timeval ltv = tv_of_ms(lstep);
    if (evtimer_add(e->recheck_timer, &rtv) != 0 || evtimer_add(e->liveness_timer, &ltv) != 0)
        goto fail;
    store->hooks.on_event = on_event;
    store->hooks.on_state = on_state;
    store->hooks.on_new_primary = on_new_primary;
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
    free(e);
    return NULL;
}

void engine_free(baton_engine *e)
{
    if (!e)
        return;
    e->store->hooks.on_event = noop_event;
    e->store->hooks.on_state = noop_state;
    e->store->hooks.on_new_primary = NULL;
    e->store->hooks.on_missing = NULL;
    e->store->hooks.ud = NULL;
    /* Replies still due free their call and nothing else. */
    for (call *c = e->calls; c; c = c->next)
        c->e = NULL;
    e->calls = NULL;
    engine_waiter *w;
    while ((w = e->todo.head))
        waiter_free(w);
    while ((w = e->all.head))
        waiter_free(w);
    cleanup_free_pending(e);
    watch_free_all(e);
    target_free_all(e);
    event_free(e->recheck_timer);
    event_free(e->liveness_timer);
    event_free(e->done_ev);
    free(e);
}

int engine_acquire(baton_engine *e, const engine_acquire_req *req, const engine_acquire_sink *sink, void *ud,
                   engine_waiter **out, const char **errmsg)
{
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
    engine_waiter *w;
    int rc = waiter_new(e, req, sink, ud, &w, errmsg);
    if (rc != 0)
        return rc;
    rc = attempt_send(w, w->wait_ms > 0);
    if (rc != 0) {
        waiter_free(w);
        *errmsg = engine__refusal_msg(rc);
        return rc;
    }
    if (w->wait_timer) {
        struct timeval tv = tv_of_ms(w->wait_ms);
        evtimer_add(w->wait_timer, &tv);
    }
    *out = w;
    return 0;
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
    case W_HOLDING:
        metrics_end_count(METRICS_END_STREAM_END);
        cleanup_for(e, w, w->held_key, 0);
        break;
    case W_LEASE_GRANTED:
        if (release_lease)
            cleanup_for(e, w, w->held_key, 0);
        break;
    }
    waiter_free(w);
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
        waiter_all_remove(w);
        waiter_all_push(&e->all, w);
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
    watch_end_all(e, BATON_E_UNAVAILABLE, MSG_SHUTDOWN);
    if (e->up)
        cleanup_flush_pending(e);
    if (!e->up)
        schedule_done(e);
    else
        engine__maybe_shutdown_done(e);
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
