#ifndef BATON_STORE_H
#define BATON_STORE_H

/*
 * The store: the only code that speaks Redis.
 *
 * Every state change is one Lua script executed atomically in Redis; the
 * store turns replies into the plain structs below. The engine talks to a
 * store only through `baton_store.ops`, so unit tests can plug in a fake
 * (tests/store/fake_store.c) that keeps the same semantics in memory.
 *
 * Calling convention for every op:
 *   - returns 0: the op was sent; `cb` is called exactly once, later, on the
 *     loop thread, never from inside the op call itself;
 *   - returns a negative baton_err (BATON_E_UNAVAILABLE while Redis is down):
 *     nothing was sent and `cb` is never called.
 *   A callback's `err` is BATON_OK (result valid), BATON_E_NOT_HOLDER (renew,
 *   release, force_release: result names the real holder), BATON_E_UNAVAILABLE
 *   (connection lost or command timed out: the outcome is UNKNOWN, the script
 *   may or may not have run) or BATON_E_INTERNAL. `msg` is NULL on success.
 *   Pointers inside results are valid only during the callback.
 *   `cb` may be NULL for fire-and-forget ops.
 *
 * Redis layout of a standalone (or Sentinel) Redis (P = configured key prefix,
 * default "baton:"; K = a key; each key's records share the hash tag {K}). On
 * a Redis Cluster names hash by their tag instead, so that a pool and its
 * devices share a slot: redis/cluster_map.h has that layout.
 *   P{K}:lock   string  holder token, PX = TTL            (exists <=> held)
 *   P{K}:hold   hash    token, owner, fencing             (no TTL; outlives an
 *                       expired lock until reaped, so EXPIRED can name the holder)
 *   P{K}:fence  string  fencing counter; never deleted; when missing it is seeded
 *                       from Redis TIME in microseconds, so tokens keep rising
 *                       even after Redis loses its data
 *   P{K}:q      zset    FIFO queue: member = waiter token, score = arrival seq
 *   P{K}:qt     zset    liveness: member = waiter token, score = deadline (ms)
 *   P{K}:qs     string  arrival sequence counter
 *   Pools: device i of pool N is the ordinary key "N/i"; the pool's own FIFO
 *   queue is P pool{N}:q / :qt / :qs (note "pool{": no clash with any key).
 *   P pool{N}:qc  hash  waiter token -> the device count it waits for (only
 *                       counts above 1; absent = 1)
 *   A grant of several devices (count > 1) is one hold under one token: each
 *   device key gets its lock, hold and fencing as a single grant would, and
 *   each hold's field `grant` lists all the grant's device keys
 *   ("N/1 N/3"). Renew, release and force_release of any one device act on
 *   all of them in the same script, so a grant never becomes partial. Those
 *   scripts reach the other devices' records by name, so pools need a
 *   standalone (or Sentinel) Redis, not Redis Cluster.
 *   Shared devices (a request with a weight below the pool's capacity): the
 *   device's lock is the sentinel "~shared" (never a token) with a TTL at
 *   least as long as each live share's, so a free lock means no live share
 *   and every whole-device or plain-key acquire sees the device held; per
 *   share of token T:
 *   P{K}:shares     set     tokens of the device's shares
 *   P{K}:share:T    string  the share's weight, PX = its TTL (exists <=> live)
 *   P{K}:sh:T       hash    token, owner, fencing, weight[, grant] (the share's
 *                           hold record; EXPIRED is published when a script
 *                           next reads the device)
 *   A device's live shares' weights sum to at most the capacity; each share
 *   takes the device's next fencing token and has its own ACQUIRED / RELEASED
 *   / EXPIRED / FORCE_RELEASED events. Renew and release by the share's token
 *   (any device of its grant), force_release by its fencing, as for a hold.
 *   Pub/sub channel P events, one message per event, text:
 *     "<TYPE> <fencing> <at_unix_ms> <key> <owner>"
 *   TYPE is ACQUIRED, RELEASED, EXPIRED, FORCE_RELEASED, WAKE (queue of key
 *   changed) or WAKE_POOL (queue of pool <key> changed). The owner is last and
 *   may contain spaces; keys cannot (see validate.h).
 */

#include <stddef.h>
#include <stdint.h>

#include "errors.h"

struct event_base;

typedef struct baton_store baton_store;

typedef enum store_event_type {
    STORE_EV_ACQUIRED = 1,
    STORE_EV_RELEASED = 2,
    STORE_EV_EXPIRED = 3,
    STORE_EV_FORCE_RELEASED = 4,
    STORE_EV_WAKE = 5,      /* the queue of `key` changed: its head may be able to take it */
    STORE_EV_WAKE_POOL = 6, /* the queue of pool `key` changed */
    STORE_EV_LONG_HELD = 7, /* batond-local (alerts.long_held): never on the channel */
} store_event_type;

typedef struct store_event {
    store_event_type type;
    const char *key; /* a key, or a pool name for WAKE_POOL */
    const char *owner;
    uint64_t fencing;
    int64_t at_unix_ms;
} store_event;

/* Parses one pub/sub payload into `ev` (pointers into `buf`, which is
 * modified). Returns 0, or BATON_E_INVALID for a malformed message. Pure. */
int store_event_parse(char *buf, size_t len, store_event *ev);
/* Formats `ev` as a payload into out (NUL-terminated). Returns the length, or
 * -1 if it does not fit. Pure; used by tests and the fake store. */
int store_event_format(const store_event *ev, char *out, size_t outlen);
/* "ACQUIRED" ... ; NULL for an unknown type. */
const char *store_event_type_name(store_event_type t);

/* What an acquire attempt, a dequeue or a liveness refresh is about:
 * exactly one of key / pool is non-NULL. */
typedef struct store_target {
    const char *key;
    const char *pool;
    int32_t devices; /* pool only: devices "pool/0" .. "pool/devices-1" */
} store_target;

typedef struct store_acquire_req {
    store_target target;
    const char *token; /* BATON_TOKEN_LEN hex chars: names the queue entry and the hold */
    const char *owner;
    int64_t ttl_ms;      /* > 0 */
    int enqueue;         /* 1: join (or stay in) the FIFO queue when not granted; 0: try only */
    int64_t liveness_ms; /* queue entry deadline = Redis time + liveness_ms */
    int32_t count;       /* pool only: devices granted together, all or none;
                          * 0 or 1 = one device; at most target.devices */
    int64_t weight;      /* pool only: the share of each device taken; 0 (or
                          * capacity) = the whole device; at most capacity */
    int64_t capacity;    /* pool only, with a weight: each device's capacity */
} store_acquire_req;

/*
 * Acquire semantics (one script):
 *   - idempotent by token: if the token already holds the key (or a pool
 *     device), report that grant again (same fencing);
 *   - drop queue entries whose liveness deadline passed;
 *   - reap: a lock whose TTL ran out but whose P{K}:hold remains is reported
 *     as EXPIRED (published once) and the hold record is deleted;
 *   - grant iff the lock is free and the token is at the head of the queue
 *     (or the queue is empty). A pool grants the `count` lowest-index devices
 *     that are free and whose own key queue is empty (direct waiters on a
 *     device key go first), all in one step, or nothing; with a weight, devices
 *     that are free or shared with room for it. Strict FIFO per pool:
 *     a head that needs more devices than are free waits, and everyone behind
 *     it waits too, even for a single free device. (Backfill that never delays
 *     the head would be the same thing here: every free device is one the
 *     head will need, and a hold's end is not known in advance.) On grant, for
 *     every device: fencing = INCR fence (seeded if missing), SET lock PX
 *     ttl, HSET hold, remove the token from the queue, PUBLISH ACQUIRED; a pool
 *     grant that leaves waiters in the pool queue also publishes WAKE_POOL;
 *   - otherwise, with enqueue=1, add/keep the token in the queue and refresh
 *     its liveness deadline.
 */
typedef struct store_acquire_res {
    int granted;
    /* granted == 1 */
    const char *key; /* the key held: the device key "pool/i" for a pool */
    int32_t device;  /* pool device index; -1 for a plain key */
    uint64_t fencing;
    int64_t ttl_ms;
    /* pool: every device granted, lowest first, with its own fencing
     * (devices[0] == device, fencings[0] == fencing); ndevices = the
     * request's count. Plain key: 0 and NULL. */
    int32_t ndevices;
    const int32_t *devices;
    const uint64_t *fencings;
    /* granted == 0 */
    int64_t position;         /* 1-based position in the queue; 0 when not queued */
    int64_t queue_len;        /* entries in the queue (for messages) */
    const char *holder_owner; /* current holder ("" when free but others are ahead) */
    uint64_t holder_fencing;  /* 0 when free */
    int64_t retry_ms;         /* try again after this long even without an event:
                               * the holder's remaining TTL or, when a device is
                               * free, the remaining liveness of the entry ahead
                               * of it, whichever is sooner; -1 = none */
    const char *head_token;   /* when not granted and the lock is free (a pool: a
                               * device it could take is free) but another entry is
                               * at the queue head: that entry's token; else NULL
                               * or "". Lets the engine attempt that waiter when it
                               * is local, whatever its local order says. */
} store_acquire_res;

typedef void (*store_acquire_cb)(void *ud, int err, const char *msg, const store_acquire_res *res);

/* Result of renew / release / force_release. */
typedef struct store_hold_res {
    int64_t ttl_ms;           /* renew: the new TTL */
    const char *holder_owner; /* BATON_E_NOT_HOLDER: the real holder, "" if none */
    uint64_t holder_fencing;  /* BATON_E_NOT_HOLDER: its fencing, 0 if none */
    /* release with a `next` request, BATON_OK or BATON_E_NOT_HOLDER: what
     * became of it. granted == 1: key, fencing and ttl_ms as an acquire grant
     * (device -1). granted == 0: nothing else is set; the request was not
     * enqueued or refreshed (an ordinary acquire tells where it stands).
     * NULL for every other op, or when the release carried no request. */
    const store_acquire_res *next;
} store_hold_res;

typedef void (*store_hold_cb)(void *ud, int err, const char *msg, const store_hold_res *res);

typedef struct store_describe_res {
    int held;
    const char *owner;
    uint64_t fencing;
    int64_t ttl_ms;
    int64_t waiters;
} store_describe_res;

typedef void (*store_describe_cb)(void *ud, int err, const char *msg, const store_describe_res *res);

/* List (issue #18): one page of held locks. */
typedef struct store_lock_info {
    const char *key, *owner;
    uint64_t fencing;
    int64_t ttl_ms;      /* -1: no TTL */
    int64_t held_for_ms; /* 0: unknown (granted before holds recorded their time) */
    int64_t waiters;
} store_lock_info;
typedef struct store_list_res {
    const store_lock_info *locks;
    size_t n;
    const char *next_cursor; /* "0": the walk is complete */
} store_list_res;
typedef void (*store_list_cb)(void *ud, int err, const char *msg, const store_list_res *res);
typedef void (*store_done_cb)(void *ud, int err, const char *msg);

typedef struct store_ops {
    int (*acquire)(baton_store *s, const store_acquire_req *req, store_acquire_cb cb, void *ud);
    /* Removes token from the target's queue; publishes WAKE / WAKE_POOL when
     * it was at the head. */
    int (*dequeue)(baton_store *s, const store_target *t, const char *token, store_done_cb cb, void *ud);
    /* Owner-checked: PEXPIRE only if the lock's token is `token`. ttl_ms > 0.
     * A device of a multi-device grant renews all of them (one missing: the
     * rest end EXPIRED and it is BATON_E_NOT_HOLDER). */
    int (*renew)(baton_store *s, const char *key, const char *token, int64_t ttl_ms, store_hold_cb cb,
                 void *ud);
    /* Owner-checked: delete lock + hold only if held by `token`; PUBLISH RELEASED.
     * A device of a multi-device grant releases all of them (RELEASED each).
     * Direct handoff: `next` (NULL = none) is an acquire request for the same
     * plain key. When the release succeeded and, once dead entries are purged,
     * next->token heads the key's queue, the same script grants it the lock
     * exactly as acquire would (fencing INCR, SET PX next->ttl_ms, HSET hold,
     * dequeue, PUBLISH ACQUIRED after RELEASED). The result says so in
     * res->next. Saves the waiter's batond the pub/sub hop and an acquire
     * round trip; Redis still makes the grant, under acquire's rule. */
    int (*release)(baton_store *s, const char *key, const char *token, const store_acquire_req *next,
                   store_hold_cb cb, void *ud);
    /* Re-creates a STREAM hold that a change of primary lost (hooks.on_new_primary):
     * if nobody holds `key`, SET it to `token` with ttl_ms and record owner and
     * fencing (the grant's own, kept), raising the key's fence counter to at
     * least `fencing`; if `token` holds it, extend it as renew does; otherwise
     * BATON_E_NOT_HOLDER naming the holder. Publishes nothing: to watchers the
     * hold never ended. Results as renew. */
    int (*reassert)(baton_store *s, const char *key, const char *token, const char *owner, uint64_t fencing,
                    int64_t ttl_ms, store_hold_cb cb, void *ud);
    /* Delete the lock only if its holder's fencing is `fencing`; PUBLISH
     * FORCE_RELEASED (for every device of a multi-device grant). */
    int (*force_release)(baton_store *s, const char *key, uint64_t fencing, store_hold_cb cb, void *ud);
    int (*describe)(baton_store *s, const char *key, store_describe_cb cb, void *ud);
    /* Pushes the liveness deadline of each (targets[i], tokens[i]) queue entry
     * to now + liveness_ms, only where the entry still exists. Fire and forget.
     * Tokens without an entry are reported through hooks.on_missing.
     * Consecutive entries of one target are sent together (pass them grouped
     * by target: one script per target and 200 tokens), paced so that little
     * refresh work is queued ahead of other ops; a call made while the last
     * round is still being sent is skipped. */
    int (*refresh)(baton_store *s, const store_target *targets, const char *const *tokens, size_t n,
                   int64_t liveness_ms);
    /* If `key`'s lock expired but its hold record remains: publish EXPIRED
     * (once, whoever calls first) and delete the hold. Fire and forget. */
    int (*reap)(baton_store *s, const char *key);
    void (*free)(baton_store *s);
    /* One page of the locks whose key starts with prefix ("" = all), from
     * `cursor` ("0" = the start): a bounded SCAN walk (about limit locks, at
     * most 10 x limit keys examined, at least 1000). NULL in stores without it. */
    int (*list)(baton_store *s, const char *prefix, int32_t limit, const char *cursor, store_list_cb cb,
                void *ud);
} store_ops;

/*
 * Set by the engine before the store connects. Called on the loop thread.
 *   on_event: one parsed message of the events channel (also expirations seen
 *             through keyspace notifications are turned into reap calls by the
 *             store itself, which then yield EXPIRED events here).
 *   on_state: up = 1 once the command connection is ready (scripts loaded)
 *             AND the pub/sub subscription is confirmed; up = 0 when either is
 *             lost (in-flight ops then complete with BATON_E_UNAVAILABLE). After
 *             every up = 1 the engine re-checks all its waiters and holds.
 *   on_new_primary: called just before an on_state up = 1 when the Redis now
 *             connected to is not the one written to before (a promoted replica,
 *             a restart, a restored snapshot): writes since its last copy may be
 *             lost, holds among them. May be NULL.
 *   on_missing: a refresh found no queue entry for `token` in the queue of t
 *             (purged as dead while this batond stalled past the liveness
 *             window, or lost with Redis' data on a live connection). The
 *             engine attempts that waiter again so that it rejoins the queue.
 *             May be NULL.
 */
typedef struct store_hooks {
    void (*on_event)(void *ud, const store_event *ev);
    void (*on_state)(void *ud, int up);
    void (*on_new_primary)(void *ud);
    void (*on_missing)(void *ud, const store_target *t, const char *token);
    void *ud;
} store_hooks;

struct baton_store {
    const store_ops *ops;
    store_hooks hooks;
};

/* Options of the Redis store. Strings are copied. */
typedef struct store_redis_opts {
    const char *address;        /* a redis.address form (redis/address.h): "host:port",
                                 * "redis://host:port", "unix:/path" or
                                 * "sentinel://H:P[,H:P...]/MASTER_NAME" */
    const char *username;       /* ACL user for AUTH; NULL or "" = the default user */
    const char *password;       /* NULL or "" = no AUTH */
    const char *sentinel_password; /* the sentinels' own AUTH password; NULL or "" = none */
    int database;               /* SELECT n when n != 0 */
    const char *key_prefix;     /* e.g. "baton:" */
    int64_t command_timeout_ms; /* a reply overdue by this much drops the connection */
    int64_t reconnect_ms;       /* delay between reconnect attempts */
    int keyspace_events;        /* 1: CONFIG SET notify-keyspace-events Ex (best effort) and
                                 * reap on expirations of P{K}:lock keys */
    int min_replicas;           /* > 0: a grant (and a renewal) is reported only once WAIT says
                                 * this many replicas have it; else it is undone (token-checked
                                 * release) and the op fails BATON_E_UNAVAILABLE. Releases then
                                 * carry no direct handoff (a handoff grant could not be undone
                                 * without losing its waiter's place). */
    int64_t replica_timeout_ms; /* WAIT's timeout; below command_timeout_ms */
    int64_t failover_grace_ms;  /* > 0: lock-delay. For this long after the store reaches a Redis
                                 * it did not write to before (as hooks.on_new_primary; never on
                                 * the first connection), no acquire takes a free key or device:
                                 * the request is queued as usual and answered "not granted" with
                                 * retry_ms at most the grace left, so that holds lost with the
                                 * old primary are re-asserted (reassert) by their batonds first.
                                 * A token's existing grant is still reported, and releases carry
                                 * no direct handoff meanwhile. 0 = off. */
} store_redis_opts;

/* Creates the Redis store on `base` and starts connecting (it keeps
 * reconnecting forever). Returns NULL on bad options. hooks must be set
 * before the loop runs. Free with s->ops->free(s).
 *
 * Event priorities: the store puts its own events (replies, pub/sub
 * messages, the write of queued commands) at priority 0 so that wake-ups and
 * handoff grants do not wait behind a loop turn of other work. That only
 * helps when the caller created `base` with at least two priorities, BEFORE
 * creating any event, so that everything else defaults to a lower one:
 *     event_base_priority_init(base, 2);   (batond's main.c does this)
 * The store cannot do it itself: libevent refuses to change the number of
 * priorities once events are active, and events created before the change
 * would keep priority 0. With a single priority (a plain event_base, as in
 * the tests) the store works the same, only without that preference; it
 * says so once in the log. */
baton_store *store_redis_new(struct event_base *base, const store_redis_opts *opts);

/* 1 while on_state last reported up. */
int store_redis_is_up(const baton_store *s);

#endif
