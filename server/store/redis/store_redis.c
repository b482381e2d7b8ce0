/*
 * The Redis store (store.h): hiredis 0.14.1 async on the engine's libevent
 * loop. Two connections:
 *   cmd  AUTH, SELECT, CLIENT SETNAME, SCRIPT LOAD of every script, then one
 *        EVALSHA per op (EVAL once when Redis answers NOSCRIPT);
 *   sub  SUBSCRIBE "<prefix>events" (+ PSUBSCRIBE of expirations when
 *        keyspace_events is on).
 * The store is "up" while cmd has loaded its scripts and sub has its
 * subscription confirmed. Lost connections come back through one reconnect
 * timer; a periodic check drops both connections when a reply is overdue.
 *
 * Lifetime rules:
 *   - every op sent completes exactly once: with its reply, or with
 *     BATON_E_UNAVAILABLE when its connection is lost or dropped;
 *   - a context is never freed from inside one of its own callbacks: errors
 *     seen there ask for a drop through `drop_ev`;
 *   - ops still in flight when the store is freed are DROPPED: their
 *     callbacks are never called (the engine is usually gone by then);
 *   - free() called from inside a store callback or hook is deferred to the
 *     next loop iteration; from then on no callback or hook is called.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "log.h"
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

static const struct {
    const char *name;
    const char *body;
} script_src[SC_COUNT] = {
    [SC_ACQUIRE] = {"acquire", baton_lua_acquire},
    [SC_DEQUEUE] = {"dequeue", baton_lua_dequeue},
    [SC_RENEW] = {"renew", baton_lua_renew},
    [SC_RELEASE] = {"release", baton_lua_release},
    [SC_FORCE_RELEASE] = {"force_release", baton_lua_force_release},
    [SC_DESCRIBE] = {"describe", baton_lua_describe},
    [SC_REFRESH] = {"refresh", baton_lua_refresh},
    [SC_REAP] = {"reap", baton_lua_reap},
};

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

static const store_ops redis_ops;

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct timeval tv_of_ms(int64_t ms)
{
    struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)((ms % 1000) * 1000)};
    return tv;
}

static int callbacks_allowed(const redis_store *s)
{
    return !s->_freeing && !s->_free_requested;
}

/* ---------------------------------------------------------------- state */

static void update_state(redis_store *s)
{
    int up = s->_cmd_ready && s->_sub_ready && callbacks_allowed(s);
    if (up == s->_up)
        return;
    s->_up = up;
    LOG_INFO("redis %s: store %s", s->_address, up ? "up" : "down");
    if (s->base.hooks.on_state && callbacks_allowed(s)) {
        s->_cb_depth++;
        s->base.hooks.on_state(s->base.hooks.ud, up);
        s->_cb_depth--;
    }
}

static void arm_reconnect(redis_store *s)
{
    if (s->_freeing || s->_free_requested || evtimer_pending(s->_reconnect_ev, NULL))
        return;
    struct timeval tv = tv_of_ms(s->_reconnect_ms);
    evtimer_add(s->_reconnect_ev, &tv);
}

/* Frees the command connection; its in-flight ops complete with
 * BATON_E_UNAVAILABLE right here. Never call from its own callback. */
static void drop_cmd(redis_store *s)
{
    redisAsyncContext *ac = s->_cmd;
    if (!ac)
        return;
    s->_cmd = NULL;
    s->_cmd_ready = 0;
    update_state(s);
    redisAsyncFree(ac);
    arm_reconnect(s);
}

static void drop_sub(redis_store *s)
{
    redisAsyncContext *ac = s->_sub;
    if (!ac)
        return;
    s->_sub = NULL;
    s->_sub_ready = 0;
    update_state(s);
    redisAsyncFree(ac);
    arm_reconnect(s);
}

/* From inside a hiredis callback: drop a connection on the next loop turn. */
static void request_drop(redis_store *s, int cmd, int sub)
{
    s->_drop_cmd |= cmd;
    s->_drop_sub |= sub;
    event_active(s->_drop_ev, 0, 0);
}

static void on_drop(evutil_socket_t fd, short what, void *arg)
{
    redis_store *s = arg;
    int cmd = s->_drop_cmd, sub = s->_drop_sub;
    s->_drop_cmd = s->_drop_sub = 0;
    if (cmd)
        drop_cmd(s);
    if (sub)
        drop_sub(s);
}

/* ------------------------------------------------------------------ ops */

static void op_free(store_op *o)
{
    for (int i = 2; i < o->_argc; i++)
        free((char *)o->_argv[i]);
    free(o->_argv);
    free(o->_argvlen);
    free(o->_name);
    free(o);
}

static store_op *op_new(redis_store *s, op_kind kind, enum script_id script, void *ud)
{
    store_op *o = calloc(1, sizeof(*o));
    if (!o)
        return NULL;
    o->_s = s;
    o->_kind = kind;
    o->_script = script;
    o->_ud = ud;
    o->_argc = 3; /* EVALSHA, sha, numkeys (filled in by op_send) */
    o->_cap = 24; /* a plain-key acquire has 17 */
    o->_argv = calloc((size_t)o->_cap, sizeof(*o->_argv));
    o->_argvlen = calloc((size_t)o->_cap, sizeof(*o->_argvlen));
    if (!o->_argv || !o->_argvlen) {
        free(o->_argv);
        free(o->_argvlen);
        free(o);
        return NULL;
    }
    return o;
}

/* Room for one more argument; 0, or -1 (and _oom) when out of memory. */
static int op_room(store_op *o)
{
    if (o->_oom)
        return -1;
    if (o->_argc < o->_cap)
        return 0;
    int cap = o->_cap * 2;
    const char **argv = realloc(o->_argv, (size_t)cap * sizeof(*argv));
    if (argv)
        o->_argv = argv;
    size_t *lens = realloc(o->_argvlen, (size_t)cap * sizeof(*lens));
    if (lens)
        o->_argvlen = lens;
    if (!argv || !lens) {
        o->_oom = 1;
        return -1;
    }
    o->_cap = cap;
    return 0;
}

/* Appends an owned argument of n bytes (NULL: out of memory). */
static void op_take(store_op *o, char *str, size_t n)
{
    if (!str) {
        o->_oom = 1;
        return;
    }
    o->_argv[o->_argc] = str;
    o->_argvlen[o->_argc] = n;
    o->_argc++;
}

/* Appends one printf-formatted argument; remembers OOM for op_send. */
static void op_arg(store_op *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void op_arg(store_op *o, const char *fmt, ...)
{
    if (op_room(o) != 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    char *str = NULL;
    int n = vasprintf(&str, fmt, ap);
    va_end(ap);
    op_take(o, n < 0 ? NULL : str, n < 0 ? 0 : (size_t)n);
}

/* Appends a copy of str (no printf machinery: most arguments are plain). */
static void op_str(store_op *o, const char *str)
{
    if (op_room(o) != 0)
        return;
    size_t n = strlen(str);
    char *copy = malloc(n + 1);
    if (copy)
        memcpy(copy, str, n + 1);
    op_take(o, copy, n);
}

static void key_arg(store_op *o, const char *key, const char *rec)
{
    op_arg(o, "%s{%s}:%s", o->_s->_prefix, key, rec);
}

static void pool_arg(store_op *o, const char *pool, const char *rec)
{
    op_arg(o, "%spool{%s}:%s", o->_s->_prefix, pool, rec);
}

static void list_unlink(redis_store *s, store_op *o)
{
    if (o->_prev)
        o->_prev->_next = o->_next;
    else
        s->_head = o->_next;
    if (o->_next)
        o->_next->_prev = o->_prev;
    else
        s->_tail = o->_prev;
    o->_prev = o->_next = NULL;
}

static void on_reply(redisAsyncContext *ac, void *r, void *privdata);

/*
 * Sends an op whose KEYS (the first nkeys arguments added) and ARGV are
 * built. Takes ownership of o. Returns 0, or BATON_E_UNAVAILABLE (store down)
 * / BATON_E_NOMEM with o freed and no callback to come.
 */
static int op_send(store_op *o, int nkeys)
{
    redis_store *s = o->_s;
    if (o->_oom) {
        op_free(o);
        return BATON_E_NOMEM;
    }
    if (!s->_up || !s->_cmd) {
        op_free(o);
        return BATON_E_UNAVAILABLE;
    }
    char numkeys[16];
    snprintf(numkeys, sizeof(numkeys), "%d", nkeys);
    o->_argv[2] = strdup(numkeys);
    if (!o->_argv[2]) {
        op_free(o);
        return BATON_E_NOMEM;
    }
    o->_argvlen[2] = strlen(numkeys);
    o->_argv[0] = "EVALSHA";
    o->_argvlen[0] = 7;
    o->_argv[1] = s->_sha[o->_script];
    o->_argvlen[1] = strlen(s->_sha[o->_script]);
    if (redisAsyncCommandArgv(s->_cmd, on_reply, o, o->_argc, o->_argv, o->_argvlen) != REDIS_OK) {
        op_free(o);
        return BATON_E_UNAVAILABLE;
    }
    event_active(s->_flush_ev, 0, 0); /* no-op while already active */
    o->_sent_ms = mono_ms();
    o->_prev = s->_tail;
    if (s->_tail)
        s->_tail->_next = o;
    else
        s->_head = o;
    s->_tail = o;
    return 0;
}

/* Completes an op with an error (res NULL). */
static void op_fail(store_op *o, int err, const char *msg)
{
    redis_store *s = o->_s;
    if (!callbacks_allowed(s))
        return;
    s->_cb_depth++;
    switch (o->_kind) {
    case OP_ACQUIRE:
        if (o->_cb.acquire)
            o->_cb.acquire(o->_ud, err, msg, NULL);
        break;
    case OP_DONE:
        if (o->_cb.done)
            o->_cb.done(o->_ud, err, msg);
        break;
    case OP_RENEW:
    case OP_RELEASE:
        if (o->_cb.hold)
            o->_cb.hold(o->_ud, err, msg, NULL);
        break;
    case OP_DESCRIBE:
        if (o->_cb.describe)
            o->_cb.describe(o->_ud, err, msg, NULL);
        break;
    case OP_FIRE: LOG_WARN("redis: %s failed: %s", script_src[o->_script].name, msg); break;
    }
    s->_cb_depth--;
}

/* Element i of an array reply as an integer / a string; -1 if it is not one. */
static int el_int(const redisReply *r, size_t i, long long *out)
{
    if (i >= r->elements || r->element[i]->type != REDIS_REPLY_INTEGER)
        return -1;
    *out = r->element[i]->integer;
    return 0;
}

static int el_str(const redisReply *r, size_t i, const char **out)
{
    if (i >= r->elements || r->element[i]->type != REDIS_REPLY_STRING)
        return -1;
    *out = r->element[i]->str;
    return 0;
}

static void deliver_acquire(store_op *o, const redisReply *r)
{
    long long granted, a, b, c, d;
    const char *owner, *head;
    store_acquire_res res = {0};
    char devkey[BATON_KEY_MAX + 16];
    if (r->type != REDIS_REPLY_ARRAY || el_int(r, 0, &granted) != 0)
        goto bad;
    if (granted == 2) {
        /* A pool whose waiters use another device count (acquire.lua). */
        char msg[BATON_KEY_MAX + 128];
        if (el_int(r, 1, &a) != 0)
            goto bad;
        snprintf(msg, sizeof msg,
                 "pool '%s' has waiters that use %lld devices; a request for it must use the same "
                 "count while they wait",
                 o->_name ? o->_name : "?", a);
        op_fail(o, BATON_E_INVALID, msg);
        return;
    }
    if (granted) {
        if (el_int(r, 1, &a) || el_int(r, 2, &b) || el_int(r, 3, &c))
            goto bad;
        res.granted = 1;
        res.device = (int32_t)a;
        res.fencing = (uint64_t)b;
        res.ttl_ms = c;
        res.key = o->_name;
        if (o->_pool) {
            snprintf(devkey, sizeof(devkey), "%s/%lld", o->_name, a);
            res.key = devkey;
        }
    } else {
        if (el_int(r, 1, &a) || el_int(r, 2, &b) || el_str(r, 3, &owner) || el_int(r, 4, &c) ||
            el_int(r, 5, &d) || el_str(r, 6, &head))
            goto bad;
        res.device = -1;
        res.position = a;
        res.queue_len = b;
        res.holder_owner = owner;
        res.holder_fencing = (uint64_t)c;
        res.retry_ms = d;
        res.head_token = head;
    }
    if (o->_cb.acquire)
        o->_cb.acquire(o->_ud, BATON_OK, NULL, &res);
    return;
bad:
    op_fail(o, BATON_E_INTERNAL, "unexpected reply to acquire");
}

/* {1, ...} or {0, holder_owner, holder_fencing} of renew / release / force_release. */
static void deliver_hold(store_op *o, const redisReply *r)
{
    long long ok, a, b;
    const char *owner;
    store_hold_res res = {0};
    char msg[BATON_OWNER_MAX + 96];
    if (r->type != REDIS_REPLY_ARRAY || el_int(r, 0, &ok) != 0)
        goto bad;
    if (ok && o->_kind == OP_RENEW) {
        if (el_int(r, 1, &a))
            goto bad;
        res.ttl_ms = a;
        res.holder_owner = "";
        if (o->_cb.hold)
            o->_cb.hold(o->_ud, BATON_OK, NULL, &res);
        return;
    }
    if (el_str(r, 1, &owner) || el_int(r, 2, &b))
        goto bad;
    res.holder_owner = owner;
    res.holder_fencing = (uint64_t)b;
    store_acquire_res next = {.device = -1, .retry_ms = -1};
    if (o->_handoff) {
        res.next = &next;
        if (ok && r->elements >= 5) {
            long long f, ttl;
            if (el_int(r, 3, &f) || el_int(r, 4, &ttl))
                goto bad;
            next.granted = 1;
            next.key = o->_name;
            next.fencing = (uint64_t)f;
            next.ttl_ms = ttl;
        }
    }
    if (ok) {
        if (o->_cb.hold)
            o->_cb.hold(o->_ud, BATON_OK, NULL, &res);
        return;
    }
    if (res.holder_fencing)
        snprintf(msg, sizeof(msg), "not the holder: held by \"%s\" (fencing %" PRIu64 ")", owner,
                 res.holder_fencing);
    else
        snprintf(msg, sizeof(msg), "not the holder: the key is not held");
    if (o->_cb.hold)
        o->_cb.hold(o->_ud, BATON_E_NOT_HOLDER, msg, &res);
    return;
bad:
    op_fail(o, BATON_E_INTERNAL, "unexpected reply to a hold script");
}

static void deliver_describe(store_op *o, const redisReply *r)
{
    long long held, fencing, ttl, waiters;
    const char *owner;
    if (r->type != REDIS_REPLY_ARRAY || el_int(r, 0, &held) || el_str(r, 1, &owner) ||
        el_int(r, 2, &fencing) || el_int(r, 3, &ttl) || el_int(r, 4, &waiters)) {
        op_fail(o, BATON_E_INTERNAL, "unexpected reply to describe");
        return;
    }
    store_describe_res res = {
        .held = held != 0, .owner = owner, .fencing = (uint64_t)fencing, .ttl_ms = ttl, .waiters = waiters};
    if (o->_cb.describe)
        o->_cb.describe(o->_ud, BATON_OK, NULL, &res);
}

/* A refresh reply: the tokens of the batch's target without a queue entry. */
static void deliver_missing(store_op *o, const redisReply *r)
{
    redis_store *s = o->_s;
    if (r->type != REDIS_REPLY_ARRAY || !o->_name) {
        LOG_WARN("redis: unexpected reply to refresh");
        return;
    }
    store_target t = {.key = o->_pool ? NULL : o->_name, .pool = o->_pool ? o->_name : NULL};
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *e = r->element[i];
        if (e->type != REDIS_REPLY_STRING || !s->base.hooks.on_missing)
            continue;
        s->base.hooks.on_missing(s->base.hooks.ud, &t, e->str);
        if (!callbacks_allowed(s))
            return; /* freed from inside the hook */
    }
}

static void refresh_pump(redis_store *s);

/* Completes op o with reply r (NULL: connection gone). Returns 1 once o is
 * freed, 0 when it was sent again (EVAL after NOSCRIPT). */
static int op_reply(redisAsyncContext *ac, void *r, store_op *o)
{
    redis_store *s = o->_s;
    redisReply *reply = r;

    if (!reply) {
        /* The connection is going away: refuse new ops from here on. */
        if (ac == s->_cmd && s->_cmd_ready) {
            s->_cmd_ready = 0;
            update_state(s);
        }
        list_unlink(s, o);
        op_fail(o, BATON_E_UNAVAILABLE, "redis connection lost; the outcome is unknown");
        op_free(o);
        return 1;
    }
    if (reply->type == REDIS_REPLY_ERROR && !o->_retried && strncmp(reply->str, "NOSCRIPT", 8) == 0) {
        /* Script cache flushed (SCRIPT FLUSH, failover): send the text once. */
        o->_retried = 1;
        o->_argv[0] = "EVAL";
        o->_argvlen[0] = 4;
        o->_argv[1] = s->_text[o->_script];
        o->_argvlen[1] = strlen(s->_text[o->_script]);
        if (redisAsyncCommandArgv(ac, on_reply, o, o->_argc, o->_argv, o->_argvlen) == REDIS_OK)
            return 0;
        list_unlink(s, o);
        op_fail(o, BATON_E_UNAVAILABLE, "redis connection lost; the outcome is unknown");
        op_free(o);
        return 1;
    }
    list_unlink(s, o);
    if (reply->type == REDIS_REPLY_ERROR) {
        LOG_WARN("redis: %s script: %s", script_src[o->_script].name, reply->str);
        op_fail(o, BATON_E_INTERNAL, reply->str);
    } else if (callbacks_allowed(s)) {
        s->_cb_depth++;
        switch (o->_kind) {
        case OP_ACQUIRE: deliver_acquire(o, reply); break;
        case OP_RENEW:
        case OP_RELEASE: deliver_hold(o, reply); break;
        case OP_DESCRIBE: deliver_describe(o, reply); break;
        case OP_DONE:
            if (o->_cb.done)
                o->_cb.done(o->_ud, BATON_OK, NULL);
            break;
        case OP_FIRE:
            if (o->_script == SC_REFRESH)
                deliver_missing(o, reply);
            break;
        }
        s->_cb_depth--;
    }
    op_free(o);
    return 1;
}

/* Reply (or NULL: connection gone) to an op's EVALSHA / EVAL. */
static void on_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    store_op *o = privdata;
    redis_store *s = o->_s;
    int refresh = o->_kind == OP_FIRE && o->_script == SC_REFRESH;
    int ntokens = o->_ntokens;
    if (op_reply(ac, r, o) && refresh) {
        s->_rf_ops--;
        s->_rf_tokens -= ntokens;
        refresh_pump(s);
    }
}

/* ------------------------------------------------------- op entry points */

static redis_store *rs(baton_store *b)
{
    return (redis_store *)b;
}

static int target_ok(const store_target *t)
{
    if (!t || (!t->key) == (!t->pool))
        return 0;
    return t->key ? t->key[0] != '\0' : (t->pool[0] != '\0' && t->devices > 0);
}

static int st_acquire(baton_store *b, const store_acquire_req *req, store_acquire_cb cb, void *ud)
{
    redis_store *s = rs(b);
    if (!req || !target_ok(&req->target) || !req->token || req->ttl_ms <= 0)
        return BATON_E_INVALID;
    if (!s->_up)
        return BATON_E_UNAVAILABLE;
    const store_target *t = &req->target;
    store_op *o = op_new(s, OP_ACQUIRE, SC_ACQUIRE, ud);
    if (!o)
        return BATON_E_NOMEM;
    o->_cb.acquire = cb;
    o->_pool = t->pool != NULL;
    o->_name = strdup(t->key ? t->key : t->pool);
    if (!o->_name)
        o->_oom = 1;
    int nkeys;
    if (t->key) {
        static const char *recs[] = {"lock", "hold", "fence", "q", "qt", "qs"};
        for (int i = 0; i < 6; i++)
            key_arg(o, t->key, recs[i]);
        nkeys = 6;
    } else {
        pool_arg(o, t->pool, "q");
        pool_arg(o, t->pool, "qt");
        pool_arg(o, t->pool, "qs");
        static const char *recs[] = {"lock", "hold", "fence", "q", "qt"};
        for (int32_t d = 0; d < t->devices; d++)
            for (int i = 0; i < 5; i++)
                op_arg(o, "%s{%s/%" PRId32 "}:%s", s->_prefix, t->pool, d, recs[i]);
        pool_arg(o, t->pool, "qn"); /* the device count its waiters use */
        nkeys = 4 + 5 * t->devices;
    }
    op_str(o, s->_channel);
    op_str(o, t->key ? t->key : t->pool);
    op_str(o, req->token);
    op_str(o, req->owner ? req->owner : "");
    op_arg(o, "%" PRId64, req->ttl_ms);
    op_arg(o, "%d", req->enqueue ? 1 : 0);
    op_arg(o, "%" PRId64, req->liveness_ms > 0 ? req->liveness_ms : 0);
    op_arg(o, "%" PRId32, t->key ? 0 : t->devices);
    return op_send(o, nkeys);
}

static int st_dequeue(baton_store *b, const store_target *t, const char *token, store_done_cb cb, void *ud)
{
    redis_store *s = rs(b);
    if (!target_ok(t) || !token)
        return BATON_E_INVALID;
    if (!s->_up)
        return BATON_E_UNAVAILABLE;
    store_op *o = op_new(s, OP_DONE, SC_DEQUEUE, ud);
    if (!o)
        return BATON_E_NOMEM;
    o->_cb.done = cb;
    if (t->key) {
        key_arg(o, t->key, "q");
        key_arg(o, t->key, "qt");
    } else {
        pool_arg(o, t->pool, "q");
        pool_arg(o, t->pool, "qt");
    }
    op_str(o, s->_channel);
    op_str(o, t->key ? t->key : t->pool);
    op_str(o, t->key ? "WAKE" : "WAKE_POOL");
    op_str(o, token);
    return op_send(o, 2);
}

/* An op on one key's lock + hold records: KEYS lock, hold; ARGV channel, key. */
static store_op *lock_op(redis_store *s, op_kind kind, enum script_id script, const char *key, void *ud)
{
    store_op *o = op_new(s, kind, script, ud);
    if (!o)
        return NULL;
    key_arg(o, key, "lock");
    key_arg(o, key, "hold");
    op_str(o, s->_channel);
    op_str(o, key);
    return o;
}

static int st_renew(baton_store *b, const char *key, const char *token, int64_t ttl_ms, store_hold_cb cb,
                    void *ud)
{
    redis_store *s = rs(b);
    if (!key || !key[0] || !token || ttl_ms <= 0)
        return BATON_E_INVALID;
    if (!s->_up)
        return BATON_E_UNAVAILABLE;
    store_op *o = lock_op(s, OP_RENEW, SC_RENEW, key, ud);
    if (!o)
        return BATON_E_NOMEM;
    o->_cb.hold = cb;
    op_str(o, token);
    op_arg(o, "%" PRId64, ttl_ms);
    return op_send(o, 2);
}

static int st_release(baton_store *b, const char *key, const char *token, const store_acquire_req *next,
                      store_hold_cb cb, void *ud)
{
    redis_store *s = rs(b);
    if (!key || !key[0] || !token)
        return BATON_E_INVALID;
    if (next &&
        (!next->token || !next->target.key || strcmp(next->target.key, key) != 0 || next->ttl_ms <= 0))
        return BATON_E_INVALID;
    if (!s->_up)
        return BATON_E_UNAVAILABLE;
    store_op *o = op_new(s, OP_RELEASE, SC_RELEASE, ud);
    if (!o)
        return BATON_E_NOMEM;
    o->_cb.hold = cb;
    /* fence, q and qt only for a handoff: a plain release touches lock and hold. */
    static const char *recs[] = {"lock", "hold", "fence", "q", "qt"};
    int nkeys = next ? 5 : 2;
    for (int i = 0; i < nkeys; i++)
        key_arg(o, key, recs[i]);
    op_str(o, s->_channel);
    op_str(o, key);
    op_str(o, token);
    if (next) {
        o->_handoff = 1;
        o->_name = strdup(key);
        if (!o->_name)
            o->_oom = 1;
        op_str(o, next->token);
        op_str(o, next->owner ? next->owner : "");
        op_arg(o, "%" PRId64, next->ttl_ms);
    }
    return op_send(o, nkeys);
}

static int st_force_release(baton_store *b, const char *key, uint64_t fencing, store_hold_cb cb, void *ud)
{
    redis_store *s = rs(b);
    if (!key || !key[0] || fencing == 0)
        return BATON_E_INVALID;
    if (!s->_up)
        return BATON_E_UNAVAILABLE;
    store_op *o = lock_op(s, OP_RELEASE, SC_FORCE_RELEASE, key, ud);
    if (!o)
        return BATON_E_NOMEM;
    o->_cb.hold = cb;
    op_arg(o, "%" PRIu64, fencing);
    return op_send(o, 2);
}

static int st_describe(baton_store *b, const char *key, store_describe_cb cb, void *ud)
{
    redis_store *s = rs(b);
    if (!key || !key[0])
        return BATON_E_INVALID;
    if (!s->_up)
        return BATON_E_UNAVAILABLE;
    store_op *o = op_new(s, OP_DESCRIBE, SC_DESCRIBE, ud);
    if (!o)
        return BATON_E_NOMEM;
    o->_cb.describe = cb;
    key_arg(o, key, "lock");
    key_arg(o, key, "hold");
    key_arg(o, key, "q");
    op_str(o, s->_channel);
    op_str(o, key);
    return op_send(o, 3);
}

static int same_target(const store_target *a, const store_target *b)
{
    if (a->key && b->key)
        return strcmp(a->key, b->key) == 0;
    return a->pool && b->pool && strcmp(a->pool, b->pool) == 0;
}

/*
 * Why batched: one script per waiter made 10,000 waiting streams cost 5,000
 * scripts a second (and as many command builds on the loop) and stalled
 * handoffs behind each burst. Consecutive entries of one target share its
 * liveness zset, so they go in one script, up to REFRESH_BATCH tokens.
 * Why paced: Redis runs a connection's pipelined commands in order, so a
 * release sent during a burst of 50 batches waited for all of them. Batches
 * go out while at most REFRESH_BATCH tokens are in flight (always at least
 * one batch): a release waits behind ~0.2 ms of refresh at most, and many
 * small batches (many keys with a waiter or two) still go out together.
 * A round that is still sending when the next is due is left to finish and
 * the new one skipped: replacing it would drop the same tail every time and
 * let those waiters' entries expire.
 */
#define REFRESH_BATCH 200

/* A round's entries, copied, in runs of one target; batches are built from
 * them only as they go out (building all 50 of 10,000 waiters at once held
 * the loop for ~4 ms). */
typedef struct refresh_run {
    char *name; /* key or pool name */
    int pool;
    size_t first, count; /* its tokens: tokens[first .. first + count) */
} refresh_run;

typedef struct refresh_round {
    int64_t liveness_ms;
    char (*tokens)[BATON_TOKEN_LEN + 1];
    refresh_run *runs;
    size_t nruns;
    size_t run, off; /* next batch: runs[run], from its token off */
} refresh_round;

static void round_free(refresh_round *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->nruns; i++)
        free(r->runs[i].name);
    free(r->runs);
    free(r->tokens);
    free(r);
}

static void refresh_drop(redis_store *s)
{
    round_free(s->_rf);
    s->_rf = NULL;
}

/* Tokens in the round's next batch. */
static size_t round_next_size(const refresh_round *r)
{
    size_t left = r->runs[r->run].count - r->off;
    return left < REFRESH_BATCH ? left : REFRESH_BATCH;
}

/* Builds the round's next batch and moves past it; NULL when out of memory. */
static store_op *round_next_op(redis_store *s, refresh_round *r)
{
    const refresh_run *run = &r->runs[r->run];
    size_t k = round_next_size(r);
    store_op *o = op_new(s, OP_FIRE, SC_REFRESH, NULL);
    if (o) {
        if (run->pool)
            pool_arg(o, run->name, "qt");
        else
            key_arg(o, run->name, "qt");
        op_str(o, s->_channel);
        op_arg(o, "%" PRId64, r->liveness_ms);
        o->_pool = run->pool;
        o->_name = strdup(run->name);
        if (!o->_name)
            o->_oom = 1;
        for (size_t j = 0; j < k; j++)
            op_str(o, r->tokens[run->first + r->off + j]);
        o->_ntokens = (int)k;
    }
    r->off += k;
    if (r->off == run->count) {
        r->run++;
        r->off = 0;
    }
    return o;
}

/* Sends refresh batches while the in-flight budget allows. */
static void refresh_pump(redis_store *s)
{
    if (!s->_up || !callbacks_allowed(s)) {
        refresh_drop(s);
        return;
    }
    while (s->_rf && (s->_rf_ops == 0 || s->_rf_tokens + (int)round_next_size(s->_rf) <= REFRESH_BATCH)) {
        store_op *o = round_next_op(s, s->_rf);
        if (s->_rf->run == s->_rf->nruns)
            refresh_drop(s);
        if (!o) {
            LOG_WARN("redis: out of memory: liveness refresh round dropped");
            refresh_drop(s);
            return;
        }
        int ntokens = o->_ntokens;
        if (op_send(o, 1) == 0) {
            s->_rf_ops++;
            s->_rf_tokens += ntokens;
        }
    }
}

static int st_refresh(baton_store *b, const store_target *targets, const char *const *tokens, size_t n,
                      int64_t liveness_ms)
{
    redis_store *s = rs(b);
    if (n > 0 && (!targets || !tokens))
        return BATON_E_INVALID;
    if (!s->_up)
        return BATON_E_UNAVAILABLE;
    if (s->_rf) {
        LOG_WARN("redis: liveness refresh is still sending the last round; this one is skipped");
        return 0;
    }
    refresh_round *r = calloc(1, sizeof(*r));
    if (!r || (n > 0 &&
               (!(r->tokens = malloc(n * sizeof(*r->tokens))) || !(r->runs = calloc(n, sizeof(*r->runs))))))
        goto nomem;
    r->liveness_ms = liveness_ms;
    size_t m = 0;
    const store_target *last = NULL;
    for (size_t i = 0; i < n; i++) {
        size_t len = tokens[i] ? strlen(tokens[i]) : 0;
        if (!target_ok(&targets[i]) || len == 0 || len > BATON_TOKEN_LEN)
            continue;
        if (!last || !same_target(&targets[i], last)) {
            refresh_run *run = &r->runs[r->nruns];
            run->pool = targets[i].pool != NULL;
            run->name = strdup(run->pool ? targets[i].pool : targets[i].key);
            if (!run->name)
                goto nomem;
            run->first = m;
            r->nruns++;
            last = &targets[i];
        }
        memcpy(r->tokens[m++], tokens[i], len + 1);
        r->runs[r->nruns - 1].count++;
    }
    if (r->nruns == 0) {
        round_free(r);
        return 0;
    }
    s->_rf = r;
    refresh_pump(s);
    return 0;
nomem:
    round_free(r);
    return BATON_E_NOMEM;
}

static int st_reap(baton_store *b, const char *key)
{
    redis_store *s = rs(b);
    if (!key || !key[0])
        return BATON_E_INVALID;
    if (!s->_up)
        return BATON_E_UNAVAILABLE;
    store_op *o = lock_op(s, OP_FIRE, SC_REAP, key, NULL);
    if (!o)
        return BATON_E_NOMEM;
    return op_send(o, 2);
}

/* ------------------------------------------------------ command connection */

static void cmd_init_step_done(redis_store *s)
{
    if (--s->_cmd_init_left > 0)
        return;
    LOG_INFO("redis %s: command connection ready", s->_address);
    s->_cmd_ready = 1;
    update_state(s);
}

/* AUTH / SELECT reply: an error makes the connection useless. */
static void on_cmd_init(redisAsyncContext *ac, void *r, void *privdata)
{
    redis_store *s = privdata;
    redisReply *reply = r;
    if (!reply || ac != s->_cmd)
        return;
    if (reply->type == REDIS_REPLY_ERROR) {
        LOG_ERROR("redis %s: connection setup failed: %s", s->_address, reply->str);
        request_drop(s, 1, 0);
        return;
    }
    cmd_init_step_done(s);
}

static void on_script_loaded(redisAsyncContext *ac, void *r, void *privdata)
{
    script_loader *l = privdata;
    redis_store *s = l->_s;
    redisReply *reply = r;
    if (!reply || ac != s->_cmd)
        return;
    if (reply->type != REDIS_REPLY_STRING || reply->len != 40) {
        LOG_ERROR("redis %s: SCRIPT LOAD %s failed: %s", s->_address, script_src[l->_id].name,
                  reply->type == REDIS_REPLY_ERROR ? reply->str : "unexpected reply");
        request_drop(s, 1, 0);
        return;
    }
    memcpy(s->_sha[l->_id], reply->str, 40);
    s->_sha[l->_id][40] = '\0';
    cmd_init_step_done(s);
}

static void on_best_effort(redisAsyncContext *ac, void *r, void *privdata)
{
    redis_store *s = ac->data;
    redisReply *reply = r;
    if (reply && reply->type == REDIS_REPLY_ERROR)
        LOG_WARN("redis %s: %s: %s (continuing)", s->_address, (const char *)privdata, reply->str);
}

/* Adds the E (keyevent) and x (expired) classes to whatever is configured. */
static void on_notify_config(redisAsyncContext *ac, void *r, void *privdata)
{
    redis_store *s = privdata;
    redisReply *reply = r;
    if (!reply || ac != s->_cmd)
        return;
    const char *cur;
    if (reply->type != REDIS_REPLY_ARRAY || el_str(reply, 1, &cur) != 0) {
        LOG_WARN("redis %s: CONFIG GET notify-keyspace-events failed (%s); expirations are seen only by "
                 "polling",
                 s->_address, reply->type == REDIS_REPLY_ERROR ? reply->str : "unexpected reply");
        return;
    }
    char want[64];
    snprintf(want, sizeof(want), "%s%s%s", cur, strchr(cur, 'E') ? "" : "E",
             (strchr(cur, 'x') || strchr(cur, 'A')) ? "" : "x");
    if (strcmp(want, cur) != 0)
        redisAsyncCommand(ac, on_best_effort, (void *)"CONFIG SET notify-keyspace-events",
                          "CONFIG SET notify-keyspace-events %s", want);
}

static void on_cmd_connect(const redisAsyncContext *ac, int status)
{
    redis_store *s = ac->data;
    if (status == REDIS_OK)
        return;
    /* hiredis frees ac after this returns. */
    LOG_WARN("redis %s: connect failed: %s", s->_address, ac->errstr);
    if (ac == s->_cmd) {
        s->_cmd = NULL;
        s->_cmd_ready = 0;
        update_state(s);
        arm_reconnect(s);
    }
}

static void on_cmd_disconnect(const redisAsyncContext *ac, int status)
{
    redis_store *s = ac->data;
    if (ac != s->_cmd) /* dropped by us: already handled */
        return;
    LOG_WARN("redis %s: command connection lost: %s", s->_address, ac->errstr[0] ? ac->errstr : "closed");
    s->_cmd = NULL;
    s->_cmd_ready = 0;
    update_state(s);
    arm_reconnect(s);
}

static redisAsyncContext *conn_open(redis_store *s, redisConnectCallback *on_conn,
                                    redisDisconnectCallback *on_disc)
{
    redisAsyncContext *ac =
        s->_unix_path ? redisAsyncConnectUnix(s->_unix_path) : redisAsyncConnect(s->_host, s->_port);
    if (!ac) {
        LOG_WARN("redis %s: out of memory", s->_address);
        return NULL;
    }
    if (ac->err) {
        LOG_WARN("redis %s: connect failed: %s", s->_address, ac->errstr);
        redisAsyncFree(ac);
        return NULL;
    }
    ac->data = s;
    if (redisLibeventAttach(ac, s->_evb) != REDIS_OK) {
        redisAsyncFree(ac);
        return NULL;
    }
    redisAsyncSetConnectCallback(ac, on_conn);
    redisAsyncSetDisconnectCallback(ac, on_disc);
    return ac;
}

/*
 * Why: hiredis only writes a queued command when the loop next reports the
 * socket writable, i.e. after every other callback of this loop turn (a gRPC
 * response write can take ~100 us). This event, active at the highest
 * priority, writes at once instead, so Redis runs the script (say, the next
 * waiter's acquire after a release) while the loop does the rest. It is not
 * called from inside an op: a failed write runs hiredis' disconnect
 * callbacks, which must never happen inside an op call (store.h).
 */
static void on_flush(evutil_socket_t fd, short what, void *arg)
{
    redis_store *s = arg;
    if (s->_cmd && (s->_cmd->c.flags & REDIS_CONNECTED))
        redisAsyncHandleWrite(s->_cmd);
}

/* Highest priority for ev when the base has priorities (batond sets them up;
 * a plain event_base in a test has one, and then this does nothing). */
static void prioritise(struct event_base *base, struct event *ev)
{
    if (ev && event_base_get_npriorities(base) > 1)
        event_priority_set(ev, 0);
}

/* Commands queue up in hiredis until the connection completes. */
static void cmd_open(redis_store *s)
{
    redisAsyncContext *ac = conn_open(s, on_cmd_connect, on_cmd_disconnect);
    if (!ac)
        return;
    s->_cmd = ac;
    s->_cmd_ready = 0;
    /* Replies at the same priority as wake-ups: a release's reply can carry
     * the next waiter's grant (direct handoff), which should not wait behind
     * a loop turn of new requests. */
    prioritise(s->_evb, ((redisLibeventEvents *)ac->ev.data)->rev);
    s->_cmd_started_ms = mono_ms();
    s->_cmd_init_left = 0;
    if (s->_password) {
        redisAsyncCommand(ac, on_cmd_init, s, "AUTH %s", s->_password);
        s->_cmd_init_left++;
    }
    if (s->_db != 0) {
        redisAsyncCommand(ac, on_cmd_init, s, "SELECT %d", s->_db);
        s->_cmd_init_left++;
    }
    redisAsyncCommand(ac, on_best_effort, (void *)"CLIENT SETNAME", "CLIENT SETNAME baton-cmd-%ld",
                      (long)getpid());
    for (int i = 0; i < SC_COUNT; i++) {
        redisAsyncCommand(ac, on_script_loaded, &s->_loader[i], "SCRIPT LOAD %s", s->_text[i]);
        s->_cmd_init_left++;
    }
    if (s->_keyspace_events)
        redisAsyncCommand(ac, on_notify_config, s, "CONFIG GET notify-keyspace-events");
}

/* ------------------------------------------------------ pub/sub connection */

/* "<prefix>{K}:lock" expired: report it (reap publishes EXPIRED). */
static void on_expired_key(redis_store *s, const char *name, size_t len)
{
    size_t plen = strlen(s->_prefix);
    static const char tail[] = "}:lock";
    size_t tlen = sizeof(tail) - 1;
    if (len <= plen + 1 + tlen || memcmp(name, s->_prefix, plen) != 0 || name[plen] != '{' ||
        memcmp(name + len - tlen, tail, tlen) != 0)
        return;
    size_t klen = len - plen - 1 - tlen;
    char key[BATON_KEY_MAX + 1];
    if (klen == 0 || klen > BATON_KEY_MAX)
        return;
    memcpy(key, name + plen + 1, klen);
    key[klen] = '\0';
    st_reap(&s->base, key);
}

static void on_event_payload(redis_store *s, const char *payload, size_t len)
{
    char buf[BATON_KEY_MAX + BATON_OWNER_MAX + 96];
    store_event ev;
    if (len >= sizeof(buf)) {
        LOG_WARN("redis %s: oversized event ignored (%zu bytes)", s->_address, len);
        return;
    }
    memcpy(buf, payload, len);
    buf[len] = '\0';
    if (store_event_parse(buf, len, &ev) != 0) {
        LOG_WARN("redis %s: malformed event ignored: %.*s", s->_address, (int)len, payload);
        return;
    }
    if (s->base.hooks.on_event && callbacks_allowed(s)) {
        s->_cb_depth++;
        s->base.hooks.on_event(s->base.hooks.ud, &ev);
        s->_cb_depth--;
    }
}

static int el_is(const redisReply *r, size_t i, const char *str)
{
    const char *v;
    return el_str(r, i, &v) == 0 && strcmp(v, str) == 0;
}

static void on_sub_message(redisAsyncContext *ac, void *r, void *privdata)
{
    redis_store *s = privdata;
    redisReply *reply = r;
    if (!reply) {
        if (ac == s->_sub && s->_sub_ready) {
            s->_sub_ready = 0;
            update_state(s);
        }
        return;
    }
    if (ac != s->_sub || reply->type != REDIS_REPLY_ARRAY || reply->elements < 3)
        return;
    if (el_is(reply, 0, "message") && reply->element[2]->type == REDIS_REPLY_STRING) {
        on_event_payload(s, reply->element[2]->str, reply->element[2]->len);
    } else if (el_is(reply, 0, "pmessage") && reply->elements >= 4 &&
               reply->element[3]->type == REDIS_REPLY_STRING) {
        on_expired_key(s, reply->element[3]->str, reply->element[3]->len);
    } else if (el_is(reply, 0, "subscribe") && el_is(reply, 1, s->_channel)) {
        LOG_INFO("redis %s: subscribed to %s", s->_address, s->_channel);
        s->_sub_ready = 1;
        update_state(s);
    }
}

static void on_sub_init(redisAsyncContext *ac, void *r, void *privdata)
{
    redis_store *s = privdata;
    redisReply *reply = r;
    if (reply && ac == s->_sub && reply->type == REDIS_REPLY_ERROR) {
        LOG_ERROR("redis %s: pub/sub setup failed: %s", s->_address, reply->str);
        request_drop(s, 0, 1);
    }
}

static void on_sub_connect(const redisAsyncContext *ac, int status)
{
    redis_store *s = ac->data;
    if (status == REDIS_OK)
        return;
    if (ac == s->_sub) {
        s->_sub = NULL;
        s->_sub_ready = 0;
        update_state(s);
        arm_reconnect(s);
    }
}

static void on_sub_disconnect(const redisAsyncContext *ac, int status)
{
    redis_store *s = ac->data;
    if (ac != s->_sub)
        return;
    LOG_WARN("redis %s: pub/sub connection lost: %s", s->_address, ac->errstr[0] ? ac->errstr : "closed");
    s->_sub = NULL;
    s->_sub_ready = 0;
    update_state(s);
    arm_reconnect(s);
}

static void sub_open(redis_store *s)
{
    redisAsyncContext *ac = conn_open(s, on_sub_connect, on_sub_disconnect);
    if (!ac)
        return;
    s->_sub = ac;
    s->_sub_ready = 0;
    /* Wake-ups first: a waiter's next attempt should not queue behind the
     * other work of the same loop turn (the released holder's response). */
    prioritise(s->_evb, ((redisLibeventEvents *)ac->ev.data)->rev);
    s->_sub_started_ms = mono_ms();
    /* Regular replies are matched before pub/sub ones, so AUTH may precede SUBSCRIBE. */
    if (s->_password)
        redisAsyncCommand(ac, on_sub_init, s, "AUTH %s", s->_password);
    redisAsyncCommand(ac, on_best_effort, (void *)"CLIENT SETNAME", "CLIENT SETNAME baton-sub-%ld",
                      (long)getpid());
    redisAsyncCommand(ac, on_sub_message, s, "SUBSCRIBE %s", s->_channel);
    if (s->_keyspace_events)
        redisAsyncCommand(ac, on_sub_message, s, "PSUBSCRIBE %s", s->_pattern);
}

/* ---------------------------------------------------------------- timers */

static void on_reconnect(evutil_socket_t fd, short what, void *arg)
{
    redis_store *s = arg;
    if (!s->_cmd)
        cmd_open(s);
    if (!s->_sub)
        sub_open(s);
    if (!s->_cmd || !s->_sub)
        arm_reconnect(s);
}

/* Why both connections go: a Redis that stopped answering one will not be
 * answering the other, and dropping is the only way to fail ops in flight. */
static void on_check(evutil_socket_t fd, short what, void *arg)
{
    redis_store *s = arg;
    int64_t now = mono_ms();
    const char *why = NULL;
    if (s->_head && now - s->_head->_sent_ms > s->_timeout_ms)
        why = "a command timed out";
    else if (s->_cmd && !s->_cmd_ready && now - s->_cmd_started_ms > s->_timeout_ms)
        why = "connection setup timed out";
    else if (s->_sub && !s->_sub_ready && now - s->_sub_started_ms > s->_timeout_ms)
        why = "subscription timed out";
    if (!why)
        return;
    LOG_WARN("redis %s: %s after %" PRId64 " ms; reconnecting", s->_address, why, s->_timeout_ms);
    drop_cmd(s);
    drop_sub(s);
}

/* -------------------------------------------------------- create / free */

static void store_destroy(redis_store *s)
{
    s->_freeing = 1;
    redisAsyncContext *cmd = s->_cmd, *sub = s->_sub;
    s->_cmd = s->_sub = NULL;
    if (cmd)
        redisAsyncFree(cmd); /* in-flight ops are freed, their callbacks dropped */
    if (sub)
        redisAsyncFree(sub);
    refresh_drop(s);
    while (s->_head) { /* none expected: every op lives on the cmd connection */
        store_op *o = s->_head;
        list_unlink(s, o);
        op_free(o);
    }
    if (s->_reconnect_ev)
        event_free(s->_reconnect_ev);
    if (s->_check_ev)
        event_free(s->_check_ev);
    if (s->_drop_ev)
        event_free(s->_drop_ev);
    if (s->_free_ev)
        event_free(s->_free_ev);
    if (s->_flush_ev)
        event_free(s->_flush_ev);
    for (int i = 0; i < SC_COUNT; i++)
        free(s->_text[i]);
    free(s->_address);
    free(s->_host);
    free(s->_unix_path);
    free(s->_password);
    free(s->_prefix);
    free(s->_channel);
    free(s->_pattern);
    free(s);
}

static void on_deferred_free(evutil_socket_t fd, short what, void *arg)
{
    store_destroy(arg);
}

static void st_free(baton_store *b)
{
    redis_store *s = rs(b);
    if (!s)
        return;
    if (s->_cb_depth > 0) {
        /* Inside one of our callbacks: hiredis may still touch the contexts. */
        s->_free_requested = 1;
        s->_up = 0;
        event_active(s->_free_ev, 0, 0);
        return;
    }
    store_destroy(s);
}

int store_redis_is_up(const baton_store *b)
{
    return b && ((const redis_store *)b)->_up;
}

/* "unix:/path" or "host:port" ("[v6]:port" too). */
static int parse_address(redis_store *s, const char *addr)
{
    if (strncmp(addr, "unix:", 5) == 0) {
        if (!addr[5])
            return -1;
        s->_unix_path = strdup(addr + 5);
        return s->_unix_path ? 0 : -1;
    }
    const char *colon = strrchr(addr, ':');
    if (!colon || colon == addr || !colon[1])
        return -1;
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port <= 0 || port > 65535)
        return -1;
    const char *h = addr;
    size_t hlen = (size_t)(colon - addr);
    if (h[0] == '[' && hlen >= 2 && h[hlen - 1] == ']') {
        h++;
        hlen -= 2;
    }
    s->_host = strndup(h, hlen);
    s->_port = (int)port;
    return s->_host ? 0 : -1;
}

baton_store *store_redis_new(struct event_base *base, const store_redis_opts *opts)
{
    if (!base || !opts || !opts->address || !opts->address[0] || opts->database < 0 ||
        opts->command_timeout_ms <= 0 || opts->reconnect_ms <= 0)
        return NULL;
    redis_store *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->base.ops = &redis_ops;
    s->_evb = base;
    s->_db = opts->database;
    s->_timeout_ms = opts->command_timeout_ms;
    s->_reconnect_ms = opts->reconnect_ms;
    s->_keyspace_events = opts->keyspace_events != 0;
    const char *prefix = opts->key_prefix ? opts->key_prefix : "baton:";
    s->_address = strdup(opts->address);
    s->_prefix = strdup(prefix);
    if (!s->_address || !s->_prefix || parse_address(s, opts->address) != 0)
        goto fail;
    if (opts->password && opts->password[0] && !(s->_password = strdup(opts->password)))
        goto fail;
    if (asprintf(&s->_channel, "%sevents", prefix) < 0) {
        s->_channel = NULL;
        goto fail;
    }
    if (asprintf(&s->_pattern, "__keyevent@%d__:expired", s->_db) < 0) {
        s->_pattern = NULL;
        goto fail;
    }
    for (int i = 0; i < SC_COUNT; i++) {
        if (asprintf(&s->_text[i], "%s\n%s", baton_lua_common, script_src[i].body) < 0) {
            s->_text[i] = NULL;
            goto fail;
        }
        s->_loader[i]._s = s;
        s->_loader[i]._id = (enum script_id)i;
    }
    s->_reconnect_ev = evtimer_new(base, on_reconnect, s);
    s->_check_ev = event_new(base, -1, EV_PERSIST, on_check, s);
    s->_drop_ev = event_new(base, -1, 0, on_drop, s);
    s->_free_ev = event_new(base, -1, 0, on_deferred_free, s);
    s->_flush_ev = event_new(base, -1, 0, on_flush, s);
    if (!s->_reconnect_ev || !s->_check_ev || !s->_drop_ev || !s->_free_ev || !s->_flush_ev)
        goto fail;
    prioritise(base, s->_flush_ev);
    int64_t every = s->_timeout_ms / 4;
    every = every < 10 ? 10 : every > 1000 ? 1000 : every;
    struct timeval tv = tv_of_ms(every);
    event_add(s->_check_ev, &tv);

    cmd_open(s);
    sub_open(s);
    if (!s->_cmd || !s->_sub)
        arm_reconnect(s);
    return &s->base;
fail:
    store_destroy(s);
    return NULL;
}

static const store_ops redis_ops = {
    .acquire = st_acquire,
    .dequeue = st_dequeue,
    .renew = st_renew,
    .release = st_release,
    .force_release = st_force_release,
    .describe = st_describe,
    .refresh = st_refresh,
    .reap = st_reap,
    .free = st_free,
};
