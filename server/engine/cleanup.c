/*
 * Cleanups: make sure a token neither waits nor holds in Redis, again after
 * a reconnect if Redis was down.
 */
#include "internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "log.h"

static void free_cleanup(cleanup *c)
{
    free(c->key);
    free(c->pool);
    free(c);
}

/* One part of c (its dequeue or one release) replied; the last reply
 * frees c, or parks it in e->pending when one part met Redis down. */
static void part_done(cleanup *c, int err)
{
    if (err == BATON_E_UNAVAILABLE)
        c->failed = 1;
    if (--c->outstanding > 0)
        return;
    baton_engine *e = c->call.e;
    if (!e) {
        free_cleanup(c);
        return;
    }
    engine__call_unlink(e, &c->call);
    if (c->failed) {
        /* The outcome is unknown: send it all again after the reconnect
         * (dequeue and token-checked releases are idempotent). */
        c->failed = 0;
        c->pnext = e->pending;
        e->pending = c;
    } else {
        free_cleanup(c);
    }
    engine__maybe_shutdown_done(e);
}

static void dequeue_reply_cb(void *ud, int err, const char *msg)
{
    part_done(ud, err);
}

static void release_reply_cb(void *ud, int err, const char *msg, const store_hold_res *res)
{
    cleanup *c = ud;
    attempt_call *next = c->next_attempt;
    c->next_attempt = NULL;
    handoff_done(next, err, msg, res);
    part_done(c, err);
}

/* Sends every part of c; parts the store refuses make c wait in e->pending. */
static void send_parts(baton_engine *e, cleanup *c)
{
    baton_store *s = e->store;
    c->outstanding = 1; /* guard: no reply may finish c while sending */
    c->failed = 0;
    engine__call_link(e, &c->call);
    if (c->dequeue) {
        store_target t = {.key = c->pool ? NULL : c->key, .pool = c->pool, .devices = c->devices};
        c->outstanding++;
        if (s->ops->dequeue(s, &t, c->token, dequeue_reply_cb, c) != 0) {
            c->outstanding--;
            c->failed = 1;
        }
    }
    if (c->pool) {
        char dev[TNAME_MAX];
        for (int32_t i = 0; i < c->devices; i++) {
            snprintf(dev, sizeof dev, "%s/%" PRId32, c->pool, i);
            c->outstanding++;
            if (s->ops->release(s, dev, c->token, NULL, release_reply_cb, c) != 0) {
                c->outstanding--;
                c->failed = 1;
            }
        }
    } else if (c->key) {
        c->outstanding++;
        if (handoff_send_release(e, c->key, c->token, c->handoff, release_reply_cb, c, &c->next_attempt) !=
            0) {
            c->outstanding--;
            c->failed = 1;
        }
    }
    part_done(c, BATON_OK); /* drop the guard */
}

/*
 * Makes sure w's token neither waits nor holds in Redis.
 *   held_key != NULL: the store granted that key; release it.
 *   otherwise: dequeue (if w may be queued) and release whatever the token may
 *   have been granted without the engine learning it (all devices of a pool).
 * The cleanup copies what it needs; w may be freed right after.
 */
void cleanup_for(baton_engine *e, const engine_waiter *w, const char *held_key, int dequeue)
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
        send_parts(e, c);
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
        free_cleanup(c);
}

void cleanup_flush_pending(baton_engine *e)
{
    cleanup *list = e->pending;
    e->pending = NULL;
    while (list) {
        cleanup *c = list;
        list = c->pnext;
        c->pnext = NULL;
        send_parts(e, c);
    }
}

/* Frees the cleanups still waiting for a reconnect (engine_free). */
void cleanup_free_pending(baton_engine *e)
{
    while (e->pending) {
        cleanup *c = e->pending;
        e->pending = c->pnext;
        free_cleanup(c);
    }
}
