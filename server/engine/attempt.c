/*
 * Attempts: one store acquire of a waiter, and what its reply does (a grant
 * delivered, a place in line, an end).
 */
#include "internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "lock_view.h"
#include "log.h"
#include "metrics.h"

static void reply_cb(void *ud, int err, const char *msg, const store_acquire_res *res);

store_acquire_req attempt_request(const engine_waiter *w, int enqueue)
{
    store_acquire_req r = {
        .target = {.key = w->key, .pool = w->pool, .devices = w->devices},
        .token = w->token,
        .owner = w->owner,
        .ttl_ms = w->ttl_ms,
        .enqueue = enqueue,
        .liveness_ms = w->e->cfg.liveness_ms,
        .count = w->count,
        .weight = w->weight,
        .capacity = w->capacity,
    };
    return r;
}

/* The store took o, sent at `sent_ms`, as w's attempt. */
void attempt_started(engine_waiter *w, attempt_call *o, int64_t sent_ms)
{
    engine__call_link(w->e, &o->call);
    w->state = W_ATTEMPTING;
    w->dirty = 0;
    w->attempt_sent_ms = sent_ms;
    w->attempt_call = o;
}

/* Sends one store acquire for w. Returns 0, or the store's error (w stays
 * or becomes QUEUED and is retried on the next reconnect or re-check). */
int attempt_send(engine_waiter *w, int enqueue)
{
    baton_engine *e = w->e;
    attempt_call *o = calloc(1, sizeof *o);
    if (!o)
        return BATON_E_NOMEM;
    o->w = w;
    store_acquire_req r = attempt_request(w, enqueue);
    int64_t now = clock_mono_ms();
    int rc = e->store->ops->acquire(e->store, &r, reply_cb, o);
    if (rc != 0) {
        free(o);
        w->state = W_QUEUED;
        return rc;
    }
    attempt_started(w, o, now);
    return 0;
}

/* Attempts w again now, or right after the attempt it has in flight. */
void attempt_again(engine_waiter *w)
{
    if (w->state == W_ATTEMPTING)
        w->dirty = 1;
    else if (w->state == W_QUEUED)
        attempt_send(w, 1);
}

/* Calls granted(ud, g) with g's device lists filled from a pool grant res
 * (a store that reports no list granted one device: res->device). */
static void grant_report(engine_grant *g, const store_acquire_res *res,
                         void (*granted)(void *ud, const engine_grant *g), void *ud)
{
    if (res->device < 0) {
        granted(ud, g);
        return;
    }
    int32_t n = res->ndevices > 0 ? res->ndevices : 1;
    const int32_t *devs = res->ndevices > 0 ? res->devices : &res->device;
    const uint64_t *fencs = res->ndevices > 0 ? res->fencings : &res->fencing;
    const char *slash = strrchr(g->key, '/');
    int plen = slash ? (int)(slash - g->key) : 0;
    char *buf = malloc((size_t)n * (BATON_KEY_MAX + 1));
    const char **keys = malloc((size_t)n * sizeof *keys);
    if (!buf || !keys) {
        /* Without memory the first device still goes out (device / key). */
        free(buf);
        free(keys);
        granted(ud, g);
        return;
    }
    for (int32_t i = 0; i < n; i++) {
        char *k = buf + (size_t)i * (BATON_KEY_MAX + 1);
        snprintf(k, BATON_KEY_MAX + 1, "%.*s/%" PRId32, plen, g->key, devs[i]);
        keys[i] = k;
    }
    g->ndevices = n;
    g->devices = devs;
    g->keys = keys;
    g->fencings = fencs;
    granted(ud, g);
    free(keys);
    free(buf);
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
     * before this reply) must be passed on, as end_quiet and end_finish do. */
    int kick_pool = w->pool != NULL && w->dirty;
    target_name_of_waiter(w, tname, sizeof tname);
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
        if (hold_start(w, key) != 0)
            goto fail;
    } else {
        w->state = W_LEASE_GRANTED;
    }
    if (kick_pool)
        target_kick_name(e, tname);
    metrics_grant(w->mode == ENGINE_MODE_STREAM, metrics_now_us() - w->created_us);
    lock_view_log_grant(key, w->owner, res->fencing, w->mode == ENGINE_MODE_STREAM,
                        metrics_now_us() - w->created_us);
    if (w->last_position > 0)
        lock_view_waiter_granted(key);
    engine_grant g = {
        .key = key, .token = token, .fencing = res->fencing, .ttl_ms = res->ttl_ms, .device = res->device};
    engine_acquire_sink sink = w->sink;
    void *ud = w->ud;
    if (sink.granted)
        grant_report(&g, res, sink.granted, ud);
    return;
fail:
    cleanup_for(e, w, key, 0);
    if (kick_pool)
        target_kick_name(e, tname);
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
static void end_quiet(engine_waiter *w)
{
    char tname[TNAME_MAX];
    int rekick = w->dirty && w->wait_ms > 0;
    target_name_of_waiter(w, tname, sizeof tname);
    baton_engine *e = w->e;
    waiter_free(w);
    if (rekick)
        target_kick_name(e, tname);
}

static void end_finish(engine_waiter *w, int err, const char *msg)
{
    char tname[TNAME_MAX];
    int rekick = w->dirty && w->wait_ms > 0;
    target_name_of_waiter(w, tname, sizeof tname);
    baton_engine *e = w->e;
    engine_acquire_sink sink = w->sink;
    void *ud = w->ud;
    waiter_free(w);
    if (rekick)
        target_kick_name(e, tname);
    if (sink.finished)
        sink.finished(ud, err, msg);
}

void attempt_handle_result(engine_waiter *w, int err, const char *emsg, const store_acquire_res *res)
{
    baton_engine *e = w->e;
    char msg[MSG_MAX];
    int waiting = w->wait_ms > 0;

    if (err == BATON_OK && res && res->granted) {
        if (w->ended) {
            cleanup_for(e, w, res->key, 0);
            end_quiet(w);
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
            end_quiet(w);
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
        end_finish(w, err, msg);
        return;
    }

    /* Not granted. First the real head, if local (before any sink call). */
    target_kick_head(w, res->head_token);
    record_busy(w, res);
    if (w->ended) {
        if (waiting)
            cleanup_for(e, w, NULL, 1);
        end_quiet(w);
        return;
    }
    if (!waiting) {
        waiter_busy_reason(w, msg, sizeof msg);
        end_finish(w, BATON_E_BUSY, msg);
        return;
    }
    if (w->timed_out) {
        cleanup_for(e, w, NULL, 1);
        waiter_timeout_msg(w, msg, sizeof msg);
        end_finish(w, BATON_E_BUSY, msg);
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
        attempt_send(w, 1);
    if (report && sink.queued)
        sink.queued(ud, pos);
}

/* Unlinks and frees attempt call o. Returns its waiter, or NULL when the
 * engine or the waiter is gone (nothing is left to do then). */
engine_waiter *attempt_call_end(attempt_call *o)
{
    baton_engine *e = o->call.e;
    engine_waiter *w = o->w;
    if (e)
        engine__call_unlink(e, &o->call);
    free(o);
    if (!e || !w)
        return NULL;
    w->attempt_call = NULL;
    return w;
}

static void reply_cb(void *ud, int err, const char *msg, const store_acquire_res *res)
{
    engine_waiter *w = attempt_call_end(ud);
    if (!w)
        return;
    baton_engine *e = w->e;
    attempt_handle_result(w, err, msg, res);
    engine__maybe_shutdown_done(e);
}
