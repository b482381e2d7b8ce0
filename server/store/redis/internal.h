/*
 * The Redis store's private header: the struct behind baton_store, the op
 * record, and the functions its files share (store_redis.c has the overview).
 */
#ifndef BATON_STORE_REDIS_INTERNAL_H
#define BATON_STORE_REDIS_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "address.h"
#include "clock.h"
#include "cluster_map.h"
#include "reply.h"
#include "store.h"

extern const char baton_lua_common[];
extern const char baton_lua_acquire[];
extern const char baton_lua_dequeue[];
extern const char baton_lua_renew[];
extern const char baton_lua_release[];
extern const char baton_lua_force_release[];
extern const char baton_lua_describe[];
extern const char baton_lua_refresh[];
extern const char baton_lua_reap[];
extern const char baton_lua_epoch[];
extern const char baton_lua_reassert[];
extern const char baton_lua_list[];

enum script_id {
    SC_ACQUIRE,
    SC_DEQUEUE,
    SC_RENEW,
    SC_RELEASE,
    SC_FORCE_RELEASE,
    SC_DESCRIBE,
    SC_REFRESH,
    SC_REAP,
    SC_EPOCH,
    SC_REASSERT,
    SC_LIST,
    SC_COUNT
};

extern const struct script_src {
    const char *name;
    const char *body;
} script_src[SC_COUNT];

typedef struct redis_store redis_store;
struct cluster_store;
struct rconn;

/* Most tokens in one refresh script (refresh.c says why). */
#define RSTORE_REFRESH_BATCH 200

/* How a reply is turned into a callback. */
typedef enum op_kind {
    OP_ACQUIRE,
    OP_DONE, /* dequeue */
    OP_RENEW,
    OP_RELEASE, /* release and force_release: {1|0, owner, fencing} */
    OP_DESCRIBE,
    OP_LIST,
    OP_FIRE, /* refresh, reap: no callback, errors are logged */
} op_kind;

/* One script call in flight. Owned by the store until its reply (or the loss
 * of its connection) completes it. */
typedef struct store_op {
    struct store_op *prev, *next; /* in-flight list, oldest first */
    redis_store *s;
    op_kind kind;
    enum script_id script;
    int retried; /* EVAL fallback after NOSCRIPT used */
    int64_t sent_ms;
    int64_t sent_us; /* metrics: the script's round trip */
    union {
        store_acquire_cb acquire;
        store_done_cb done;
        store_hold_cb hold;
        store_describe_cb describe;
        store_list_cb list;
    } cb;
    void *ud;
    char *name;  /* acquire: key or pool name, to name the device held;
                  * release with a handoff: the key */
    int pool;    /* acquire: 1 for a pool */
    int handoff; /* release: carries a next waiter's request */
    int ntokens; /* refresh: tokens in this batch */
    /* min_replicas: the op's result is reported only after WAIT (ops.c) */
    int refs;     /* 1 + the WAITs sent behind the script, not yet answered */
    int confirm;  /* acquire / renew: send WAIT behind the script */
    int awaiting; /* the script's result is held back until WAIT answers */
    int delivered;
    char *token;  /* acquire with confirm: to undo an unconfirmed grant */
    store_acquire_res held; /* the held-back grant (key: name or keybuf) */
    char keybuf[BATON_KEY_MAX + 16];
    int32_t *held_devs; /* its device lists (owned), or NULL */
    uint64_t *held_fencs;
    /* argv[0] ("EVALSHA"/"EVAL") and argv[1] (sha/text) are not owned; the rest are. */
    int argc, cap;
    const char **argv;
    size_t *argvlen;
    int oom;
} store_op;

/* SCRIPT LOAD callback data: which script a reply is for. */
typedef struct script_loader {
    redis_store *s;
    enum script_id id;
} script_loader;

struct redis_store {
    baton_store base; /* first: baton_store* <-> redis_store* */
    struct event_base *evb;

    char *address, *host, *unix_path, *username, *password, *prefix, *channel, *pattern, *epoch_key;
    int port, db, keyspace_events;
    redis_addr addr;           /* the parsed address */
    struct sentinel *sentinel; /* sentinel:// only: names host/port (store_redis.c) */
    int primary_known;         /* sentinel:// only: host/port name the primary to try */
    char fence_floor[24];      /* this primary's fencing floor (epoch.lua), sent with grants */
    int new_primary;           /* the floor moved on a reconnect: hooks.on_new_primary before up */
    int min_replicas;
    int64_t replica_timeout_ms;
    int64_t grace_ms;       /* failover_grace_ms (0 = off) */
    int64_t grace_until;    /* clock_mono_ms at which the open grace window ends; 0 = never opened */
    struct event *grace_ev; /* logs the window's end */
    int64_t timeout_ms, reconnect_ms;

    char *text[SC_COUNT]; /* common prelude + script */
    char sha[SC_COUNT][41];
    script_loader loader[SC_COUNT];

    redisAsyncContext *cmd, *sub;
    int cmd_ready, sub_ready, up;
    int cmd_init_left;
    int64_t cmd_started_ms, sub_started_ms;
    int want_drop_cmd, want_drop_sub; /* drops asked for from inside hiredis callbacks */

    store_op *head, *tail;
    struct refresh_round *rf; /* refresh entries not sent yet (see rstore_refresh) */
    int rf_ops, rf_tokens;    /* refresh batches (and their tokens) awaiting replies */

    struct event *reconnect_ev, *check_ev, *drop_ev, *free_ev;
    struct event *flush_ev; /* writes queued commands at once (see rstore_on_flush) */
    /* A node of a cluster:// store (cluster.c): names hash by tag, events go
     * over sharded pub/sub (conn_ssub.c), routing errors go to cluster.c. */
    struct cluster_store *cl; /* NULL for a standalone or Sentinel store */
    uint8_t *cl_owned;        /* cluster: bitmap of the slots this node serves (cluster.c keeps it) */
    uint8_t *cl_subscribed;   /* cluster: bitmap of the slots whose channel sub asked for */
    struct rconn *ssub;       /* cluster: the sharded pub/sub connection (instead of sub) */
    int ssub_pending;         /* cluster: replies still due to ssub's setup commands */
    int ask_next;             /* cluster: send the next op after ASKING (an ASK redirect) */
    int cl_fresh;             /* cluster: appeared after the first slot map (a promoted replica): its
                               * first connection counts as a new primary (conn_cmd.c on_epoch) */
    int cb_depth;           /* > 0 while a user callback or hook runs */
    int free_requested;     /* free() deferred: call no more callbacks */
    int freeing;            /* tearing down: callbacks are dropped */
};

static inline int callbacks_allowed(const redis_store *s)
{
    return !s->freeing && !s->free_requested;
}

static inline redis_store *rs(baton_store *b)
{
    return (redis_store *)b;
}

static inline int cl_bit(const uint8_t *map, int slot)
{
    return (map[slot >> 3] >> (slot & 7)) & 1;
}

static inline void cl_set_bit(uint8_t *map, int slot, int on)
{
    if (on)
        map[slot >> 3] |= (uint8_t)(1u << (slot & 7));
    else
        map[slot >> 3] &= (uint8_t) ~(1u << (slot & 7));
}

/* store_redis.c */
/* Creates a store on opts->address (not cluster://); cl != NULL makes it a
 * node of that cluster store. */
redis_store *rstore_create(struct event_base *base, const store_redis_opts *opts, struct cluster_store *cl);
/* Drops both connections now: ops in flight complete BATON_E_UNAVAILABLE.
 * Not from inside one of s's own callbacks. */
void rstore_disconnect(redis_store *s);
/* Connects a store made by rstore_create (a cluster node waits for this). */
void rstore_start(redis_store *s);
/* The events channel of name's slot (cluster) or the one channel; into buf. */
const char *rstore_channel_of(redis_store *s, const char *name, char *buf, size_t buflen);
/* Cluster: the events channel of one slot, "<prefix>events{T}", into buf. */
const char *rstore_slot_channel(const redis_store *s, int slot, char *buf, size_t buflen);
void rstore_update_state(redis_store *s);
void rstore_arm_reconnect(redis_store *s);
void rstore_request_drop(redis_store *s, int cmd, int sub);
redisAsyncContext *rstore_conn_open(redis_store *s, redisConnectCallback *on_conn,
                                    redisDisconnectCallback *on_disc);
void rstore_prioritise(struct event_base *base, struct event *ev);
/* A reply says this Redis is not (or no longer) the primary: find it again. */
void rstore_not_primary(redis_store *s, const char *why);
/* Lock-delay (failover_grace_ms): opens the window for ms (a new primary was
 * seen, or this batond starts inside the window another one opened); the ms
 * left of it (0: closed or off). */
void rstore_grace_open(redis_store *s, int64_t ms);
int64_t rstore_grace_left(const redis_store *s);

/* ops.c */
void rstore_op_free(store_op *o);
void rstore_op_unref(store_op *o);
store_op *rstore_op_new(redis_store *s, op_kind kind, enum script_id script, void *ud);
void rstore_op_arg(store_op *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void rstore_op_str(store_op *o, const char *str);
void rstore_key_arg(store_op *o, const char *key, const char *rec);
void rstore_pool_arg(store_op *o, const char *pool, const char *rec);
void rstore_chan_arg(store_op *o, const char *name);
void rstore_op_unlink(redis_store *s, store_op *o);
int rstore_op_send(store_op *o, int nkeys);
void rstore_op_fail(store_op *o, int err, const char *msg);
int rstore_target_ok(const store_target *t);
int rstore_acquire(baton_store *b, const store_acquire_req *req, store_acquire_cb cb, void *ud);
int rstore_dequeue(baton_store *b, const store_target *t, const char *token, store_done_cb cb, void *ud);
int rstore_renew(baton_store *b, const char *key, const char *token, int64_t ttl_ms, store_hold_cb cb,
                 void *ud);
int rstore_release(baton_store *b, const char *key, const char *token, const store_acquire_req *next,
                   store_hold_cb cb, void *ud);
int rstore_reassert(baton_store *b, const char *key, const char *token, const char *owner, uint64_t fencing,
                    int64_t ttl_ms, store_hold_cb cb, void *ud);
int rstore_force_release(baton_store *b, const char *key, uint64_t fencing, store_hold_cb cb, void *ud);
int rstore_describe(baton_store *b, const char *key, store_describe_cb cb, void *ud);
/* list.c (issue #18) */
int rstore_list(baton_store *b, const char *prefix, int32_t limit, const char *cursor, store_list_cb cb,
                void *ud);
void rstore_deliver_list(store_op *o, const redisReply *r);
int rstore_reap(baton_store *b, const char *key);

/* refresh.c */
void rstore_refresh_pump(redis_store *s);
void rstore_refresh_drop(redis_store *s);
int rstore_refresh(baton_store *b, const store_target *targets, const char *const *tokens, size_t n,
                   int64_t liveness_ms);

/* conn_cmd.c */
void rstore_cmd_open(redis_store *s);
void rstore_on_flush(evutil_socket_t fd, short what, void *arg);
void rstore_on_best_effort(redisAsyncContext *ac, void *r, void *privdata);

/* conn_sub.c */
void rstore_sub_open(redis_store *s);
/* One events-channel message; one expiration of a key's record. */
void rstore_sub_payload(redis_store *s, const char *payload, size_t len);
void rstore_sub_expired(redis_store *s, const char *name, size_t len);

/* conn_ssub.c (cluster nodes) */
void rstore_ssub_open(redis_store *s);
/* Subscribes to the channels of slots newly in cl_owned. */
void rstore_ssub_update(redis_store *s);
void rstore_ssub_close(redis_store *s);

/* cluster.c: a node's op met a routing error (MOVED, ASK, TRYAGAIN,
 * CLUSTERDOWN), as cluster_redirect_parse read it. */
void cluster__routing_error(struct cluster_store *c, const cluster_redirect *rd);
/* cluster.c: is b a cluster store, and is it up. */
int cluster__is(const baton_store *b);
/* cluster.c: a node says its slots changed (a sharded channel was dropped). */
void cluster__slots_changed(struct cluster_store *c);
int cluster__is_up(const baton_store *b);
baton_store *cluster__new(struct event_base *base, const store_redis_opts *opts);

#endif
