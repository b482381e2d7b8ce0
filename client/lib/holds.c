/*
 * holds.c - stream-mode locks held by one shared Session stream.
 *
 * A stream-mode lock used to own an Acquire stream and a thread that sat on
 * it until the server ended it. Here all of a client's stream holds share
 * one Session (the "hold session") and one reader thread: an acquire writes
 * its request and sleeps on its own condition variable; the reader hands it
 * the answer. Later the same reader reports the end of each hold (released
 * by token, or lost) through the hold's end callback. Closing the session,
 * or the process dying, ends every hold on it at the server, as closing
 * each Acquire stream did.
 *
 * Ending one hold without ending the others uses SessionCancel: a waiting
 * acquire that timed out locally, a lock freed or detached while held, a
 * stream lock whose Release failed. A cancel racing the grant is safe: the
 * server releases a hold it cancels.
 *
 * When the hold session breaks (batond restarted, connection lost), every
 * hold on it ends with the call's status and the next acquire opens a new
 * one. The session is opened only on a connected channel; otherwise, with
 * sessions off, for cancellable acquires or past HOLDS_WAIT_MAX waiting
 * acquires (the server's per-session limit is 1024), the caller uses the
 * Acquire RPC as before.
 *
 * The reader never runs user code: the end callbacks (on_lost) run on a
 * second thread, the notifier, in the order the holds ended, so a callback
 * may acquire again and a slow one delays no other answer.
 *
 * Lifetimes: a hold session is reference-counted (the client while it is
 * current, the reader and notifier threads, each hold registered on it).
 * Both threads are detached; the client counts them and baton_client_free
 * waits for them. Locking order: c->holds.mu -> hs->mu; hs->wmu is
 * taken alone. One thread reads the call while others write it (under
 * wmu): grpc_c allows one reader and one writer at a time.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/grpc.h>

#include "internal.h"
#include "map.h"

/* Waiting acquires per hold session before further ones use their own RPC. */
#define HOLDS_WAIT_MAX 1000

typedef baton__hold_session hold_session;

enum { H_WAITING, H_ANSWERED, H_HELD, H_ENDED };

struct baton__hold {
    hold_session *hs;
    map_node node;            /* in hs->ops while linked */
    uint64_t id;
    int state;                         /* H_*, under hs->mu */
    int linked;                        /* in hs->ops: its responses are routed to it */
    int in_cb;                         /* the notifier is calling on_end */
    int notify;                        /* in hs's notify queue */
    baton__hold *nnext;
    baton__hold *bnext;                /* session_broke's list */
    int64_t queued;                    /* latest position not yet reported (0: none) */
    Baton__V1__SessionResponse *resp;  /* H_ANSWERED: granted or status; NULL: the session broke */
    grpc_c_status end;                 /* H_ENDED: how (for on_end, or for attach when none yet) */
    baton__hold_end_cb on_end;
    void *end_ud;
    pthread_cond_t cv; /* monotonic clock */
};

struct baton__hold_session {
    baton_client *c;
    grpc_c_call *call;
    pthread_mutex_t mu;  /* ops, next_id, dead, nwait, refs */
    pthread_mutex_t wmu; /* one write at a time on the call */
    map ops;             /* registered holds by id (map_hash_u64) */
    uint64_t next_id;
    int nwait;
    int dead;
    int refs;
    grpc_c_status status; /* how the call ended (once dead) */
    baton__hold *nhead, *ntail; /* ended holds whose on_end is due, in order */
    pthread_cond_t ncv;         /* signalled for the notifier */
    int reader_done;            /* nothing more will be queued */
};

static void hs_unref(hold_session *hs)
{
    pthread_mutex_lock(&hs->mu);
    int last = --hs->refs == 0;
    pthread_mutex_unlock(&hs->mu);
    if (!last)
        return;
    grpc_c_call_destroy(hs->call);
    grpc_c_status_clear(&hs->status);
    map_free(&hs->ops);
    pthread_mutex_destroy(&hs->mu);
    pthread_mutex_destroy(&hs->wmu);
    pthread_cond_destroy(&hs->ncv);
    free(hs);
}

/* The holds by id, so that routing a response costs the same with one hold
 * or thousands. Registers h (id set) as waiting; -1 when out of memory. */
static int link_op(hold_session *hs, baton__hold *h)
{
    if (map_insert(&hs->ops, &h->node, map_hash_u64(h->id)) != 0)
        return -1;
    h->linked = 1;
    hs->nwait++;
    return 0;
}

static void unlink_op(hold_session *hs, baton__hold *h)
{
    if (!h->linked)
        return;
    map_remove(&hs->ops, &h->node);
    h->linked = 0;
    if (h->state == H_WAITING)
        hs->nwait--;
}

static baton__hold *find_op(hold_session *hs, uint64_t id)
{
    uint64_t hash = map_hash_u64(id);
    for (map_node *n = map_first(&hs->ops, hash); n; n = map_next(n, hash)) {
        baton__hold *h = MAP_ENTRY(n, baton__hold, node);
        if (h->id == id)
            return h;
    }
    return NULL;
}

/* The end of a hold: queued for the notifier, which calls its on_end, or
 * kept for baton__hold_attach when none is attached yet. The reader never
 * runs user code: an on_lost that acquires again, or takes its time, must
 * not keep the other holds' answers waiting. Called with hs->mu held. */
static void end_hold(hold_session *hs, baton__hold *h, int code, const char *msg)
{
    unlink_op(hs, h);
    h->state = H_ENDED;
    h->end.code = code;
    h->end.message = strdup(msg ? msg : "");
    if (h->on_end == NULL)
        return;
    h->notify = 1;
    h->nnext = NULL;
    if (hs->ntail)
        hs->ntail->nnext = h;
    else
        hs->nhead = h;
    hs->ntail = h;
    pthread_cond_signal(&hs->ncv);
}

static void notify_remove(hold_session *hs, baton__hold *h)
{
    baton__hold **p = &hs->nhead, *prev = NULL;
    while (*p != h) {
        prev = *p;
        p = &(*p)->nnext;
    }
    *p = h->nnext;
    if (hs->ntail == h)
        hs->ntail = prev;
    h->notify = 0;
}

/* One response: to the acquire waiting for it, or the end of a hold.
 * Takes ownership of r. */
static void dispatch(hold_session *hs, Baton__V1__SessionResponse *r)
{
    pthread_mutex_lock(&hs->mu);
    baton__hold *h = find_op(hs, r->id);
    if (h == NULL) {
        /* An operation given up (its cancel crossed this) or a hold whose
         * lock already knows it was released. */
    } else if (h->state == H_WAITING && r->result_case == BATON__V1__SESSION_RESPONSE__RESULT_QUEUED) {
        h->queued = r->queued->position > 0 ? r->queued->position : 1;
        pthread_cond_signal(&h->cv);
    } else if (h->state == H_WAITING && (r->result_case == BATON__V1__SESSION_RESPONSE__RESULT_GRANTED ||
                                         r->result_case == BATON__V1__SESSION_RESPONSE__RESULT_STATUS)) {
        if (r->result_case == BATON__V1__SESSION_RESPONSE__RESULT_STATUS)
            unlink_op(hs, h); /* over at the server */
        else
            hs->nwait--;
        h->state = H_ANSWERED;
        h->resp = r;
        r = NULL;
        pthread_cond_signal(&h->cv);
    } else if ((h->state == H_ANSWERED || h->state == H_HELD) &&
               r->result_case == BATON__V1__SESSION_RESPONSE__RESULT_STATUS) {
        /* (H_ANSWERED here: granted, and ended before its lock attached.) */
        end_hold(hs, h, r->status->code, r->status->message);
    }
    pthread_mutex_unlock(&hs->mu);
    if (r)
        baton__v1__session_response__free_unpacked(r, NULL);
}

static void push_broken(map_node *n, void *ud)
{
    baton__hold *h = MAP_ENTRY(n, baton__hold, node), **list = ud;
    h->bnext = *list;
    *list = h;
}

/* The session broke: every acquire waiting on it and every hold ends. */
static void session_broke(hold_session *hs)
{
    pthread_mutex_lock(&hs->mu);
    hs->dead = 1;
    pthread_mutex_unlock(&hs->mu);
    pthread_mutex_lock(&hs->wmu); /* finish closes our side: a write */
    grpc_c_status st = GRPC_C_STATUS_INIT;
    grpc_c_call_finish(hs->call, NULL, &st);
    pthread_mutex_unlock(&hs->wmu);
    if (st.code == GRPC_C_CODE_OK) {
        /* Only our own half-close or cancel ends it cleanly; either way,
         * what it held is gone. */
        grpc_c_status_clear(&st);
        st.code = GRPC_C_CODE_UNAVAILABLE;
        st.message = strdup("the hold session ended");
    }
    /* For its holds the session was the connection: whatever ended it
     * (shutdown, a broken connection, a limit), they are lost UNAVAILABLE. */
    char held[600];
    snprintf(held, sizeof held, "the session holding the lock ended: %s: %s", grpc_c_code_name(st.code),
             st.message ? st.message : "");
    pthread_mutex_lock(&hs->mu);
    hs->status.code = st.code;
    hs->status.message = st.message ? strdup(st.message) : NULL;
    baton__hold *list = NULL; /* (the map cannot change while it is walked) */
    map_each(&hs->ops, push_broken, &list);
    for (baton__hold *h = list, *next; h; h = next) { /* each is unlinked here */
        next = h->bnext;
        if (h->state == H_WAITING) {
            unlink_op(hs, h);
            h->state = H_ANSWERED; /* resp NULL: see hs->status */
            pthread_cond_signal(&h->cv);
        } else {
            end_hold(hs, h, GRPC_C_CODE_UNAVAILABLE, held);
        }
    }
    hs->reader_done = 1;
    pthread_cond_signal(&hs->ncv);
    pthread_mutex_unlock(&hs->mu);
    grpc_c_status_clear(&st);
}

static void thread_left(baton_client *c)
{
    pthread_mutex_lock(&c->holds.mu);
    c->holds.nthreads--;
    pthread_cond_broadcast(&c->holds.cv);
    pthread_mutex_unlock(&c->holds.mu);
}

/* Calls the end callbacks, in the order the holds ended, until the reader
 * is done and none is left. */
static void *notifier(void *arg)
{
    hold_session *hs = arg;
    baton_client *c = hs->c;
    pthread_mutex_lock(&hs->mu);
    for (;;) {
        while (hs->nhead == NULL && !hs->reader_done)
            pthread_cond_wait(&hs->ncv, &hs->mu);
        baton__hold *h = hs->nhead;
        if (h == NULL)
            break;
        notify_remove(hs, h);
        h->in_cb = 1;
        pthread_mutex_unlock(&hs->mu);
        h->on_end(h->end_ud, &h->end);
        pthread_mutex_lock(&hs->mu);
        h->in_cb = 0;
        pthread_cond_broadcast(&h->cv);
    }
    pthread_mutex_unlock(&hs->mu);
    hs_unref(hs);
    thread_left(c);
    return NULL;
}

static void *reader(void *arg)
{
    hold_session *hs = arg;
    baton_client *c = hs->c;
    Baton__V1__SessionResponse *r = NULL;
    while (baton__v1__lock_service__grpc__session_read(hs->call, &r) == GRPC_C_OK) {
        dispatch(hs, r);
        r = NULL;
    }
    session_broke(hs);
    hs_unref(hs);
    thread_left(c);
    return NULL;
}

static int start_detached(void *(*fn)(void *), void *arg)
{
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&t, &attr, fn, arg);
    pthread_attr_destroy(&attr);
    return rc;
}

/* The current hold session with a reference for the caller, opening one if
 * there is none or the last one broke. NULL with *not_ready on a channel
 * not connected; NULL on failure. Called with c->holds.mu held. */
static hold_session *current(baton_client *c, int *not_ready)
{
    hold_session *hs = c->holds.current;
    if (hs) {
        pthread_mutex_lock(&hs->mu);
        int dead = hs->dead;
        if (!dead)
            hs->refs++;
        pthread_mutex_unlock(&hs->mu);
        if (!dead)
            return hs;
        c->holds.current = NULL;
        hs_unref(hs);
    }
    if (!baton__channel_ready(c)) {
        *not_ready = 1;
        return NULL;
    }
    hs = calloc(1, sizeof *hs);
    if (hs == NULL)
        return NULL;
    hs->c = c;
    hs->refs = 4; /* the client, the reader, the notifier, the caller */
    pthread_mutex_init(&hs->mu, NULL);
    pthread_mutex_init(&hs->wmu, NULL);
    pthread_cond_init(&hs->ncv, NULL);
    grpc_c_call_options so = baton__stream_opts(c);
    hs->call = baton__v1__lock_service__grpc__session_start(c->channel, &so);
    if (hs->call == NULL || start_detached(notifier, hs) != 0) {
        hs->refs = 1; /* no thread runs: this is the last reference */
        hs_unref(hs);
        return NULL;
    }
    c->holds.nthreads++;
    if (start_detached(reader, hs) != 0) {
        pthread_mutex_lock(&hs->mu);
        hs->dead = hs->reader_done = 1; /* the notifier leaves */
        pthread_cond_signal(&hs->ncv);
        pthread_mutex_unlock(&hs->mu);
        hs_unref(hs); /* the client's */
        hs_unref(hs); /* the reader's */
        hs_unref(hs); /* the caller's */
        return NULL;
    }
    c->holds.nthreads++;
    c->holds.current = hs;
    return hs;
}

static baton__hold *hold_new(void)
{
    baton__hold *h = calloc(1, sizeof *h);
    if (h)
        baton__cond_init_monotonic(&h->cv);
    return h;
}

static void hold_destroy(baton__hold *h)
{
    if (h->resp)
        baton__v1__session_response__free_unpacked(h->resp, NULL);
    grpc_c_status_clear(&h->end);
    pthread_cond_destroy(&h->cv);
    free(h);
}

/* Sends a cancel for h's operation (best effort: if the session is broken,
 * the server has already ended everything on it). */
static void send_cancel(hold_session *hs, uint64_t id)
{
    Baton__V1__SessionCancel cancel = BATON__V1__SESSION_CANCEL__INIT;
    Baton__V1__SessionRequest req = BATON__V1__SESSION_REQUEST__INIT;
    req.id = id;
    req.op_case = BATON__V1__SESSION_REQUEST__OP_CANCEL;
    req.cancel = &cancel;
    pthread_mutex_lock(&hs->wmu);
    (void)baton__v1__lock_service__grpc__session_write(hs->call, &req);
    pthread_mutex_unlock(&hs->wmu);
}

enum { RUN_DONE, RUN_UNSENT, RUN_BROKEN, RUN_TIMEOUT, RUN_NOMEM };

/* Registers h on hs, writes req and waits for its answer until limit_ms
 * (< 0: none). RUN_DONE: h->resp is the answer. */
static int run(hold_session *hs, baton__hold *h, Baton__V1__SessionRequest *req, int64_t limit_ms,
               void (*on_queued)(int64_t, void *), void *queued_ud)
{
    pthread_mutex_lock(&hs->mu);
    if (hs->dead) {
        pthread_mutex_unlock(&hs->mu);
        return RUN_UNSENT;
    }
    h->hs = hs;
    h->id = req->id = ++hs->next_id;
    h->state = H_WAITING;
    if (link_op(hs, h) != 0) {
        pthread_mutex_unlock(&hs->mu);
        return RUN_NOMEM;
    }
    pthread_mutex_unlock(&hs->mu);

    pthread_mutex_lock(&hs->wmu);
    int wrote = baton__v1__lock_service__grpc__session_write(hs->call, req) == GRPC_C_OK;
    pthread_mutex_unlock(&hs->wmu);

    pthread_mutex_lock(&hs->mu);
    if (!wrote) {
        /* The call is over, so the server never took this request (and if
         * it had, the end of the session would have ended the hold). */
        unlink_op(hs, h);
        hs->dead = 1; /* the reader will say why; no new request goes here */
        pthread_mutex_unlock(&hs->mu);
        return RUN_UNSENT;
    }
    int timed_out = 0;
    while (h->state == H_WAITING) {
        if (h->queued && on_queued) {
            int64_t pos = h->queued;
            h->queued = 0;
            pthread_mutex_unlock(&hs->mu);
            on_queued(pos, queued_ud);
            pthread_mutex_lock(&hs->mu);
            continue;
        }
        if (limit_ms < 0) {
            pthread_cond_wait(&h->cv, &hs->mu);
        } else if (clock_mono_ms() >= limit_ms) {
            timed_out = 1;
            break;
        } else {
            struct timespec ts = baton__abstime(limit_ms);
            pthread_cond_timedwait(&h->cv, &hs->mu, &ts);
        }
    }
    if (timed_out)
        unlink_op(hs, h); /* a grant that still comes is released by the cancel */
    int broken = h->state == H_ANSWERED && h->resp == NULL;
    pthread_mutex_unlock(&hs->mu);
    if (timed_out) {
        send_cancel(hs, h->id);
        return RUN_TIMEOUT;
    }
    return broken ? RUN_BROKEN : RUN_DONE;
}

int baton__hold_acquire(baton_client *c, Baton__V1__SessionRequest *req, int64_t timeout_ms,
                        void (*on_queued)(int64_t, void *), void *queued_ud, Baton__V1__SessionResponse **resp,
                        baton__hold **out)
{
    *resp = NULL;
    *out = NULL;
    int64_t limit = timeout_ms >= 0 ? clock_add_ms(clock_mono_ms(), timeout_ms) : -1;
    for (int attempt = 0;; attempt++) {
        if (baton__sessions_off(c))
            return BATON__SESSIONS_OFF;
        int not_ready = 0;
        pthread_mutex_lock(&c->holds.mu);
        hold_session *hs = current(c, &not_ready);
        int full = 0;
        if (hs) {
            pthread_mutex_lock(&hs->mu);
            full = hs->nwait >= HOLDS_WAIT_MAX;
            pthread_mutex_unlock(&hs->mu);
        }
        pthread_mutex_unlock(&c->holds.mu);
        if (hs && full) {
            hs_unref(hs);
            return BATON__SESSIONS_OFF; /* this acquire only */
        }
        if (hs == NULL)
            return not_ready ? BATON__SESSIONS_OFF : baton__fail(BATON_ERR_NOMEM, "acquire: cannot start a session");
        baton__hold *h = hold_new();
        if (h == NULL) {
            hs_unref(hs);
            return baton__fail(BATON_ERR_NOMEM, "acquire: out of memory");
        }
        int rc = run(hs, h, req, limit, on_queued, queued_ud);
        if (rc == RUN_DONE && h->resp->result_case == BATON__V1__SESSION_RESPONSE__RESULT_GRANTED) {
            *resp = h->resp;
            h->resp = NULL;
            pthread_mutex_lock(&hs->mu);
            if (h->state == H_ANSWERED)
                h->state = H_HELD;
            pthread_mutex_unlock(&hs->mu);
            *out = h; /* keeps its reference to hs */
            return 0;
        }
        int err;
        if (rc == RUN_DONE) {
            if (h->resp->status->code == GRPC_C_CODE_RESOURCE_EXHAUSTED)
                err = BATON__SESSIONS_OFF; /* e.g. the session's waiting limit: its own RPC then */
            else
                err = baton__session_status(h->resp->status, BATON__PHASE_ACQUIRE, "acquire");
        } else if (rc == RUN_TIMEOUT) {
            err = baton__fail(BATON_ERR_TIMEOUT, "acquire: no answer from the server within wait + %lld ms",
                              (long long)c->call_timeout_ms);
        } else if (rc == RUN_NOMEM) {
            err = baton__fail(BATON_ERR_NOMEM, "acquire: out of memory");
        } else { /* RUN_UNSENT, RUN_BROKEN */
            pthread_mutex_lock(&hs->mu);
            grpc_c_status st = {hs->status.code, hs->status.message};
            if (st.code == GRPC_C_CODE_UNIMPLEMENTED) {
                baton__sessions_disable(c); /* an older batond: the acquire never ran */
                err = BATON__SESSIONS_OFF;
            } else if (rc == RUN_UNSENT && attempt == 0) {
                err = 0; /* it broke before our request: once more on a new session */
            } else if (st.code != GRPC_C_CODE_OK) {
                err = baton__fail_status(&st, BATON__PHASE_ACQUIRE, "acquire");
            } else {
                err = baton__fail(BATON_ERR_UNAVAILABLE, "acquire: the session to the server broke");
            }
            pthread_mutex_unlock(&hs->mu);
        }
        hold_destroy(h);
        hs_unref(hs);
        if (err != 0)
            return err;
    }
}

int baton__hold_attach(baton__hold *h, baton__hold_end_cb on_end, void *ud, grpc_c_status *ended)
{
    hold_session *hs = h->hs;
    pthread_mutex_lock(&hs->mu);
    int over = h->state == H_ENDED; /* (with no on_end: never queued) */
    if (over) {
        *ended = h->end;
        memset(&h->end, 0, sizeof h->end);
    } else {
        h->on_end = on_end;
        h->end_ud = ud;
    }
    pthread_mutex_unlock(&hs->mu);
    return over;
}

void baton__hold_free(baton__hold *h, int cancel)
{
    if (h == NULL)
        return;
    hold_session *hs = h->hs;
    pthread_mutex_lock(&hs->mu);
    int held = h->linked;
    unlink_op(hs, h);
    if (h->notify)
        notify_remove(hs, h); /* its lock goes away: nobody to tell */
    while (h->in_cb)
        pthread_cond_wait(&h->cv, &hs->mu);
    pthread_mutex_unlock(&hs->mu);
    if (held && cancel)
        send_cancel(hs, h->id);
    hold_destroy(h);
    hs_unref(hs);
}

void baton__holds_init(baton_client *c)
{
    pthread_mutex_init(&c->holds.mu, NULL);
    pthread_cond_init(&c->holds.cv, NULL);
}

void baton__holds_free(baton_client *c)
{
    pthread_mutex_lock(&c->holds.mu);
    hold_session *hs = c->holds.current;
    c->holds.current = NULL;
    pthread_mutex_unlock(&c->holds.mu);
    if (hs) {
        grpc_c_call_cancel(hs->call); /* the reader sees the end and leaves */
        hs_unref(hs);
    }
    pthread_mutex_lock(&c->holds.mu);
    while (c->holds.nthreads > 0)
        pthread_cond_wait(&c->holds.cv, &c->holds.mu);
    pthread_mutex_unlock(&c->holds.mu);
    pthread_mutex_destroy(&c->holds.mu);
    pthread_cond_destroy(&c->holds.cv);
}
