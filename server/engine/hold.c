/*
 * Holds: STREAM-mode grants, renewed until they end or are lost.
 */
#include "internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include <event2/event.h>

#include "lease_policy.h"
#include "log.h"

/*
 * Why a margin: a STREAM holder that cannot renew must hear "lost" before
 * Redis can give the key to someone else, not at the same instant: the
 * ABORTED still has to travel to the client, and the client has to stop.
 * The rule (when to renew, how early to give up) is lease_policy.h's, the
 * same libbaton follows for leases.
 */
static int64_t give_up_at_ms(const engine_waiter *w)
{
    return lease_give_up_at_ms(w->expiry_ms, w->ttl_ms);
}

static void schedule_renew(engine_waiter *w)
{
    int64_t step = lease_renew_step_ms(w->ttl_ms);
    int64_t left = give_up_at_ms(w) - clock_mono_ms();
    if (left < 0)
        left = 0;
    struct timeval tv = tv_of_ms(left < step ? left : step);
    evtimer_add(w->renew_timer, &tv);
}

/* Ends a STREAM hold with LOST; release_token: the token might still hold
 * the key in Redis (renew outcome unknown), so release it. */
static void end_lost(engine_waiter *w, int release_token, const char *msg)
{
    if (release_token)
        cleanup_for(w->e, w, w->held_key, 0);
    waiter_finish(w, BATON_E_LOST, msg);
}

static void renew_reply_cb(void *ud, int err, const char *emsg, const store_hold_res *res)
{
    renew_call *o = ud;
    baton_engine *e = o->call.e;
    engine_waiter *w = o->w;
    int64_t sent = o->sent_ms;
    int reassert = o->reassert;
    if (e)
        engine__call_unlink(e, &o->call);
    free(o);
    if (!e)
        return;
    if (w)
        w->renew_call = NULL;
    if (!w || w->state != W_HOLDING) {
        engine__maybe_shutdown_done(e);
        return;
    }
    char msg[MSG_MAX];
    if (err == BATON_OK && res) {
        int64_t until = sent + res->ttl_ms;
        if (until > w->expiry_ms)
            w->expiry_ms = until;
        if (reassert)
            LOG_INFO("engine: lock '%s' (fencing %" PRIu64 ") re-asserted on the new primary", w->held_key,
                     w->fencing);
        w->may_reassert = 0;
    } else if (err == BATON_E_NOT_HOLDER && res) {
        if (res->holder_fencing != 0)
            snprintf(msg, sizeof msg, "lock '%s' lost: now held by '%s' (fencing %" PRIu64 ")", w->held_key,
                     res->holder_owner ? res->holder_owner : "", res->holder_fencing);
        else
            snprintf(msg, sizeof msg, "lock '%s' lost: it is no longer held (expired)", w->held_key);
        /* Let watchers see EXPIRED if the hold record is still there. */
        e->store->ops->reap(e->store, w->held_key);
        end_lost(w, 0, msg);
    } else if (clock_mono_ms() >= give_up_at_ms(w)) {
        snprintf(msg, sizeof msg, "could not renew lock '%s' before its TTL ran out: " MSG_UNAVAILABLE,
                 w->held_key);
        end_lost(w, 1, msg);
    }
    /* else: UNAVAILABLE / INTERNAL: the next tick tries again */
    engine__maybe_shutdown_done(e);
}

/* After a change of primary (may_reassert) the renewal is a re-assertion:
 * it also re-creates the hold if the key is free, and is sent before this
 * batond's waiters attempt the key (engine.c: on_state). */
void hold_renew(engine_waiter *w)
{
    int reassert = w->may_reassert;
    baton_engine *e = w->e;
    if (w->renew_call)
        return;
    renew_call *o = calloc(1, sizeof *o);
    if (!o)
        return;
    o->w = w;
    o->sent_ms = clock_mono_ms();
    o->reassert = reassert;
    int rc = reassert ? e->store->ops->reassert(e->store, w->held_key, w->token, w->owner, w->fencing, w->ttl_ms,
                                                renew_reply_cb, o)
                      : e->store->ops->renew(e->store, w->held_key, w->token, w->ttl_ms, renew_reply_cb, o);
    if (rc != 0) {
        free(o);
        return;
    }
    engine__call_link(e, &o->call);
    w->renew_call = o;
}

static void renew_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    engine_waiter *w = arg;
    if (clock_mono_ms() >= give_up_at_ms(w)) {
        char msg[MSG_MAX];
        snprintf(msg, sizeof msg, "could not renew lock '%s' before its TTL ran out: " MSG_UNAVAILABLE,
                 w->held_key);
        end_lost(w, 1, msg);
        return;
    }
    hold_renew(w);
    schedule_renew(w);
}

/* The store granted w `key` in STREAM mode: w holds it from now on, in the
 * key's target's holds, renewed until it ends. Returns 0, or -1 without
 * memory (w is not holding then). */
int hold_start(engine_waiter *w, const char *key)
{
    baton_engine *e = w->e;
    char hname[TNAME_MAX];
    target_name(key, NULL, hname, sizeof hname);
    target *ht = target_get(e, hname);
    w->renew_timer = evtimer_new(e->base, renew_timer_cb, w);
    if (!ht || !w->renew_timer) {
        if (ht)
            target_maybe_free(ht);
        return -1;
    }
    target_add(ht, &ht->holds, w);
    w->state = W_HOLDING;
    schedule_renew(w);
    return 0;
}

/* A RELEASED / EXPIRED / FORCE_RELEASED event names a local STREAM hold. */
void hold_event(baton_engine *e, const store_event *ev)
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
