/*
 * The Redis store's private header: the struct behind baton_store, the op
 * record, and the functions its files share (store_redis.c has the overview).
 */
#ifndef BATON_STORE_REDIS_INTERNAL_H
#define BATON_STORE_REDIS_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <event2/event.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

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

enum script_id {
    SC_ACQUIRE,
    SC_DEQUEUE,
    SC_RENEW,
    SC_RELEASE,
    SC_FORCE_RELEASE,
    SC_DESCRIBE,
    SC_REFRESH,
    SC_REAP,
    SC_COUNT
};

extern const struct script_src {
    const char *name;
    const char *body;
} script_src[SC_COUNT];

typedef struct redis_store redis_store;

/* How a reply is turned into a callback. */
typedef enum op_kind {
    OP_ACQUIRE,
    OP_DONE, /* dequeue */
    OP_RENEW,
    OP_RELEASE, /* release and force_release: {1|0, owner, fencing} */
    OP_DESCRIBE,
    OP_FIRE, /* refresh, reap: no callback, errors are logged */
} op_kind;

/* One script call in flight. Owned by the store until its reply (or the loss
 * of its connection) completes it. */
typedef struct store_op {
    struct store_op *_prev, *_next; /* in-flight list, oldest first */
    redis_store *_s;
    op_kind _kind;
    enum script_id _script;
    int _retried; /* EVAL fallback after NOSCRIPT used */
    int64_t _sent_ms;
    union {
        store_acquire_cb acquire;
        store_done_cb done;
        store_hold_cb hold;
        store_describe_cb describe;
    } _cb;
    void *_ud;
    char *_name;  /* acquire: key or pool name, to name the device held;
                   * release with a handoff: the key */
    int _pool;    /* acquire: 1 for a pool */
    int _handoff; /* release: carries a next waiter's request */
    int _ntokens; /* refresh: tokens in this batch */
    /* argv[0] ("EVALSHA"/"EVAL") and argv[1] (sha/text) are not owned; the rest are. */
    int _argc, _cap;
    const char **_argv;
    size_t *_argvlen;
    int _oom;
} store_op;

/* SCRIPT LOAD callback data: which script a reply is for. */
typedef struct script_loader {
    redis_store *_s;
    enum script_id _id;
} script_loader;

struct redis_store {
    baton_store base; /* first: baton_store* <-> redis_store* */
    struct event_base *_evb;

    char *_address, *_host, *_unix_path, *_password, *_prefix, *_channel, *_pattern;
    int _port, _db, _keyspace_events;
    int64_t _timeout_ms, _reconnect_ms;

    char *_text[SC_COUNT]; /* common prelude + script */
    char _sha[SC_COUNT][41];
    script_loader _loader[SC_COUNT];

    redisAsyncContext *_cmd, *_sub;
    int _cmd_ready, _sub_ready, _up;
    int _cmd_init_left;
    int64_t _cmd_started_ms, _sub_started_ms;
    int _drop_cmd, _drop_sub; /* drops asked for from inside hiredis callbacks */

    store_op *_head, *_tail;
    struct refresh_round *_rf; /* refresh entries not sent yet (see st_refresh) */
    int _rf_ops, _rf_tokens;   /* refresh batches (and their tokens) awaiting replies */

    struct event *_reconnect_ev, *_check_ev, *_drop_ev, *_free_ev;
    struct event *_flush_ev; /* writes queued commands at once (see on_flush) */
    int _cb_depth;           /* > 0 while a user callback or hook runs */
    int _free_requested;     /* free() deferred: call no more callbacks */
    int _freeing;            /* tearing down: callbacks are dropped */
};

static inline int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline int callbacks_allowed(const redis_store *s)
{
    return !s->_freeing && !s->_free_requested;
}

static inline redis_store *rs(baton_store *b)
{
    return (redis_store *)b;
}

/* store_redis.c */
void update_state(redis_store *s);
void arm_reconnect(redis_store *s);
void drop_cmd(redis_store *s);
void drop_sub(redis_store *s);
void request_drop(redis_store *s, int cmd, int sub);
redisAsyncContext *conn_open(redis_store *s, redisConnectCallback *on_conn, redisDisconnectCallback *on_disc);
void prioritise(struct event_base *base, struct event *ev);

/* ops.c */
void op_free(store_op *o);
store_op *op_new(redis_store *s, op_kind kind, enum script_id script, void *ud);
void op_arg(store_op *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void op_str(store_op *o, const char *str);
void key_arg(store_op *o, const char *key, const char *rec);
void pool_arg(store_op *o, const char *pool, const char *rec);
void list_unlink(redis_store *s, store_op *o);
int op_send(store_op *o, int nkeys);
void op_fail(store_op *o, int err, const char *msg);
void on_reply(redisAsyncContext *ac, void *r, void *privdata);
int target_ok(const store_target *t);
int st_acquire(baton_store *b, const store_acquire_req *req, store_acquire_cb cb, void *ud);
int st_dequeue(baton_store *b, const store_target *t, const char *token, store_done_cb cb, void *ud);
int st_renew(baton_store *b, const char *key, const char *token, int64_t ttl_ms, store_hold_cb cb, void *ud);
int st_release(baton_store *b, const char *key, const char *token, const store_acquire_req *next,
               store_hold_cb cb, void *ud);
int st_force_release(baton_store *b, const char *key, uint64_t fencing, store_hold_cb cb, void *ud);
int st_describe(baton_store *b, const char *key, store_describe_cb cb, void *ud);
int st_reap(baton_store *b, const char *key);

/* reply.c */
int el_int(const redisReply *r, size_t i, long long *out);
int el_str(const redisReply *r, size_t i, const char **out);
void deliver_acquire(store_op *o, const redisReply *r);
void deliver_hold(store_op *o, const redisReply *r);
void deliver_describe(store_op *o, const redisReply *r);
void deliver_missing(store_op *o, const redisReply *r);

/* refresh.c */
void refresh_pump(redis_store *s);
void refresh_drop(redis_store *s);
int st_refresh(baton_store *b, const store_target *targets, const char *const *tokens, size_t n,
               int64_t liveness_ms);

/* conn_cmd.c */
void cmd_open(redis_store *s);
void on_flush(evutil_socket_t fd, short what, void *arg);
void on_best_effort(redisAsyncContext *ac, void *r, void *privdata);

/* conn_sub.c */
void sub_open(redis_store *s);

#endif
