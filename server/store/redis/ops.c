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
#include "metrics.h"

/* ------------------------------------------------------------------ ops */

void rstore_op_free(store_op *o)
{
    for (int i = 2; i < o->argc; i++)
        free((char *)o->argv[i]);
    free(o->argv);
    free(o->argvlen);
    free(o->name);
    free(o->token);
    free(o->held_devs);
    free(o->held_fencs);
    free(o);
}

/* Lets go of one reference: the script's reply or one WAIT's (refs). */
void rstore_op_unref(store_op *o)
{
    if (--o->refs <= 0)
        rstore_op_free(o);
}

store_op *rstore_op_new(redis_store *s, op_kind kind, enum script_id script, void *ud)
{
    store_op *o = calloc(1, sizeof(*o));
    if (!o)
        return NULL;
    o->s = s;
    o->kind = kind;
    o->script = script;
    o->ud = ud;
    o->refs = 1;
    o->argc = 3; /* EVALSHA, sha, numkeys (filled in by rstore_op_send) */
    o->cap = 24; /* a plain-key acquire has 17 */
    o->argv = calloc((size_t)o->cap, sizeof(*o->argv));
    o->argvlen = calloc((size_t)o->cap, sizeof(*o->argvlen));
    if (!o->argv || !o->argvlen) {
        free(o->argv);
        free(o->argvlen);
        free(o);
        return NULL;
    }
    return o;
}

/* Room for one more argument; 0, or -1 (and _oom) when out of memory. */
static int op_room(store_op *o)
{
    if (o->oom)
        return -1;
    if (o->argc < o->cap)
        return 0;
    int cap = o->cap * 2;
    const char **argv = realloc(o->argv, (size_t)cap * sizeof(*argv));
    if (argv)
        o->argv = argv;
    size_t *lens = realloc(o->argvlen, (size_t)cap * sizeof(*lens));
    if (lens)
        o->argvlen = lens;
    if (!argv || !lens) {
        o->oom = 1;
        return -1;
    }
    o->cap = cap;
    return 0;
}

/* Appends an owned argument of n bytes (NULL: out of memory). */
static void op_take(store_op *o, char *str, size_t n)
{
    if (!str) {
        o->oom = 1;
        return;
    }
    o->argv[o->argc] = str;
    o->argvlen[o->argc] = n;
    o->argc++;
}

/* Appends one printf-formatted argument; remembers OOM for rstore_op_send. */
void rstore_op_arg(store_op *o, const char *fmt, ...)
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
void rstore_op_str(store_op *o, const char *str)
{
    if (op_room(o) != 0)
        return;
    size_t n = strlen(str);
    char *copy = malloc(n + 1);
    if (copy)
        memcpy(copy, str, n + 1);
    op_take(o, copy, n);
}

/* Record `rec` of a key or a pool, in the layout of this store (store.h;
 * a Cluster's in cluster_map.h). */
static void name_arg(store_op *o, const char *kind, const char *name, const char *rec)
{
    if (!o->s->cl) {
        rstore_op_arg(o, "%s%s{%s}:%s", o->s->prefix, kind, name, rec);
        return;
    }
    char buf[BATON_KEY_MAX + 128];
    if (cluster_record_name(buf, sizeof buf, o->s->prefix, kind, name, rec) < 0)
        o->oom = 1; /* cannot happen: prefix and name are bounded */
    else
        rstore_op_str(o, buf);
}

void rstore_key_arg(store_op *o, const char *key, const char *rec)
{
    name_arg(o, "", key, rec);
}

void rstore_pool_arg(store_op *o, const char *pool, const char *rec)
{
    name_arg(o, "pool", pool, rec);
}

/* The events channel a script about `name` publishes on (ARGV[1]). */
void rstore_chan_arg(store_op *o, const char *name)
{
    char buf[160];
    rstore_op_str(o, rstore_channel_of(o->s, name, buf, sizeof buf));
}

void rstore_op_unlink(redis_store *s, store_op *o)
{
    if (o->prev)
        o->prev->next = o->next;
    else
        s->head = o->next;
    if (o->next)
        o->next->prev = o->prev;
    else
        s->tail = o->prev;
    o->prev = o->next = NULL;
}

static void on_reply(redisAsyncContext *ac, void *r, void *privdata);
static void on_wait(redisAsyncContext *ac, void *r, void *privdata);

/* min_replicas: WAIT right behind the op's script on the same connection
 * (WAIT counts that connection's writes), so that confirming a grant costs
 * no extra round trip of ours. */
static int send_wait(store_op *o, redisAsyncContext *ac)
{
    redis_store *s = o->s;
    if (redisAsyncCommand(ac, on_wait, o, "WAIT %d %lld", s->min_replicas, (long long)s->replica_timeout_ms) !=
        REDIS_OK)
        return -1;
    o->refs++;
    return 0;
}

/*
 * Why (Redis Cluster): while a slot moves, Redis runs a script only where
 * every key it declares exists, and then fails any command inside it that
 * touches a key missing there (one it deleted itself, or an undeclared peer)
 * with "non local key", leaving the script half done (a release without its
 * handoff grant). A declared key that never exists, "<prefix>...{TAG}:~guard",
 * in the slot of the op's first key, makes Redis answer ASK, then TRYAGAIN,
 * until the move completes, so that no script runs on a moving slot; a
 * stable slot ignores missing keys. Inserted after the op's own KEYS (scripts
 * ignore a KEYS entry past the ones they use).
 */
static int add_guard_key(store_op *o, int nkeys)
{
    const char *first = o->argv[3];
    const char *close = strchr(first, '}');
    if (!close || op_room(o) != 0)
        return -1;
    size_t head = (size_t)(close - first) + 1;
    char *guard = malloc(head + sizeof ":~guard");
    if (!guard)
        return -1;
    memcpy(guard, first, head);
    memcpy(guard + head, ":~guard", sizeof ":~guard");
    int at = 3 + nkeys;
    memmove(&o->argv[at + 1], &o->argv[at], (size_t)(o->argc - at) * sizeof *o->argv);
    memmove(&o->argvlen[at + 1], &o->argvlen[at], (size_t)(o->argc - at) * sizeof *o->argvlen);
    o->argv[at] = guard;
    o->argvlen[at] = strlen(guard);
    o->argc++;
    return 0;
}

/*
 * Sends an op whose KEYS (the first nkeys arguments added) and ARGV are
 * built. Takes ownership of o. Returns 0, or BATON_E_UNAVAILABLE (store down)
 * / BATON_E_NOMEM with o freed and no callback to come.
 */
int rstore_op_send(store_op *o, int nkeys)
{
    redis_store *s = o->s;
    if (o->oom) {
        rstore_op_free(o);
        return BATON_E_NOMEM;
    }
    if (!s->up || !s->cmd) {
        rstore_op_free(o);
        return BATON_E_UNAVAILABLE;
    }
    if (s->cl && nkeys > 0) {
        if (add_guard_key(o, nkeys) != 0) {
            rstore_op_free(o);
            return BATON_E_NOMEM;
        }
        nkeys++;
    }
    char numkeys[16];
    snprintf(numkeys, sizeof(numkeys), "%d", nkeys);
    o->argv[2] = strdup(numkeys);
    if (!o->argv[2]) {
        rstore_op_free(o);
        return BATON_E_NOMEM;
    }
    o->argvlen[2] = strlen(numkeys);
    o->argv[0] = "EVALSHA";
    o->argvlen[0] = 7;
    o->argv[1] = s->sha[o->script];
    o->argvlen[1] = strlen(s->sha[o->script]);
    /* ASK redirect (cluster.c): this one command, on this node, after ASKING. */
    if (s->ask_next && redisAsyncCommand(s->cmd, NULL, NULL, "ASKING") != REDIS_OK) {
        s->ask_next = 0;
        rstore_op_free(o);
        return BATON_E_UNAVAILABLE;
    }
    s->ask_next = 0;
    if (redisAsyncCommandArgv(s->cmd, on_reply, o, o->argc, o->argv, o->argvlen) != REDIS_OK) {
        rstore_op_free(o);
        return BATON_E_UNAVAILABLE;
    }
    if (o->confirm)
        send_wait(o, s->cmd); /* on failure the connection is going: the script's reply says so */
    event_active(s->flush_ev, 0, 0); /* no-op while already active */
    o->sent_ms = clock_mono_ms();
    o->sent_us = metrics_now_us();
    o->prev = s->tail;
    if (s->tail)
        s->tail->next = o;
    else
        s->head = o;
    s->tail = o;
    return 0;
}

/* Completes an op with an error (res NULL). */
void rstore_op_fail(store_op *o, int err, const char *msg)
{
    redis_store *s = o->s;
    if (!callbacks_allowed(s))
        return;
    s->cb_depth++;
    switch (o->kind) {
    case OP_ACQUIRE:
        if (o->cb.acquire)
            o->cb.acquire(o->ud, err, msg, NULL);
        break;
    case OP_DONE:
        if (o->cb.done)
            o->cb.done(o->ud, err, msg);
        break;
    case OP_RENEW:
    case OP_RELEASE:
        if (o->cb.hold)
            o->cb.hold(o->ud, err, msg, NULL);
        break;
    case OP_DESCRIBE:
        if (o->cb.describe)
            o->cb.describe(o->ud, err, msg, NULL);
        break;
    case OP_LIST:
        if (o->cb.list)
            o->cb.list(o->ud, err, msg, NULL);
        break;
    case OP_FIRE:
        /* A cluster's routing error: the next round goes where the slot is. */
        if (err == BATON_E_REDIRECT)
            LOG_DEBUG("redis: %s not run: %s", script_src[o->script].name, msg);
        else
            LOG_WARN("redis: %s failed: %s", script_src[o->script].name, msg);
        break;
    }
    s->cb_depth--;
}

/* Hands a decoded reply to the op's callback (reply.h decodes; a reply that
 * does not decode completes the op with the decoder's error). */
/* With min_replicas, a grant or a renewal is held back until WAIT answers
 * (on_wait); everything else is reported at once. Returns 1 when held back. */
static int hold_back(store_op *o, const store_acquire_res *grant, int64_t renew_ttl)
{
    if (!o->confirm)
        return 0;
    if (grant) {
        o->held = *grant;
        snprintf(o->keybuf, sizeof o->keybuf, "%s", grant->key ? grant->key : "");
        o->held.key = o->keybuf;
        o->held.holder_owner = NULL;
        o->held.head_token = NULL;
        if (grant->ndevices > 0) {
            size_t n = (size_t)grant->ndevices;
            o->held_devs = malloc(n * sizeof *o->held_devs);
            o->held_fencs = malloc(n * sizeof *o->held_fencs);
            if (!o->held_devs || !o->held_fencs) {
                o->held.ndevices = 0; /* the first device still goes out (device / fencing) */
            } else {
                memcpy(o->held_devs, grant->devices, n * sizeof *o->held_devs);
                memcpy(o->held_fencs, grant->fencings, n * sizeof *o->held_fencs);
            }
            o->held.devices = o->held_devs;
            o->held.fencings = o->held_fencs;
        }
    } else {
        o->held.ttl_ms = renew_ttl;
    }
    o->awaiting = 1;
    return 1;
}

static void deliver_acquire(store_op *o, const redisReply *r)
{
    rstore_acquire_dec d;
    if (rstore_decode_acquire(r, o->name, o->pool, &d) != BATON_OK)
        rstore_op_fail(o, d.err, d.msg);
    else if (d.res.granted && hold_back(o, &d.res, 0))
        return;
    else if (o->cb.acquire)
        o->cb.acquire(o->ud, BATON_OK, NULL, &d.res);
}

static void deliver_hold(store_op *o, const redisReply *r)
{
    rstore_hold_dec d;
    int err = rstore_decode_hold(r, o->kind == OP_RENEW, o->handoff ? o->name : NULL, &d);
    if (err != BATON_OK && err != BATON_E_NOT_HOLDER)
        rstore_op_fail(o, err, d.msg);
    else if (err == BATON_OK && o->kind == OP_RENEW && hold_back(o, NULL, d.res.ttl_ms))
        return;
    else if (o->cb.hold)
        o->cb.hold(o->ud, err, d.msg, &d.res);
}

/* An unconfirmed grant is taken back, token-checked, before anyone hears of it. */
static void undo_grant(store_op *o)
{
    redis_store *s = o->s;
    store_op *u = rstore_op_new(s, OP_FIRE, SC_RELEASE, NULL);
    if (!u)
        return;
    rstore_key_arg(u, o->held.key, "lock");
    rstore_key_arg(u, o->held.key, "hold");
    rstore_chan_arg(u, o->held.key);
    rstore_op_str(u, o->held.key);
    rstore_op_str(u, o->token ? o->token : "");
    if (rstore_op_send(u, 2) != 0)
        LOG_WARN("redis %s: could not undo the unconfirmed grant of %s; its TTL ends it", s->address,
                 o->held.key);
}

/* WAIT's answer for an op whose result was held back (or NULL: the
 * connection is gone, the outcome unknown). */
static void on_wait(redisAsyncContext *ac, void *r, void *privdata)
{
    store_op *o = privdata;
    redis_store *s = o->s;
    redisReply *reply = r;
    if (o->awaiting && !o->delivered) {
        o->awaiting = 0;
        o->delivered = 1;
        rstore_op_unlink(s, o);
        long long acked = reply && reply->type == REDIS_REPLY_INTEGER ? reply->integer : -1;
        char msg[160];
        if (!reply) {
            rstore_op_fail(o, BATON_E_UNAVAILABLE, "redis connection lost; the outcome is unknown");
        } else if (acked < s->min_replicas) {
            snprintf(msg, sizeof msg, "%s not confirmed by %d replica%s within %lld ms (%lld did)",
                     o->kind == OP_ACQUIRE ? "grant" : "renewal", s->min_replicas, s->min_replicas == 1 ? "" : "s",
                     (long long)s->replica_timeout_ms, acked < 0 ? 0 : acked);
            LOG_WARN("redis %s: %s: %s", s->address, o->kind == OP_ACQUIRE ? o->held.key : "renew", msg);
            if (o->kind == OP_ACQUIRE)
                undo_grant(o);
            rstore_op_fail(o, BATON_E_UNAVAILABLE, msg);
        } else if (callbacks_allowed(s)) {
            s->cb_depth++;
            if (o->kind == OP_ACQUIRE && o->cb.acquire) {
                o->cb.acquire(o->ud, BATON_OK, NULL, &o->held);
            } else if (o->kind == OP_RENEW && o->cb.hold) {
                store_hold_res res = {.ttl_ms = o->held.ttl_ms};
                o->cb.hold(o->ud, BATON_OK, NULL, &res);
            }
            s->cb_depth--;
        }
    }
    rstore_op_unref(o);
}

static void deliver_describe(store_op *o, const redisReply *r)
{
    rstore_describe_dec d;
    if (rstore_decode_describe(r, &d) != BATON_OK)
        rstore_op_fail(o, d.err, d.msg);
    else if (o->cb.describe)
        o->cb.describe(o->ud, BATON_OK, NULL, &d.res);
}

/* A refresh reply: the tokens of the batch's target without a queue entry. */
static void deliver_missing(store_op *o, const redisReply *r)
{
    redis_store *s = o->s;
    const char *tokens[RSTORE_REFRESH_BATCH];
    size_t n;
    if (!o->name || rstore_decode_missing(r, tokens, RSTORE_REFRESH_BATCH, &n) != BATON_OK) {
        LOG_WARN("redis: unexpected reply to refresh");
        return;
    }
    store_target t = {.key = o->pool ? NULL : o->name, .pool = o->pool ? o->name : NULL};
    for (size_t i = 0; i < n && s->base.hooks.on_missing; i++) {
        s->base.hooks.on_missing(s->base.hooks.ud, &t, tokens[i]);
        if (!callbacks_allowed(s))
            return; /* freed from inside the hook */
    }
}

/* Completes op o with reply r (NULL: connection gone). Returns 1 once o is
 * freed, 0 when it was sent again (EVAL after NOSCRIPT). */
static int op_reply(redisAsyncContext *ac, void *r, store_op *o)
{
    redis_store *s = o->s;
    redisReply *reply = r;

    if (!reply) {
        /* The connection is going away: refuse new ops from here on. */
        if (ac == s->cmd && s->cmd_ready) {
            s->cmd_ready = 0;
            rstore_update_state(s);
        }
        rstore_op_unlink(s, o);
        o->delivered = 1;
        rstore_op_fail(o, BATON_E_UNAVAILABLE, "redis connection lost; the outcome is unknown");
        rstore_op_unref(o);
        return 1;
    }
    if (reply->type == REDIS_REPLY_ERROR && !o->retried && strncmp(reply->str, "NOSCRIPT", 8) == 0) {
        /* Script cache flushed (SCRIPT FLUSH, failover): send the text once. */
        o->retried = 1;
        o->argv[0] = "EVAL";
        o->argvlen[0] = 4;
        o->argv[1] = s->text[o->script];
        o->argvlen[1] = strlen(s->text[o->script]);
        if (redisAsyncCommandArgv(ac, on_reply, o, o->argc, o->argv, o->argvlen) == REDIS_OK) {
            if (o->confirm)
                send_wait(o, ac); /* the WAIT sent behind EVALSHA answers before EVAL does */
            return 0;
        }
        rstore_op_unlink(s, o);
        o->delivered = 1;
        rstore_op_fail(o, BATON_E_UNAVAILABLE, "redis connection lost; the outcome is unknown");
        rstore_op_unref(o);
        return 1;
    }
    metrics_redis_script(script_src[o->script].name, o->sent_us);
    if (reply->type == REDIS_REPLY_ERROR) {
        rstore_op_unlink(s, o);
        o->delivered = 1;
        cluster_redirect rd;
        if (s->cl && cluster_redirect_parse(reply->str, reply->len, &rd) != CLUSTER_REDIRECT_NONE) {
            /* Not run: cluster.c sends it again where the slot lives. */
            cluster__routing_error(s->cl, &rd);
            rstore_op_fail(o, BATON_E_REDIRECT, reply->str);
        } else if (strncmp(reply->str, "READONLY", 8) == 0 || strncmp(reply->str, "MASTERDOWN", 10) == 0) {
            /* A replica now (failover), or a primary without its replicas. */
            rstore_not_primary(s, reply->str);
            rstore_op_fail(o, BATON_E_UNAVAILABLE, "redis is failing over; try again");
        } else {
            LOG_WARN("redis: %s script: %s", script_src[o->script].name, reply->str);
            rstore_op_fail(o, BATON_E_INTERNAL, reply->str);
        }
        rstore_op_unref(o);
        return 1;
    }
    if (callbacks_allowed(s)) {
        s->cb_depth++;
        switch (o->kind) {
        case OP_ACQUIRE: deliver_acquire(o, reply); break;
        case OP_RENEW:
        case OP_RELEASE: deliver_hold(o, reply); break;
        case OP_DESCRIBE: deliver_describe(o, reply); break;
        case OP_LIST: rstore_deliver_list(o, reply); break;
        case OP_DONE:
            if (o->cb.done)
                o->cb.done(o->ud, BATON_OK, NULL);
            break;
        case OP_FIRE:
            if (o->script == SC_REFRESH)
                deliver_missing(o, reply);
            break;
        }
        s->cb_depth--;
    }
    /* A held-back result stays in flight (and under the command timeout)
     * until WAIT answers. */
    if (!o->awaiting) {
        o->delivered = 1;
        rstore_op_unlink(s, o);
    }
    rstore_op_unref(o);
    return 1;
}

/* Reply (or NULL: connection gone) to an op's EVALSHA / EVAL. */
static void on_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    store_op *o = privdata;
    redis_store *s = o->s;
    int refresh = o->kind == OP_FIRE && o->script == SC_REFRESH;
    int ntokens = o->ntokens;
    if (op_reply(ac, r, o) && refresh) {
        s->rf_ops--;
        s->rf_tokens -= ntokens;
        rstore_refresh_pump(s);
    }
}

/* ------------------------------------------------------- op entry points */

int rstore_target_ok(const store_target *t)
{
    if (!t || (!t->key) == (!t->pool))
        return 0;
    return t->key ? t->key[0] != '\0' : (t->pool[0] != '\0' && t->devices > 0);
}

int rstore_acquire(baton_store *b, const store_acquire_req *req, store_acquire_cb cb, void *ud)
{
    redis_store *s = rs(b);
    if (!req || !rstore_target_ok(&req->target) || !req->token || req->ttl_ms <= 0 ||
        (req->target.pool && req->count > req->target.devices) ||
        (req->weight > 0 && (!req->target.pool || req->weight > req->capacity)))
        return BATON_E_INVALID;
    if (!s->up)
        return BATON_E_UNAVAILABLE;
    const store_target *t = &req->target;
    store_op *o = rstore_op_new(s, OP_ACQUIRE, SC_ACQUIRE, ud);
    if (!o)
        return BATON_E_NOMEM;
    o->cb.acquire = cb;
    o->pool = t->pool != NULL;
    o->name = strdup(t->key ? t->key : t->pool);
    if (!o->name)
        o->oom = 1;
    int nkeys;
    if (t->key) {
        static const char *recs[] = {"lock", "hold", "fence", "q", "qt", "qs"};
        for (int i = 0; i < 6; i++)
            rstore_key_arg(o, t->key, recs[i]);
        nkeys = 6;
    } else {
        rstore_pool_arg(o, t->pool, "q");
        rstore_pool_arg(o, t->pool, "qt");
        rstore_pool_arg(o, t->pool, "qs");
        static const char *recs[] = {"lock", "hold", "fence", "q", "qt"};
        char dev[BATON_KEY_MAX + 16];
        for (int32_t d = 0; d < t->devices; d++) {
            snprintf(dev, sizeof dev, "%s/%" PRId32, t->pool, d);
            for (int i = 0; i < 5; i++)
                rstore_key_arg(o, dev, recs[i]);
        }
        rstore_pool_arg(o, t->pool, "qn"); /* the device count its waiters use */
        rstore_pool_arg(o, t->pool, "qc"); /* the count each of them waits for */
        nkeys = 5 + 5 * t->devices;
    }
    rstore_chan_arg(o, t->key ? t->key : t->pool);
    rstore_op_str(o, t->key ? t->key : t->pool);
    rstore_op_str(o, req->token);
    rstore_op_str(o, req->owner ? req->owner : "");
    rstore_op_arg(o, "%" PRId64, req->ttl_ms);
    rstore_op_arg(o, "%d", req->enqueue ? 1 : 0);
    rstore_op_arg(o, "%" PRId64, req->liveness_ms > 0 ? req->liveness_ms : 0);
    rstore_op_arg(o, "%" PRId32, t->key ? 0 : t->devices);
    rstore_op_str(o, s->fence_floor);
    if (t->pool && (req->count > 1 || req->weight > 0))
        rstore_op_arg(o, "%" PRId32, req->count > 1 ? req->count : 1);
    if (t->pool && req->weight > 0) {
        rstore_op_arg(o, "%" PRId64, req->weight);
        rstore_op_arg(o, "%" PRId64, req->capacity);
    }
    if (s->min_replicas > 0) {
        o->confirm = 1;
        if (!(o->token = strdup(req->token)))
            o->oom = 1;
    }
    /* Failover grace: ARGV[13] = the ms left (ARGV 10-12 at their defaults if absent). */
    int64_t grace = rstore_grace_left(s);
    if (grace > 0 && !o->oom) {
        static const char *const absent[] = {"1", "0", "1"}; /* count, weight, capacity */
        for (int i = o->argc - 3 - nkeys; i >= 9 && i < 12; i++)
            rstore_op_str(o, absent[i - 9]);
        rstore_op_arg(o, "%" PRId64, grace);
    }
    return rstore_op_send(o, nkeys);
}

int rstore_dequeue(baton_store *b, const store_target *t, const char *token, store_done_cb cb, void *ud)
{
    redis_store *s = rs(b);
    if (!rstore_target_ok(t) || !token)
        return BATON_E_INVALID;
    if (!s->up)
        return BATON_E_UNAVAILABLE;
    store_op *o = rstore_op_new(s, OP_DONE, SC_DEQUEUE, ud);
    if (!o)
        return BATON_E_NOMEM;
    o->cb.done = cb;
    if (t->key) {
        rstore_key_arg(o, t->key, "q");
        rstore_key_arg(o, t->key, "qt");
    } else {
        rstore_pool_arg(o, t->pool, "q");
        rstore_pool_arg(o, t->pool, "qt");
        rstore_pool_arg(o, t->pool, "qc"); /* declared: a Cluster checks every key a script touches */
    }
    rstore_chan_arg(o, t->key ? t->key : t->pool);
    rstore_op_str(o, t->key ? t->key : t->pool);
    rstore_op_str(o, t->key ? "WAKE" : "WAKE_POOL");
    rstore_op_str(o, token);
    return rstore_op_send(o, t->key ? 2 : 3);
}

/* An op on one key's lock + hold records: KEYS lock, hold; ARGV channel, key. */
static store_op *lock_op(redis_store *s, op_kind kind, enum script_id script, const char *key, void *ud)
{
    store_op *o = rstore_op_new(s, kind, script, ud);
    if (!o)
        return NULL;
    rstore_key_arg(o, key, "lock");
    rstore_key_arg(o, key, "hold");
    rstore_chan_arg(o, key);
    rstore_op_str(o, key);
    return o;
}

int rstore_renew(baton_store *b, const char *key, const char *token, int64_t ttl_ms, store_hold_cb cb,
                 void *ud)
{
    redis_store *s = rs(b);
    if (!key || !key[0] || !token || ttl_ms <= 0)
        return BATON_E_INVALID;
    if (!s->up)
        return BATON_E_UNAVAILABLE;
    store_op *o = lock_op(s, OP_RENEW, SC_RENEW, key, ud);
    if (!o)
        return BATON_E_NOMEM;
    o->cb.hold = cb;
    rstore_op_str(o, token);
    rstore_op_arg(o, "%" PRId64, ttl_ms);
    o->confirm = s->min_replicas > 0;
    return rstore_op_send(o, 2);
}

int rstore_release(baton_store *b, const char *key, const char *token, const store_acquire_req *next,
                   store_hold_cb cb, void *ud)
{
    redis_store *s = rs(b);
    if (!key || !key[0] || !token)
        return BATON_E_INVALID;
    if (next &&
        (!next->token || !next->target.key || strcmp(next->target.key, key) != 0 || next->ttl_ms <= 0))
        return BATON_E_INVALID;
    if (!s->up)
        return BATON_E_UNAVAILABLE;
    if (s->min_replicas > 0 || rstore_grace_left(s) > 0)
        next = NULL; /* a handoff grant could not be confirmed, or would grant in the grace (store.h) */
    store_op *o = rstore_op_new(s, OP_RELEASE, SC_RELEASE, ud);
    if (!o)
        return BATON_E_NOMEM;
    o->cb.hold = cb;
    /* fence, q and qt only for a handoff: a plain release touches lock and hold. */
    static const char *recs[] = {"lock", "hold", "fence", "q", "qt"};
    int nkeys = next ? 5 : 2;
    for (int i = 0; i < nkeys; i++)
        rstore_key_arg(o, key, recs[i]);
    rstore_chan_arg(o, key);
    rstore_op_str(o, key);
    rstore_op_str(o, token);
    if (next) {
        o->handoff = 1;
        o->name = strdup(key);
        if (!o->name)
            o->oom = 1;
        rstore_op_str(o, next->token);
        rstore_op_str(o, next->owner ? next->owner : "");
        rstore_op_arg(o, "%" PRId64, next->ttl_ms);
        rstore_op_str(o, s->fence_floor);
    }
    return rstore_op_send(o, nkeys);
}

int rstore_reassert(baton_store *b, const char *key, const char *token, const char *owner, uint64_t fencing,
                    int64_t ttl_ms, store_hold_cb cb, void *ud)
{
    redis_store *s = rs(b);
    if (!key || !key[0] || !token || fencing == 0 || ttl_ms <= 0)
        return BATON_E_INVALID;
    if (!s->up)
        return BATON_E_UNAVAILABLE;
    store_op *o = rstore_op_new(s, OP_RENEW, SC_REASSERT, ud);
    if (!o)
        return BATON_E_NOMEM;
    o->cb.hold = cb;
    rstore_key_arg(o, key, "lock");
    rstore_key_arg(o, key, "hold");
    rstore_key_arg(o, key, "fence");
    rstore_chan_arg(o, key);
    rstore_op_str(o, key);
    rstore_op_str(o, token);
    rstore_op_str(o, owner ? owner : "");
    rstore_op_arg(o, "%" PRIu64, fencing);
    rstore_op_arg(o, "%" PRId64, ttl_ms);
    o->confirm = s->min_replicas > 0;
    return rstore_op_send(o, 3);
}

int rstore_force_release(baton_store *b, const char *key, uint64_t fencing, store_hold_cb cb, void *ud)
{
    redis_store *s = rs(b);
    if (!key || !key[0] || fencing == 0)
        return BATON_E_INVALID;
    if (!s->up)
        return BATON_E_UNAVAILABLE;
    store_op *o = lock_op(s, OP_RELEASE, SC_FORCE_RELEASE, key, ud);
    if (!o)
        return BATON_E_NOMEM;
    o->cb.hold = cb;
    rstore_op_arg(o, "%" PRIu64, fencing);
    return rstore_op_send(o, 2);
}

int rstore_describe(baton_store *b, const char *key, store_describe_cb cb, void *ud)
{
    redis_store *s = rs(b);
    if (!key || !key[0])
        return BATON_E_INVALID;
    if (!s->up)
        return BATON_E_UNAVAILABLE;
    store_op *o = rstore_op_new(s, OP_DESCRIBE, SC_DESCRIBE, ud);
    if (!o)
        return BATON_E_NOMEM;
    o->cb.describe = cb;
    rstore_key_arg(o, key, "lock");
    rstore_key_arg(o, key, "hold");
    rstore_key_arg(o, key, "q");
    rstore_chan_arg(o, key);
    rstore_op_str(o, key);
    return rstore_op_send(o, 3);
}

int rstore_reap(baton_store *b, const char *key)
{
    redis_store *s = rs(b);
    if (!key || !key[0])
        return BATON_E_INVALID;
    if (!s->up)
        return BATON_E_UNAVAILABLE;
    store_op *o = lock_op(s, OP_FIRE, SC_REAP, key, NULL);
    if (!o)
        return BATON_E_NOMEM;
    return rstore_op_send(o, 2);
}
