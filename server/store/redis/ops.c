/* The Redis store's ops: building each script call, sending it, and
 * completing it with its reply or with the loss of its connection. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "internal.h"
#include "log.h"

/* ------------------------------------------------------------------ ops */

void op_free(store_op *o)
{
    for (int i = 2; i < o->_argc; i++)
        free((char *)o->_argv[i]);
    free(o->_argv);
    free(o->_argvlen);
    free(o->_name);
    free(o);
}

store_op *op_new(redis_store *s, op_kind kind, enum script_id script, void *ud)
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
void op_arg(store_op *o, const char *fmt, ...)
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
void op_str(store_op *o, const char *str)
{
    if (op_room(o) != 0)
        return;
    size_t n = strlen(str);
    char *copy = malloc(n + 1);
    if (copy)
        memcpy(copy, str, n + 1);
    op_take(o, copy, n);
}

void key_arg(store_op *o, const char *key, const char *rec)
{
    op_arg(o, "%s{%s}:%s", o->_s->_prefix, key, rec);
}

void pool_arg(store_op *o, const char *pool, const char *rec)
{
    op_arg(o, "%spool{%s}:%s", o->_s->_prefix, pool, rec);
}

void list_unlink(redis_store *s, store_op *o)
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

void on_reply(redisAsyncContext *ac, void *r, void *privdata);

/*
 * Sends an op whose KEYS (the first nkeys arguments added) and ARGV are
 * built. Takes ownership of o. Returns 0, or BATON_E_UNAVAILABLE (store down)
 * / BATON_E_NOMEM with o freed and no callback to come.
 */
int op_send(store_op *o, int nkeys)
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
void op_fail(store_op *o, int err, const char *msg)
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
void on_reply(redisAsyncContext *ac, void *r, void *privdata)
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


int target_ok(const store_target *t)
{
    if (!t || (!t->key) == (!t->pool))
        return 0;
    return t->key ? t->key[0] != '\0' : (t->pool[0] != '\0' && t->devices > 0);
}

int st_acquire(baton_store *b, const store_acquire_req *req, store_acquire_cb cb, void *ud)
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

int st_dequeue(baton_store *b, const store_target *t, const char *token, store_done_cb cb, void *ud)
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

int st_renew(baton_store *b, const char *key, const char *token, int64_t ttl_ms, store_hold_cb cb,
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

int st_release(baton_store *b, const char *key, const char *token, const store_acquire_req *next,
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

int st_force_release(baton_store *b, const char *key, uint64_t fencing, store_hold_cb cb, void *ud)
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

int st_describe(baton_store *b, const char *key, store_describe_cb cb, void *ud)
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

int st_reap(baton_store *b, const char *key)
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
