/*
 * grpc_c.c - blocking gRPC client runtime over the gRPC C core (see grpc_c.h).
 *
 * Every call owns a pluck completion queue. Each operation kind uses one fixed
 * tag, so at most one batch per kind is outstanding (gRPC's rule) and a
 * blocking operation plucks exactly the tag it started. A read that timed out
 * stays armed (read_pending) and is plucked again by the next read.
 */
#include "grpc_c.h"
#include "pb_codec.h"

#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

/* Fixed tags; one outstanding batch per tag (see file comment). */
#define TAG_SEND ((void *)1)   /* start, write, close_send */
#define TAG_READ ((void *)2)   /* recv message (+ initial metadata) */
#define TAG_STATUS ((void *)3) /* recv status (+ response for client-streaming) */

struct grpc_c_call {
    const grpc_c_method *method;
    grpc_call *call;
    grpc_completion_queue *cq;
    grpc_metadata_array initial_md; /* received; kept until destroy */
    grpc_byte_buffer *recv_buf;     /* target of the armed read */
    int read_pending;               /* a TAG_READ batch is outstanding */
    int initial_md_armed;           /* RECV_INITIAL_METADATA was started */
    int send_closed;
    int read_ended;
    int finished;
    int final_code;
    char *final_msg;
};

static const char *const code_names[] = {
    "OK",        "CANCELLED",      "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
    "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED",   "OUT_OF_RANGE",   "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
    "DATA_LOSS", "UNAUTHENTICATED"};

const char *grpc_c_code_name(int code)
{
    if (code < 0 || code >= (int)(sizeof code_names / sizeof code_names[0]))
        return "?";
    return code_names[code];
}

const char *grpc_c_result_str(int result)
{
    switch (result) {
    case GRPC_C_OK: return "ok";
    case GRPC_C_END: return "end of stream";
    case GRPC_C_TIMEOUT: return "timed out (call still alive)";
    case GRPC_C_ERR_CALL: return "call is over";
    case GRPC_C_ERR_NOMEM: return "out of memory";
    case GRPC_C_ERR_DECODE: return "cannot decode message";
    case GRPC_C_ERR_STATE: return "operation not allowed in this call state";
    case GRPC_C_ERR_INVALID: return "invalid argument";
    default: return "?";
    }
}

void grpc_c_status_clear(grpc_c_status *status)
{
    if (!status)
        return;
    free(status->message);
    status->message = NULL;
    status->code = GRPC_C_CODE_OK;
}

/* Fills `status` (if any) with a copy of msg (len bytes); returns code. On
 * OOM the message stays NULL (documented in grpc_c.h). */
static int set_status(grpc_c_status *status, int code, const char *msg, size_t len)
{
    if (!status)
        return code;
    grpc_c_status_clear(status);
    status->code = code;
    status->message = malloc(len + 1);
    if (status->message) {
        if (len)
            memcpy(status->message, msg, len);
        status->message[len] = '\0';
    }
    return code;
}

static int set_status_str(grpc_c_status *status, int code, const char *msg)
{
    return set_status(status, code, msg, strlen(msg));
}

/* ---- channels ---------------------------------------------------------- */

void grpc_c_init(void)
{
    grpc_init();
}
void grpc_c_shutdown(void)
{
    grpc_shutdown();
}

/* A channel with plain text (tls NULL) or TLS. */
static grpc_channel *channel_create(const char *target, const grpc_c_channel_options *opts,
                                    const grpc_c_tls_options *tls)
{
    if (!target)
        return NULL;
    grpc_arg args[8];
    size_t n = 0;
    if (opts && opts->keepalive_time_ms > 0) {
        args[n].type = GRPC_ARG_INTEGER;
        args[n].key = GRPC_ARG_KEEPALIVE_TIME_MS;
        args[n++].value.integer =
            opts->keepalive_time_ms > INT32_MAX ? INT32_MAX : (int)opts->keepalive_time_ms;
        /* gRPC stops pinging after 2 pings without data by default, which
         * would leave a quiet stream (a held lock) unwatched. */
        args[n].type = GRPC_ARG_INTEGER;
        args[n].key = GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA;
        args[n++].value.integer = 0;
    }
    if (opts && opts->keepalive_timeout_ms > 0) {
        args[n].type = GRPC_ARG_INTEGER;
        args[n].key = GRPC_ARG_KEEPALIVE_TIMEOUT_MS;
        args[n++].value.integer =
            opts->keepalive_timeout_ms > INT32_MAX ? INT32_MAX : (int)opts->keepalive_timeout_ms;
    }
    if (opts && opts->keepalive_permit_without_calls) {
        args[n].type = GRPC_ARG_INTEGER;
        args[n].key = GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS;
        args[n++].value.integer = 1;
    }
    if (opts && opts->max_receive_message_bytes != 0) {
        args[n].type = GRPC_ARG_INTEGER;
        args[n].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
        args[n++].value.integer = opts->max_receive_message_bytes;
    }
    if (opts && opts->initial_reconnect_backoff_ms > 0) {
        args[n].type = GRPC_ARG_INTEGER;
        args[n].key = GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS;
        args[n++].value.integer = opts->initial_reconnect_backoff_ms;
    }
    if (opts && opts->max_reconnect_backoff_ms > 0) {
        args[n].type = GRPC_ARG_INTEGER;
        args[n].key = GRPC_ARG_MAX_RECONNECT_BACKOFF_MS;
        args[n++].value.integer = opts->max_reconnect_backoff_ms;
    }
    if (tls && tls->server_name && tls->server_name[0]) {
        args[n].type = GRPC_ARG_STRING;
        args[n].key = GRPC_SSL_TARGET_NAME_OVERRIDE_ARG;
        args[n++].value.string = (char *)tls->server_name;
    }
    grpc_channel_args cargs = {n, args};

    grpc_init();
    grpc_ssl_pem_key_cert_pair pair = {.private_key = tls ? tls->key_pem : NULL,
                                       .cert_chain = tls ? tls->cert_pem : NULL};
    grpc_channel_credentials *creds =
        tls ? grpc_ssl_credentials_create(tls->root_pem, tls->key_pem && tls->cert_pem ? &pair : NULL, NULL, NULL)
            : grpc_insecure_credentials_create();
    grpc_channel *ch = creds ? grpc_channel_create(target, creds, n ? &cargs : NULL) : NULL;
    if (creds)
        grpc_channel_credentials_release(creds);
    if (!ch)
        grpc_shutdown();
    return ch;
}

grpc_channel *grpc_c_channel_create_insecure(const char *target, const grpc_c_channel_options *opts)
{
    return channel_create(target, opts, NULL);
}

grpc_channel *grpc_c_channel_create_tls(const char *target, const grpc_c_tls_options *tls,
                                        const grpc_c_channel_options *opts)
{
    return tls ? channel_create(target, opts, tls) : NULL;
}

void grpc_c_channel_destroy(grpc_channel *channel)
{
    if (!channel)
        return;
    grpc_channel_destroy(channel);
    grpc_shutdown();
}

/* ---- helpers ----------------------------------------------------------- */

static gpr_timespec deadline_of(const grpc_c_call_options *opts)
{
    gpr_timespec d = gpr_inf_future(GPR_CLOCK_MONOTONIC);
    if (!opts)
        return d;
    if (opts->timeout_ms > 0)
        d = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(opts->timeout_ms, GPR_TIMESPAN));
    if (opts->deadline_unix_ms > 0) {
        gpr_timespec abs_rt = gpr_time_from_millis(opts->deadline_unix_ms, GPR_CLOCK_REALTIME);
        d = gpr_time_min(d, gpr_convert_clock_type(abs_rt, GPR_CLOCK_MONOTONIC));
    }
    return d;
}

static gpr_timespec after_ms(int64_t ms)
{
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(ms, GPR_TIMESPAN));
}

/* Request metadata copied into slices; released by md_out_free after the
 * SEND_INITIAL_METADATA batch completed. Returns -1 on OOM. */
static int md_out_make(const grpc_c_call_options *opts, grpc_metadata **out, size_t *count)
{
    *out = NULL;
    *count = 0;
    if (!opts || !opts->metadata_count)
        return 0;
    grpc_metadata *md = calloc(opts->metadata_count, sizeof *md);
    if (!md)
        return -1;
    for (size_t i = 0; i < opts->metadata_count; i++) {
        const grpc_c_metadata *m = &opts->metadata[i];
        size_t vlen = m->value_len ? m->value_len : (m->value ? strlen(m->value) : 0);
        md[i].key = grpc_slice_from_copied_string(m->key ? m->key : "");
        md[i].value = grpc_slice_from_copied_buffer(m->value ? m->value : "", vlen);
    }
    *out = md;
    *count = opts->metadata_count;
    return 0;
}

static void md_out_free(grpc_metadata *md, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        grpc_slice_unref(md[i].key);
        grpc_slice_unref(md[i].value);
    }
    free(md);
}

static uint32_t initial_md_flags(const grpc_c_call_options *opts)
{
    if (opts && opts->wait_for_ready)
        return GRPC_INITIAL_METADATA_WAIT_FOR_READY | GRPC_INITIAL_METADATA_WAIT_FOR_READY_EXPLICITLY_SET;
    return 0;
}

/* Parses and destroys bb. Returns the new message (caller frees) or NULL. */
static ProtobufCMessage *unpack(const ProtobufCMessageDescriptor *desc, grpc_byte_buffer *bb)
{
    char err[200];
    ProtobufCMessage *m = pb_decode(bb, desc, desc->name, err, sizeof err);
    grpc_byte_buffer_destroy(bb);
    return m;
}

static int valid_method(const grpc_c_method *m)
{
    return m && m->path && m->input && m->output;
}

/* Runs a batch and blocks until it completes; returns its success flag.
 * timeout_ms > 0: after that long the call is cancelled with
 * DEADLINE_EXCEEDED, which fails a batch still waiting for a connection, and
 * the batch is plucked once it has ended. Otherwise blocking forever is
 * bounded by the call's deadline or a cancel. */
static int run_batch_within(grpc_c_call *c, const grpc_op *ops, size_t n, void *tag, int64_t timeout_ms)
{
    if (grpc_call_start_batch(c->call, ops, n, tag, NULL) != GRPC_CALL_OK)
        return 0;
    gpr_timespec forever = gpr_inf_future(GPR_CLOCK_MONOTONIC);
    grpc_event ev = grpc_completion_queue_pluck(c->cq, tag, timeout_ms > 0 ? after_ms(timeout_ms) : forever, NULL);
    if (ev.type == GRPC_QUEUE_TIMEOUT) {
        grpc_call_cancel_with_status(c->call, GRPC_STATUS_DEADLINE_EXCEEDED,
                                     "grpc_c: the call could not start in time", NULL);
        ev = grpc_completion_queue_pluck(c->cq, tag, forever, NULL);
    }
    return ev.type == GRPC_OP_COMPLETE && ev.success;
}

static int run_batch(grpc_c_call *c, const grpc_op *ops, size_t n, void *tag)
{
    return run_batch_within(c, ops, n, tag, 0);
}

/* Creates the core call and its queue; NULL on failure. */
static grpc_c_call *call_new(grpc_channel *channel, const grpc_c_method *method,
                             const grpc_c_call_options *opts)
{
    grpc_c_call *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->method = method;
    grpc_metadata_array_init(&c->initial_md);
    c->cq = grpc_completion_queue_create_for_pluck(NULL);
    if (!c->cq)
        goto fail;
    c->call =
        grpc_channel_create_call(channel, NULL, GRPC_PROPAGATE_DEFAULTS, c->cq,
                                 grpc_slice_from_static_string(method->path), NULL, deadline_of(opts), NULL);
    if (!c->call)
        goto fail;
    return c;
fail:
    if (c->cq)
        grpc_completion_queue_destroy(c->cq);
    grpc_metadata_array_destroy(&c->initial_md);
    free(c);
    return NULL;
}

/* Frees a call with no outstanding batch. */
static void call_free(grpc_c_call *c)
{
    grpc_call_unref(c->call);
    grpc_completion_queue_shutdown(c->cq);
    /* A pluck queue with nothing pending reports SHUTDOWN at once. */
    (void)grpc_completion_queue_pluck(c->cq, NULL, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    grpc_completion_queue_destroy(c->cq);
    grpc_metadata_array_destroy(&c->initial_md);
    free(c->final_msg);
    free(c);
}

/* Status batch: receive the final status (and for client-streaming the
 * response). Stores code/message in c; returns the response buffer, if any. */
static grpc_byte_buffer *recv_status(grpc_c_call *c, int want_response)
{
    grpc_op ops[3];
    size_t n = 0;
    grpc_metadata_array trailing;
    grpc_metadata_array_init(&trailing);
    grpc_status_code code = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    const char *error_string = NULL;
    grpc_byte_buffer *resp = NULL;

    memset(ops, 0, sizeof ops);
    if (!c->initial_md_armed) {
        ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
        ops[n++].data.recv_initial_metadata.recv_initial_metadata = &c->initial_md;
        c->initial_md_armed = 1;
    }
    if (want_response) {
        ops[n].op = GRPC_OP_RECV_MESSAGE;
        ops[n++].data.recv_message.recv_message = &resp;
    }
    ops[n].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[n].data.recv_status_on_client.trailing_metadata = &trailing;
    ops[n].data.recv_status_on_client.status = &code;
    ops[n].data.recv_status_on_client.status_details = &details;
    ops[n++].data.recv_status_on_client.error_string = &error_string;

    if (grpc_call_start_batch(c->call, ops, n, TAG_STATUS, NULL) == GRPC_CALL_OK) {
        grpc_completion_queue_pluck(c->cq, TAG_STATUS, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    } else {
        code = GRPC_STATUS_INTERNAL;
        details = grpc_slice_from_static_string("grpc_c: cannot start status batch");
    }
    c->finished = 1;
    c->final_code = (int)code;
    size_t len = GRPC_SLICE_LENGTH(details);
    c->final_msg = malloc(len + 1);
    if (c->final_msg) {
        if (len)
            memcpy(c->final_msg, GRPC_SLICE_START_PTR(details), len);
        c->final_msg[len] = '\0';
    }
    grpc_slice_unref(details);
    gpr_free((void *)error_string);
    grpc_metadata_array_destroy(&trailing);
    return resp;
}

/* ---- unary --------------------------------------------------------------- */

int grpc_c_unary(grpc_channel *channel, const grpc_c_method *method, const ProtobufCMessage *request,
                 ProtobufCMessage **response, grpc_c_status *status, const grpc_c_call_options *opts)
{
    if (response)
        *response = NULL;
    if (!channel || !valid_method(method) || !request || !response || method->kind != GRPC_C_KIND_UNARY ||
        request->descriptor != method->input)
        return set_status_str(status, GRPC_C_CODE_INVALID_ARGUMENT, "grpc_c: invalid argument to unary call");

    grpc_metadata *md;
    size_t md_count;
    if (md_out_make(opts, &md, &md_count) != 0)
        return set_status_str(status, GRPC_C_CODE_RESOURCE_EXHAUSTED, "grpc_c: out of memory");
    grpc_c_call *c = call_new(channel, method, opts);
    if (!c) {
        md_out_free(md, md_count);
        return set_status_str(status, GRPC_C_CODE_RESOURCE_EXHAUSTED, "grpc_c: cannot create call");
    }

    grpc_byte_buffer *req = pb_encode(request);
    grpc_op ops[3];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].flags = initial_md_flags(opts);
    ops[0].data.send_initial_metadata.count = md_count;
    ops[0].data.send_initial_metadata.metadata = md;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = req;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    /* Both batches are started before waiting, so the whole exchange needs a
     * single round trip; the send result does not matter, the status tells. */
    int started = grpc_call_start_batch(c->call, ops, 3, TAG_SEND, NULL) == GRPC_CALL_OK;
    c->send_closed = 1;
    grpc_byte_buffer *resp = recv_status(c, 1);
    if (started)
        grpc_completion_queue_pluck(c->cq, TAG_SEND, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    grpc_byte_buffer_destroy(req);
    md_out_free(md, md_count);

    int code = c->final_code;
    if (code == GRPC_C_CODE_OK) {
        if (!resp) {
            code = set_status_str(status, GRPC_C_CODE_INTERNAL, "grpc_c: no response message");
        } else {
            *response = unpack(method->output, resp);
            resp = NULL;
            code = *response ? set_status_str(status, GRPC_C_CODE_OK, "")
                             : set_status_str(status, GRPC_C_CODE_INTERNAL, "grpc_c: cannot decode response");
        }
    } else {
        set_status_str(status, code, c->final_msg ? c->final_msg : "");
    }
    if (resp)
        grpc_byte_buffer_destroy(resp);
    call_free(c);
    return code;
}

/* ---- streaming ------------------------------------------------------------ */

grpc_c_call *grpc_c_call_start(grpc_channel *channel, const grpc_c_method *method,
                               const ProtobufCMessage *request, const grpc_c_call_options *opts)
{
    if (!channel || !valid_method(method) || method->kind == GRPC_C_KIND_UNARY)
        return NULL;
    int server_streaming = method->kind == GRPC_C_KIND_SERVER_STREAMING;
    if (server_streaming ? (!request || request->descriptor != method->input) : request != NULL)
        return NULL;

    grpc_metadata *md;
    size_t md_count;
    if (md_out_make(opts, &md, &md_count) != 0)
        return NULL;
    grpc_c_call *c = call_new(channel, method, opts);
    if (!c) {
        md_out_free(md, md_count);
        return NULL;
    }
    grpc_byte_buffer *req = server_streaming ? pb_encode(request) : NULL;
    grpc_op ops[3];
    size_t n = 0;
    memset(ops, 0, sizeof ops);
    ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[n].flags = initial_md_flags(opts);
    ops[n].data.send_initial_metadata.count = md_count;
    ops[n++].data.send_initial_metadata.metadata = md;
    if (req) {
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = req;
        ops[n++].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
        c->send_closed = 1;
    }
    /* A failed start is not an error here: the call is over and finish will
     * report why (UNAVAILABLE, DEADLINE_EXCEEDED, ...). */
    (void)run_batch_within(c, ops, n, TAG_SEND, opts ? opts->start_timeout_ms : 0);
    if (req)
        grpc_byte_buffer_destroy(req);
    md_out_free(md, md_count);
    return c;
}

const grpc_c_method *grpc_c_call_method(const grpc_c_call *call)
{
    return call ? call->method : NULL;
}

static int can_write(const grpc_c_call *c)
{
    return c->method->kind == GRPC_C_KIND_CLIENT_STREAMING || c->method->kind == GRPC_C_KIND_BIDI_STREAMING;
}

static int can_read(const grpc_c_call *c)
{
    return c->method->kind == GRPC_C_KIND_SERVER_STREAMING || c->method->kind == GRPC_C_KIND_BIDI_STREAMING;
}

int grpc_c_call_write(grpc_c_call *c, const ProtobufCMessage *msg)
{
    if (!c || !msg || msg->descriptor != c->method->input)
        return GRPC_C_ERR_INVALID;
    if (!can_write(c) || c->send_closed || c->finished)
        return GRPC_C_ERR_STATE;
    grpc_byte_buffer *bb = pb_encode(msg);
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_SEND_MESSAGE;
    op.data.send_message.send_message = bb;
    int ok = run_batch(c, &op, 1, TAG_SEND);
    grpc_byte_buffer_destroy(bb);
    return ok ? GRPC_C_OK : GRPC_C_ERR_CALL;
}

int grpc_c_call_close_send(grpc_c_call *c)
{
    if (!c)
        return GRPC_C_ERR_INVALID;
    if (!can_write(c) || c->finished)
        return c && c->send_closed ? GRPC_C_OK : GRPC_C_ERR_STATE;
    if (c->send_closed)
        return GRPC_C_OK;
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    c->send_closed = 1;
    return run_batch(c, &op, 1, TAG_SEND) ? GRPC_C_OK : GRPC_C_ERR_CALL;
}

/* Arms a read (if none is armed) and waits for it until `deadline`. */
static int read_until(grpc_c_call *c, ProtobufCMessage **msg, gpr_timespec deadline)
{
    if (msg)
        *msg = NULL;
    if (!c || !msg)
        return GRPC_C_ERR_INVALID;
    if (!can_read(c) || c->finished)
        return GRPC_C_ERR_STATE;
    if (c->read_ended)
        return GRPC_C_END;
    if (!c->read_pending) {
        grpc_op ops[2];
        size_t n = 0;
        memset(ops, 0, sizeof ops);
        if (!c->initial_md_armed) {
            ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
            ops[n++].data.recv_initial_metadata.recv_initial_metadata = &c->initial_md;
            c->initial_md_armed = 1;
        }
        ops[n].op = GRPC_OP_RECV_MESSAGE;
        ops[n++].data.recv_message.recv_message = &c->recv_buf;
        c->recv_buf = NULL;
        if (grpc_call_start_batch(c->call, ops, n, TAG_READ, NULL) != GRPC_CALL_OK) {
            c->read_ended = 1;
            return GRPC_C_END;
        }
        c->read_pending = 1;
    }
    grpc_event ev = grpc_completion_queue_pluck(c->cq, TAG_READ, deadline, NULL);
    if (ev.type == GRPC_QUEUE_TIMEOUT)
        return GRPC_C_TIMEOUT;
    c->read_pending = 0;
    grpc_byte_buffer *bb = c->recv_buf;
    c->recv_buf = NULL;
    if (ev.type != GRPC_OP_COMPLETE || !ev.success || !bb) {
        if (bb)
            grpc_byte_buffer_destroy(bb);
        c->read_ended = 1;
        return GRPC_C_END;
    }
    *msg = unpack(c->method->output, bb);
    if (!*msg) {
        /* Why cancel: the stream is unusable and the server should stop; finish
         * then reports this INTERNAL status instead of a bare CANCELLED. */
        grpc_call_cancel_with_status(c->call, GRPC_STATUS_INTERNAL, "grpc_c: cannot decode message", NULL);
        c->read_ended = 1;
        return GRPC_C_ERR_DECODE;
    }
    return GRPC_C_OK;
}

int grpc_c_call_read(grpc_c_call *c, ProtobufCMessage **msg)
{
    return read_until(c, msg, gpr_inf_future(GPR_CLOCK_MONOTONIC));
}

int grpc_c_call_read_timeout(grpc_c_call *c, ProtobufCMessage **msg, int64_t timeout_ms)
{
    /* 0 = only what has already arrived. A deadline of "now" would not do:
     * gRPC rounds the time left up to a whole millisecond and sleeps it. */
    return read_until(c, msg, timeout_ms <= 0 ? gpr_inf_past(GPR_CLOCK_MONOTONIC) : after_ms(timeout_ms));
}

void grpc_c_call_cancel(grpc_c_call *c)
{
    if (c)
        grpc_call_cancel(c->call, NULL);
}

int grpc_c_call_finish(grpc_c_call *c, ProtobufCMessage **response, grpc_c_status *status)
{
    if (response)
        *response = NULL;
    if (!c)
        return set_status_str(status, GRPC_C_CODE_INVALID_ARGUMENT, "grpc_c: invalid argument to finish");
    int client_streaming = c->method->kind == GRPC_C_KIND_CLIENT_STREAMING;
    if (c->finished)
        return set_status_str(status, c->final_code, c->final_msg ? c->final_msg : "");
    if (can_write(c) && !c->send_closed)
        (void)grpc_c_call_close_send(c);
    /* Drain unread messages: the server cannot send its status while HTTP/2
     * flow control holds back messages nobody reads. */
    while (can_read(c) && !c->read_ended) {
        ProtobufCMessage *m = NULL;
        if (grpc_c_call_read(c, &m) != GRPC_C_OK)
            break;
        protobuf_c_message_free_unpacked(m, NULL);
    }
    grpc_byte_buffer *resp = recv_status(c, client_streaming);
    int code = c->final_code;
    if (client_streaming && code == GRPC_C_CODE_OK) {
        ProtobufCMessage *m = resp ? unpack(c->method->output, resp) : NULL;
        resp = NULL;
        if (!m) {
            /* Remember the local failure so a second finish says the same. */
            c->final_code = GRPC_C_CODE_INTERNAL;
            free(c->final_msg);
            c->final_msg = strdup("grpc_c: missing or undecodable response");
        } else if (response) {
            *response = m;
        } else {
            protobuf_c_message_free_unpacked(m, NULL);
        }
    }
    if (resp)
        grpc_byte_buffer_destroy(resp);
    return set_status_str(status, c->final_code, c->final_msg ? c->final_msg : "");
}

void grpc_c_call_destroy(grpc_c_call *c)
{
    if (!c)
        return;
    if (!c->finished || c->read_pending)
        grpc_call_cancel(c->call, NULL);
    if (c->read_pending) {
        /* The cancel completes the armed read promptly. */
        grpc_completion_queue_pluck(c->cq, TAG_READ, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        c->read_pending = 0;
    }
    if (c->recv_buf)
        grpc_byte_buffer_destroy(c->recv_buf);
    call_free(c);
}
