/* The Redis store's pub/sub connection: events and expirations. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "internal.h"
#include "log.h"

/* ------------------------------------------------------ pub/sub connection */

/* "<prefix>{K}:lock" (a Cluster's "<prefix>{T}R:lock") expired: report it
 * (reap publishes EXPIRED). */
void rstore_sub_expired(redis_store *s, const char *name, size_t len)
{
    char key[BATON_KEY_MAX + 1];
    if (cluster_lock_key_of(name, len, s->prefix, key, sizeof key) != 0 || !key[0])
        return;
    rstore_reap(&s->base, key);
}

void rstore_sub_payload(redis_store *s, const char *payload, size_t len)
{
    char buf[BATON_KEY_MAX + BATON_OWNER_MAX + 96];
    store_event ev;
    if (len >= sizeof(buf)) {
        LOG_WARN("redis %s: oversized event ignored (%zu bytes)", s->address, len);
        return;
    }
    memcpy(buf, payload, len);
    buf[len] = '\0';
    if (store_event_parse(buf, len, &ev) != 0) {
        LOG_WARN("redis %s: malformed event ignored: %.*s", s->address, (int)len, payload);
        return;
    }
    if (s->base.hooks.on_event && callbacks_allowed(s)) {
        s->cb_depth++;
        s->base.hooks.on_event(s->base.hooks.ud, &ev);
        s->cb_depth--;
    }
}

static int el_is(const redisReply *r, size_t i, const char *str)
{
    const char *v;
    return rstore_el_str(r, i, &v) == 0 && strcmp(v, str) == 0;
}

static void on_sub_message(redisAsyncContext *ac, void *r, void *privdata)
{
    redis_store *s = privdata;
    redisReply *reply = r;
    if (!reply) {
        if (ac == s->sub && s->sub_ready) {
            s->sub_ready = 0;
            rstore_update_state(s);
        }
        return;
    }
    if (ac != s->sub || reply->type != REDIS_REPLY_ARRAY || reply->elements < 3)
        return;
    if (el_is(reply, 0, "message") && reply->element[2]->type == REDIS_REPLY_STRING) {
        rstore_sub_payload(s, reply->element[2]->str, reply->element[2]->len);
    } else if (el_is(reply, 0, "pmessage") && reply->elements >= 4 &&
               reply->element[3]->type == REDIS_REPLY_STRING) {
        rstore_sub_expired(s, reply->element[3]->str, reply->element[3]->len);
    } else if (el_is(reply, 0, "subscribe") && el_is(reply, 1, s->channel)) {
        LOG_INFO("redis %s: subscribed to %s", s->address, s->channel);
        s->sub_ready = 1;
        rstore_update_state(s);
    }
}

static void on_sub_init(redisAsyncContext *ac, void *r, void *privdata)
{
    redis_store *s = privdata;
    redisReply *reply = r;
    if (reply && ac == s->sub && reply->type == REDIS_REPLY_ERROR) {
        LOG_ERROR("redis %s: pub/sub setup failed: %s", s->address, reply->str);
        rstore_request_drop(s, 0, 1);
    }
}

static void on_sub_connect(const redisAsyncContext *ac, int status)
{
    redis_store *s = ac->data;
    if (status == REDIS_OK)
        return;
    if (ac == s->sub) {
        s->sub = NULL;
        s->sub_ready = 0;
        rstore_update_state(s);
        rstore_arm_reconnect(s);
    }
}

static void on_sub_disconnect(const redisAsyncContext *ac, int status)
{
    redis_store *s = ac->data;
    if (ac != s->sub)
        return;
    LOG_WARN("redis %s: pub/sub connection lost: %s", s->address, ac->errstr[0] ? ac->errstr : "closed");
    s->sub = NULL;
    s->sub_ready = 0;
    rstore_update_state(s);
    rstore_arm_reconnect(s);
}

void rstore_sub_open(redis_store *s)
{
    redisAsyncContext *ac = rstore_conn_open(s, on_sub_connect, on_sub_disconnect);
    if (!ac)
        return;
    s->sub = ac;
    s->sub_ready = 0;
    /* Wake-ups first: a waiter's next attempt should not queue behind the
     * other work of the same loop turn (the released holder's response). */
    rstore_prioritise(s->evb, ((redisLibeventEvents *)ac->ev.data)->rev);
    s->sub_started_ms = clock_mono_ms();
    /* Regular replies are matched before pub/sub ones, so AUTH may precede SUBSCRIBE. */
    if (s->password && s->username)
        redisAsyncCommand(ac, on_sub_init, s, "AUTH %s %s", s->username, s->password);
    else if (s->password)
        redisAsyncCommand(ac, on_sub_init, s, "AUTH %s", s->password);
    redisAsyncCommand(ac, rstore_on_best_effort, (void *)"CLIENT SETNAME", "CLIENT SETNAME baton-sub-%ld",
                      (long)getpid());
    redisAsyncCommand(ac, on_sub_message, s, "SUBSCRIBE %s", s->channel);
    if (s->keyspace_events)
        redisAsyncCommand(ac, on_sub_message, s, "PSUBSCRIBE %s", s->pattern);
}
