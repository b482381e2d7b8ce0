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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "internal.h"
#include "log.h"

const struct script_src script_src[SC_COUNT] = {
    [SC_ACQUIRE] = {"acquire", baton_lua_acquire},
    [SC_DEQUEUE] = {"dequeue", baton_lua_dequeue},
    [SC_RENEW] = {"renew", baton_lua_renew},
    [SC_RELEASE] = {"release", baton_lua_release},
    [SC_FORCE_RELEASE] = {"force_release", baton_lua_force_release},
    [SC_DESCRIBE] = {"describe", baton_lua_describe},
    [SC_REFRESH] = {"refresh", baton_lua_refresh},
    [SC_REAP] = {"reap", baton_lua_reap},
};

static const store_ops redis_ops;

static struct timeval tv_of_ms(int64_t ms)
{
    struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)((ms % 1000) * 1000)};
    return tv;
}

/* ---------------------------------------------------------------- state */

void update_state(redis_store *s)
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

void arm_reconnect(redis_store *s)
{
    if (s->_freeing || s->_free_requested || evtimer_pending(s->_reconnect_ev, NULL))
        return;
    struct timeval tv = tv_of_ms(s->_reconnect_ms);
    evtimer_add(s->_reconnect_ev, &tv);
}

/* Frees the command connection; its in-flight ops complete with
 * BATON_E_UNAVAILABLE right here. Never call from its own callback. */
void drop_cmd(redis_store *s)
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

void drop_sub(redis_store *s)
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
void request_drop(redis_store *s, int cmd, int sub)
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

redisAsyncContext *conn_open(redis_store *s, redisConnectCallback *on_conn,
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

/* Highest priority for ev when the base has priorities (batond sets them up;
 * a plain event_base in a test has one, and then this does nothing). */
void prioritise(struct event_base *base, struct event *ev)
{
    if (ev && event_base_get_npriorities(base) > 1)
        event_priority_set(ev, 0);
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
