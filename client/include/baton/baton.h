/*
 * baton.h - libbaton, the C client of the Baton lock service (batond).
 *
 *   baton_client *c;
 *   baton_lock *l;
 *   if (baton_client_new("127.0.0.1:50051", NULL, &c) != 0) ...
 *   baton_acquire_options o = {.wait_ms = 30000, .mode = BATON_MODE_STREAM};
 *   if (baton_acquire(c, "video:123", &o, &l) == 0) {
 *       transcode(baton_lock_fencing(l));   // pass the fencing token on
 *       baton_lock_free(l);                 // releases
 *   } else {
 *       fprintf(stderr, "%s\n", baton_last_error());
 *   }
 *   baton_client_free(c);
 *
 * Conventions
 * - Every public symbol starts with baton_ / BATON_. No gRPC or protobuf-c
 *   type appears here; the library carries its own copy of the generated
 *   stubs and the gRPC runtime and exports only these functions.
 * - Functions return 0 on success or a negative BATON_ERR_* code. Every
 *   failing call also stores a message for the calling thread, readable with
 *   baton_last_error() (for example the current holder named by the server).
 * - Strings passed in are borrowed for the duration of the call (copied when
 *   kept). Strings returned by accessors belong to the object they came from.
 * - Callbacks run on library threads (documented per callback). They must
 *   not block for long and must not free the object that invoked them.
 */
#ifndef BATON_BATON_H
#define BATON_BATON_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define BATON_API __attribute__((visibility("default")))
#else
#define BATON_API
#endif

#define BATON_VERSION_MAJOR 0
#define BATON_VERSION_MINOR 1
#define BATON_VERSION_PATCH 0

/* Error codes (negative). Mapped once from gRPC status codes, see
 * baton_strerror() for the meaning of each. */
enum baton_error {
    BATON_ERR_INVALID = -1,     /* bad argument (locally or INVALID_ARGUMENT from the server) */
    BATON_ERR_BUSY = -2,        /* not acquired within wait_ms (ABORTED while acquiring) */
    BATON_ERR_NOT_HELD = -3,    /* the token does not hold the key (FAILED_PRECONDITION) */
    BATON_ERR_UNAVAILABLE = -4, /* batond or its Redis is unreachable (UNAVAILABLE) */
    BATON_ERR_LOST = -5,        /* a held lock was lost (ABORTED on a held stream, renew failed) */
    BATON_ERR_TIMEOUT = -6,     /* the client-side deadline passed (DEADLINE_EXCEEDED) */
    BATON_ERR_CANCELLED = -7,   /* cancelled by the caller (CANCELLED) */
    BATON_ERR_NOMEM = -8,       /* out of memory, locally or at the server (RESOURCE_EXHAUSTED) */
    BATON_ERR_NOTSUP = -9,      /* not supported by this batond (UNIMPLEMENTED) */
    BATON_ERR_INTERNAL = -10,   /* anything else (INTERNAL, UNKNOWN, DATA_LOSS, ...) */
    BATON_ERR_NOT_FOUND = -11,  /* NOT_FOUND */
    BATON_ERR_UNAUTHENTICATED = -12, /* no or unknown auth_token (UNAUTHENTICATED) */
    BATON_ERR_DENIED = -13           /* the token may not use this key, pool or call (PERMISSION_DENIED) */
};

/* Static, human-readable description of an error code ("lock busy").
 * Unknown codes give "unknown error". Thread-safe. */
BATON_API const char *baton_strerror(int err);

/* Static short name of an error code ("BUSY", "NOT_HELD", "OK" for 0). */
BATON_API const char *baton_error_name(int err);

/* The message of the last failing libbaton call on the calling thread
 * (thread-local; "" if none failed yet). Usually the server's status message,
 * e.g. "held by worker-3 (fencing 17)". Valid until the next libbaton call on
 * this thread; copy it to keep it. */
BATON_API const char *baton_last_error(void);

/* ---- Client ------------------------------------------------------------ */

/* One connection (gRPC channel) to batond. Thread-safe: any number of threads
 * may run operations on one client concurrently. */
typedef struct baton_client baton_client;

typedef struct baton_client_options {
    /* Default owner of locks acquired through this client; NULL = "<hostname>/<pid>".
     * Copied. */
    const char *owner;
    /* Deadline of each unary call (Renew, Release, Describe, ForceRelease),
     * extra slack for acquires with a bounded wait, and the longest a stream
     * (a watch, a stream-mode acquire) may take to start, e.g. while the
     * connection to a frozen batond hangs; 0 = 10000 ms. */
    int64_t call_timeout_ms;
    /* TLS: on when `tls` is non-zero or any tls_* field is set. tls_ca_file:
     * PEM CA bundle the server's certificate must chain to (NULL = gRPC's
     * default roots); tls_cert_file + tls_key_file: a client certificate for
     * a batond that asks for one (mTLS), both or neither. The files are read
     * by baton_client_new (an unreadable one: BATON_ERR_INVALID naming it);
     * a certificate the server refuses, or a server the CA does not vouch
     * for, shows as BATON_ERR_UNAVAILABLE calls. */
    int tls;
    const char *tls_ca_file;
    const char *tls_cert_file;
    const char *tls_key_file;
    /* Bearer token sent as `authorization: Bearer <token>` with every call
     * (batond's auth.tokens); NULL = none. Copied. Printable ASCII. */
    const char *auth_token;
    /* 0 (default): lease-mode acquires (except cancellable ones, see
     * baton_acquire_async), renewals and releases travel over a few
     * long-lived Session streams (one per operation in flight, reused), which
     * costs less per operation than a call each. An operation runs as its own
     * RPC while the channel is not connected, and every one does with a
     * batond that has no Session RPC. One difference: if the connection
     * breaks just after batond sent a lease grant, that lease is kept until
     * its TTL (the acquire itself fails); over its own RPC it is released.
     * Stream-mode locks (again except cancellable acquires) are all held by
     * one more Session with one reader thread for the client, instead of a
     * stream and a thread each; the connection breaking still ends every one
     * of them at the server.
     * 1: one RPC per operation, one stream and one thread per stream-mode
     * lock. */
    int disable_sessions;
    /* Longest wait between two attempts to reconnect to batond once the
     * connection is lost; the first comes after 100 ms, each next one after
     * 1.6 times longer (+-20%), up to this. 0 = 1000 ms; at most INT32_MAX. */
    int64_t max_reconnect_backoff_ms;
    /* While a call is open (a held stream-mode lock, a waiting acquire, a
     * pooled session), the client pings batond every keepalive_ms and gives
     * the connection up when a ping is not answered within keepalive_ms:
     * every call on it then fails with BATON_ERR_UNAVAILABLE and every
     * stream-mode lock is reported lost. So a batond that hangs, or a
     * network that drops packets without a word, is noticed within
     * 2 x keepalive_ms. batond releases the stream locks of a client it
     * cannot reach after its grpc.keepalive_timeout_ms at the earliest
     * (5000 by default): keep 2 x keepalive_ms below it, so that the client
     * hears of the loss first. The lock's ttl_ms bounds how long it outlives
     * a batond that hangs: keep it above 3 x keepalive_ms as well.
     * 0 = 1500 ms; at least 1000 (batond refuses pings more often than once
     * a second) and at most INT32_MAX; BATON_KEEPALIVE_OFF: no pings (a
     * silent network then goes unnoticed for as long as TCP takes). */
    int64_t keepalive_ms;
    /* TLS: the name to expect in the server's certificate instead of the
     * target's host (e.g. when connecting by address); NULL = the host. */
    const char *tls_server_name;
} baton_client_options;

#define BATON_KEEPALIVE_OFF (-1)

/* Creates a client for `target` ("host:port" or "unix:/path"); `opts` may be
 * NULL (zeroed options = defaults). Connecting is lazy: this does not block and
 * does not fail when batond is down (the first call then fails with
 * BATON_ERR_UNAVAILABLE). On success *out is a new client the caller frees
 * with baton_client_free(). Thread-safe.
 * While batond is unreachable, calls fail at once with BATON_ERR_UNAVAILABLE
 * (they do not wait for it). Once it is back, the client is connected again
 * within max_reconnect_backoff_ms or so (measured: 0.1-0.9 s with the
 * default, whatever the length of the outage); while it is not connected, a
 * thread of the client polls the connection. */
BATON_API int baton_client_new(const char *target, const baton_client_options *opts, baton_client **out);

/* Frees the client. Every lock, watch and async acquire made through it must
 * have been freed first. NULL is ignored. */
BATON_API void baton_client_free(baton_client *client);

/* The client's default owner string (owned by the client). */
BATON_API const char *baton_client_owner(const baton_client *client);

/* ---- Locks ------------------------------------------------------------- */

typedef enum baton_mode {
    /* The lock lives until released or until its TTL runs out; with
     * auto_renew the library renews it in a background thread. */
    BATON_MODE_LEASE = 0,
    /* The lock is held by an open stream: batond renews it while the stream is
     * open, and it is released at once when the handle is freed or the
     * process exits. */
    BATON_MODE_STREAM = 1
} baton_mode;

typedef enum baton_lock_state {
    BATON_LOCK_HELD = 0,
    BATON_LOCK_LOST = 1,    /* lost: another client may hold it now; stop using it */
    BATON_LOCK_RELEASED = 2 /* released by this handle or by its token */
} baton_lock_state;

/* A granted lock. Owned by the caller; free it with baton_lock_free().
 * Accessors are thread-safe; release/renew/free must not race each other on
 * one handle. */
typedef struct baton_lock baton_lock;

/* Called at most once per lock, on a library thread (the lock's renewal
 * thread, or the one thread that reports the ends of the client's
 * stream-mode locks, in order: keep it short), when a held lock is lost: `err` is BATON_ERR_LOST (or
 * BATON_ERR_UNAVAILABLE when the connection broke in stream mode) and `msg`
 * the reason (valid during the call). The state is already BATON_LOCK_LOST.
 * Do not call baton_lock_free() / baton_release() on `lock` from inside;
 * acquiring other locks is fine. A lock lost at once may report it before
 * baton_acquire() has returned it (which then returns 0 and a LOST lock). */
typedef void (*baton_lost_cb)(baton_lock *lock, int err, const char *msg, void *ud);

/* Called on the acquiring thread (the async worker for async acquires) each
 * time the server reports the caller's position in the queue (1 = next). */
typedef void (*baton_queued_cb)(int64_t position, void *ud);

/* Options of an acquire. Zero-initialised = owner from the client, server
 * default TTL, try once (wait_ms 0), lease mode, no renewal, no callbacks. */
typedef struct baton_acquire_options {
    const char *owner; /* NULL = the client's default owner; copied */
    int64_t ttl_ms;    /* 0 = the server's default TTL */
    int64_t wait_ms;   /* 0 = try once; > 0 = wait at most this long; < 0 = the server's maximum */
    baton_mode mode;
    /* Lease mode: renew at a third of the TTL in a background thread. Failed
     * renewals are retried until a fifth of the TTL (at most 2 s) is left;
     * then the lock is reported lost, so that the holder can stop before the
     * lease runs out and the next holder is granted. */
    int auto_renew;
    baton_lost_cb on_lost; /* optional; see baton_lost_cb */
    void *lost_ud;
    baton_queued_cb on_queued; /* optional; see baton_queued_cb */
    void *queued_ud;
    /* Pools only (BATON_ERR_INVALID with a key): */
    int count;      /* devices granted together, all or none; 0 or 1 = one */
    int64_t weight; /* share of each device's capacity (the pool's configured
                     * capacity); 0 = the whole device */
} baton_acquire_options;

/* Acquires `key`, waiting at most opts->wait_ms. On success *out is a new
 * HELD lock (caller frees with baton_lock_free()). Errors: BATON_ERR_BUSY when
 * not acquired within the wait (baton_last_error() names the holder),
 * BATON_ERR_INVALID, BATON_ERR_UNAVAILABLE, ... `opts` may be NULL.
 * Blocks the calling thread; thread-safe. With auto_renew the lock owns one
 * background thread until it is freed; stream-mode locks share the client's
 * (see disable_sessions). */
BATON_API int baton_acquire(baton_client *client, const char *key, const baton_acquire_options *opts,
                            baton_lock **out);

/* Like baton_acquire() but never waits (wait_ms is forced to 0). */
BATON_API int baton_try_acquire(baton_client *client, const char *key, const baton_acquire_options *opts,
                                baton_lock **out);

/* Acquires any free device of pool `pool` with `devices` devices (device i is
 * the key "pool/i"); see baton_acquire(). With opts->count > 1, that many
 * distinct devices at once (never some of them), under one token: releasing,
 * renewing or losing the lock covers all of them. With opts->weight, a share
 * of each device (pools configured with a capacity). baton_lock_device(),
 * baton_lock_device_at() and baton_lock_cuda_visible_devices() tell which
 * were granted. */
BATON_API int baton_acquire_pool(baton_client *client, const char *pool, int devices,
                                 const baton_acquire_options *opts, baton_lock **out);

/* Releases the lock (token-checked at the server) and stops its background
 * thread. Returns 0 (state RELEASED), BATON_ERR_NOT_HELD (it had been lost;
 * state LOST), or a transport error: in lease mode the state is unchanged
 * (retry or free); in stream mode the stream is ended anyway, which releases
 * the lock at the server, and the state becomes RELEASED.
 * Releasing a lock that is not HELD returns 0 for RELEASED and
 * BATON_ERR_LOST for LOST. Not thread-safe against other calls on `lock`. */
BATON_API int baton_release(baton_lock *lock);

/* Renews the lock for ttl_ms (0 = server default) and records the new TTL.
 * BATON_ERR_NOT_HELD means the server found it lost (state becomes LOST);
 * on a handle already LOST or RELEASED it returns BATON_ERR_LOST without a
 * call. */
BATON_API int baton_renew(baton_lock *lock, int64_t ttl_ms);

/* Releases the lock if still held (best effort), stops its thread and frees the
 * handle. In stream mode the stream is cancelled as well, so the server
 * releases it even when the Release call could not reach it. NULL is ignored.
 * Must not be called from the lock's own on_lost callback. */
BATON_API void baton_lock_free(baton_lock *lock);

/* Frees the handle WITHOUT releasing the lock (lease mode: it lives until its
 * TTL runs out or someone releases it by token, e.g. `baton release`). Stops
 * auto-renewal. In stream mode the stream is closed, which releases the lock
 * anyway. NULL is ignored. */
BATON_API void baton_lock_detach(baton_lock *lock);

/* Accessors. Strings are owned by the lock and valid until baton_lock_free(). */
BATON_API const char *baton_lock_key(const baton_lock *lock);   /* granted key ("pool/i" for pools) */
BATON_API const char *baton_lock_token(const baton_lock *lock); /* 32 hex characters */
BATON_API const char *baton_lock_owner(const baton_lock *lock);
BATON_API uint64_t baton_lock_fencing(const baton_lock *lock);
BATON_API int baton_lock_device(const baton_lock *lock);     /* pool device index, -1 for a key */
BATON_API int64_t baton_lock_ttl_ms(const baton_lock *lock); /* TTL of the last grant or renewal */
BATON_API baton_mode baton_lock_mode(const baton_lock *lock);
BATON_API baton_lock_state baton_lock_state_get(const baton_lock *lock);

/* A pool lock's granted devices, lowest first (0 for a key lock): index i
 * (0 <= i < count; -1 out of range), that device's own fencing token (0 out
 * of range), and its configured name (pools[].device_names in batond, e.g. a
 * GPU or MIG UUID; NULL when the pool has none or out of range). Device 0 is
 * baton_lock_device() / baton_lock_fencing(). */
BATON_API int baton_lock_device_count(const baton_lock *lock);
BATON_API int baton_lock_device_at(const baton_lock *lock, int i);
BATON_API uint64_t baton_lock_device_fencing(const baton_lock *lock, int i);
BATON_API const char *baton_lock_device_name(const baton_lock *lock, int i);

/* Writes every granted device of a pool lock as CUDA_VISIBLE_DEVICES wants
 * it into buf (NUL-terminated): comma-separated indexes ("1,3"), or the
 * devices' configured names when the pool has them. Returns 0, or
 * BATON_ERR_INVALID when the lock is not a pool lock or buf is too small. */
BATON_API int baton_lock_cuda_visible_devices(const baton_lock *lock, char *buf, size_t len);

/* Static name of a state ("HELD", "LOST", "RELEASED"). */
BATON_API const char *baton_lock_state_name(baton_lock_state state);

/* ---- Asynchronous acquire --------------------------------------------------- */

/* A pending asynchronous acquire. Each one runs on its own worker thread. */
typedef struct baton_async baton_async;

/* Called exactly once on the worker thread: err == 0 and a new HELD `lock`
 * that the callback's receiver owns (free it with baton_lock_free(), possibly
 * later on another thread), or err < 0 and lock == NULL (BATON_ERR_CANCELLED
 * after baton_async_cancel(); `msg` says why, valid during the call). */
typedef void (*baton_acquire_cb)(int err, baton_lock *lock, const char *msg, void *ud);

/* Starts acquiring `key` (or, when pool != NULL, a device of `pool` with
 * `devices` devices; pass key NULL then) on a new worker thread and returns at
 * once. On success *out is a handle that the caller must free with
 * baton_async_free() (after or before the callback ran). Thread-safe. */
BATON_API int baton_acquire_async(baton_client *client, const char *key, const char *pool, int devices,
                                  const baton_acquire_options *opts, baton_acquire_cb cb, void *ud,
                                  baton_async **out);

/* Cancels a pending acquire: the callback then runs with BATON_ERR_CANCELLED
 * (unless it already ran; a lock granted at the same moment is released).
 * Thread-safe, idempotent, never blocks for long. */
BATON_API void baton_async_cancel(baton_async *a);

/* Cancels if still pending, waits for the worker (and so the callback) to
 * finish, and frees the handle. Must not be called from the callback. NULL is
 * ignored. */
BATON_API void baton_async_free(baton_async *a);

/* ---- Token-level operations (for tools that do not keep a handle) -------- */

/* Renews `key` held by `token` for ttl_ms (0 = default); *granted_ttl_ms (may
 * be NULL) receives the TTL the server applied. BATON_ERR_NOT_HELD when the
 * token does not hold the key. Thread-safe. */
BATON_API int baton_renew_token(baton_client *client, const char *key, const char *token, int64_t ttl_ms,
                                int64_t *granted_ttl_ms);

/* Releases `key` held by `token`. BATON_ERR_NOT_HELD when it does not hold it
 * (the real holder is untouched). Thread-safe. */
BATON_API int baton_release_token(baton_client *client, const char *key, const char *token);

/* Operator release of `key`, only if it is held with fencing token `fencing`.
 * BATON_ERR_NOT_HELD otherwise. Thread-safe. */
BATON_API int baton_force_release(baton_client *client, const char *key, uint64_t fencing);

#define BATON_OWNER_BUF 257 /* owners are at most 256 bytes */

typedef struct baton_description {
    int held;
    char owner[BATON_OWNER_BUF]; /* "" when not held */
    uint64_t fencing;
    int64_t ttl_ms;  /* remaining lifetime */
    int64_t waiters; /* streams queued for the key */
} baton_description;

/* Fills *out with the current state of `key`. Thread-safe. */
BATON_API int baton_describe(baton_client *client, const char *key, baton_description *out);

/* ---- List: who holds what ---------------------------------------------- */

#define BATON_KEY_BUF 257 /* keys are at most 256 bytes */

typedef struct baton_lock_info {
    char key[BATON_KEY_BUF];
    char owner[BATON_OWNER_BUF];
    uint64_t fencing;
    int64_t ttl_ms;      /* remaining lifetime; -1: none */
    int64_t held_for_ms; /* since the grant (Redis' clock); 0: unknown */
    int64_t waiters;     /* queued for the key */
} baton_lock_info;

typedef struct baton_list_page {
    baton_lock_info *locks; /* n entries, owned by the page */
    size_t n;
    char next_page_token[32]; /* "" when the listing is complete */
} baton_list_page;

/* One page of the locks held now whose key starts with `prefix` (NULL or
 * "" = all), about `limit` of them (0 = the server's default, at most 1000),
 * from `page_token` (NULL or "" = the start; else a next_page_token). A page
 * may be empty while more follow; a key may appear twice in one listing when
 * Redis shrinks its table meanwhile. Free with baton_list_page_free.
 * Thread-safe. */
BATON_API int baton_list(baton_client *client, const char *prefix, int32_t limit, const char *page_token,
                         baton_list_page *out);
/* Frees out->locks and zeroes *out. NULL is ignored. */
BATON_API void baton_list_page_free(baton_list_page *page);

/* ---- Watch ----------------------------------------------------------------- */

typedef enum baton_event_type {
    BATON_EVENT_UNSPECIFIED = 0,
    BATON_EVENT_ACQUIRED = 1,
    BATON_EVENT_RELEASED = 2,
    BATON_EVENT_EXPIRED = 3,
    BATON_EVENT_FORCE_RELEASED = 4,
    BATON_EVENT_LONG_HELD = 5 /* held longer than an alerts.long_held rule; still held */
} baton_event_type;

typedef struct baton_event {
    baton_event_type type;
    const char *key;   /* valid during the callback only */
    const char *owner; /* valid during the callback only */
    uint64_t fencing;
    int64_t at_unix_ms;
} baton_event;

/* Static name of an event type ("ACQUIRED", ...). */
BATON_API const char *baton_event_type_name(baton_event_type type);

typedef struct baton_watcher baton_watcher;

/* Called on the watch's thread, in the order the server sent the events:
 * once per event with ev != NULL and err == 0, and finally exactly once with
 * ev == NULL when the watch ends: err is BATON_ERR_CANCELLED after
 * baton_watch_cancel()/free, otherwise the reason the stream ended
 * (e.g. BATON_ERR_UNAVAILABLE) with `msg` (valid during the call). */
typedef void (*baton_watch_cb)(const baton_event *ev, int err, const char *msg, void *ud);

/* Watches exactly one of `key` and `prefix` (the other NULL). On success *out
 * is a handle the caller frees with baton_watch_free(). One thread per watch.
 * Events that happen before batond has subscribed are not delivered.
 * Thread-safe. */
BATON_API int baton_watch(baton_client *client, const char *key, const char *prefix, baton_watch_cb cb,
                          void *ud, baton_watcher **out);

/* Ends the watch (the final callback follows on the watch thread).
 * Thread-safe, idempotent, may be called from the callback. */
BATON_API void baton_watch_cancel(baton_watcher *w);

/* Cancels, waits for the watch thread (the final callback has run when this
 * returns) and frees the handle. Not from the callback. NULL is ignored. */
BATON_API void baton_watch_free(baton_watcher *w);

#ifdef __cplusplus
}
#endif

#endif /* BATON_BATON_H */
