/*
 * The unary calls on a held key: renew, release, force release, describe.
 */
#include "internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "metrics.h"

static unary_call *new_call(baton_engine *e, unary_kind kind, const char *key, void *ud)
{
    size_t len = strlen(key);
    unary_call *o = calloc(1, sizeof *o + len + 1);
    if (!o)
        return NULL;
    o->kind = kind;
    o->ud = ud;
    memcpy(o->key, key, len + 1);
    return o;
}

/* Unlinks o; returns 0 if the engine is gone (then o is freed). */
static int reply_begin(unary_call *o)
{
    baton_engine *e = o->call.e;
    if (!e) {
        free(o);
        return 0;
    }
    engine__call_unlink(e, &o->call);
    return 1;
}

static void not_holder_msg(const unary_call *o, const store_hold_res *res, char *buf, size_t n)
{
    const char *owner = res && res->holder_owner ? res->holder_owner : "";
    uint64_t f = res ? res->holder_fencing : 0;
    if (f == 0)
        snprintf(buf, n, "lock '%s' is not held by anyone", o->key);
    else if (o->kind == UNARY_FORCE)
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

static void hold_reply(void *ud, int err, const char *emsg, const store_hold_res *res)
{
    unary_call *o = ud;
    /* The waiter first: its grant is what the handoff is timed by. */
    handoff_done(o->next_attempt, err, emsg, res);
    if (!reply_begin(o))
        return;
    baton_engine *e = o->call.e;
    char msg[MSG_MAX];
    const char *m = NULL;
    int64_t ttl = 0;
    if (err == BATON_OK) {
        ttl = res ? res->ttl_ms : 0;
        if (o->kind != UNARY_RENEW)
            metrics_end_count(o->kind == UNARY_FORCE ? METRICS_END_FORCE : METRICS_END_RELEASE);
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
    engine__maybe_shutdown_done(e);
}

static void describe_reply(void *ud, int err, const char *emsg, const store_describe_res *res)
{
    unary_call *o = ud;
    if (!reply_begin(o))
        return;
    baton_engine *e = o->call.e;
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
    engine__maybe_shutdown_done(e);
}

/* The unary calls' answer when their call record cannot be allocated. */
static int out_of_memory(const char **errmsg)
{
    *errmsg = "out of memory";
    return BATON_E_NOMEM;
}

/* Common tail of the unary calls: link o if the store took it. */
static int sent_or_refused(baton_engine *e, unary_call *o, int rc, const char **errmsg)
{
    if (rc != 0) {
        free(o);
        rc = rc < 0 ? rc : BATON_E_UNAVAILABLE;
        *errmsg = engine__refusal_msg(rc);
        return rc;
    }
    engine__call_link(e, &o->call);
    return 0;
}

int engine_renew(baton_engine *e, const char *key, const char *token, int64_t ttl_ms, engine_hold_cb cb,
                 void *ud, const char **errmsg)
{
    unary_call *o = new_call(e, UNARY_RENEW, key, ud);
    if (!o)
        return out_of_memory(errmsg);
    o->hold_cb = cb;
    int rc = e->store->ops->renew(e->store, key, token, ttl_ms, hold_reply, o);
    return sent_or_refused(e, o, rc, errmsg);
}

int engine_release(baton_engine *e, const char *key, const char *token, engine_hold_cb cb, void *ud,
                   const char **errmsg)
{
    unary_call *o = new_call(e, UNARY_RELEASE, key, ud);
    if (!o)
        return out_of_memory(errmsg);
    o->hold_cb = cb;
    int rc = handoff_send_release(e, key, token, 1, hold_reply, o, &o->next_attempt);
    return sent_or_refused(e, o, rc, errmsg);
}

int engine_force_release(baton_engine *e, const char *key, uint64_t fencing, engine_hold_cb cb, void *ud,
                         const char **errmsg)
{
    unary_call *o = new_call(e, UNARY_FORCE, key, ud);
    if (!o)
        return out_of_memory(errmsg);
    o->hold_cb = cb;
    o->fencing = fencing;
    int rc = e->store->ops->force_release(e->store, key, fencing, hold_reply, o);
    return sent_or_refused(e, o, rc, errmsg);
}

int engine_describe(baton_engine *e, const char *key, engine_describe_cb cb, void *ud, const char **errmsg)
{
    unary_call *o = new_call(e, UNARY_DESCRIBE, key, ud);
    if (!o)
        return out_of_memory(errmsg);
    o->describe_cb = cb;
    int rc = e->store->ops->describe(e->store, key, describe_reply, o);
    return sent_or_refused(e, o, rc, errmsg);
}

/* ---- List (issue #18) ---- */

static void list_reply(void *ud, int err, const char *emsg, const store_list_res *res)
{
    unary_call *o = ud;
    if (!reply_begin(o))
        return;
    baton_engine *e = o->call.e;
    char msg[MSG_MAX];
    const char *m = NULL;
    if (err != BATON_OK || !res) {
        if (err != BATON_E_UNAVAILABLE && err != BATON_E_NOMEM)
            err = BATON_E_INTERNAL;
        error_msg(err, emsg, msg, sizeof msg);
        m = msg;
        res = NULL;
    }
    engine_list_cb cb = o->list_cb;
    void *cud = o->ud;
    free(o);
    cb(cud, err, m, res);
    engine__maybe_shutdown_done(e);
}

int engine_list(baton_engine *e, const char *prefix, int32_t limit, const char *cursor, engine_list_cb cb,
                void *ud, const char **errmsg)
{
    if (!e->store->ops->list) {
        *errmsg = "this store cannot list locks";
        return BATON_E_INTERNAL;
    }
    unary_call *o = new_call(e, UNARY_LIST, prefix, ud);
    if (!o)
        return out_of_memory(errmsg);
    o->list_cb = cb;
    int rc = e->store->ops->list(e->store, prefix, limit, cursor, list_reply, o);
    return sent_or_refused(e, o, rc, errmsg);
}
