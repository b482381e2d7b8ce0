/*
 * Waiters: one Acquire each; their lists, their creation and end, their
 * wait timer and the BUSY messages they end with.
 */
#include "internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include <event2/event.h>

#include "metrics.h"

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
    if (err == BATON_E_BUSY && w->wait_ms > 0)
        metrics_acquire_timeout();
    else if (err == BATON_E_LOST)
        metrics_end_count(METRICS_END_LOST);
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
    else if (w->pool && w->weight > 0)
        snprintf(buf, n,
                 "fewer than %" PRId32 " of the %" PRId32 " devices of pool '%s' have %" PRId64 " of %" PRId64
                 " free",
                 w->count, w->devices, w->pool, w->weight, w->capacity);
    else if (w->pool && w->count > 1)
        snprintf(buf, n, "fewer than %" PRId32 " of the %" PRId32 " devices of pool '%s' are free", w->count,
                 w->devices, w->pool);
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
    waiter_timeout_msg(w, msg, sizeof msg);
    waiter_finish(w, BATON_E_BUSY, msg);
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

/*
 * A new waiter for req, in e->all and, when it may wait, in its target's
 * FIFO with its wait timer made (not yet armed). Returns 0 and sets *out, or
 * a negative baton_err with *errmsg set (nothing is left behind then).
 */
int waiter_new(baton_engine *e, const engine_acquire_req *req, const engine_acquire_sink *sink, void *ud,
               engine_waiter **out, const char **errmsg)
{
    char tname[TNAME_MAX];
    engine_waiter *w = calloc(1, sizeof *w);
    if (!w)
        goto nomem;
    w->e = e;
    w->mode = req->mode;
    w->key = dup_or_null(req->key);
    w->pool = dup_or_null(req->pool);
    w->devices = req->pool ? req->devices : 0;
    w->count = req->pool && req->count > 1 ? req->count : 1;
    w->weight = req->pool && req->weight > 0 && req->weight < req->capacity ? req->weight : 0;
    w->capacity = w->weight ? req->capacity : 1;
    w->owner = strdup(req->owner ? req->owner : "");
    w->ttl_ms = req->ttl_ms;
    w->wait_ms = req->wait_ms > 0 ? req->wait_ms : 0;
    w->sink = *sink;
    w->ud = ud;
    w->last_position = -1;
    w->created_us = metrics_now_us();
    if ((req->key && !w->key) || (req->pool && !w->pool) || !w->owner)
        goto nomem;
    if (make_token(w->token) != 0) {
        waiter_free(w);
        *errmsg = "no random bytes for a token";
        return BATON_E_INTERNAL;
    }
    waiter_all_push(&e->all, w);
    if (w->wait_ms > 0) {
        target_name_of_waiter(w, tname, sizeof tname);
        target *t = target_get(e, tname);
        if (!t)
            goto nomem;
        target_add(t, &t->waiters, w);
        w->wait_timer = evtimer_new(e->base, wait_timer_cb, w);
        if (!w->wait_timer)
            goto nomem;
    }
    *out = w;
    return 0;
nomem:
    if (w)
        waiter_free(w);
    *errmsg = "out of memory";
    return BATON_E_NOMEM;
}
