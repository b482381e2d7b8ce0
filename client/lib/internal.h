/*
 * internal.h - shared by the libbaton sources only (never installed).
 * Internal non-static functions use the baton__ prefix.
 */
#ifndef BATON_LIB_INTERNAL_H
#define BATON_LIB_INTERNAL_H

#include <pthread.h>
#include <stdint.h>
#include <time.h>

#include "clock.h"

#include "baton/baton.h"
#include "baton/v1/lock.grpc-c.h"

typedef struct baton__session baton__session;
typedef struct baton__hold_session baton__hold_session;

/*
 * A client is its channel, its owner name and its call timeout, set once by
 * client.c and read-only after, plus one part per file. Each part's fields
 * are touched only by the file that owns it; the others go through its
 * baton__ functions. The files depend on each other one way only:
 *
 *     client.c -> holds.c -> session.c -> conn.c -> error.c
 *     (lock.c, async.c, watch.c use any of them; none of them uses lock.c)
 */

/* conn.c: the thread polling the channel back to READY. */
typedef struct baton__conn {
    pthread_mutex_t mu; /* guards the fields below */
    pthread_t thread;
    int started; /* thread is joinable */
    int running; /* ... and still watching */
    int stop;    /* the client is being freed */
} baton__conn;

/* session.c: the pool of idle Session streams. */
typedef struct baton__sessions {
    pthread_mutex_t mu; /* guards idle, nidle */
    baton__session *idle;
    int nidle;
    _Atomic int off; /* set once: one RPC per operation instead */
} baton__sessions;

/* holds.c: the Session holding stream-mode locks, and its threads. */
typedef struct baton__holds {
    pthread_mutex_t mu;          /* guards current, nthreads */
    pthread_cond_t cv;           /* signalled when a thread leaves */
    baton__hold_session *current;
    int nthreads;                /* hold-session threads (readers, notifiers) still running */
} baton__holds;

/* tls.c: the bearer token sent with every call. */
typedef struct baton__auth {
    char *value;         /* "Bearer <token>", or NULL: no token */
    grpc_c_metadata md;  /* {"authorization", value} */
} baton__auth;

struct baton_client {
    grpc_channel *channel;
    char *owner;
    int64_t call_timeout_ms;
    baton__conn conn;         /* conn.c */
    baton__sessions sessions; /* session.c */
    baton__holds holds;       /* holds.c */
    baton__auth auth;         /* tls.c */
};

/* Unary call options with the client's deadline. */
static inline grpc_c_call_options baton__unary_opts(const baton_client *c)
{
    grpc_c_call_options o = {0};
    o.timeout_ms = c->call_timeout_ms;
    o.metadata = c->auth.value ? &c->auth.md : NULL;
    o.metadata_count = c->auth.value ? 1 : 0;
    return o;
}

/* Options of a streaming call (no deadline: the stream may hold a lock)
 * whose start gives up after the client's call timeout. Why the start needs
 * a bound: on a channel connecting to a batond that accepts TCP but never
 * answers (frozen), gRPC waits 20 s for the connection, and a call without
 * a deadline waited as long. */
static inline grpc_c_call_options baton__stream_opts(const baton_client *c)
{
    grpc_c_call_options o = {0};
    o.start_timeout_ms = c->call_timeout_ms;
    o.metadata = c->auth.value ? &c->auth.md : NULL;
    o.metadata_count = c->auth.value ? 1 : 0;
    return o;
}

/* tls.c: the bearer token (auth_token), then the channel, plain or TLS.
 * 0, or an error with its message set. */
int baton__security_init(baton_client *c, const baton_client_options *opts);
int baton__channel_open(baton_client *c, const char *target, const baton_client_options *opts,
                        const grpc_c_channel_options *copts);
void baton__security_free(baton_client *c);

/* What an error means depends on where it happened: ABORTED while acquiring
 * is "busy", on a held stream it is "lost". */
enum baton__phase { BATON__PHASE_CALL, BATON__PHASE_ACQUIRE, BATON__PHASE_HELD };

/* THE mapping from a gRPC status code to a baton error (0 for OK). */
int baton__err_of_code(int code, enum baton__phase phase);

/* Sets the calling thread's last error message (printf-style) and returns err. */
int baton__fail(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Maps a finished call's status, records its message, returns the error. */
int baton__fail_status(const grpc_c_status *st, enum baton__phase phase, const char *what);

/* Time is clock_mono_ms (clock.h); deadlines are added with clock_add_ms,
 * which saturates (a wait_ms the server will refuse must not overflow on
 * the way there). */

/* A condition variable timed on the monotonic clock. */
static inline void baton__cond_init_monotonic(pthread_cond_t *cv)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &ca);
    pthread_condattr_destroy(&ca);
}

/* The absolute time for pthread_cond_timedwait on such a condition variable
 * at the monotonic clock_mono_ms() time `at_ms` (past: now). */
static inline struct timespec baton__abstime(int64_t at_ms)
{
    int64_t left = at_ms - clock_mono_ms();
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    if (left < 0)
        left = 0;
    /* Seconds apart from the rest: a far deadline must not overflow in ns. */
    int64_t ns = ts.tv_nsec + (left % 1000) * 1000000LL;
    ts.tv_sec += (time_t)(left / 1000) + (time_t)(ns / 1000000000LL);
    ts.tv_nsec = ns % 1000000000LL;
    return ts;
}

/* strdup that records BATON_ERR_NOMEM on failure. */
char *baton__strdup(const char *s);

/* ---- the channel's reconnection (conn.c) ---- */

void baton__conn_init(baton_client *c);
/* 1 if the channel is connected. Otherwise 0, and a thread (one per client)
 * polls the channel until it is connected again. */
int baton__channel_ready(baton_client *c);
/* After a call failed with gRPC status `code`: starts that thread if the
 * failure was UNAVAILABLE and the channel is not connected. */
void baton__conn_note(baton_client *c, int code);
/* Stops and joins that thread (baton_client_free). */
void baton__conn_free(baton_client *c);

/* ---- acquiring (lock.c) ---- */

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

/* ---- operations on pooled Session streams (session.c) ---- */

/* off: the client was created with sessions disabled. */
void baton__sessions_init(baton_client *c, int off);
/* 1 once sessions are off for the client (disabled, or a server without
 * the Session RPC); baton__sessions_disable turns them off for good. */
int baton__sessions_off(const baton_client *c);
void baton__sessions_disable(baton_client *c);

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

void baton__holds_init(baton_client *c);

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
