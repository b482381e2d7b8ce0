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
 * Files (one concept each; internal.h has the struct and what they share):
 *   store_redis.c  create / free, up/down state, drops, reconnect and timeout
 *                  timers, connection plumbing
 *   ops.c          op entry points (building each script call) and the op
 *                  lifecycle (send, NOSCRIPT fallback, completion)
 *   reply.c        pure decoders of script replies (reply.h)
 *   refresh.c      liveness refresh batching and pacing
 *   conn_cmd.c     command connection setup and prompt writes
 *   conn_sub.c     pub/sub connection: events and expirations
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "internal.h"
#include "log.h"
#include "rconn.h"
#include "sentinel.h"

const struct script_src script_src[SC_COUNT] = {
    [SC_ACQUIRE] = {"acquire", baton_lua_acquire},
    [SC_DEQUEUE] = {"dequeue", baton_lua_dequeue},
    [SC_RENEW] = {"renew", baton_lua_renew},
    [SC_RELEASE] = {"release", baton_lua_release},
    [SC_FORCE_RELEASE] = {"force_release", baton_lua_force_release},
    [SC_DESCRIBE] = {"describe", baton_lua_describe},
    [SC_REFRESH] = {"refresh", baton_lua_refresh},
    [SC_REAP] = {"reap", baton_lua_reap},
    [SC_EPOCH] = {"epoch", baton_lua_epoch},
    [SC_REASSERT] = {"reassert", baton_lua_reassert},
    [SC_LIST] = {"list", baton_lua_list},
};

static const store_ops redis_ops;

static struct timeval tv_of_ms(int64_t ms)
{
    struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)((ms % 1000) * 1000)};
    return tv;
}

/* ---------------------------------------------------------------- state */

void rstore_update_state(redis_store *s)
{
    int up = s->cmd_ready && s->sub_ready && callbacks_allowed(s);
    if (up == s->up)
        return;
    s->up = up;
    LOG_INFO("redis %s: store %s", s->address, up ? "up" : "down");
    if (s->base.hooks.on_state && callbacks_allowed(s)) {
        s->cb_depth++;
        if (up && s->new_primary) {
            s->new_primary = 0;
            if (s->base.hooks.on_new_primary)
                s->base.hooks.on_new_primary(s->base.hooks.ud);
        }
        s->base.hooks.on_state(s->base.hooks.ud, up);
        s->cb_depth--;
    }
}

void rstore_arm_reconnect(redis_store *s)
{
    if (s->freeing || s->free_requested || evtimer_pending(s->reconnect_ev, NULL))
        return;
    struct timeval tv = tv_of_ms(s->reconnect_ms);
    evtimer_add(s->reconnect_ev, &tv);
}

/* Frees the command connection; its in-flight ops complete with
 * BATON_E_UNAVAILABLE right here. Never call from its own callback. */
static void drop_cmd(redis_store *s)
{
    redisAsyncContext *ac = s->cmd;
    if (!ac)
        return;
    s->cmd = NULL;
    s->cmd_ready = 0;
    rstore_update_state(s);
    redisAsyncFree(ac);
    rstore_arm_reconnect(s);
}

static void drop_sub(redis_store *s)
{
    if (s->ssub) {
        rstore_ssub_close(s);
        s->sub_ready = 0;
        rstore_update_state(s);
        rstore_arm_reconnect(s);
        return;
    }
    redisAsyncContext *ac = s->sub;
    if (!ac)
        return;
    s->sub = NULL;
    s->sub_ready = 0;
    rstore_update_state(s);
    redisAsyncFree(ac);
    rstore_arm_reconnect(s);
}

void rstore_disconnect(redis_store *s)
{
    drop_cmd(s);
    drop_sub(s);
}

/* From inside a hiredis callback: drop a connection on the next loop turn. */
void rstore_request_drop(redis_store *s, int cmd, int sub)
{
    s->want_drop_cmd |= cmd;
    s->want_drop_sub |= sub;
    event_active(s->drop_ev, 0, 0);
}

static void on_drop(evutil_socket_t fd, short what, void *arg)
{
    redis_store *s = arg;
    int cmd = s->want_drop_cmd, sub = s->want_drop_sub;
    s->want_drop_cmd = s->want_drop_sub = 0;
    if (cmd)
        drop_cmd(s);
    if (sub)
        drop_sub(s);
}

redisAsyncContext *rstore_conn_open(redis_store *s, redisConnectCallback *on_conn,
                                    redisDisconnectCallback *on_disc)
{
    redisAsyncContext *ac =
        s->unix_path ? redisAsyncConnectUnix(s->unix_path) : redisAsyncConnect(s->host, s->port);
    if (!ac) {
        LOG_WARN("redis %s: out of memory", s->address);
        return NULL;
    }
    if (ac->err) {
        LOG_WARN("redis %s: connect failed: %s", s->address, ac->errstr);
        redisAsyncFree(ac);
        return NULL;
    }
    ac->data = s;
    if (redisLibeventAttach(ac, s->evb) != REDIS_OK) {
        redisAsyncFree(ac);
        return NULL;
    }
    redisAsyncSetConnectCallback(ac, on_conn);
    redisAsyncSetDisconnectCallback(ac, on_disc);
    return ac;
}

/* Highest priority for ev when the base has priorities (store.h: the caller
 * sets them up; with a single one this does nothing). */
void rstore_prioritise(struct event_base *base, struct event *ev)
{
    if (ev && event_base_get_npriorities(base) > 1)
        event_priority_set(ev, 0);
}

/* ---------------------------------------------------------------- timers */

static int has_sub(const redis_store *s)
{
    return s->sub != NULL || s->ssub != NULL;
}

static void open_missing(redis_store *s)
{
    if (!s->cmd)
        rstore_cmd_open(s);
    if (!has_sub(s)) {
        if (s->cl)
            rstore_ssub_open(s);
        else
            rstore_sub_open(s);
    }
    if (!s->cmd || !has_sub(s))
        rstore_arm_reconnect(s);
}

void rstore_start(redis_store *s)
{
    open_missing(s);
}

static void on_reconnect(evutil_socket_t fd, short what, void *arg)
{
    redis_store *s = arg;
    /* Under Sentinel, both connections lost means the primary may have
     * changed: ask the sentinels again before connecting. */
    if (s->sentinel && !s->cmd && !has_sub(s))
        s->primary_known = 0;
    if (s->sentinel && !s->primary_known) {
        sentinel_discover(s->sentinel);
        return;
    }
    open_missing(s);
}

/* ------------------------------------------------------------- sentinel */

static void set_primary(redis_store *s, const char *host, int port)
{
    char *h = strdup(host);
    if (!h)
        return;
    free(s->host);
    s->host = h;
    s->port = port;
    s->primary_known = 1;
}

static void on_sentinel_found(void *ud, const char *host, int port)
{
    redis_store *s = ud;
    if (s->freeing || s->free_requested)
        return;
    set_primary(s, host, port);
    open_missing(s);
}

static void on_sentinel_failed(void *ud, const char *why)
{
    redis_store *s = ud;
    LOG_WARN("redis %s: %s; trying again", s->address, why);
    rstore_arm_reconnect(s);
}

/* A failover finished: leave the old primary at once (it may come back as a
 * replica that still takes reads) and connect to the new one. */
static void on_sentinel_switched(void *ud, const char *host, int port)
{
    redis_store *s = ud;
    if (s->primary_known && s->port == port && s->host && strcmp(s->host, host) == 0)
        return;
    set_primary(s, host, port);
    rstore_request_drop(s, 1, 1);
}

void rstore_not_primary(redis_store *s, const char *why)
{
    LOG_WARN("redis %s: %s:%d is not the primary (%s); looking for it again", s->address,
             s->host ? s->host : "?", s->port, why);
    if (s->sentinel)
        s->primary_known = 0;
    rstore_request_drop(s, 1, 1);
}

/* ------------------------------------------------------ failover grace */

/*
 * Why (redis.failover_grace_ms, Consul's lock-delay): a new primary may lack
 * holds granted in the old one's last writes. Their batonds re-assert them
 * once they reconnect, but another batond's waiter could take such a key
 * first. This batond cannot tell which free keys were held, so for the
 * window it grants no free key at all (acquire.lua); holds that exist, their
 * renewals and re-assertions go on as before.
 */
static void on_grace_end(evutil_socket_t fd, short what, void *arg)
{
    redis_store *s = arg;
    LOG_INFO("redis %s: failover grace over: free keys are granted again", s->address);
}

void rstore_grace_open(redis_store *s, int64_t ms)
{
    if (s->grace_ms <= 0 || ms <= 0)
        return;
    int64_t until = clock_add_ms(clock_mono_ms(), ms);
    if (until <= s->grace_until)
        return; /* an open window that lasts longer stays */
    s->grace_until = until;
    struct timeval tv = tv_of_ms(ms);
    evtimer_add(s->grace_ev, &tv); /* a window still open is extended */
    LOG_WARN("redis %s: failover grace: no free key is granted for %" PRId64
             " ms (redis.failover_grace_ms), so that holds lost with the old primary are re-asserted first",
             s->address, ms);
}

int64_t rstore_grace_left(const redis_store *s)
{
    if (s->grace_until == 0)
        return 0;
    int64_t left = s->grace_until - clock_mono_ms();
    return left > 0 ? left : 0;
}

/* Why both connections go: a Redis that stopped answering one will not be
 * answering the other, and dropping is the only way to fail ops in flight. */
static void on_check(evutil_socket_t fd, short what, void *arg)
{
    redis_store *s = arg;
    int64_t now = clock_mono_ms();
    const char *why = NULL;
    if (s->head && now - s->head->sent_ms > s->timeout_ms)
        why = "a command timed out";
    else if (s->cmd && !s->cmd_ready && now - s->cmd_started_ms > s->timeout_ms)
        why = "connection setup timed out";
    else if (has_sub(s) && !s->sub_ready && now - s->sub_started_ms > s->timeout_ms)
        why = "subscription timed out";
    if (!why)
        return;
    LOG_WARN("redis %s: %s after %" PRId64 " ms; reconnecting", s->address, why, s->timeout_ms);
    drop_cmd(s);
    drop_sub(s);
}

/* -------------------------------------------------------- create / free */

static void store_destroy(redis_store *s)
{
    s->freeing = 1;
    redisAsyncContext *cmd = s->cmd, *sub = s->sub;
    s->cmd = s->sub = NULL;
    if (cmd)
        redisAsyncFree(cmd); /* in-flight ops are freed, their callbacks dropped */
    if (sub)
        redisAsyncFree(sub);
    rstore_ssub_close(s);
    rstore_refresh_drop(s);
    while (s->head) { /* none expected: every op lives on the cmd connection */
        store_op *o = s->head;
        rstore_op_unlink(s, o);
        rstore_op_free(o);
    }
    if (s->reconnect_ev)
        event_free(s->reconnect_ev);
    if (s->check_ev)
        event_free(s->check_ev);
    if (s->drop_ev)
        event_free(s->drop_ev);
    if (s->free_ev)
        event_free(s->free_ev);
    if (s->flush_ev)
        event_free(s->flush_ev);
    if (s->grace_ev)
        event_free(s->grace_ev);
    sentinel_free(s->sentinel);
    for (int i = 0; i < SC_COUNT; i++)
        free(s->text[i]);
    free(s->address);
    free(s->username);
    free(s->epoch_key);
    free(s->host);
    free(s->unix_path);
    free(s->password);
    free(s->prefix);
    free(s->channel);
    free(s->pattern);
    free(s->cl_owned);
    free(s->cl_subscribed);
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
    if (s->cb_depth > 0) {
        /* Inside one of our callbacks: hiredis may still touch the contexts. */
        s->free_requested = 1;
        s->up = 0;
        event_active(s->free_ev, 0, 0);
        return;
    }
    store_destroy(s);
}

int store_redis_is_up(const baton_store *b)
{
    if (b && cluster__is(b))
        return cluster__is_up(b);
    return b && ((const redis_store *)b)->up;
}

const char *rstore_slot_channel(const redis_store *s, int slot, char *buf, size_t buflen)
{
    snprintf(buf, buflen, "%sevents{%s}", s->prefix, cluster_slot_tag(slot));
    return buf;
}

const char *rstore_channel_of(redis_store *s, const char *name, char *buf, size_t buflen)
{
    return s->cl ? rstore_slot_channel(s, cluster_name_slot(name), buf, buflen) : s->channel;
}

/* The address forms of redis/address.h (cluster:// goes to cluster.c). */
static int parse_address(redis_store *s, const char *addr)
{
    char why[320];
    if (redis_addr_parse(addr, &s->addr, why, sizeof why) != 0) {
        LOG_ERROR("redis.address: %s", why);
        return -1;
    }
    switch (s->addr.kind) {
    case REDIS_ADDR_UNIX:
        s->unix_path = strdup(s->addr.path);
        return s->unix_path ? 0 : -1;
    case REDIS_ADDR_TCP:
        s->host = strdup(s->addr.nodes[0].host);
        s->port = s->addr.nodes[0].port;
        return s->host ? 0 : -1;
    case REDIS_ADDR_SENTINEL: return 0; /* host and port come from the sentinels */
    case REDIS_ADDR_CLUSTER: LOG_ERROR("redis.address: cluster:// names a cluster, not a node"); return -1;
    }
    return -1;
}

baton_store *store_redis_new(struct event_base *base, const store_redis_opts *opts)
{
    redis_addr a;
    char why[320];
    if (opts && opts->address && redis_addr_parse(opts->address, &a, why, sizeof why) == 0 &&
        a.kind == REDIS_ADDR_CLUSTER)
        return cluster__new(base, opts);
    redis_store *s = rstore_create(base, opts, NULL);
    return s ? &s->base : NULL;
}

redis_store *rstore_create(struct event_base *base, const store_redis_opts *opts, struct cluster_store *cl)
{
    if (!base || !opts || !opts->address || !opts->address[0] || opts->database < 0 ||
        opts->command_timeout_ms <= 0 || opts->reconnect_ms <= 0 || (cl && opts->database != 0))
        return NULL;
    redis_store *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->cl = cl;
    if (cl && (!(s->cl_owned = calloc(CLUSTER_NSLOTS / 8, 1)) ||
               !(s->cl_subscribed = calloc(CLUSTER_NSLOTS / 8, 1))))
        goto fail;
    s->base.ops = &redis_ops;
    s->evb = base;
    s->db = opts->database;
    s->timeout_ms = opts->command_timeout_ms;
    s->reconnect_ms = opts->reconnect_ms;
    s->keyspace_events = opts->keyspace_events != 0;
    const char *prefix = opts->key_prefix ? opts->key_prefix : "baton:";
    s->address = strdup(opts->address);
    s->prefix = strdup(prefix);
    if (!s->address || !s->prefix || parse_address(s, opts->address) != 0)
        goto fail;
    if (opts->password && opts->password[0] && !(s->password = strdup(opts->password)))
        goto fail;
    if (opts->username && opts->username[0] && !(s->username = strdup(opts->username)))
        goto fail;
    s->min_replicas = opts->min_replicas > 0 ? opts->min_replicas : 0;
    s->replica_timeout_ms = opts->replica_timeout_ms > 0 ? opts->replica_timeout_ms : 500;
    s->grace_ms = opts->failover_grace_ms > 0 ? opts->failover_grace_ms : 0;
    strcpy(s->fence_floor, "0");
    if (asprintf(&s->epoch_key, "%sepoch", prefix) < 0) {
        s->epoch_key = NULL;
        goto fail;
    }
    if (asprintf(&s->channel, "%sevents", prefix) < 0) {
        s->channel = NULL;
        goto fail;
    }
    if (asprintf(&s->pattern, "__keyevent@%d__:expired", s->db) < 0) {
        s->pattern = NULL;
        goto fail;
    }
    for (int i = 0; i < SC_COUNT; i++) {
        /* On a Cluster, List reads keys of every slot of its node (list.lua). */
        const char *shebang = cl && i == SC_LIST ? "#!lua flags=allow-cross-slot-keys,no-writes\n" : "";
        if (asprintf(&s->text[i], "%slocal B_CLUSTER = %s\n%s\n%s", shebang, cl ? "true" : "false",
                     baton_lua_common, script_src[i].body) < 0) {
            s->text[i] = NULL;
            goto fail;
        }
        s->loader[i].s = s;
        s->loader[i].id = (enum script_id)i;
    }
    s->reconnect_ev = evtimer_new(base, on_reconnect, s);
    s->check_ev = event_new(base, -1, EV_PERSIST, on_check, s);
    s->drop_ev = event_new(base, -1, 0, on_drop, s);
    s->free_ev = event_new(base, -1, 0, on_deferred_free, s);
    s->flush_ev = event_new(base, -1, 0, rstore_on_flush, s);
    s->grace_ev = evtimer_new(base, on_grace_end, s);
    if (!s->reconnect_ev || !s->check_ev || !s->drop_ev || !s->free_ev || !s->flush_ev || !s->grace_ev)
        goto fail;
    if (event_base_get_npriorities(base) < 2)
        LOG_INFO("redis %s: the event loop has one priority: Redis replies and wake-ups wait their turn "
                 "(see store_redis_new in store.h)",
                 s->address);
    rstore_prioritise(base, s->flush_ev);
    int64_t every = s->timeout_ms / 4;
    every = every < 10 ? 10 : every > 1000 ? 1000 : every;
    struct timeval tv = tv_of_ms(every);
    event_add(s->check_ev, &tv);

    if (s->addr.kind == REDIS_ADDR_SENTINEL) {
        sentinel_hooks h = {.found = on_sentinel_found,
                            .failed = on_sentinel_failed,
                            .switched = on_sentinel_switched,
                            .ud = s};
        s->sentinel = sentinel_new(base, &s->addr, opts->sentinel_password, s->timeout_ms, &h);
        if (!s->sentinel)
            goto fail;
        sentinel_discover(s->sentinel);
        return s;
    }
    if (!cl) /* a cluster node connects once cluster.c has told it its slots */
        open_missing(s);
    return s;
fail:
    store_destroy(s);
    return NULL;
}

static const store_ops redis_ops = {
    .acquire = rstore_acquire,
    .dequeue = rstore_dequeue,
    .renew = rstore_renew,
    .release = rstore_release,
    .reassert = rstore_reassert,
    .force_release = rstore_force_release,
    .describe = rstore_describe,
    .list = rstore_list,
    .refresh = rstore_refresh,
    .reap = rstore_reap,
    .free = st_free,
};
