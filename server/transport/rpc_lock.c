/* baton.v1.LockService: Acquire, the unary methods and Watch. */
#include "internal.h"

#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "pb_codec.h"

/* ---------------------------------------------------------------- Acquire */

/* The Granted message of an engine grant (pointing into g and into the
 * configured pool names of lim; gr->device_names is malloc'ed: free it, or
 * NULL when the pool has no names or memory ran out). */
void transport__granted_msg(const validate_limits *lim, const engine_grant *g, Baton__V1__Granted *gr)
{
    baton__v1__granted__init(gr);
    gr->key = (char *)g->key;
    gr->token = (char *)g->token;
    gr->fencing = g->fencing;
    gr->ttl_ms = g->ttl_ms;
    gr->device = g->device;
    if (g->ndevices > 0) {
        gr->n_devices = gr->n_keys = gr->n_fencings = (size_t)g->ndevices;
        gr->devices = (int32_t *)g->devices;
        gr->keys = (char **)g->keys;
        gr->fencings = (uint64_t *)g->fencings;
        const char *const *names = validate_pool_device_names(lim, g->keys[0]);
        gr->device_names = names ? calloc((size_t)g->ndevices, sizeof *gr->device_names) : NULL;
        if (gr->device_names) {
            gr->n_device_names = (size_t)g->ndevices;
            for (int32_t i = 0; i < g->ndevices; i++)
                gr->device_names[i] = (char *)names[g->devices[i]];
        }
    }
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
    transport__granted_msg(&c->t->limits, g, &gr);
    Baton__V1__AcquireEvent ev = BATON__V1__ACQUIRE_EVENT__INIT;
    ev.event_case = BATON__V1__ACQUIRE_EVENT__EVENT_GRANTED;
    ev.granted = &gr;
    c->granted = 1;
    guard_wait_end(c->t->guard, &c->who, &c->who.wait_key);
    if (c->lease && call_can_send(c) && c->sending == NULL && c->head == NULL) {
        /* Nothing else in flight: Granted and the OK status go out in one
         * batch, one write and one completion instead of two round trips
         * through the pump (this halves a lease Acquire's latency). Whether
         * the lease stays is still decided when the stream has closed
         * (call_on_close): a client that cancels meanwhile may never read it. */
        c->lease_ok_sent = 1;
        call_send_status(c, GRPC_STATUS_OK, NULL, pb_encode(&ev.base));
        free(gr.device_names);
        return;
    }
    /* On OOM the call is cancelled and RECV_CLOSE releases the grant. */
    call_push(c, &ev.base, 0);
    free(gr.device_names);
}

static void acq_finished(void *ud, int err, const char *msg)
{
    tcall *c = ud;
    c->eng.w = NULL; /* freed by the engine */
    guard_wait_end(c->t->guard, &c->who, &c->who.wait_key);
    call_finish(c, err, msg);
    c->engine_ref = 0;
    call_unref(c);
}

static const engine_acquire_sink acquire_sink = {acq_queued, acq_granted, acq_finished};

static void acquire_start(tcall *c, ProtobufCMessage *m)
{
    baton_transport *t = c->t;
    char err[ERRBUF];
    engine_acquire_req req;
    if (validate_acquire(&t->limits, (Baton__V1__AcquireRequest *)m, &req, err, sizeof err) != 0) {
        call_finish(c, BATON_E_INVALID, err);
        return;
    }
    char owner[CONFIG_TOKEN_NAME_MAX + BATON_OWNER_MAX + 2];
    int grc = guard_acquire(t->guard, &c->who, &req, owner, sizeof owner, &c->who.wait_key, err, sizeof err);
    if (grc != 0) {
        call_finish(c, grc, err);
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

static void acquire_closed(tcall *c, int clean)
{
    if (clean && c->lease_ok_sent && c->eng.w) {
        /* Granted and the OK status went out and the stream closed without a
         * cancel: the lease stays. (A cancel instead means the client may
         * never have read its token: acquire_release releases the lease.) */
        engine_acquire_end(c->eng.w, 0);
        c->eng.w = NULL;
        c->engine_ref = 0;
        call_unref(c); /* the engine's reference; the tag's is still held */
    }
}

/* The stream is over: a waiter or a stream hold still alive means the
 * client never got (or gave up) its lock: release it. */
static void acquire_release(tcall *c)
{
    if (!c->engine_ref || c->eng.w == NULL)
        return;
    engine_acquire_end(c->eng.w, 1);
    c->eng.w = NULL;
    c->engine_ref = 0;
    call_unref(c);
}

static void acquire_drained(tcall *c)
{
    if (c->lease && c->granted && c->eng.w && call_can_send(c)) {
        /* The LEASE grant is written: end the stream OK. Whether the lease
         * stays is decided when the stream has closed (acquire_closed): a
         * client that cancels meanwhile may never read its token. */
        c->lease_ok_sent = 1;
        call_finish(c, BATON_OK, NULL);
    }
}

const rpc_method transport__acquire_rpc = {
    .service = &baton__v1__lock_service__descriptor,
    .name = "Acquire",
    .start = acquire_start,
    .closed = acquire_closed,
    .release = acquire_release,
    .drained = acquire_drained,
};

/* ---------------------------------------------------------------- unary */

/* Renew, Release, ForceRelease and Describe: the engine calls back once,
 * and the call ends with its one response or an error. */

/* After the engine call: an error ends the call now; else the engine holds
 * a reference until its callback. */
static void unary_started(tcall *c, int rc, const char *emsg)
{
    if (rc != 0) {
        call_finish(c, rc, emsg);
        return;
    }
    c->engine_ref = 1;
    c->refs++;
}

static void unary_done(tcall *c)
{
    c->engine_ref = 0;
    call_unref(c);
}

static void renew_done(void *ud, int err, const char *msg, int64_t ttl_ms)
{
    tcall *c = ud;
    if (err != BATON_OK) {
        call_finish(c, err, msg);
    } else {
        Baton__V1__RenewResponse r = BATON__V1__RENEW_RESPONSE__INIT;
        r.ttl_ms = ttl_ms;
        call_reply(c, &r.base);
    }
    unary_done(c);
}

/* Release and ForceRelease. */
static void release_done(void *ud, int err, const char *msg, int64_t ttl_ms)
{
    tcall *c = ud;
    if (err != BATON_OK) {
        call_finish(c, err, msg);
    } else {
        Baton__V1__ReleaseResponse r = BATON__V1__RELEASE_RESPONSE__INIT;
        r.released = 1;
        call_reply(c, &r.base);
    }
    unary_done(c);
}

static void describe_done(void *ud, int err, const char *msg, const store_describe_res *res)
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
        call_reply(c, &r.base);
    }
    unary_done(c);
}

/* A unary request on one key: validation's verdict (invalid != 0: err says
 * why), then the caller's access to the key. Finishes c with the first
 * refusal; returns 1 when the request may go on. */
static int admitted(tcall *c, int invalid, const char *key, char *err, size_t n)
{
    int rc = invalid ? BATON_E_INVALID : guard_name(&c->who, "key", key, err, n);
    if (rc != 0)
        call_finish(c, rc, err);
    return rc == 0;
}

static void renew_start(tcall *c, ProtobufCMessage *m)
{
    Baton__V1__RenewRequest *r = (Baton__V1__RenewRequest *)m;
    char err[ERRBUF];
    const char *emsg = NULL;
    int64_t ttl;
    if (!admitted(c, validate_renew(&c->t->limits, r, &ttl, err, sizeof err), r->key, err, sizeof err))
        return;
    unary_started(c, engine_renew(c->t->engine, r->key, r->token, ttl, renew_done, c, &emsg), emsg);
}

static void release_start(tcall *c, ProtobufCMessage *m)
{
    Baton__V1__ReleaseRequest *r = (Baton__V1__ReleaseRequest *)m;
    char err[ERRBUF];
    const char *emsg = NULL;
    if (!admitted(c, validate_release(r, err, sizeof err), r->key, err, sizeof err))
        return;
    unary_started(c, engine_release(c->t->engine, r->key, r->token, release_done, c, &emsg), emsg);
}

static void force_release_start(tcall *c, ProtobufCMessage *m)
{
    Baton__V1__ForceReleaseRequest *r = (Baton__V1__ForceReleaseRequest *)m;
    char err[ERRBUF];
    const char *emsg = NULL;
    if (validate_force_release(r, err, sizeof err) != 0) {
        call_finish(c, BATON_E_INVALID, err);
        return;
    }
    int grc = guard_admin(&c->who, "ForceRelease", err, sizeof err);
    if (grc == 0)
        grc = guard_name(&c->who, "key", r->key, err, sizeof err);
    if (grc != 0) {
        call_finish(c, grc, err);
        return;
    }
    unary_started(c, engine_force_release(c->t->engine, r->key, r->fencing, release_done, c, &emsg), emsg);
}

static void describe_start(tcall *c, ProtobufCMessage *m)
{
    Baton__V1__DescribeRequest *r = (Baton__V1__DescribeRequest *)m;
    char err[ERRBUF];
    const char *emsg = NULL;
    if (!admitted(c, validate_describe(r, err, sizeof err), r->key, err, sizeof err))
        return;
    unary_started(c, engine_describe(c->t->engine, r->key, describe_done, c, &emsg), emsg);
}

const rpc_method transport__renew_rpc = {&baton__v1__lock_service__descriptor, "Renew", .start = renew_start};
const rpc_method transport__release_rpc = {&baton__v1__lock_service__descriptor, "Release",
                                           .start = release_start};
const rpc_method transport__force_release_rpc = {&baton__v1__lock_service__descriptor, "ForceRelease",
                                                 .start = force_release_start};
const rpc_method transport__describe_rpc = {&baton__v1__lock_service__descriptor, "Describe",
                                            .start = describe_start};

/* ---------------------------------------------------------------- Watch */

static Baton__V1__LockEvent__Type lock_event_type(store_event_type t)
{
    switch (t) {
    case STORE_EV_ACQUIRED: return BATON__V1__LOCK_EVENT__TYPE__ACQUIRED;
    case STORE_EV_RELEASED: return BATON__V1__LOCK_EVENT__TYPE__RELEASED;
    case STORE_EV_EXPIRED: return BATON__V1__LOCK_EVENT__TYPE__EXPIRED;
    case STORE_EV_FORCE_RELEASED: return BATON__V1__LOCK_EVENT__TYPE__FORCE_RELEASED;
    case STORE_EV_LONG_HELD: return BATON__V1__LOCK_EVENT__TYPE__LONG_HELD;
    default: return BATON__V1__LOCK_EVENT__TYPE__TYPE_UNSPECIFIED;
    }
}

static void watch_event(void *ud, const store_event *sev)
{
    tcall *c = ud;
    if (!call_can_send(c))
        return;
    Baton__V1__LockEvent__Type type = lock_event_type(sev->type);
    if (type == BATON__V1__LOCK_EVENT__TYPE__TYPE_UNSPECIFIED || !guard_watch_sees(&c->who, sev->key))
        return;
    size_t backlog = guard_watch_backlog(c->t->guard);
    if (c->nout >= backlog) {
        /* Drop what the client has not taken; the watch itself is stopped
         * when the stream closes (never from inside the engine's callback).
         * The share shrinks as watches open, so that all slow readers
         * together hold at most limits.max_watch_backlog events. */
        char msg[160];
        snprintf(msg, sizeof msg,
                 "watch consumer too slow: %zu events queued (limits.max_watch_backlog shared by the open watches)",
                 backlog);
        call_outbox_clear(c);
        call_finish(c, BATON_E_LIMIT, msg);
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

static void watch_start(tcall *c, ProtobufCMessage *m)
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
    int grc = guard_watch(t->guard, &c->who, key, prefix, err, sizeof err);
    if (grc != 0) {
        call_finish(c, grc, err);
        return;
    }
    engine_watch *w = engine_watch_start(t->engine, key, prefix, watch_event, watch_ended, c);
    if (w == NULL) {
        call_finish(c, transport__shutting(t) ? BATON_E_UNAVAILABLE : BATON_E_NOMEM,
                    transport__shutting(t) ? "server shutting down" : "cannot start watch");
        return;
    }
    c->eng.watch = w;
    c->engine_ref = 1;
    c->refs++;
    /* Initial metadata now, so a client can tell that its watch is live
     * before the first event. */
    grpc_op md;
    memset(&md, 0, sizeof md);
    md.op = GRPC_OP_SEND_INITIAL_METADATA;
    c->md_sent = 1;
    if (call_batch(c, &md, 1, TAG_MD) != 0)
        c->md_sent = 0;
}

static void watch_release(tcall *c)
{
    if (!c->engine_ref || c->eng.watch == NULL)
        return;
    engine_watch_stop(c->eng.watch);
    c->eng.watch = NULL;
    c->engine_ref = 0;
    call_unref(c);
}

/* The engine has ended its watches; stop this one and end the stream. */
static void watch_shutdown(tcall *c)
{
    watch_release(c);
    call_end_at_shutdown(c);
}

const rpc_method transport__watch_rpc = {
    .service = &baton__v1__lock_service__descriptor,
    .name = "Watch",
    .start = watch_start,
    .release = watch_release,
    .shutdown = watch_shutdown,
};
