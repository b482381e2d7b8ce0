/* baton.v1.LockService: Acquire, the unary methods and Watch. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "pb_codec.h"

/* ---------------------------------------------------------------- Acquire */

/* The Granted message of an engine grant (pointing into g). */
void granted_msg(const engine_grant *g, Baton__V1__Granted *gr)
{
    baton__v1__granted__init(gr);
    gr->key = (char *)g->key;
    gr->token = (char *)g->token;
    gr->fencing = g->fencing;
    gr->ttl_ms = g->ttl_ms;
    gr->device = g->device;
}

static void acq_queued(void *ud, int64_t position)
{
    tcall *c = ud;
    Baton__V1__Queued q = BATON__V1__QUEUED__INIT;
    q.position = position;
    Baton__V1__AcquireEvent ev = BATON__V1__ACQUIRE_EVENT__INIT;
    ev.event_case = BATON__V1__ACQUIRE_EVENT__EVENT_QUEUED;
    ev.queued = &q;
    call_push(c, &ev.base, 1);
}

static void acq_granted(void *ud, const engine_grant *g)
{
    tcall *c = ud;
    Baton__V1__Granted gr;
    granted_msg(g, &gr);
    Baton__V1__AcquireEvent ev = BATON__V1__ACQUIRE_EVENT__INIT;
    ev.event_case = BATON__V1__ACQUIRE_EVENT__EVENT_GRANTED;
    ev.granted = &gr;
    c->granted = 1;
    if (c->lease && call_can_send(c) && c->sending == NULL &&
        c->head == NULL) {
        /* Nothing else in flight: Granted and the OK status go out in one
         * batch, one write and one completion instead of two round trips
         * through the pump (this halves a lease Acquire's latency). Whether
         * the lease stays is still decided when the stream has closed
         * (on_close): a client that cancels meanwhile may never read it. */
        c->lease_ok_sent = 1;
        send_status(c, GRPC_STATUS_OK, NULL, pb_encode(&ev.base));
        return;
    }
    /* On OOM the call is cancelled and RECV_CLOSE releases the grant. */
    call_push(c, &ev.base, 0);
}

static void acq_finished(void *ud, int err, const char *msg)
{
    tcall *c = ud;
    c->eng.w = NULL; /* freed by the engine */
    call_finish(c, err, msg);
    c->engine_ref = 0;
    call_unref(c);
}

static const engine_acquire_sink acquire_sink = {acq_queued, acq_granted, acq_finished};

void handle_acquire(tcall *c, ProtobufCMessage *m)
{
    baton_transport *t = c->t;
    char err[ERRBUF];
    engine_acquire_req req;
    if (validate_acquire(&t->limits, (Baton__V1__AcquireRequest *)m, &req, err, sizeof err) != 0) {
        call_finish(c, BATON_E_INVALID, err);
        return;
    }
    const char *emsg = NULL;
    engine_waiter *w = NULL;
    int rc = engine_acquire(t->engine, &req, &acquire_sink, c, &w, &emsg);
    if (rc != 0) {
        call_finish(c, rc, emsg);
        return;
    }
    c->eng.w = w;
    c->lease = req.mode == ENGINE_MODE_LEASE;
    c->engine_ref = 1;
    c->refs++;
}

/* ---------------------------------------------------------------- unary */

static void on_hold_result(void *ud, int err, const char *msg, int64_t ttl_ms)
{
    tcall *c = ud;
    if (err != BATON_OK) {
        call_finish(c, err, msg);
    } else if (c->method == M_RENEW) {
        Baton__V1__RenewResponse r = BATON__V1__RENEW_RESPONSE__INIT;
        r.ttl_ms = ttl_ms;
        unary_reply(c, &r.base);
    } else {
        Baton__V1__ReleaseResponse r = BATON__V1__RELEASE_RESPONSE__INIT;
        r.released = 1;
        unary_reply(c, &r.base);
    }
    c->engine_ref = 0;
    call_unref(c);
}

static void on_describe_result(void *ud, int err, const char *msg, const store_describe_res *res)
{
    tcall *c = ud;
    if (err != BATON_OK || res == NULL) {
        call_finish(c, err != BATON_OK ? err : BATON_E_INTERNAL, msg);
    } else {
        Baton__V1__DescribeResponse r = BATON__V1__DESCRIBE_RESPONSE__INIT;
        r.held = res->held != 0;
        r.owner = (char *)(res->owner ? res->owner : "");
        r.fencing = res->fencing;
        r.ttl_ms = res->ttl_ms;
        r.waiters = res->waiters;
        unary_reply(c, &r.base);
    }
    c->engine_ref = 0;
    call_unref(c);
}

void handle_unary(tcall *c, ProtobufCMessage *m)
{
    baton_transport *t = c->t;
    char err[ERRBUF];
    const char *emsg = NULL;
    int rc;
    switch (c->method) {
    case M_RENEW: {
        Baton__V1__RenewRequest *r = (Baton__V1__RenewRequest *)m;
        int64_t ttl;
        if (validate_renew(&t->limits, r, &ttl, err, sizeof err) != 0)
            goto invalid;
        rc = engine_renew(t->engine, r->key, r->token, ttl, on_hold_result, c, &emsg);
        break;
    }
    case M_RELEASE: {
        Baton__V1__ReleaseRequest *r = (Baton__V1__ReleaseRequest *)m;
        if (validate_release(r, err, sizeof err) != 0)
            goto invalid;
        rc = engine_release(t->engine, r->key, r->token, on_hold_result, c, &emsg);
        break;
    }
    case M_FORCE_RELEASE: {
        Baton__V1__ForceReleaseRequest *r = (Baton__V1__ForceReleaseRequest *)m;
        if (validate_force_release(r, err, sizeof err) != 0)
            goto invalid;
        rc = engine_force_release(t->engine, r->key, r->fencing, on_hold_result, c, &emsg);
        break;
    }
    case M_DESCRIBE: {
        Baton__V1__DescribeRequest *r = (Baton__V1__DescribeRequest *)m;
        if (validate_describe(r, err, sizeof err) != 0)
            goto invalid;
        rc = engine_describe(t->engine, r->key, on_describe_result, c, &emsg);
        break;
    }
    default: return;
    }
    if (rc != 0) {
        call_finish(c, rc, emsg);
        return;
    }
    c->engine_ref = 1;
    c->refs++;
    return;
invalid:
    call_finish(c, BATON_E_INVALID, err);
}

/* ---------------------------------------------------------------- Watch */

static Baton__V1__LockEvent__Type lock_event_type(store_event_type t)
{
    switch (t) {
    case STORE_EV_ACQUIRED: return BATON__V1__LOCK_EVENT__TYPE__ACQUIRED;
    case STORE_EV_RELEASED: return BATON__V1__LOCK_EVENT__TYPE__RELEASED;
    case STORE_EV_EXPIRED: return BATON__V1__LOCK_EVENT__TYPE__EXPIRED;
    case STORE_EV_FORCE_RELEASED: return BATON__V1__LOCK_EVENT__TYPE__FORCE_RELEASED;
    default: return BATON__V1__LOCK_EVENT__TYPE__TYPE_UNSPECIFIED;
    }
}

static void watch_event(void *ud, const store_event *sev)
{
    tcall *c = ud;
    if (!call_can_send(c))
        return;
    Baton__V1__LockEvent__Type type = lock_event_type(sev->type);
    if (type == BATON__V1__LOCK_EVENT__TYPE__TYPE_UNSPECIFIED)
        return;
    if (c->nout >= WATCH_OUTBOX_MAX) {
        /* Drop what the client has not taken; the watch itself is stopped
         * when the stream closes (never from inside the engine's callback). */
        outbox_clear(c);
        call_finish(c, BATON_E_NOMEM, "watch consumer too slow");
        return;
    }
    Baton__V1__LockEvent ev = BATON__V1__LOCK_EVENT__INIT;
    ev.type = type;
    ev.key = (char *)(sev->key ? sev->key : "");
    ev.owner = (char *)(sev->owner ? sev->owner : "");
    ev.fencing = sev->fencing;
    ev.at_unix_ms = sev->at_unix_ms;
    call_push(c, &ev.base, 0);
}

static void watch_ended(void *ud, int err, const char *msg)
{
    tcall *c = ud;
    c->eng.watch = NULL;
    call_finish(c, err, msg);
    c->engine_ref = 0;
    call_unref(c);
}

void handle_watch(tcall *c, ProtobufCMessage *m)
{
    baton_transport *t = c->t;
    Baton__V1__WatchRequest *r = (Baton__V1__WatchRequest *)m;
    char err[ERRBUF];
    if (validate_watch(r, err, sizeof err) != 0) {
        call_finish(c, BATON_E_INVALID, err);
        return;
    }
    const char *key = r->key && r->key[0] ? r->key : NULL;
    const char *prefix = key == NULL ? r->prefix : NULL;
    engine_watch *w = engine_watch_start(t->engine, key, prefix, watch_event, watch_ended, c);
    if (w == NULL) {
        call_finish(c, t->shutting ? BATON_E_UNAVAILABLE : BATON_E_NOMEM,
                    t->shutting ? "server shutting down" : "cannot start watch");
        return;
    }
    c->eng.watch = w;
    c->engine_ref = 1;
    c->refs++;
    /* Initial metadata now, so a client can tell that its watch is live
     * before the first event. */
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_SEND_INITIAL_METADATA;
    c->md_sent = 1;
    if (call_batch(c, &op, 1, TAG_MD) != 0)
        c->md_sent = 0;
}
