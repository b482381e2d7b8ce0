/*
 * Direct handoff: a release that carries the acquire of the key's first
 * local waiter.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "lock_view.h"
#include "log.h"

/*
 * Why: after a release, the next waiter used to hear of its grant only after
 * a pub/sub event reached its batond and its own acquire script ran: a
 * Redis round trip and two thread wake-ups more on the path a GPU idles on.
 * Now a release carries the acquire request of the key's first local waiter
 * when that waiter is idle (store.h: release `next`), and counts as that
 * waiter's attempt: it is W_ATTEMPTING, kicks mark it dirty, and the outcome
 * goes through attempt_handle_result like any attempt reply. Redis grants
 * it only under acquire's own rule (the key is free and the token heads the
 * queue, dead entries purged), so a waiter of another batond at the head is
 * not passed over: the RELEASED event wakes it as before. Only releases of a
 * known grant hand on (Release, and a hold or lease that ends); a cleanup of
 * a waiter whose outcome is unknown does not.
 */
static engine_waiter *candidate(baton_engine *e, const char *key, const char *token)
{
    if (!e->up || e->shutting_down)
        return NULL;
    target *t = target_of(e, key, NULL);
    engine_waiter *w = t ? t->waiters.head : NULL;
    if (!w || w->state != W_QUEUED || w->ended || w->timed_out || strcmp(w->token, token) == 0)
        return NULL;
    return w;
}

/* Sends the release of key by token; with `hand_on`, hands the key to its
 * first local waiter if that one is idle: *next_attempt is then that
 * waiter's attempt, to be passed to handoff_done with the reply. Returns 0
 * or the store's refusal (nothing changed then). */
int handoff_send_release(baton_engine *e, const char *key, const char *token, int hand_on, store_hold_cb cb,
                         void *ud, attempt_call **next_attempt)
{
    *next_attempt = NULL;
    engine_waiter *w = hand_on ? candidate(e, key, token) : NULL;
    attempt_call *o = w ? calloc(1, sizeof *o) : NULL;
    store_acquire_req r;
    if (o) {
        o->w = w;
        r = attempt_request(w, 1);
    }
    int64_t now = o ? clock_mono_ms() : 0;
    int rc = e->store->ops->release(e->store, key, token, o ? &r : NULL, cb, ud);
    if (rc != 0) {
        free(o);
        return rc;
    }
    if (o) {
        attempt_started(w, o, now);
        *next_attempt = o;
    }
    return 0;
}

/* The reply to a release that carried o's waiter (o may be NULL). */
void handoff_done(attempt_call *o, int err, const char *emsg, const store_hold_res *res)
{
    engine_waiter *w = o ? attempt_call_end(o) : NULL;
    if (!w)
        return;
    baton_engine *e = w->e;
    if (err == BATON_OK && res && res->next && res->next->granted) {
        e->stats.handoffs++;
        lock_view_key_freed(w->key);
        attempt_handle_result(w, BATON_OK, NULL, res->next);
        return;
    }
    if (err == BATON_E_UNAVAILABLE) {
        /* The outcome is unknown and the connection is gone: w stays in
         * line and its attempt after the reconnect (idempotent by token)
         * reports a grant if the script made one. */
        attempt_handle_result(w, err, emsg, NULL);
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
    attempt_handle_result(w, BATON_OK, NULL, &busy);
}
