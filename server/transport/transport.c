/*
 * gRPC transport: baton.v1.LockService and grpc.health.v1.Health on the
 * engine.
 *
 * One pump thread sits in grpc_completion_queue_next and hands every
 * (tag, success) to the loop thread through a mutex-protected array and an
 * eventfd. Everything else (call state, engine calls, grpc_call_start_batch)
 * happens on the loop thread, so no call state needs a lock.
 *
 * Tags are pointers with a kind in their low 3 bits (calls and request slots
 * are at least 8-byte aligned). A call object counts its references: one per
 * batch in flight, one while the engine may still call back, and one while
 * it is being dispatched. It is freed when the count reaches zero.
 */
#include "transport.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <event2/event.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>

#include "baton/v1/lock.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"
#include "log.h"
#include "pb_codec.h"

#define WATCH_OUTBOX_MAX 4096  /* queued LockEvents before a watcher is cut off */
#define SESSION_BUSY_MAX 64     /* Session renewals, releases and unsent grants before reads pause */
#define SESSION_WAIT_MAX 1024   /* Session acquires waiting at once; more are refused */
#define SESSION_OUTBOX_MAX 4096 /* unsent Session responses before the session is cut off */
#define SHUTDOWN_GRACE_MS 2000 /* after the engine is done: time for statuses in flight */
#define SHUTDOWN_FLUSH_MS 20   /* once every call is over: time for their last statuses to leave */
#define ERRBUF 512

enum method {
    M_ACQUIRE,
    M_RENEW,
    M_RELEASE,
    M_WATCH,
    M_DESCRIBE,
    M_FORCE_RELEASE,
    M_HEALTH_CHECK,
    M_HEALTH_WATCH,
    M_SESSION,
    M_COUNT,
    M_UNKNOWN = M_COUNT, /* the generic slot: any unregistered method */
};

/*
 * The methods served. Paths and request types are taken from the services'
 * protobuf-c descriptors (generated from proto/), so the server follows the
 * .proto by construction: a method renamed or dropped there stops batond at
 * start with a clear error instead of leaving it unserved under a stale path.
 */
static const struct method_src {
    const ProtobufCServiceDescriptor *service;
    const char *name;
    int client_streams; /* requests arrive one by one (RECV_MESSAGE), none with the call */
} method_src[M_COUNT] = {
    [M_ACQUIRE] = {&baton__v1__lock_service__descriptor, "Acquire"},
    [M_RENEW] = {&baton__v1__lock_service__descriptor, "Renew"},
    [M_RELEASE] = {&baton__v1__lock_service__descriptor, "Release"},
    [M_WATCH] = {&baton__v1__lock_service__descriptor, "Watch"},
    [M_DESCRIBE] = {&baton__v1__lock_service__descriptor, "Describe"},
    [M_FORCE_RELEASE] = {&baton__v1__lock_service__descriptor, "ForceRelease"},
    [M_HEALTH_CHECK] = {&grpc__health__v1__health__descriptor, "Check"},
    [M_HEALTH_WATCH] = {&grpc__health__v1__health__descriptor, "Watch"},
    [M_SESSION] = {&baton__v1__lock_service__descriptor, "Session", 1},
};

static struct method_info {
    char path[128]; /* "/<package>.<Service>/<Method>" */
    const ProtobufCMessageDescriptor *req;
    const char *req_name;
} methods[M_COUNT];

/* Fills methods[] from method_src (idempotent; loop thread, before the pump
 * starts). Returns 0, or -1 with the missing method named in err. */
static int methods_resolve(char *err, size_t errlen)
{
    for (int m = 0; m < M_COUNT; m++) {
        const ProtobufCServiceDescriptor *svc = method_src[m].service;
        const ProtobufCMethodDescriptor *md =
            protobuf_c_service_descriptor_get_method_by_name(svc, method_src[m].name);
        if (md == NULL) {
            snprintf(err, errlen, "the proto of %s has no method %s", svc->name, method_src[m].name);
            return -1;
        }
        snprintf(methods[m].path, sizeof methods[m].path, "/%s/%s", svc->name, md->name);
        methods[m].req = md->input;
        methods[m].req_name = md->input->short_name;
    }
    return 0;
}

enum tag_kind {
    TAG_REQUEST = 0,  /* a request slot: a call arrived (or the request failed) */
    TAG_CLOSE = 1,    /* RECV_CLOSE_ON_SERVER of a call */
    TAG_SEND = 2,     /* SEND_MESSAGE (+ initial metadata) of a call */
    TAG_STATUS = 3,   /* SEND_STATUS_FROM_SERVER of a call */
    TAG_MD = 4,       /* SEND_INITIAL_METADATA alone (Watch) */
    TAG_SHUTDOWN = 5, /* grpc_server_shutdown_and_notify */
    TAG_RECV = 6,     /* RECV_MESSAGE of a Session */
};
#define TAG(p, k) ((void *)((uintptr_t)(p) | (uintptr_t)(k)))
#define TAG_KIND(tag) ((int)((uintptr_t)(tag)&7u))
#define TAG_PTR(tag) ((void *)((uintptr_t)(tag) & ~(uintptr_t)7u))

struct sop;

typedef struct outmsg {
    struct outmsg *next;
    grpc_byte_buffer *bb;
    struct sop *op; /* Session: the operation it answers (NULL elsewhere) */
    int queued;     /* a Queued (or health status): a newer one of the same op replaces it */
    int deliver;    /* Session: a LEASE Granted; the lease stays once it is written */
} outmsg;

typedef struct tcall {
    baton_transport *t;
    grpc_call *call;
    struct tcall *prev, *next; /* t->calls */
    union {
        engine_waiter *w;    /* Acquire: until finished / engine_acquire_end */
        engine_watch *watch; /* Watch: until ended / engine_watch_stop */
    } eng;
    outmsg *head, *tail;
    grpc_byte_buffer *sending; /* message of the batch in flight (TAG_SEND or TAG_STATUS) */
    struct sop *sending_op;    /* Session: the LEASE grant in flight, kept once written */
    struct sop **ops_idx;      /* Session: operations alive, by id (ops_cap buckets, a power of 2) */
    uint32_t ops_cap, nops;
    uint32_t nbusy;            /* ...Renew / Release in flight and LEASE grants not yet written */
    uint32_t nwait;            /* ...acquires waiting for their grant */
    grpc_byte_buffer *recv_buf; /* Session: target of the armed RECV_MESSAGE */
    char *pend_msg;            /* status to send once the outbox is empty */
    int pend_err;
    int cancelled; /* RECV_CLOSE_ON_SERVER result */
    uint32_t nout;
    uint32_t refs;
    uint8_t method;
    /* Health Watch: HealthCheckResponse statuses (0 = none yet). */
    uint8_t health_last;       /* the newest status queued or sent */
    uint8_t health_wire;       /* the newest status out of the outbox (in flight or sent) */
    unsigned health_known : 1; /* the watched service is one we serve */
    unsigned md_sent : 1;      /* initial metadata sent (or in flight) */
    unsigned gone : 1;         /* the stream is over: send nothing more */
    unsigned status_started : 1;
    unsigned status_pending : 1;
    unsigned engine_ref : 1;    /* the engine may still call back with this call as ud */
    unsigned lease : 1;         /* Acquire in LEASE mode */
    unsigned granted : 1;       /* Acquire: Granted queued */
    unsigned lease_ok_sent : 1; /* Acquire LEASE: Granted written, status OK started */
    unsigned recv_armed : 1;    /* Session: a RECV_MESSAGE is in flight */
    unsigned recv_closed : 1;   /* Session: the client sends no more (or the read failed) */
    unsigned shut_owed : 1;     /* Session: answered during shutdown (its client is reading) */
} tcall;

/*
 * One operation of a Session. It holds a reference on its call from its
 * start until it is answered for good: a LEASE grant once written, a
 * session-held (STREAM) lock once it ends, Renew / Release once the engine
 * called back.
 */
typedef struct sop {
    struct sop *hnext; /* c->ops_idx bucket */
    tcall *c;
    uint64_t id;
    engine_waiter *w; /* Acquire: until finished / engine_acquire_end */
    uint8_t kind;     /* SOP_* */
    unsigned lease : 1;
    unsigned busy : 1;     /* counted in c->nbusy */
    unsigned waiting : 1;  /* counted in c->nwait */
    unsigned answered : 1; /* its final response is queued: its id is free again */
} sop;

enum { SOP_ACQUIRE, SOP_RENEW, SOP_RELEASE };

/*
 * Outstanding requests per method (and for the generic one). Why several: a
 * new call is handed over only against a posted request, and each re-post
 * happens on the loop thread, so with one slot every further call of a busy
 * method waited for a pump -> loop -> re-post round of its own (two thread
 * wake-ups per call, no batching). With many, gRPC hands a burst of calls
 * over in one go.
 */
#define REQ_SLOTS 32

typedef struct req_slot {
    baton_transport *t;
    int method;
    void *registered;
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_call_details details; /* generic slot only */
    grpc_byte_buffer *payload;
} req_slot;

typedef struct completion {
    void *tag;
    int ok;
} completion;

struct baton_transport {
    struct event_base *base;
    baton_engine *engine;
    validate_limits limits;
    grpc_server *server;
    grpc_completion_queue *cq;
    int port;
    req_slot slots[M_COUNT + 1][REQ_SLOTS];
    size_t nposted; /* request slots waiting for a call */

    /* pump thread -> loop thread */
    pthread_t pump;
    int pump_started;
    pthread_mutex_t mu;
    completion *inbox; /* guarded by mu */
    size_t inbox_len, inbox_cap;
    int pump_exited;  /* guarded by mu: the CQ is shut down and drained */
    completion *work; /* loop thread's copy */
    size_t work_cap;
    int efd;
    struct event *wake_ev;

    tcall *calls;
    size_t ncalls;

    /* shutdown */
    int shutting, shutdown_tag_done, engine_done, cq_shut, finished;
    int flush_armed; /* every call is over: grace_ev now ends the flush (SHUTDOWN_FLUSH_MS) */
    int flushed;     /* ...and it has: drop idle connections, shut the queue */
    int dropped;     /* grpc_server_cancel_all_calls done after the flush */
    struct event *grace_ev;
    void (*done)(void *ud);
    void *done_ud;
};

static void call_unref(tcall *c);
static void maybe_finish_shutdown(baton_transport *t);

/* The one place where internal errors become gRPC status codes. */
static grpc_status_code status_of(int err)
{
    switch (err) {
    case BATON_OK: return GRPC_STATUS_OK;
    case BATON_E_INVALID: return GRPC_STATUS_INVALID_ARGUMENT;
    case BATON_E_NOT_HOLDER: return GRPC_STATUS_FAILED_PRECONDITION;
    case BATON_E_BUSY: return GRPC_STATUS_ABORTED;
    case BATON_E_LOST: return GRPC_STATUS_ABORTED;
    case BATON_E_UNAVAILABLE: return GRPC_STATUS_UNAVAILABLE;
    case BATON_E_NOMEM: return GRPC_STATUS_RESOURCE_EXHAUSTED;
    case BATON_E_NOT_FOUND: return GRPC_STATUS_NOT_FOUND;
    case BATON_E_CANCELLED: return GRPC_STATUS_CANCELLED;
    case BATON_E_INTERNAL:
    default: return GRPC_STATUS_INTERNAL;
    }
}

/* ---------------------------------------------------------------- calls */

static tcall *call_new(baton_transport *t, grpc_call *call, int method)
{
    tcall *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->t = t;
    c->call = call;
    c->method = (uint8_t)method;
    c->refs = 1; /* dispatch reference, dropped by on_request */
    c->next = t->calls;
    if (t->calls)
        t->calls->prev = c;
    t->calls = c;
    t->ncalls++;
    return c;
}

static void outbox_clear(tcall *c)
{
    while (c->head) {
        outmsg *m = c->head;
        c->head = m->next;
        grpc_byte_buffer_destroy(m->bb);
        free(m);
    }
    c->tail = NULL;
    c->nout = 0;
}

static void call_free(tcall *c)
{
    baton_transport *t = c->t;
    if (c->prev)
        c->prev->next = c->next;
    else
        t->calls = c->next;
    if (c->next)
        c->next->prev = c->prev;
    t->ncalls--;
    outbox_clear(c);
    if (c->sending)
        grpc_byte_buffer_destroy(c->sending);
    if (c->recv_buf)
        grpc_byte_buffer_destroy(c->recv_buf);
    free(c->pend_msg);
    free(c->ops_idx);
    grpc_call_unref(c->call);
    free(c);
    maybe_finish_shutdown(t);
}

static void call_unref(tcall *c)
{
    if (--c->refs == 0)
        call_free(c);
}

/* Starts a batch whose completion arrives with `kind`; takes a reference. */
static int call_batch(tcall *c, const grpc_op *ops, size_t n, int kind)
{
    grpc_call_error e = grpc_call_start_batch(c->call, ops, n, TAG(c, kind), NULL);
    if (e != GRPC_CALL_OK) {
        LOG_ERROR("transport: grpc_call_start_batch (kind %d) failed: %d", kind, (int)e);
        return -1;
    }
    c->refs++;
    return 0;
}

/* Sends the final status now (plus initial metadata if not sent yet, plus
 * `bb` as the one response message of a unary call; ownership of bb passes
 * to the call). */
static void send_status(tcall *c, grpc_status_code code, const char *msg, grpc_byte_buffer *bb)
{
    grpc_op ops[3];
    size_t n = 0;
    memset(ops, 0, sizeof ops);
    if (!c->md_sent) {
        ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
        n++;
        c->md_sent = 1;
    }
    if (bb) {
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n].data.send_message.send_message = bb;
        n++;
    }
    /* The details slice is not retained past start_batch (grpc_types.h). */
    grpc_slice details = grpc_slice_from_copied_string(msg ? msg : "");
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = code;
    ops[n].data.send_status_from_server.status_details = msg ? &details : NULL;
    n++;
    c->status_started = 1;
    c->sending = bb;
    if (call_batch(c, ops, n, TAG_STATUS) != 0) {
        c->sending = NULL;
        if (bb)
            grpc_byte_buffer_destroy(bb);
        grpc_call_cancel(c->call, NULL);
    }
    grpc_slice_unref(details);
}

/* Ends the call with `err` (a baton_err) once every queued message has been
 * sent. Does nothing if the call already ends or the client is gone. */
static void call_finish(tcall *c, int err, const char *msg)
{
    if (c->gone || c->status_started || c->status_pending)
        return;
    if (c->sending == NULL && c->head == NULL) {
        send_status(c, status_of(err), msg, NULL);
        return;
    }
    c->status_pending = 1;
    c->pend_err = err;
    c->pend_msg = msg ? strdup(msg) : NULL;
}

/* Starts the next SEND_MESSAGE if none is in flight. */
static void call_kick(tcall *c)
{
    if (c->sending || c->gone || c->status_started || c->head == NULL)
        return;
    outmsg *m = c->head;
    c->head = m->next;
    if (c->head == NULL)
        c->tail = NULL;
    c->nout--;
    grpc_op ops[2];
    size_t n = 0;
    memset(ops, 0, sizeof ops);
    if (!c->md_sent) {
        ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
        n++;
        c->md_sent = 1;
    }
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n].data.send_message.send_message = m->bb;
    n++;
    c->sending = m->bb;
    c->sending_op = m->deliver ? m->op : NULL;
    free(m);
    if (call_batch(c, ops, n, TAG_SEND) != 0) {
        grpc_byte_buffer_destroy(c->sending);
        c->sending = NULL;
        c->sending_op = NULL; /* still in c->ops_idx: the end of the call releases it */
        grpc_call_cancel(c->call, NULL); /* RECV_CLOSE then reports the end */
    }
}

/* Queues one stream message. `queued` marks an AcquireEvent{queued} that a
 * later one (of the same Session operation `op`) may replace while both wait
 * in the outbox: only the newest position matters. `deliver`: a Session's
 * LEASE Granted for `op` (see on_send_done). Nothing is queued once the call
 * is over; on OOM the call is cancelled (its end then releases the engine's
 * side). */
static void push_msg(tcall *c, const ProtobufCMessage *msg, int queued, sop *op, int deliver)
{
    if (c->gone || c->status_started || c->status_pending)
        return;
    grpc_byte_buffer *bb = pb_encode(msg);
    if (queued && c->tail && c->tail->queued && c->tail->op == op) {
        grpc_byte_buffer_destroy(c->tail->bb);
        c->tail->bb = bb;
        return;
    }
    outmsg *m = calloc(1, sizeof *m);
    if (m == NULL) {
        grpc_byte_buffer_destroy(bb);
        grpc_call_cancel(c->call, NULL);
        return;
    }
    m->bb = bb;
    m->queued = queued;
    m->op = op;
    m->deliver = deliver;
    if (c->tail)
        c->tail->next = m;
    else
        c->head = m;
    c->tail = m;
    c->nout++;
    call_kick(c);
}

static void call_push(tcall *c, const ProtobufCMessage *msg, int queued)
{
    push_msg(c, msg, queued, NULL, 0);
}

static void session_end_ops(tcall *c);
static void session_delivered(sop *op);

/* Lets go of the engine's side of the call: the stream is over. A waiter or
 * a stream hold still alive means the client never got (or gave up) its
 * lock: release it. */
static void call_release_engine(tcall *c)
{
    if (c->method == M_SESSION) {
        session_end_ops(c);
        return;
    }
    if (!c->engine_ref)
        return;
    if (c->method == M_ACQUIRE && c->eng.w) {
        engine_acquire_end(c->eng.w, 1);
        c->eng.w = NULL;
    } else if (c->method == M_WATCH && c->eng.watch) {
        engine_watch_stop(c->eng.watch);
        c->eng.watch = NULL;
    } else {
        return; /* unary: its callback still comes and drops the reference */
    }
    c->engine_ref = 0;
    call_unref(c);
}

/* The client is gone (cancel, deadline, broken connection, failed write). */
static void call_gone(tcall *c)
{
    if (!c->gone) {
        c->gone = 1;
        outbox_clear(c);
        free(c->pend_msg);
        c->pend_msg = NULL;
        c->status_pending = 0;
    }
    call_release_engine(c);
}

static void on_close(tcall *c, int ok)
{
    /* RECV_CLOSE completes when the stream is closed both ways: after our
     * status, or because the client went away. Either way nothing more may be
     * sent and the engine must let go. */
    int clean = ok && !c->cancelled && c->status_started;
    if (clean && c->lease_ok_sent && c->eng.w) {
        /* Granted and the OK status went out and the stream closed without a
         * cancel: the lease stays. (A cancel instead means the client may
         * never have read its token: call_gone releases the lease.) */
        engine_acquire_end(c->eng.w, 0);
        c->eng.w = NULL;
        c->engine_ref = 0;
        call_unref(c); /* the engine's reference; the tag's is still held */
    }
    if (!clean)
        LOG_DEBUG("transport: call %p closed by the client (cancelled=%d)", (void *)c, c->cancelled);
    call_gone(c);
    call_unref(c);
}

static void on_send_done(tcall *c, int ok)
{
    grpc_byte_buffer_destroy(c->sending);
    c->sending = NULL;
    sop *delivered = c->sending_op;
    c->sending_op = NULL;
    if (ok && delivered)
        session_delivered(delivered);
    if (!ok) {
        call_gone(c); /* a failed write: the peer is gone */
    } else if (c->head) {
        call_kick(c);
    } else if (c->status_pending) {
        c->status_pending = 0;
        send_status(c, status_of(c->pend_err), c->pend_msg, NULL);
        free(c->pend_msg);
        c->pend_msg = NULL;
    } else if (c->method == M_ACQUIRE && c->lease && c->granted && c->eng.w && !c->status_started) {
        /* The LEASE grant is written: end the stream OK. Whether the lease
         * stays is decided when the stream has closed (on_close): a client
         * that cancels meanwhile may never read its token. */
        c->lease_ok_sent = 1;
        call_finish(c, BATON_OK, NULL);
    }
    call_unref(c);
}

static void on_status_done(tcall *c, int ok)
{
    if (c->sending) {
        grpc_byte_buffer_destroy(c->sending);
        c->sending = NULL;
    }
    call_unref(c);
}

/* ---------------------------------------------------------------- Acquire */

/* The Granted message of an engine grant (pointing into g). */
static void granted_msg(const engine_grant *g, Baton__V1__Granted *gr)
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
    if (c->lease && !c->gone && !c->status_started && !c->status_pending && c->sending == NULL &&
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

static void handle_acquire(tcall *c, ProtobufCMessage *m)
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

static void unary_reply(tcall *c, const ProtobufCMessage *resp)
{
    if (c->gone || c->status_started)
        return;
    send_status(c, GRPC_STATUS_OK, NULL, pb_encode(resp));
}

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

static void handle_unary(tcall *c, ProtobufCMessage *m)
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

/* ---------------------------------------------------------------- Session */

/*
 * Session: many Acquire / Renew / Release operations over one bidi stream,
 * each answered with its own id. Reads pause while SESSION_BUSY_MAX renewals,
 * releases and unsent grants are in flight: those end by themselves, so a
 * client cannot queue unbounded work and the pause always lifts. Waiting
 * acquires never pause reads (one may wait for a Release the session has
 * yet to send); beyond SESSION_WAIT_MAX of them an acquire is refused
 * (RESOURCE_EXHAUSTED). A client that does not read its responses is cut off
 * (SESSION_OUTBOX_MAX).
 * A protocol error (undecodable message, no operation, an id in use) ends the
 * whole session with INVALID_ARGUMENT: its responses could not be matched.
 * However the session ends, the end of the call releases what its
 * operations hold (session_end_ops), never an engine callback.
 */

static const engine_acquire_sink session_sink;

static void session_recv_arm(tcall *c)
{
    if (c->recv_armed || c->recv_closed || c->gone || c->status_started || c->status_pending ||
        c->nbusy >= SESSION_BUSY_MAX)
        return;
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &c->recv_buf;
    if (call_batch(c, &op, 1, TAG_RECV) != 0) {
        c->recv_closed = 1;
        grpc_call_cancel(c->call, NULL); /* RECV_CLOSE then ends it */
        return;
    }
    c->recv_armed = 1;
}

/* After an operation ended or went idle: read on, or end the session once
 * the client has closed its side and nothing is left. */
static void session_settle(tcall *c)
{
    if (c->recv_closed && c->nops == 0)
        call_finish(c, BATON_OK, NULL);
    else
        session_recv_arm(c);
}

/* Ends the session from our side; the end of the call (on_close) releases
 * what its operations hold. */
static void session_abort(tcall *c, grpc_status_code code, const char *msg)
{
    if (c->gone)
        return;
    LOG_DEBUG("transport: session %p ended: %s", (void *)c, msg);
    outbox_clear(c);
    c->gone = 1; /* send nothing more; call_gone still lets go of the engine */
    grpc_call_cancel_with_status(c->call, code, msg, NULL);
}

/* The session's operations, by id, so a request costs O(1) with any number
 * of session-held locks: checking an id for reuse and finding a cancel's
 * target. An id may appear twice while one of the two is `answered`. */
static sop **sop_bucket(tcall *c, uint64_t id)
{
    return &c->ops_idx[(uint32_t)((id * 0x9E3779B97F4A7C15ull) >> 32) & (c->ops_cap - 1)];
}

static int sop_index_add(tcall *c, sop *op)
{
    if (c->nops >= c->ops_cap) {
        uint32_t cap = c->ops_cap ? c->ops_cap * 2 : 16;
        sop **idx = calloc(cap, sizeof *idx);
        if (idx == NULL)
            return -1;
        sop **old = c->ops_idx;
        uint32_t ocap = c->ops_cap;
        c->ops_idx = idx;
        c->ops_cap = cap;
        for (uint32_t i = 0; i < ocap; i++) {
            for (sop *o = old[i], *next; o; o = next) {
                next = o->hnext;
                sop **b = sop_bucket(c, o->id);
                o->hnext = *b;
                *b = o;
            }
        }
        free(old);
    }
    sop **b = sop_bucket(c, op->id);
    op->hnext = *b;
    *b = op;
    c->nops++;
    return 0;
}

static void sop_index_del(tcall *c, sop *op)
{
    sop **p = sop_bucket(c, op->id);
    while (*p != op)
        p = &(*p)->hnext;
    *p = op->hnext;
    c->nops--;
}

/* The operation in flight with this id (not yet answered for good), or NULL. */
static sop *sop_find(tcall *c, uint64_t id)
{
    if (c->ops_cap == 0)
        return NULL;
    sop *o = *sop_bucket(c, id);
    while (o && (o->id != id || o->answered))
        o = o->hnext;
    return o;
}

static sop *sop_new(tcall *c, uint64_t id, int kind)
{
    sop *op = calloc(1, sizeof *op);
    if (op == NULL)
        return NULL;
    op->id = id;
    if (sop_index_add(c, op) != 0) {
        free(op);
        return NULL;
    }
    op->c = c;
    op->kind = (uint8_t)kind;
    if (kind == SOP_ACQUIRE) {
        op->waiting = 1;
        c->nwait++;
    } else {
        op->busy = 1;
        c->nbusy++;
    }
    c->refs++;
    return op;
}

static void sop_idle(sop *op)
{
    if (op->busy) {
        op->busy = 0;
        op->c->nbusy--;
    }
    if (op->waiting) {
        op->waiting = 0;
        op->c->nwait--;
    }
}

static void sop_free(sop *op)
{
    tcall *c = op->c;
    sop_idle(op);
    sop_index_del(c, op);
    free(op);
    session_settle(c);
    call_unref(c); /* the operation's reference; never the last (RECV_CLOSE holds one) */
}

/* Queues a response to op, or cuts off a client that does not read. */
static void sop_answer(sop *op, Baton__V1__SessionResponse *r, int queued, int deliver)
{
    tcall *c = op->c;
    if (c->nout >= SESSION_OUTBOX_MAX) {
        session_abort(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "session: the client does not read its responses");
        return;
    }
    r->id = op->id;
    c->shut_owed |= c->t->shutting;
    push_msg(c, &r->base, queued, op, deliver);
}

/* Answers op with a status and ends it. */
static void sop_fail(sop *op, int err, const char *msg)
{
    Baton__V1__SessionStatus st = BATON__V1__SESSION_STATUS__INIT;
    st.code = (int32_t)status_of(err);
    st.message = (char *)(msg ? msg : "");
    Baton__V1__SessionResponse r = BATON__V1__SESSION_RESPONSE__INIT;
    r.result_case = BATON__V1__SESSION_RESPONSE__RESULT_STATUS;
    r.status = &st;
    sop_answer(op, &r, 0, 0);
    sop_free(op);
}

static void sop_queued(void *ud, int64_t position)
{
    sop *op = ud;
    Baton__V1__Queued q = BATON__V1__QUEUED__INIT;
    q.position = position;
    Baton__V1__SessionResponse r = BATON__V1__SESSION_RESPONSE__INIT;
    r.result_case = BATON__V1__SESSION_RESPONSE__RESULT_QUEUED;
    r.queued = &q;
    sop_answer(op, &r, 1, 0);
}

static void sop_granted(void *ud, const engine_grant *g)
{
    sop *op = ud;
    Baton__V1__Granted gr;
    granted_msg(g, &gr);
    Baton__V1__SessionResponse r = BATON__V1__SESSION_RESPONSE__INIT;
    r.result_case = BATON__V1__SESSION_RESPONSE__RESULT_GRANTED;
    r.granted = &gr;
    /* LEASE: answered for good, but the operation lives on (busy) until the
     * grant is written (on_send_done -> session_delivered); if it never is,
     * the end of the call releases it. STREAM: held by the session from now
     * on; its id stays in use until the hold ends. */
    sop_idle(op);
    if (op->lease) {
        op->answered = 1;
        op->busy = 1;
        op->c->nbusy++;
    }
    sop_answer(op, &r, 0, op->lease);
    session_settle(op->c);
}

static void sop_finished(void *ud, int err, const char *msg)
{
    sop *op = ud;
    op->w = NULL; /* freed by the engine */
    sop_fail(op, err, msg);
}

static const engine_acquire_sink session_sink = {sop_queued, sop_granted, sop_finished};

/* A LEASE grant of a session was written: the lease stays. */
static void session_delivered(sop *op)
{
    engine_acquire_end(op->w, 0);
    op->w = NULL;
    sop_free(op);
}

static void sop_hold_result(void *ud, int err, const char *msg, int64_t ttl_ms)
{
    sop *op = ud;
    if (err != BATON_OK) {
        sop_fail(op, err, msg);
        return;
    }
    Baton__V1__SessionResponse r = BATON__V1__SESSION_RESPONSE__INIT;
    Baton__V1__RenewResponse rn = BATON__V1__RENEW_RESPONSE__INIT;
    Baton__V1__ReleaseResponse rl = BATON__V1__RELEASE_RESPONSE__INIT;
    if (op->kind == SOP_RENEW) {
        rn.ttl_ms = ttl_ms;
        r.result_case = BATON__V1__SESSION_RESPONSE__RESULT_RENEW;
        r.renew = &rn;
    } else {
        rl.released = 1;
        r.result_case = BATON__V1__SESSION_RESPONSE__RESULT_RELEASE;
        r.release = &rl;
    }
    sop_answer(op, &r, 0, 0);
    sop_free(op);
}

/* The client is gone: waiting Acquires leave the queue, grants not yet
 * written and session-held locks are released. Renew / Release already
 * sent to Redis still call back (their answer goes nowhere). */
static void session_end_ops(tcall *c)
{
    c->sending_op = NULL;
    c->recv_closed = 1;
    for (uint32_t i = 0; i < c->ops_cap; i++) {
        for (sop *op = c->ops_idx[i], *next; op; op = next) {
            next = op->hnext; /* sop_free unlinks only op */
            if (op->kind != SOP_ACQUIRE)
                continue;
            engine_acquire_end(op->w, 1);
            op->w = NULL;
            sop_free(op);
        }
    }
}

/* SessionCancel: the acquire `id`, if still waiting or session-held, ends as
 * a cancelled Acquire RPC would (dequeued, or its lock released) with status
 * CANCELLED. Anything else is left alone: the operation has already ended,
 * cannot be cancelled (renew, release) or is a LEASE already granted. */
static void session_cancel(tcall *c, uint64_t id)
{
    sop *op = sop_find(c, id);
    if (op == NULL || op->kind != SOP_ACQUIRE || op->w == NULL)
        return;
    int held = !op->waiting; /* granted: a STREAM hold (a LEASE would be answered) */
    engine_acquire_end(op->w, 1);
    op->w = NULL;
    sop_fail(op, BATON_E_CANCELLED,
             held ? "cancelled by the client: the lock was released" : "cancelled by the client while waiting");
}

static void session_handle(tcall *c, const Baton__V1__SessionRequest *r)
{
    baton_transport *t = c->t;
    char err[ERRBUF];
    int kind;
    switch (r->op_case) {
    case BATON__V1__SESSION_REQUEST__OP_ACQUIRE: kind = SOP_ACQUIRE; break;
    case BATON__V1__SESSION_REQUEST__OP_RENEW: kind = SOP_RENEW; break;
    case BATON__V1__SESSION_REQUEST__OP_RELEASE: kind = SOP_RELEASE; break;
    case BATON__V1__SESSION_REQUEST__OP_CANCEL: session_cancel(c, r->id); return;
    default:
        snprintf(err, sizeof err,
                 "session: request %llu names no operation (acquire, renew, release or cancel)",
                 (unsigned long long)r->id);
        session_abort(c, GRPC_STATUS_INVALID_ARGUMENT, err);
        return;
    }
    if (sop_find(c, r->id)) {
        snprintf(err, sizeof err, "session: id %llu is already used by an operation in flight",
                 (unsigned long long)r->id);
        session_abort(c, GRPC_STATUS_INVALID_ARGUMENT, err);
        return;
    }
    int full = kind == SOP_ACQUIRE && c->nwait >= SESSION_WAIT_MAX;
    sop *op = sop_new(c, r->id, kind);
    if (op == NULL) {
        session_abort(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    if (full) {
        snprintf(err, sizeof err, "session: %d acquires are already waiting; end some first",
                 SESSION_WAIT_MAX);
        sop_fail(op, BATON_E_NOMEM, err);
        return;
    }
    const char *emsg = err;
    int rc;
    if (kind == SOP_ACQUIRE) {
        engine_acquire_req req = {0};
        engine_waiter *w = NULL;
        rc = validate_acquire(&t->limits, r->acquire, &req, err, sizeof err) != 0
                 ? BATON_E_INVALID
                 : engine_acquire(t->engine, &req, &session_sink, op, &w, &emsg);
        op->w = w;
        op->lease = req.mode == ENGINE_MODE_LEASE;
    } else if (kind == SOP_RENEW) {
        int64_t ttl;
        rc = validate_renew(&t->limits, r->renew, &ttl, err, sizeof err) != 0
                 ? BATON_E_INVALID
                 : engine_renew(t->engine, r->renew->key, r->renew->token, ttl, sop_hold_result, op, &emsg);
    } else {
        rc = validate_release(r->release, err, sizeof err) != 0
                 ? BATON_E_INVALID
                 : engine_release(t->engine, r->release->key, r->release->token, sop_hold_result, op, &emsg);
    }
    if (rc != 0)
        sop_fail(op, rc, emsg);
}

static void on_recv(tcall *c, int ok)
{
    grpc_byte_buffer *bb = c->recv_buf;
    c->recv_buf = NULL;
    c->recv_armed = 0;
    if (!ok || bb == NULL) {
        c->recv_closed = 1; /* the client closed its side (or the call failed: RECV_CLOSE tells) */
        session_settle(c);
    } else if (!c->gone && !c->status_started && !c->status_pending) {
        char err[ERRBUF];
        const struct method_info *mi = &methods[M_SESSION];
        ProtobufCMessage *m = pb_decode(bb, mi->req, mi->req_name, err, sizeof err);
        if (m == NULL) {
            session_abort(c, GRPC_STATUS_INVALID_ARGUMENT, err);
        } else {
            session_handle(c, (Baton__V1__SessionRequest *)m);
            protobuf_c_message_free_unpacked(m, NULL);
            session_recv_arm(c);
        }
    }
    if (bb)
        grpc_byte_buffer_destroy(bb);
    call_unref(c);
}

static void handle_session(tcall *c)
{
    if (c->t->shutting)
        call_finish(c, BATON_E_UNAVAILABLE, "server shutting down");
    else
        session_recv_arm(c);
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
    if (c->gone || c->status_started || c->status_pending)
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

static void handle_watch(tcall *c, ProtobufCMessage *m)
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

/* ---------------------------------------------------------------- Health */

/*
 * grpc.health.v1.Health: the whole server ("") and baton.v1.LockService are
 * SERVING exactly while the engine can grant locks (engine_serving: Redis up
 * and not shutting down). Check on another name: NOT_FOUND. Watch sends the
 * current status at once and then each change; on another name it sends
 * SERVICE_UNKNOWN once and stays open. At shutdown a Watch first gets
 * NOT_SERVING (the engine reports it as shutdown begins) and then ends
 * UNAVAILABLE like every other stream.
 */

static int health_known_service(const char *name)
{
    return name == NULL || name[0] == '\0' || strcmp(name, "baton.v1.LockService") == 0;
}

static uint8_t health_status(const baton_transport *t)
{
    return engine_serving(t->engine) ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
                                     : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
}

/*
 * Queues `status` on a health Watch unless it is the one the client will
 * already see last. At most one message waits in the outbox (a newer status
 * replaces it, see call_push's `queued`), so a stalled client costs nothing
 * however often Redis flaps, and the client never sees the same status twice
 * in a row.
 */
static void health_push(tcall *c, uint8_t status)
{
    if (c->gone || c->status_started || c->status_pending || status == c->health_last)
        return;
    if (c->nout == 0) {
        c->health_wire = c->health_last; /* everything older has left the outbox */
    } else if (status == c->health_wire) {
        outbox_clear(c); /* back to what the client already has: drop the waiting one */
        c->health_last = status;
        return;
    }
    Grpc__Health__V1__HealthCheckResponse r = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    r.status = (Grpc__Health__V1__HealthCheckResponse__ServingStatus)status;
    c->health_last = status;
    call_push(c, &r.base, 1);
}

/* engine_set_serving_cb: the serving status changed; tell every Watch. */
static void on_serving(void *ud, int serving)
{
    baton_transport *t = ud;
    LOG_INFO("transport: health %s", serving ? "SERVING" : "NOT_SERVING");
    uint8_t status = health_status(t);
    for (tcall *c = t->calls; c; c = c->next)
        if (c->method == M_HEALTH_WATCH && c->health_known)
            health_push(c, status);
}

static void handle_health(tcall *c, ProtobufCMessage *m)
{
    baton_transport *t = c->t;
    Grpc__Health__V1__HealthCheckRequest *r = (Grpc__Health__V1__HealthCheckRequest *)m;
    int known = health_known_service(r->service);
    if (c->method == M_HEALTH_CHECK) {
        if (!known) {
            send_status(c, GRPC_STATUS_NOT_FOUND, "unknown service", NULL);
            return;
        }
        Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
        resp.status = (Grpc__Health__V1__HealthCheckResponse__ServingStatus)health_status(t);
        unary_reply(c, &resp.base);
        return;
    }
    c->health_known = known ? 1 : 0;
    health_push(c, known ? health_status(t)
                         : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN);
    /* Shutdown may already have ended the other streams (on_engine_done). */
    if (t->shutting)
        call_finish(c, BATON_E_UNAVAILABLE, "server shutting down");
}

/* ---------------------------------------------------------------- requests */

static void post_request(baton_transport *t, req_slot *s)
{
    grpc_call_error e;
    grpc_metadata_array_init(&s->md);
    if (s->method == M_UNKNOWN) {
        grpc_call_details_init(&s->details);
        e = grpc_server_request_call(t->server, &s->call, &s->details, &s->md, t->cq, t->cq,
                                     TAG(s, TAG_REQUEST));
    } else {
        /* A client-streaming method has no initial payload (and must not be asked for one). */
        e = grpc_server_request_registered_call(t->server, s->registered, &s->call, &s->deadline, &s->md,
                                                method_src[s->method].client_streams ? NULL : &s->payload,
                                                t->cq, t->cq, TAG(s, TAG_REQUEST));
    }
    if (e != GRPC_CALL_OK) {
        LOG_ERROR("transport: cannot request calls (method %d): error %d", s->method, (int)e);
        grpc_metadata_array_destroy(&s->md);
        if (s->method == M_UNKNOWN)
            grpc_call_details_destroy(&s->details);
        return;
    }
    t->nposted++;
}

static void dispatch_call(tcall *c, grpc_byte_buffer *payload)
{
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &c->cancelled;
    if (call_batch(c, &op, 1, TAG_CLOSE) != 0) {
        c->gone = 1;
        grpc_call_cancel(c->call, NULL);
        return;
    }
    if (c->method == M_UNKNOWN) {
        send_status(c, GRPC_STATUS_UNIMPLEMENTED, "unknown method", NULL);
        return;
    }
    if (c->method == M_SESSION) {
        handle_session(c);
        return;
    }
    const struct method_info *mi = &methods[c->method];
    char err[ERRBUF];
    ProtobufCMessage *m = pb_decode(payload, mi->req, mi->req_name, err, sizeof err);
    if (m == NULL) {
        call_finish(c, BATON_E_INVALID, err);
        return;
    }
    if (c->method == M_ACQUIRE)
        handle_acquire(c, m);
    else if (c->method == M_WATCH)
        handle_watch(c, m);
    else if (c->method == M_HEALTH_CHECK || c->method == M_HEALTH_WATCH)
        handle_health(c, m);
    else
        handle_unary(c, m);
    protobuf_c_message_free_unpacked(m, NULL);
}

static void on_request(req_slot *s, int ok)
{
    baton_transport *t = s->t;
    grpc_call *call = s->call;
    grpc_byte_buffer *payload = s->payload;
    s->call = NULL;
    s->payload = NULL;
    grpc_metadata_array_destroy(&s->md);
    if (s->method == M_UNKNOWN)
        grpc_call_details_destroy(&s->details);
    t->nposted--;
    if (!t->shutting)
        post_request(t, s); /* keep REQ_SLOTS requests posted per method */

    if (ok && call) {
        tcall *c = call_new(t, call, s->method);
        if (c == NULL) {
            grpc_call_cancel_with_status(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory", NULL);
            grpc_call_unref(call);
        } else {
            dispatch_call(c, payload);
            call_unref(c); /* the dispatch reference */
        }
    } else if (call) {
        grpc_call_unref(call);
    }
    if (payload)
        grpc_byte_buffer_destroy(payload);
    maybe_finish_shutdown(t);
}

/* ---------------------------------------------------------------- pump */

/* Pump thread: the only thread that waits on the completion queue. */
static void *pump_main(void *arg)
{
    baton_transport *t = arg;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(t->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_TIMEOUT)
            continue;
        pthread_mutex_lock(&t->mu);
        int was_empty = t->inbox_len == 0 && !t->pump_exited;
        if (ev.type == GRPC_QUEUE_SHUTDOWN) {
            t->pump_exited = 1;
        } else {
            if (t->inbox_len == t->inbox_cap) {
                size_t cap = t->inbox_cap ? t->inbox_cap * 2 : 64;
                completion *n = realloc(t->inbox, cap * sizeof *n);
                if (n == NULL) {
                    /* Dropping a tag would leak a call forever; nothing sane is left. */
                    LOG_ERROR("transport: out of memory in the completion pump");
                    abort();
                }
                t->inbox = n;
                t->inbox_cap = cap;
            }
            t->inbox[t->inbox_len].tag = ev.tag;
            t->inbox[t->inbox_len].ok = ev.success;
            t->inbox_len++;
        }
        int exited = t->pump_exited;
        pthread_mutex_unlock(&t->mu);
        if (was_empty) {
            uint64_t one = 1;
            ssize_t w = write(t->efd, &one, sizeof one);
            (void)w; /* EAGAIN only when the counter is huge: the loop is awake anyway */
        }
        if (exited)
            return NULL;
    }
}

static void final_teardown(baton_transport *t)
{
    pthread_join(t->pump, NULL);
    t->pump_started = 0;
    grpc_server_destroy(t->server);
    t->server = NULL;
    grpc_completion_queue_destroy(t->cq);
    t->cq = NULL;
    t->finished = 1;
    LOG_DEBUG("transport: stopped");
    if (t->done)
        t->done(t->done_ud);
}

static void dispatch_tag(baton_transport *t, void *tag, int ok)
{
    void *p = TAG_PTR(tag);
    switch (TAG_KIND(tag)) {
    case TAG_REQUEST: on_request(p, ok); break;
    case TAG_CLOSE: on_close(p, ok); break;
    case TAG_SEND: on_send_done(p, ok); break;
    case TAG_STATUS: on_status_done(p, ok); break;
    case TAG_MD: call_unref(p); break;
    case TAG_RECV: on_recv(p, ok); break;
    case TAG_SHUTDOWN:
        t->shutdown_tag_done = 1;
        maybe_finish_shutdown(t);
        break;
    default: LOG_ERROR("transport: unknown tag %p", tag); break;
    }
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    baton_transport *t = arg;
    uint64_t v;
    ssize_t r = read(t->efd, &v, sizeof v);
    (void)r;
    pthread_mutex_lock(&t->mu);
    /* Swap buffers so the pump never waits for the loop's work. */
    completion *batch = t->inbox;
    size_t n = t->inbox_len;
    size_t cap = t->inbox_cap;
    t->inbox = t->work;
    t->inbox_cap = t->work_cap;
    t->inbox_len = 0;
    int exited = t->pump_exited;
    pthread_mutex_unlock(&t->mu);
    t->work = batch;
    t->work_cap = cap;
    for (size_t i = 0; i < n; i++)
        dispatch_tag(t, batch[i].tag, batch[i].ok);
    if (exited && !t->finished)
        final_teardown(t);
}

/* ---------------------------------------------------------------- shutdown */

static void maybe_finish_shutdown(baton_transport *t)
{
    if (!t->shutting || !t->engine_done || t->ncalls != 0 || t->cq_shut)
        return;
    if (!t->flushed) {
        /* Every call is over, but the last statuses and messages may still
         * sit in gRPC's write buffers: tearing the server down now can close
         * a connection before they leave, and the client then sees only
         * "Socket closed". Give them SHUTDOWN_FLUSH_MS. */
        if (!t->flush_armed) {
            t->flush_armed = 1;
            struct timeval tv = {0, SHUTDOWN_FLUSH_MS * 1000};
            evtimer_add(t->grace_ev, &tv); /* (re-arms the pending grace timer) */
        }
        return;
    }
    if (!t->shutdown_tag_done) {
        /* Only connections keep gRPC's shutdown waiting now, and a client
         * that is not polling (an idle libbaton) never answers the GOAWAY:
         * drop them instead of waiting out the grace. */
        if (!t->dropped) {
            t->dropped = 1;
            grpc_server_cancel_all_calls(t->server);
        }
        return;
    }
    if (t->nposted != 0)
        return;
    t->cq_shut = 1;
    if (t->grace_ev)
        evtimer_del(t->grace_ev);
    grpc_completion_queue_shutdown(t->cq); /* the pump drains it and exits */
}

static void on_grace(evutil_socket_t fd, short what, void *arg)
{
    baton_transport *t = arg;
    if (t->cq_shut)
        return;
    if (t->flush_armed && !t->flushed && t->ncalls == 0) {
        t->flushed = 1;
        maybe_finish_shutdown(t);
        return;
    }
    if (t->ncalls > 0)
        LOG_WARN("transport: %zu call(s) still open after shutdown grace; cancelling", t->ncalls);
    grpc_server_cancel_all_calls(t->server);
}

static void on_engine_done(void *ud)
{
    baton_transport *t = ud;
    if (t->engine_done)
        return;
    t->engine_done = 1;
    struct timeval tv = {SHUTDOWN_GRACE_MS / 1000, (SHUTDOWN_GRACE_MS % 1000) * 1000};
    evtimer_add(t->grace_ev, &tv);
    /* The engine has ended every waiter and watch it knew about, except LEASE
     * grants still on their way to the client: those end when their send
     * completes (engine_acquire_end(w, 0 or 1)), not here. Whatever else is
     * still open ends UNAVAILABLE. */
    for (tcall *c = t->calls; c;) {
        c->refs++;
        if (c->method == M_WATCH)
            call_release_engine(c);
        if (c->method == M_SESSION && !c->shut_owed && c->sending == NULL && c->head == NULL &&
            !c->status_started && !c->status_pending) {
            /* An idle session. Ending it with a cancel closes the stream at
             * once; a status would wait for the client to acknowledge it, and
             * an idle libbaton session is not read until its next operation
             * (until the grace ran out). A session answered during shutdown
             * ends with a status instead: a cancel can overtake the answers
             * still unread at the client, which then never sees them. */
            session_abort(c, GRPC_STATUS_UNAVAILABLE, "server shutting down");
        } else if (!c->engine_ref) {
            call_finish(c, BATON_E_UNAVAILABLE, "server shutting down");
        }
        tcall *next = c->next;
        call_unref(c);
        c = next;
    }
    maybe_finish_shutdown(t);
}

void transport_shutdown(baton_transport *t, void (*done)(void *ud), void *ud)
{
    if (t->shutting)
        return;
    t->shutting = 1;
    t->done = done;
    t->done_ud = ud;
    LOG_INFO("transport: shutting down (%zu open calls)", t->ncalls);
    grpc_server_shutdown_and_notify(t->server, t->cq, TAG(t, TAG_SHUTDOWN));
    engine_shutdown(t->engine, on_engine_done, t);
}

/* ---------------------------------------------------------------- setup */

int transport_port(const baton_transport *t)
{
    return t->port;
}

size_t transport_live_calls(const baton_transport *t)
{
    return t->ncalls;
}

static int clamp_int(int64_t v)
{
    return v > INT32_MAX ? INT32_MAX : (int)v;
}

/* Frees what transport_new built; the server must not have been started
 * (and so has no listener, or grpc_server_destroy would assert). */
static void destroy_unstarted(baton_transport *t)
{
    if (t->server)
        grpc_server_destroy(t->server);
    if (t->cq) {
        grpc_completion_queue_shutdown(t->cq);
        if (t->pump_started) {
            pthread_join(t->pump, NULL);
        } else {
            while (grpc_completion_queue_next(t->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
                   GRPC_QUEUE_SHUTDOWN) {
            }
        }
        grpc_completion_queue_destroy(t->cq);
    }
    t->server = NULL;
    t->cq = NULL;
    t->pump_started = 0;
    transport_free(t);
}

baton_transport *transport_new(struct event_base *base, baton_engine *engine, const transport_opts *opts,
                               char *err, size_t errlen)
{
    if (methods_resolve(err, errlen) != 0)
        return NULL;
    baton_transport *t = calloc(1, sizeof *t);
    if (t == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    t->base = base;
    t->engine = engine;
    t->limits = opts->limits;
    t->efd = -1;
    pthread_mutex_init(&t->mu, NULL);
    t->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (t->efd < 0) {
        snprintf(err, errlen, "eventfd: %s", strerror(errno));
        goto fail;
    }
    t->wake_ev = event_new(base, t->efd, EV_READ | EV_PERSIST, on_wake, t);
    t->grace_ev = evtimer_new(base, on_grace, t);
    if (t->wake_ev == NULL || t->grace_ev == NULL || event_add(t->wake_ev, NULL) != 0) {
        snprintf(err, errlen, "cannot create loop events");
        goto fail;
    }

    grpc_arg args[11];
    size_t n = 0;
#define INT_ARG(k, v)                                                                                        \
    do {                                                                                                     \
        args[n].type = GRPC_ARG_INTEGER;                                                                     \
        args[n].key = (char *)(k);                                                                           \
        args[n].value.integer = (v);                                                                         \
        n++;                                                                                                 \
    } while (0)
    if (opts->max_concurrent_streams > 0)
        INT_ARG(GRPC_ARG_MAX_CONCURRENT_STREAMS, opts->max_concurrent_streams);
    if (opts->max_message_bytes > 0) {
        INT_ARG(GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, opts->max_message_bytes);
        INT_ARG(GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, opts->max_message_bytes);
    }
    if (opts->keepalive_time_ms > 0)
        INT_ARG(GRPC_ARG_KEEPALIVE_TIME_MS, clamp_int(opts->keepalive_time_ms));
    if (opts->keepalive_timeout_ms > 0)
        INT_ARG(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, clamp_int(opts->keepalive_timeout_ms));
    /* Keep pinging a connection whose only stream waits silently for a lock
     * (the default stops after 2 pings without data), and accept client
     * keepalive pings, even without calls, down to one per second
     * (libbaton's minimum keepalive_ms). gRPC clients send each keepalive
     * ping a keepalive time after the previous ping's ack, so a jittery
     * network only stretches the gaps seen here: no strikes. */
    INT_ARG(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
    INT_ARG(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    INT_ARG(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 1000);
    /* A second batond on the same address must fail, not share the port. */
    INT_ARG(GRPC_ARG_ALLOW_REUSEPORT, 0);
#undef INT_ARG
    grpc_channel_args cargs = {n, args};

    t->cq = grpc_completion_queue_create_for_next(NULL);
    if (pthread_create(&t->pump, NULL, pump_main, t) != 0) {
        snprintf(err, errlen, "cannot start the completion queue thread");
        goto fail_grpc;
    }
    t->pump_started = 1;
    t->server = grpc_server_create(&cargs, NULL);
    grpc_server_register_completion_queue(t->server, t->cq, NULL);
    for (int m = 0; m <= M_COUNT; m++) {
        void *registered = NULL;
        if (m != M_UNKNOWN) {
            registered = grpc_server_register_method(t->server, methods[m].path, NULL,
                                                     method_src[m].client_streams
                                                         ? GRPC_SRM_PAYLOAD_NONE
                                                         : GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER,
                                                     0);
            if (registered == NULL) {
                snprintf(err, errlen, "cannot register %s", methods[m].path);
                goto fail_grpc;
            }
        }
        for (int i = 0; i < REQ_SLOTS; i++) {
            req_slot *s = &t->slots[m][i];
            s->t = t;
            s->method = m;
            s->registered = registered;
        }
    }
    grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
    t->port = grpc_server_add_http2_port(t->server, opts->listen, creds);
    grpc_server_credentials_release(creds);
    if (t->port == 0) {
        snprintf(err, errlen, "cannot listen on %s", opts->listen);
        goto fail_grpc;
    }
    grpc_server_start(t->server);
    for (int m = 0; m <= M_COUNT; m++)
        for (int i = 0; i < REQ_SLOTS; i++)
            post_request(t, &t->slots[m][i]);
    engine_set_serving_cb(engine, on_serving, t);
    return t;

fail_grpc:
    destroy_unstarted(t);
    return NULL;
fail:
    transport_free(t);
    return NULL;
}

void transport_free(baton_transport *t)
{
    if (t == NULL)
        return;
    if (t->engine)
        engine_set_serving_cb(t->engine, NULL, NULL);
    if (t->wake_ev)
        event_free(t->wake_ev);
    if (t->grace_ev)
        event_free(t->grace_ev);
    if (t->efd >= 0)
        close(t->efd);
    pthread_mutex_destroy(&t->mu);
    free(t->inbox);
    free(t->work);
    free(t);
}
