#ifndef BATON_ENGINE_H
#define BATON_ENGINE_H

/*
 * The lock engine: owns waiters, holds, pools and watchers of one batond.
 * It runs on one libevent loop thread; every function here and every callback
 * it makes runs on that thread. It decides nothing about mutual exclusion by
 * itself: every grant is made by the store (one Lua script in Redis) and the
 * engine only reports what the store confirmed.
 *
 * Waiting: a waiter joins the FIFO queue in Redis and then sleeps. It is
 * re-attempted only when (a) an event for its key (or a device of its pool)
 * arrives over pub/sub, (b) the store's retry_ms hint passes (holder TTL or a
 * dead head's liveness), (c) the store reconnects, or (d) the slow safety
 * re-check (recheck_ms) fires. Only the earliest local waiter of a target is
 * re-attempted; one attempt per waiter is in flight at a time, and an event
 * that arrives meanwhile makes it attempt again after the reply. The local
 * order can differ from Redis' (an entry purged during a stall and queued
 * again, Redis data loss): a reply that says "the lock is free but token T is
 * at the head" makes the engine attempt T at once if T is one of its own.
 *
 * Direct handoff: a release of a known grant (Release, or a stream hold or
 * lease that ends) carries the acquire request of the key's first local
 * waiter when that waiter is idle, and counts as its attempt; the release
 * script grants it only if it heads the Redis queue. Pool waiters are not
 * handed keys this way; they are woken by the release event.
 */

#include <stdint.h>

#include "acquire_req.h"
#include "errors.h"
#include "store.h"

struct event_base;

typedef struct baton_engine baton_engine;
typedef struct engine_waiter engine_waiter;
typedef struct engine_watch engine_watch;

typedef struct engine_config {
    int64_t recheck_ms;  /* safety re-check of each target's first waiter (default 30000) */
    int64_t liveness_ms; /* queue entry liveness window (default 6000); refreshed
                          * every liveness_ms / 3 */
} engine_config;


typedef struct engine_grant {
    const char *key; /* key held (device key for a pool) */
    const char *token;
    uint64_t fencing;
    int64_t ttl_ms;
    int32_t device; /* -1 for a plain key */
    /* Pool: every device granted (the request's count), lowest first, with
     * its key and fencing; [0] is device / key / fencing above. Plain key: 0. */
    int32_t ndevices;
    const int32_t *devices;
    const char *const *keys;
    const uint64_t *fencings;
} engine_grant;

/*
 * Where the engine reports one Acquire's progress. All pointers passed are
 * valid only during the call.
 *   queued:   zero or more times, before granted.
 *   granted:  at most once. LEASE mode: the engine is done with the waiter
 *             after this call except for engine_acquire_end (below). STREAM
 *             mode: the engine keeps the lock's TTL renewed until the stream
 *             ends (engine_acquire_end) or the lock is lost (finished).
 *   finished: at most once, terminal: the stream must end with `err` and
 *             `msg` (BATON_E_BUSY: not acquired within wait_ms; BATON_E_LOST:
 *             stream-held lock lost; BATON_E_UNAVAILABLE: Redis down or
 *             shutdown; BATON_E_INTERNAL; BATON_OK: a STREAM hold was released
 *             by a Release RPC with its token, end the stream with OK). After
 *             finished the engine has
 *             freed the waiter: do NOT call engine_acquire_end.
 */
typedef struct engine_acquire_sink {
    void (*queued)(void *ud, int64_t position);
    void (*granted)(void *ud, const engine_grant *g);
    void (*finished)(void *ud, int err, const char *msg);
} engine_acquire_sink;

baton_engine *engine_new(struct event_base *base, baton_store *store, const engine_config *cfg);
/* Frees everything; only after engine_shutdown's done callback (or in tests). */
void engine_free(baton_engine *e);

/*
 * Starts an Acquire. Returns 0 and sets *out, or returns a negative baton_err
 * and sets *errmsg (static string) without calling the sink: BATON_E_UNAVAILABLE
 * when Redis is down or the engine is shutting down. The sink is never called
 * from inside engine_acquire.
 */
int engine_acquire(baton_engine *e, const engine_acquire_req *req, const engine_acquire_sink *sink, void *ud,
                   engine_waiter **out, const char **errmsg);

/*
 * The transport is done with a waiter whose sink has not had `finished`:
 * the client cancelled or the stream closed (STREAM mode: the lock is released
 * now, token-checked), or a LEASE grant was delivered (release_lease = 0: the
 * lease stays) or could not be delivered (release_lease = 1: release it, the
 * client never learned its token). A waiter still queued is removed from the
 * Redis queue; an attempt in flight that turns out to grant is released.
 * The sink is not called again. Exactly one of {finished, engine_acquire_end}
 * ends each waiter.
 */
void engine_acquire_end(engine_waiter *w, int release_lease);

/* Unary operations. Return 0 and call cb exactly once later, or return a
 * negative baton_err (UNAVAILABLE) with *errmsg set and never call cb.
 * Owner-checked in Redis. cb's msg is a human-readable reason on error (for
 * NOT_HOLDER it names the real holder). */
typedef void (*engine_hold_cb)(void *ud, int err, const char *msg, int64_t ttl_ms);
int engine_renew(baton_engine *e, const char *key, const char *token, int64_t ttl_ms, engine_hold_cb cb,
                 void *ud, const char **errmsg);
int engine_release(baton_engine *e, const char *key, const char *token, engine_hold_cb cb, void *ud,
                   const char **errmsg);
int engine_force_release(baton_engine *e, const char *key, uint64_t fencing, engine_hold_cb cb, void *ud,
                         const char **errmsg);
typedef void (*engine_describe_cb)(void *ud, int err, const char *msg, const store_describe_res *res);
int engine_describe(baton_engine *e, const char *key, engine_describe_cb cb, void *ud, const char **errmsg);
/* List (issue #18): one page of held locks (store.h ops->list); cursor "0" starts. */
typedef void (*engine_list_cb)(void *ud, int err, const char *msg, const store_list_res *res);
int engine_list(baton_engine *e, const char *prefix, int32_t limit, const char *cursor, engine_list_cb cb,
                void *ud, const char **errmsg);

/*
 * Watch: `cb` gets every ACQUIRED / RELEASED / EXPIRED / FORCE_RELEASED event
 * whose key equals `key` (key != NULL) or starts with `prefix`. Never WAKE
 * events. Stop with engine_watch_stop; the engine never ends a watch itself
 * except through `ended` at shutdown (then do not call engine_watch_stop).
 */
typedef void (*engine_watch_cb)(void *ud, const store_event *ev);
typedef void (*engine_watch_ended_cb)(void *ud, int err, const char *msg);
engine_watch *engine_watch_start(baton_engine *e, const char *key, const char *prefix, engine_watch_cb cb,
                                 engine_watch_ended_cb ended, void *ud);
void engine_watch_stop(engine_watch *w);
/* Delivers a batond-local event (LONG_HELD) to the matching watches, as if
 * it had come from the store. */
void engine_watch_notify(baton_engine *e, const store_event *ev);

/*
 * Graceful shutdown: refuse new Acquires (UNAVAILABLE), finish every waiting
 * stream with BATON_E_UNAVAILABLE (and dequeue it in Redis), release every
 * stream-held lock (finished with BATON_E_UNAVAILABLE "server shutting down"),
 * end watches. `done` is called once every Redis reply has arrived, or at
 * once when Redis is down.
 */
void engine_shutdown(baton_engine *e, void (*done)(void *ud), void *ud);

/*
 * Serving: 1 while the store is up (Redis connected and subscribed) and the
 * engine is not shutting down, i.e. while an Acquire can be granted; 0
 * otherwise. `cb` (one per engine; NULL to clear) is called on the loop
 * thread each time that value changes, never twice with the same value and
 * never from inside engine_set_serving_cb. It may not call back into the
 * engine. (For the gRPC health service.)
 */
int engine_serving(const baton_engine *e);
void engine_set_serving_cb(baton_engine *e, void (*cb)(void *ud, int serving), void *ud);

/* Counters for logs, tests and benchmarks. */
typedef struct engine_stats {
    uint64_t waiting;      /* waiters queued or attempting */
    uint64_t stream_holds; /* granted STREAM-mode waiters */
    uint64_t watches;
    uint64_t handoffs; /* grants made by a release (direct handoff) */
    uint64_t requeued; /* waiters queued again after a refresh found no entry */
} engine_stats;
void engine_get_stats(const baton_engine *e, engine_stats *out);

#endif
