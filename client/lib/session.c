/*
 * session.c - operations over pooled Session streams.
 *
 * A Session carries many operations over one open gRPC stream, so an
 * operation costs one message each way instead of a new call (on a 2-vCPU
 * VM: 122 us instead of 177 us, and about half the client CPU). The client
 * keeps idle sessions in a pool; an operation takes one, runs on it alone
 * (writes its request, reads until its final response) and gives it back.
 * So a session never has more than one operation in flight and a blocked
 * caller is woken by its own read, with no dispatcher thread in between.
 *
 * An idle session keeps a read armed. When it is taken, a look at its
 * completion queue (without waiting or polling) tells whether the end of
 * the stream has already been seen (batond restarted or shut down); such a
 * session is dropped. If the request cannot even be written, the
 * stream was already dead, so the server never saw the request and the
 * operation runs again once, on a new session. A server without the
 * Session RPC (UNIMPLEMENTED) turns sessions off for the client: callers
 * then use one RPC per operation.
 *
 * A new session is opened only on a connected channel. Opening one waits
 * for its initial metadata to go out, which on a channel still connecting
 * takes up to gRPC's 20 s connect timeout (the start gives up after the
 * call timeout); the per-call RPC, with its deadline, runs that one
 * operation instead and brings the channel up.
 */
#include <stdlib.h>
#include <string.h>

#include <grpc/grpc.h>

#include "internal.h"

/* Idle sessions kept per client; more are closed when given back. */
#define SESSION_IDLE_MAX 32

struct baton__session {
    baton__session *next;
    grpc_c_call *call;
    uint64_t next_id;
};

static void session_drop(baton__session *s)
{
    grpc_c_call_destroy(s->call); /* cancels it: the server ends what it holds */
    free(s);
}

/* Takes an idle session that is still open, or opens a new one (*reused
 * says which). NULL with *not_ready set if the channel is not connected, or
 * NULL if no call could be started. */
static baton__session *session_take(baton_client *c, int *reused, int *not_ready)
{
    for (;;) {
        pthread_mutex_lock(&c->sessions.mu);
        baton__session *s = c->sessions.idle;
        if (s) {
            c->sessions.idle = s->next;
            c->sessions.nidle--;
        }
        pthread_mutex_unlock(&c->sessions.mu);
        if (s == NULL)
            break;
        ProtobufCMessage *m = NULL;
        if (grpc_c_call_read_timeout(s->call, &m, 0) == GRPC_C_TIMEOUT) {
            *reused = 1;
            return s;
        }
        if (m) /* nothing is owed to an idle session */
            protobuf_c_message_free_unpacked(m, NULL);
        session_drop(s);
    }
    if (!baton__channel_ready(c)) {
        *not_ready = 1;
        return NULL;
    }
    baton__session *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    grpc_c_call_options so = baton__stream_opts(c);
    s->call = baton__v1__lock_service__grpc__session_start(c->channel, &so);
    if (s->call == NULL) {
        free(s);
        return NULL;
    }
    *reused = 0;
    return s;
}

static void session_give(baton_client *c, baton__session *s)
{
    baton__sessions *p = &c->sessions;
    pthread_mutex_lock(&p->mu);
    int keep = p->nidle < SESSION_IDLE_MAX;
    if (keep) {
        s->next = p->idle;
        p->idle = s;
        p->nidle++;
    }
    pthread_mutex_unlock(&p->mu);
    if (!keep)
        session_drop(s);
}

void baton__sessions_init(baton_client *c, int off)
{
    pthread_mutex_init(&c->sessions.mu, NULL);
    c->sessions.off = off != 0;
}

int baton__sessions_off(const baton_client *c)
{
    return c->sessions.off;
}

void baton__sessions_disable(baton_client *c)
{
    c->sessions.off = 1;
}

void baton__sessions_free(baton_client *c)
{
    baton__sessions *p = &c->sessions;
    while (p->idle) {
        baton__session *s = p->idle;
        p->idle = s->next;
        session_drop(s);
    }
    p->nidle = 0;
    pthread_mutex_destroy(&p->mu);
}

enum { RUN_DONE, RUN_UNSENT, RUN_BROKEN, RUN_TIMEOUT };

/* Writes req and reads until its final response (*resp) or the end of the
 * stream. Queued positions go to on_queued. */
static int session_run(baton__session *s, Baton__V1__SessionRequest *req, int64_t timeout_ms,
                       void (*on_queued)(int64_t, void *), void *queued_ud, Baton__V1__SessionResponse **resp)
{
    req->id = ++s->next_id;
    if (baton__v1__lock_service__grpc__session_write(s->call, req) != GRPC_C_OK)
        return RUN_UNSENT;
    int64_t limit = timeout_ms >= 0 ? clock_add_ms(clock_mono_ms(), timeout_ms) : -1;
    for (;;) {
        Baton__V1__SessionResponse *r = NULL;
        int64_t wait = limit < 0 ? 3600000 : limit - clock_mono_ms();
        int rc = baton__v1__lock_service__grpc__session_read_timeout(s->call, &r, wait < 0 ? 0 : wait);
        if (rc == GRPC_C_TIMEOUT) {
            if (limit >= 0 && clock_mono_ms() >= limit)
                return RUN_TIMEOUT;
            continue;
        }
        if (rc != GRPC_C_OK)
            return RUN_BROKEN;
        if (r->id == req->id && r->result_case == BATON__V1__SESSION_RESPONSE__RESULT_QUEUED) {
            if (on_queued && r->queued)
                on_queued(r->queued->position, queued_ud);
        } else if (r->id == req->id && r->result_case != BATON__V1__SESSION_RESPONSE__RESULT__NOT_SET) {
            *resp = r;
            return RUN_DONE;
        }
        baton__v1__session_response__free_unpacked(r, NULL);
    }
}

int baton__session_status(const Baton__V1__SessionStatus *s, enum baton__phase phase, const char *what)
{
    if (s->code == GRPC_C_CODE_OK)
        return baton__fail(BATON_ERR_INTERNAL, "%s: the operation ended without a result", what);
    grpc_c_status st = {s->code, s->message};
    return baton__fail_status(&st, phase, what);
}

int baton__session_call(baton_client *c, Baton__V1__SessionRequest *req, int64_t timeout_ms,
                        void (*on_queued)(int64_t, void *), void *queued_ud, enum baton__phase phase,
                        const char *what, Baton__V1__SessionResponse **resp)
{
    *resp = NULL;
    for (int attempt = 0;; attempt++) {
        if (baton__sessions_off(c))
            return BATON__SESSIONS_OFF;
        int reused = 0, not_ready = 0;
        baton__session *s = session_take(c, &reused, &not_ready);
        if (s == NULL && not_ready)
            return BATON__SESSIONS_OFF; /* this operation only */
        if (s == NULL)
            return baton__fail(BATON_ERR_NOMEM, "%s: cannot start a session", what);
        int run = session_run(s, req, timeout_ms, on_queued, queued_ud, resp);
        if (run == RUN_DONE) {
            session_give(c, s);
            Baton__V1__SessionResponse *r = *resp;
            if (r->result_case != BATON__V1__SESSION_RESPONSE__RESULT_STATUS)
                return 0;
            int err = baton__session_status(r->status, phase, what);
            baton__v1__session_response__free_unpacked(r, NULL);
            *resp = NULL;
            return err;
        }
        if (run == RUN_TIMEOUT) {
            session_drop(s);
            return baton__fail(BATON_ERR_TIMEOUT, "%s: no answer from the server within %lld ms", what,
                               (long long)timeout_ms);
        }
        if (run == RUN_UNSENT && reused && attempt == 0) {
            session_drop(s); /* it had died while idle: the server never saw the request */
            continue;
        }
        grpc_c_status st = GRPC_C_STATUS_INIT;
        grpc_c_call_finish(s->call, NULL, &st);
        session_drop(s);
        if (st.code == GRPC_C_CODE_UNIMPLEMENTED) {
            baton__sessions_disable(c); /* an older batond: the operation never ran */
            grpc_c_status_clear(&st);
            continue;
        }
        int err = st.code == GRPC_C_CODE_OK
                      ? baton__fail(BATON_ERR_INTERNAL, "%s: the session ended without an answer", what)
                      : baton__fail_status(&st, phase, what);
        grpc_c_status_clear(&st);
        return err;
    }
}
