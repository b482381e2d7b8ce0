/* Calls: references, the outbox of a stream and the end of a call. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "metrics.h"
#include "pb_codec.h"

/* The one place where internal errors become gRPC status codes. */
grpc_status_code call_status_of(int err)
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
    case BATON_E_UNAUTHENTICATED: return GRPC_STATUS_UNAUTHENTICATED;
    case BATON_E_DENIED: return GRPC_STATUS_PERMISSION_DENIED;
    case BATON_E_LIMIT: return GRPC_STATUS_RESOURCE_EXHAUSTED;
    case BATON_E_INTERNAL:
    default: return GRPC_STATUS_INTERNAL;
    }
}

/* ---------------------------------------------------------------- calls */

tcall *call_new(baton_transport *t, grpc_call *call, const served_method *method)
{
    tcall *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->t = t;
    c->call = call;
    c->method = method;
    c->refs = 1; /* dispatch reference, dropped by on_request */
    c->next = t->calls;
    if (t->calls)
        t->calls->prev = c;
    t->calls = c;
    t->ncalls++;
    return c;
}

void call_outbox_clear(tcall *c)
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
    call_outbox_clear(c);
    if (c->sending)
        grpc_byte_buffer_destroy(c->sending);
    if (c->recv_buf)
        grpc_byte_buffer_destroy(c->recv_buf);
    free(c->pend_msg);
    map_free(&c->sops);
    guard_call_end(t->guard, &c->who);
    grpc_call_unref(c->call);
    free(c);
    transport__maybe_finish_shutdown(t);
}

void call_unref(tcall *c)
{
    if (--c->refs == 0)
        call_free(c);
}

/* Starts a batch whose completion arrives with `kind`; takes a reference. */
int call_batch(tcall *c, const grpc_op *batch, size_t n, int kind)
{
    grpc_call_error e = grpc_call_start_batch(c->call, batch, n, TAG(c, kind), NULL);
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
void call_send_status(tcall *c, grpc_status_code code, const char *msg, grpc_byte_buffer *bb)
{
    grpc_op batch[3];
    size_t n = 0;
    memset(batch, 0, sizeof batch);
    if (!c->md_sent) {
        batch[n].op = GRPC_OP_SEND_INITIAL_METADATA;
        n++;
        c->md_sent = 1;
    }
    if (bb) {
        batch[n].op = GRPC_OP_SEND_MESSAGE;
        batch[n].data.send_message.send_message = bb;
        n++;
    }
    /* The details slice is not retained past start_batch (grpc_types.h). */
    grpc_slice details = grpc_slice_from_copied_string(msg ? msg : "");
    metrics_request(c->method->req ? c->method->path : NULL, (int)code);
    batch[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    batch[n].data.send_status_from_server.status = code;
    batch[n].data.send_status_from_server.status_details = msg ? &details : NULL;
    n++;
    c->phase = CALL_STATUS;
    c->sending = bb;
    if (call_batch(c, batch, n, TAG_STATUS) != 0) {
        c->sending = NULL;
        if (bb)
            grpc_byte_buffer_destroy(bb);
        grpc_call_cancel(c->call, NULL);
    }
    grpc_slice_unref(details);
}

/* Ends the call with `err` (a baton_err) once every queued message has been
 * sent. Does nothing if the call already ends or the client is gone. */
void call_finish(tcall *c, int err, const char *msg)
{
    if (!call_can_send(c))
        return;
    if (c->sending == NULL && c->head == NULL) {
        call_send_status(c, call_status_of(err), msg, NULL);
        return;
    }
    c->phase = CALL_ENDING;
    c->pend_err = err;
    c->pend_msg = msg ? strdup(msg) : NULL;
}

/* Starts the next SEND_MESSAGE if none is in flight. */
static void call_kick(tcall *c)
{
    /* An ENDING call still drains its outbox before its status. */
    if (c->sending || c->head == NULL || (c->phase != CALL_OPEN && c->phase != CALL_ENDING))
        return;
    outmsg *m = c->head;
    c->head = m->next;
    if (c->head == NULL)
        c->tail = NULL;
    c->nout--;
    grpc_op batch[2];
    size_t n = 0;
    memset(batch, 0, sizeof batch);
    if (!c->md_sent) {
        batch[n].op = GRPC_OP_SEND_INITIAL_METADATA;
        n++;
        c->md_sent = 1;
    }
    batch[n].op = GRPC_OP_SEND_MESSAGE;
    batch[n].data.send_message.send_message = m->bb;
    n++;
    c->sending = m->bb;
    c->sending_sop = m->deliver ? m->sop : NULL;
    free(m);
    if (call_batch(c, batch, n, TAG_SEND) != 0) {
        grpc_byte_buffer_destroy(c->sending);
        c->sending = NULL;
        c->sending_sop = NULL;           /* still in c->sops: the end of the call releases it */
        grpc_call_cancel(c->call, NULL); /* RECV_CLOSE then reports the end */
    }
}

/* Queues one stream message. `queued` marks an AcquireEvent{queued} that a
 * later one (of the same Session operation `sop`) may replace while both wait
 * in the outbox: only the newest position matters. `deliver`: a Session's
 * LEASE Granted for `sop` (see call_on_send_done). Nothing is queued once the call
 * is over; on OOM the call is cancelled (its end then releases the engine's
 * side). */
void call_push_sop(tcall *c, const ProtobufCMessage *msg, int queued, session_op *sop, int deliver)
{
    if (!call_can_send(c))
        return;
    grpc_byte_buffer *bb = pb_encode(msg);
    if (queued && c->tail && c->tail->queued && c->tail->sop == sop) {
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
    m->sop = sop;
    m->deliver = deliver;
    if (c->tail)
        c->tail->next = m;
    else
        c->head = m;
    c->tail = m;
    c->nout++;
    call_kick(c);
}

void call_push(tcall *c, const ProtobufCMessage *msg, int queued)
{
    call_push_sop(c, msg, queued, NULL, 0);
}

/* The client is gone (cancel, deadline, broken connection, failed write). */
static void call_gone(tcall *c)
{
    if (c->phase != CALL_GONE) {
        c->phase = CALL_GONE;
        call_outbox_clear(c);
        free(c->pend_msg);
        c->pend_msg = NULL;
    }
    if (c->method->rpc->release)
        c->method->rpc->release(c);
}

void call_on_close(tcall *c, int ok)
{
    /* RECV_CLOSE completes when the stream is closed both ways: after our
     * status, or because the client went away. Either way nothing more may be
     * sent and the engine must let go. */
    int clean = ok && !c->cancelled && c->phase == CALL_STATUS;
    if (c->method->rpc->closed)
        c->method->rpc->closed(c, clean);
    if (!clean)
        LOG_DEBUG("transport: call %p closed by the client (cancelled=%d)", (void *)c, c->cancelled);
    call_gone(c);
    call_unref(c);
}

void call_on_send_done(tcall *c, int ok)
{
    grpc_byte_buffer_destroy(c->sending);
    c->sending = NULL;
    session_op *delivered = c->sending_sop;
    c->sending_sop = NULL;
    if (ok && delivered)
        c->method->rpc->delivered(c, delivered);
    if (!ok) {
        call_gone(c); /* a failed write: the peer is gone */
    } else if (c->head) {
        call_kick(c);
    } else if (c->phase == CALL_ENDING) {
        call_send_status(c, call_status_of(c->pend_err), c->pend_msg, NULL);
        free(c->pend_msg);
        c->pend_msg = NULL;
    } else if (c->method->rpc->drained) {
        c->method->rpc->drained(c);
    }
    call_unref(c);
}

void call_on_status_done(tcall *c, int ok)
{
    if (c->sending) {
        grpc_byte_buffer_destroy(c->sending);
        c->sending = NULL;
    }
    call_unref(c);
}

void call_reply(tcall *c, const ProtobufCMessage *resp)
{
    if (!call_can_send(c))
        return;
    call_send_status(c, GRPC_STATUS_OK, NULL, pb_encode(resp));
}

/* What shutdown does to a call whose method has no `shutdown` hook: end it
 * UNAVAILABLE, unless the engine still calls back (and ends it then). */
void call_end_at_shutdown(tcall *c)
{
    if (!c->engine_ref)
        call_finish(c, BATON_E_UNAVAILABLE, "server shutting down");
}
