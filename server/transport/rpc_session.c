/* baton.v1.LockService Session: many operations over one bidi stream. */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "map.h"
#include "pb_codec.h"

/*
 * One operation of a Session. It holds a reference on its call from its
 * start until it is answered for good: a LEASE grant once written, a
 * session-held (STREAM) lock once it ends, Renew / Release once the engine
 * called back.
 */
struct session_op {
    map_node node;             /* c->sops, by map_hash_u64(id) */
    struct session_op *ending; /* session_end_ops: the next acquire to end */
    tcall *c;
    uint64_t id;
    engine_waiter *w; /* Acquire: until finished / engine_acquire_end */
    limits_entry *wait_key; /* Acquire: counted as waiting (guard_acquire) until granted or ended */
    uint8_t kind;     /* SOP_* */
    unsigned lease : 1;
    unsigned busy : 1;     /* counted in c->nbusy */
    unsigned waiting : 1;  /* counted in c->nwait */
    unsigned answered : 1; /* its final response is queued: its id is free again */
};

enum { SOP_ACQUIRE, SOP_RENEW, SOP_RELEASE };

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
    if (c->recv_armed || c->recv_closed || !call_can_send(c) || c->nbusy >= SESSION_BUSY_MAX)
        return;
    grpc_op recv;
    memset(&recv, 0, sizeof recv);
    recv.op = GRPC_OP_RECV_MESSAGE;
    recv.data.recv_message.recv_message = &c->recv_buf;
    if (call_batch(c, &recv, 1, TAG_RECV) != 0) {
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
    if (c->recv_closed && c->sops.len == 0)
        call_finish(c, BATON_OK, NULL);
    else
        session_recv_arm(c);
}

/* Ends the session from our side; the end of the call (call_on_close) releases
 * what its operations hold. */
static void session_abort(tcall *c, grpc_status_code code, const char *msg)
{
    if (c->phase == CALL_GONE)
        return;
    LOG_DEBUG("transport: session %p ended: %s", (void *)c, msg);
    call_outbox_clear(c);
    c->phase = CALL_GONE; /* send nothing more; call_gone still lets go of the engine */
    grpc_call_cancel_with_status(c->call, code, msg, NULL);
}

/* The session's operations, by id (c->sops), so a request costs O(1) with
 * any number of session-held locks: checking an id for reuse and finding a
 * cancel's target. An id may appear twice while one of the two is
 * `answered`. */

/* The operation in flight with this id (not yet answered for good), or NULL. */
static session_op *sop_find(tcall *c, uint64_t id)
{
    uint64_t h = map_hash_u64(id);
    for (map_node *n = map_first(&c->sops, h); n; n = map_next(n, h)) {
        session_op *o = MAP_ENTRY(n, session_op, node);
        if (o->id == id && !o->answered)
            return o;
    }
    return NULL;
}

static session_op *sop_new(tcall *c, uint64_t id, int kind)
{
    session_op *sop = calloc(1, sizeof *sop);
    if (sop == NULL)
        return NULL;
    sop->id = id;
    if (map_insert(&c->sops, &sop->node, map_hash_u64(id)) != 0) {
        free(sop);
        return NULL;
    }
    sop->c = c;
    sop->kind = (uint8_t)kind;
    if (kind == SOP_ACQUIRE) {
        sop->waiting = 1;
        c->nwait++;
    } else {
        sop->busy = 1;
        c->nbusy++;
    }
    c->refs++;
    return sop;
}

static void sop_idle(session_op *sop)
{
    if (sop->busy) {
        sop->busy = 0;
        sop->c->nbusy--;
    }
    guard_wait_end(sop->c->t->guard, &sop->c->who, &sop->wait_key);
    if (sop->waiting) {
        sop->waiting = 0;
        sop->c->nwait--;
    }
}

static void sop_free(session_op *sop)
{
    tcall *c = sop->c;
    sop_idle(sop);
    map_remove(&c->sops, &sop->node);
    free(sop);
    session_settle(c);
    call_unref(c); /* the operation's reference; never the last (RECV_CLOSE holds one) */
}

/* Queues a response to sop, or cuts off a client that does not read. */
static void sop_answer(session_op *sop, Baton__V1__SessionResponse *r, int queued, int deliver)
{
    tcall *c = sop->c;
    if (c->nout >= SESSION_OUTBOX_MAX) {
        session_abort(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "session: the client does not read its responses");
        return;
    }
    r->id = sop->id;
    c->shut_owed |= transport__shutting(c->t);
    call_push_sop(c, &r->base, queued, sop, deliver);
}

/* Answers sop with a status and ends it. */
static void sop_fail(session_op *sop, int err, const char *msg)
{
    Baton__V1__SessionStatus st = BATON__V1__SESSION_STATUS__INIT;
    st.code = (int32_t)call_status_of(err);
    st.message = (char *)(msg ? msg : "");
    Baton__V1__SessionResponse r = BATON__V1__SESSION_RESPONSE__INIT;
    r.result_case = BATON__V1__SESSION_RESPONSE__RESULT_STATUS;
    r.status = &st;
    sop_answer(sop, &r, 0, 0);
    sop_free(sop);
}

static void sop_queued(void *ud, int64_t position)
{
    session_op *sop = ud;
    Baton__V1__Queued q = BATON__V1__QUEUED__INIT;
    q.position = position;
    Baton__V1__SessionResponse r = BATON__V1__SESSION_RESPONSE__INIT;
    r.result_case = BATON__V1__SESSION_RESPONSE__RESULT_QUEUED;
    r.queued = &q;
    sop_answer(sop, &r, 1, 0);
}

static void sop_granted(void *ud, const engine_grant *g)
{
    session_op *sop = ud;
    Baton__V1__Granted gr;
    transport__granted_msg(&sop->c->t->limits, g, &gr);
    Baton__V1__SessionResponse r = BATON__V1__SESSION_RESPONSE__INIT;
    r.result_case = BATON__V1__SESSION_RESPONSE__RESULT_GRANTED;
    r.granted = &gr;
    /* LEASE: answered for good, but the operation lives on (busy) until the
     * grant is written (call_on_send_done -> session_delivered); if it never is,
     * the end of the call releases it. STREAM: held by the session from now
     * on; its id stays in use until the hold ends. */
    sop_idle(sop);
    if (sop->lease) {
        sop->answered = 1;
        sop->busy = 1;
        sop->c->nbusy++;
    }
    sop_answer(sop, &r, 0, sop->lease);
    free(gr.device_names);
    session_settle(sop->c);
}

static void sop_finished(void *ud, int err, const char *msg)
{
    session_op *sop = ud;
    sop->w = NULL; /* freed by the engine */
    sop_fail(sop, err, msg);
}

static const engine_acquire_sink session_sink = {sop_queued, sop_granted, sop_finished};

/* A LEASE grant of a session was written: the lease stays. */
static void session_delivered(tcall *c, session_op *sop)
{
    engine_acquire_end(sop->w, 0);
    sop->w = NULL;
    sop_free(sop);
}

static void sop_hold_result(void *ud, int err, const char *msg, int64_t ttl_ms)
{
    session_op *sop = ud;
    if (err != BATON_OK) {
        sop_fail(sop, err, msg);
        return;
    }
    Baton__V1__SessionResponse r = BATON__V1__SESSION_RESPONSE__INIT;
    Baton__V1__RenewResponse rn = BATON__V1__RENEW_RESPONSE__INIT;
    Baton__V1__ReleaseResponse rl = BATON__V1__RELEASE_RESPONSE__INIT;
    if (sop->kind == SOP_RENEW) {
        rn.ttl_ms = ttl_ms;
        r.result_case = BATON__V1__SESSION_RESPONSE__RESULT_RENEW;
        r.renew = &rn;
    } else {
        rl.released = 1;
        r.result_case = BATON__V1__SESSION_RESPONSE__RESULT_RELEASE;
        r.release = &rl;
    }
    sop_answer(sop, &r, 0, 0);
    sop_free(sop);
}

/* The client is gone: waiting Acquires leave the queue, grants not yet
 * written and session-held locks are released. Renew / Release already
 * sent to Redis still call back (their answer goes nowhere). */
static void collect_acquire(map_node *n, void *ud)
{
    session_op *sop = MAP_ENTRY(n, session_op, node);
    session_op **list = ud;
    if (sop->kind != SOP_ACQUIRE)
        return;
    sop->ending = *list;
    *list = sop;
}

static void session_end_ops(tcall *c)
{
    c->sending_sop = NULL;
    c->recv_closed = 1;
    /* Collected first: sop_free changes the map, which map_each forbids. */
    session_op *list = NULL;
    map_each(&c->sops, collect_acquire, &list);
    for (session_op *sop = list, *next; sop; sop = next) {
        next = sop->ending;
        engine_acquire_end(sop->w, 1);
        sop->w = NULL;
        sop_free(sop);
    }
}

/* SessionCancel: the acquire `id`, if still waiting or session-held, ends as
 * a cancelled Acquire RPC would (dequeued, or its lock released) with status
 * CANCELLED. Anything else is left alone: the operation has already ended,
 * cannot be cancelled (renew, release) or is a LEASE already granted. */
static void session_cancel(tcall *c, uint64_t id)
{
    session_op *sop = sop_find(c, id);
    if (sop == NULL || sop->kind != SOP_ACQUIRE || sop->w == NULL)
        return;
    int held = !sop->waiting; /* granted: a STREAM hold (a LEASE would be answered) */
    engine_acquire_end(sop->w, 1);
    sop->w = NULL;
    sop_fail(sop, BATON_E_CANCELLED,
             held ? "cancelled by the client: the lock was released"
                  : "cancelled by the client while waiting");
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
    session_op *sop = sop_new(c, r->id, kind);
    if (sop == NULL) {
        session_abort(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    if (full) {
        snprintf(err, sizeof err, "session: %d acquires are already waiting; end some first",
                 SESSION_WAIT_MAX);
        sop_fail(sop, BATON_E_NOMEM, err);
        return;
    }
    const char *emsg = err;
    int rc;
    /* Each operation passes validation, then the guard (access, limits),
     * then goes to the engine. */
    if (kind == SOP_ACQUIRE) {
        engine_acquire_req req = {0};
        engine_waiter *w = NULL;
        char owner[CONFIG_TOKEN_NAME_MAX + BATON_OWNER_MAX + 2];
        rc = validate_acquire(&t->limits, r->acquire, &req, err, sizeof err) != 0
                 ? BATON_E_INVALID
                 : guard_acquire(t->guard, &c->who, &req, owner, sizeof owner, &sop->wait_key, err, sizeof err);
        if (rc == 0)
            rc = engine_acquire(t->engine, &req, &session_sink, sop, &w, &emsg);
        sop->w = w;
        sop->lease = req.mode == ENGINE_MODE_LEASE;
    } else if (kind == SOP_RENEW) {
        int64_t ttl;
        rc = validate_renew(&t->limits, r->renew, &ttl, err, sizeof err) != 0
                 ? BATON_E_INVALID
                 : guard_name(&c->who, "key", r->renew->key, err, sizeof err);
        if (rc == 0)
            rc = engine_renew(t->engine, r->renew->key, r->renew->token, ttl, sop_hold_result, sop, &emsg);
    } else {
        rc = validate_release(r->release, err, sizeof err) != 0
                 ? BATON_E_INVALID
                 : guard_name(&c->who, "key", r->release->key, err, sizeof err);
        if (rc == 0)
            rc = engine_release(t->engine, r->release->key, r->release->token, sop_hold_result, sop, &emsg);
    }
    if (rc != 0)
        sop_fail(sop, rc, emsg);
}

static void session_received(tcall *c, int ok)
{
    grpc_byte_buffer *bb = c->recv_buf;
    c->recv_buf = NULL;
    c->recv_armed = 0;
    if (!ok || bb == NULL) {
        c->recv_closed = 1; /* the client closed its side (or the call failed: RECV_CLOSE tells) */
        session_settle(c);
    } else if (call_can_send(c)) {
        char err[ERRBUF];
        ProtobufCMessage *m = pb_decode(bb, c->method->req, c->method->req_name, err, sizeof err);
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

static void session_start(tcall *c, ProtobufCMessage *unused)
{
    if (transport__shutting(c->t))
        call_finish(c, BATON_E_UNAVAILABLE, "server shutting down");
    else
        session_recv_arm(c);
}

/* The engine has shut down. An idle session ends with a cancel, which
 * closes the stream at once; a status would wait for the client to
 * acknowledge it, and an idle libbaton session is not read until its next
 * operation (until the grace ran out). A session answered during shutdown
 * ends with a status instead: a cancel can overtake the answers still
 * unread at the client, which then never sees them. */
static void session_shutdown(tcall *c)
{
    if (!c->shut_owed && c->sending == NULL && c->head == NULL && call_can_send(c))
        session_abort(c, GRPC_STATUS_UNAVAILABLE, "server shutting down");
    else
        call_end_at_shutdown(c);
}

const rpc_method transport__session_rpc = {
    .service = &baton__v1__lock_service__descriptor,
    .name = "Session",
    .client_streams = 1,
    .start = session_start,
    .received = session_received,
    .release = session_end_ops,
    .delivered = session_delivered,
    .shutdown = session_shutdown,
};
