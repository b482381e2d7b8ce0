/*
 * internal.h - shared by the libbaton sources only (never installed).
 * Internal non-static functions use the baton__ prefix.
 */
#ifndef BATON_LIB_INTERNAL_H
#define BATON_LIB_INTERNAL_H

#include <pthread.h>
#include <stdint.h>
#include <time.h>

#include "baton/baton.h"
#include "baton/v1/lock.grpc-c.h"

typedef struct baton__session baton__session;

struct baton_client {
    grpc_channel *channel;
    char *owner;
    int64_t call_timeout_ms;
    pthread_mutex_t mu;     /* guards idle, nidle, rc_* */
    baton__session *idle;   /* idle Session streams (session.c) */
    int nidle;
    _Atomic int sessions_off; /* set once: one RPC per operation instead */
    pthread_mutex_t holds_mu; /* guards holds, nreaders (holds.c) */
    pthread_cond_t holds_cv;  /* signalled when a reader leaves */
    struct baton__hold_session *holds; /* the Session holding stream-mode locks */
    int nreaders;             /* hold-session threads (readers, notifiers) still running */
    pthread_t rc_thread;      /* polls the channel back to READY (conn.c) */
    int rc_started;           /* rc_thread is joinable */
    int rc_running;           /* ... and still watching */
    int rc_stop;              /* the client is being freed */
};

/* What an error means depends on where it happened: ABORTED while acquiring
 * is "busy", on a held stream it is "lost". */
enum baton__phase { BATON__PHASE_CALL, BATON__PHASE_ACQUIRE, BATON__PHASE_HELD };

/* THE mapping from a gRPC status code to a baton error (0 for OK). */
int baton__err_of_code(int code, enum baton__phase phase);

/* Sets the calling thread's last error message (printf-style) and returns err. */
int baton__fail(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Maps a finished call's status, records its message, returns the error. */
int baton__fail_status(const grpc_c_status *st, enum baton__phase phase, const char *what);

/* Monotonic clock in milliseconds. */
int64_t baton__now_ms(void);
/* a + b for non-negative milliseconds, saturating at INT64_MAX (a wait_ms
 * the server will refuse must not overflow on the way there). */
static inline int64_t baton__add_ms(int64_t a, int64_t b)
{
    return a > INT64_MAX - b ? INT64_MAX : a + b;
}

/* A condition variable timed on the monotonic clock, and the absolute time
 * for pthread_cond_timedwait on it at the monotonic `at_ms` (past: now). */
void baton__cond_init_monotonic(pthread_cond_t *cv);
struct timespec baton__abstime(int64_t at_ms);

/* strdup that records BATON_ERR_NOMEM on failure. */
char *baton__strdup(const char *s);

/* 1 if the channel is connected. Otherwise 0, and a thread (one per client)
 * polls the channel until it is connected again (conn.c). */
int baton__channel_ready(baton_client *c);
/* After a call failed with gRPC status `code`: starts that thread if the
 * failure was UNAVAILABLE and the channel is not connected. */
void baton__conn_note(baton_client *c, int code);
/* Stops and joins that thread. */
void baton__conn_free(baton_client *c);

/* Unary call options with the client's deadline. */
grpc_c_call_options baton__unary_opts(const baton_client *c);
/* Options of a streaming call (no deadline: the stream may hold a lock)
 * whose start gives up after the client's call timeout. */
grpc_c_call_options baton__stream_opts(const baton_client *c);

/* Cancellation hook shared by a pending acquire and whoever may cancel it. */
typedef struct baton__canceller {
    pthread_mutex_t mu;
    grpc_c_call *call; /* the acquire stream while it is being read */
    int cancelled;
} baton__canceller;

/* The acquire used by the blocking, try, pool and async forms. Exactly one of
 * key / pool is non-NULL. `cx` may be NULL. */
int baton__acquire(baton_client *c, const char *key, const char *pool, int devices,
                   const baton_acquire_options *opts, baton__canceller *cx, baton_lock **out);

/* Cancellable acquires (baton_acquire_async) use the Acquire RPC, not a
 * session: a lease granted on a session stays once written, whereas a
 * cancelled Acquire RPC releases a grant its client never read.
 * baton__session_call returns this when the operation is not run on a
 * session (sessions disabled, a server without the Session RPC, or a
 * channel not yet connected): run it as its own RPC. */
#define BATON__SESSIONS_OFF 1

/*
 * Runs one operation (req->id is set here) on a pooled Session stream and
 * returns 0 with its final response in *resp (granted, renew or release;
 * the caller frees it), BATON__SESSIONS_OFF, or a negative baton error with
 * the message recorded (a status response is mapped with `phase`, prefixed
 * with `what`). timeout_ms < 0: no limit. Queued positions go to on_queued.
 */
int baton__session_call(baton_client *c, Baton__V1__SessionRequest *req, int64_t timeout_ms,
                        void (*on_queued)(int64_t, void *), void *queued_ud, enum baton__phase phase,
                        const char *what, Baton__V1__SessionResponse **resp);

/* The error (message recorded) of an operation that ended with a status:
 * mapped with `phase`; OK, which no operation ends with, is INTERNAL. */
int baton__session_status(const Baton__V1__SessionStatus *s, enum baton__phase phase, const char *what);

/* Closes the idle sessions (baton_client_free). */
void baton__sessions_free(baton_client *c);

/* ---- stream-mode holds on one shared Session (holds.c) ---- */

typedef struct baton__hold baton__hold;

/* The end of a hold at the server, on the hold session's notifier thread:
 * st->code OK when it was released by its token, else why it was lost. */
typedef void (*baton__hold_end_cb)(void *ud, const grpc_c_status *st);

/*
 * A STREAM-mode acquire (req->acquire; req->id is set here) held by the
 * client's hold session. Returns 0 with the Granted response in *resp (the
 * caller frees it) and the hold in *out, BATON__SESSIONS_OFF (run it as an
 * Acquire RPC), or a negative baton error with the message recorded.
 * timeout_ms < 0: no limit; on timeout the acquire is cancelled at the
 * server (a grant that crosses the cancel is released).
 */
int baton__hold_acquire(baton_client *c, Baton__V1__SessionRequest *req, int64_t timeout_ms,
                        void (*on_queued)(int64_t, void *), void *queued_ud, Baton__V1__SessionResponse **resp,
                        baton__hold **out);

/* Names the callback for the end of the hold. Returns 1 if the hold had
 * already ended: *ended is its status (the caller clears it) and on_end is
 * never called. Otherwise 0: on_end is called at most once. */
int baton__hold_attach(baton__hold *h, baton__hold_end_cb on_end, void *ud, grpc_c_status *ended);

/* Frees a hold; waits for an end callback in progress (so never call it
 * from inside one). cancel: if the hold has not ended, end it at the server
 * (releasing the lock); 0 when a Release by its token already did. */
void baton__hold_free(baton__hold *h, int cancel);

/* Closes the hold session and waits for its threads (baton_client_free). */
void baton__holds_free(baton_client *c);

#endif
