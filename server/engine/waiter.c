/*
 * Waiters: one Acquire each; their lists, their end, their wait timer and
 * the BUSY messages they end with.
 */
#include "internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include <event2/event.h>

#define WLINK(w, off) ((wlink *)((char *)(w) + (off)))

/* Appends w to l through the link at offset `off` in engine_waiter. */
void wlist_push(wlist *l, engine_waiter *w, size_t off)
{
    WLINK(w, off)->prev = l->tail;
    WLINK(w, off)->next = NULL;
    if (l->tail)
        WLINK(l->tail, off)->next = w;
    else
        l->head = w;
    l->tail = w;
}

void wlist_remove(wlist *l, engine_waiter *w, size_t off)
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

void waiter_all_push(wlist *l, engine_waiter *w)
{
    wlist_push(l, w, offsetof(engine_waiter, alink));
    w->all_list = l;
}

void waiter_all_remove(engine_waiter *w)
{
    if (!w->all_list)
        return;
    wlist_remove(w->all_list, w, offsetof(engine_waiter, alink));
    w->all_list = NULL;
}

void waiter_free(engine_waiter *w)
{
    target_remove(w);
    waiter_all_remove(w);
    if (w->wait_timer)
        event_free(w->wait_timer);
    if (w->renew_timer)
        event_free(w->renew_timer);
    if (w->renew_call)
        w->renew_call->w = NULL;
    if (w->attempt_call)
        w->attempt_call->w = NULL;
    free(w->key);
    free(w->pool);
    free(w->owner);
    free(w->holder_owner);
    free(w->held_key);
    free(w);
}

/* Frees w and then reports the end to its sink (the last thing a caller does). */
void waiter_finish(engine_waiter *w, int err, const char *msg)
{
    engine_acquire_sink sink = w->sink;
    void *ud = w->ud;
    waiter_free(w);
    if (sink.finished)
        sink.finished(ud, err, msg);
}

/* Why w is not granted, from its last store reply. */
void waiter_busy_reason(const engine_waiter *w, char *buf, size_t n)
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

void waiter_timeout_msg(const engine_waiter *w, char *buf, size_t n)
{
    char reason[MSG_MAX - 64]; /* leaves room for the prefix; reasons are far shorter */
    waiter_busy_reason(w, reason, sizeof reason);
    snprintf(buf, n, "not acquired within %" PRId64 " ms: %s", w->wait_ms, reason);
}

void wait_timer_cb(evutil_socket_t fd, short what, void *arg)
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
    waiter_timeout_msg(w, msg, sizeof msg);
    waiter_finish(w, BATON_E_BUSY, msg);
}
