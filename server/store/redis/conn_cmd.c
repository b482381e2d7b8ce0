/* The Redis store's command connection: setup (AUTH, SELECT, SCRIPT LOAD)
 * and prompt writes. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "internal.h"
#include "log.h"
#include "sentinel.h"

/* ------------------------------------------------------ command connection */

static void cmd_init_step_done(redis_store *s)
{
    if (--s->cmd_init_left > 0)
        return;
    LOG_INFO("redis %s: command connection ready", s->address);
    s->cmd_ready = 1;
    rstore_update_state(s);
}

/* AUTH / SELECT reply: an error makes the connection useless. */
static void on_cmd_init(redisAsyncContext *ac, void *r, void *privdata)
{
    redis_store *s = privdata;
    redisReply *reply = r;
    if (!reply || ac != s->cmd)
        return;
    if (reply->type == REDIS_REPLY_ERROR) {
        LOG_ERROR("redis %s: connection setup failed: %s", s->address, reply->str);
        rstore_request_drop(s, 1, 0);
        return;
    }
    cmd_init_step_done(s);
}

static void on_script_loaded(redisAsyncContext *ac, void *r, void *privdata)
{
    script_loader *l = privdata;
    redis_store *s = l->s;
    redisReply *reply = r;
    if (!reply || ac != s->cmd)
        return;
    if (reply->type != REDIS_REPLY_STRING || reply->len != 40) {
        LOG_ERROR("redis %s: SCRIPT LOAD %s failed: %s", s->address, script_src[l->id].name,
                  reply->type == REDIS_REPLY_ERROR ? reply->str : "unexpected reply");
        rstore_request_drop(s, 1, 0);
        return;
    }
    memcpy(s->sha[l->id], reply->str, 40);
    s->sha[l->id][40] = '\0';
    cmd_init_step_done(s);
}

/* ROLE (sentinel:// only): a sentinel's answer can be stale, or the primary
 * it named was demoted since. */
static void on_role(redisAsyncContext *ac, void *r, void *privdata)
{
    redis_store *s = privdata;
    redisReply *reply = r;
    if (!reply || ac != s->cmd)
        return;
    if (!sentinel_role_is_primary(reply)) {
        rstore_not_primary(s, "ROLE");
        return;
    }
    cmd_init_step_done(s);
}

/* The fencing floor of this Redis (epoch.lua), taken before any grant. */
static void on_epoch(redisAsyncContext *ac, void *r, void *privdata)
{
    redis_store *s = privdata;
    redisReply *reply = r;
    if (!reply || ac != s->cmd)
        return;
    unsigned long long floor = 0;
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 || reply->element[0]->type != REDIS_REPLY_STRING ||
        reply->element[1]->type != REDIS_REPLY_INTEGER ||
        rstore_parse_u64(reply->element[0]->str, reply->element[0]->len, &floor) != 0) {
        LOG_ERROR("redis %s: epoch script failed: %s", s->address,
                  reply->type == REDIS_REPLY_ERROR ? reply->str : "unexpected reply");
        rstore_request_drop(s, 1, 0);
        return;
    }
    char was[sizeof s->fence_floor];
    snprintf(was, sizeof was, "%s", s->fence_floor);
    snprintf(s->fence_floor, sizeof s->fence_floor, "%llu", floor);
    /* Not the Redis written to before (the first connection has nothing to
     * lose, unless it is a cluster node that took over slots: cl_fresh). */
    if ((strcmp(was, "0") != 0 && strcmp(was, s->fence_floor) != 0) || (s->cl_fresh && strcmp(was, "0") == 0)) {
        LOG_WARN("redis %s: a Redis not seen before (fencing floor %s): holds re-assert themselves", s->address,
                 s->fence_floor);
        s->new_primary = 1;
        rstore_grace_open(s, s->grace_ms);
    } else if (strcmp(was, "0") == 0 && reply->element[1]->integer >= 0 &&
               reply->element[1]->integer < s->grace_ms) {
        /* This batond starts just after a change of Redis that another one
         * saw: it holds nothing, but the others' lost holds may still be
         * re-asserted; it keeps the rest of the window. */
        rstore_grace_open(s, s->grace_ms - reply->element[1]->integer);
    }
    LOG_DEBUG("redis %s: fencing floor %s", s->address, s->fence_floor);
    cmd_init_step_done(s);
}

/* TIME (a cluster node without slots): its clock in microseconds is a safe
 * floor, above every token given out before. */
static void on_time(redisAsyncContext *ac, void *r, void *privdata)
{
    redis_store *s = privdata;
    redisReply *reply = r;
    if (!reply || ac != s->cmd)
        return;
    unsigned long long sec = 0, usec = 0;
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 || reply->element[0]->type != REDIS_REPLY_STRING ||
        reply->element[1]->type != REDIS_REPLY_STRING ||
        rstore_parse_u64(reply->element[0]->str, reply->element[0]->len, &sec) != 0 ||
        rstore_parse_u64(reply->element[1]->str, reply->element[1]->len, &usec) != 0) {
        LOG_ERROR("redis %s: TIME failed", s->address);
        rstore_request_drop(s, 1, 0);
        return;
    }
    snprintf(s->fence_floor, sizeof s->fence_floor, "%llu", sec * 1000000ULL + usec);
    if (s->cl_fresh)
        s->new_primary = 1; /* a node that appeared after the first map */
    cmd_init_step_done(s);
}

/* INFO server: this Redis' run_id, which tells epoch.lua whether batond saw
 * this Redis before. Without it (INFO refused by an ACL), every connection
 * counts as a new Redis: the floor moves up each time, which is safe. */
static void on_info(redisAsyncContext *ac, void *r, void *privdata)
{
    redis_store *s = privdata;
    redisReply *reply = r;
    if (!reply || ac != s->cmd)
        return;
    char run_id[64];
    if (reply->type != REDIS_REPLY_STRING || rstore_parse_run_id(reply->str, reply->len, run_id, sizeof run_id) != 0) {
        LOG_WARN("redis %s: INFO server gave no run_id (%s); the fencing floor moves up on every connection",
                 s->address, reply->type == REDIS_REPLY_ERROR ? reply->str : "no run_id");
        snprintf(run_id, sizeof run_id, "unknown-%lld", (long long)clock_mono_ms());
    }
    /* A cluster node keeps its floor record in a slot it serves; one that
     * serves none yet (only asked to, by an ASK) takes its clock as floor. */
    char key[160];
    const char *epoch_key = s->epoch_key;
    if (s->cl) {
        int slot = 0;
        while (slot < CLUSTER_NSLOTS && !cl_bit(s->cl_owned, slot))
            slot++;
        if (slot == CLUSTER_NSLOTS) {
            redisAsyncCommand(ac, on_time, s, "TIME");
            return;
        }
        snprintf(key, sizeof key, "%s{%s}", s->epoch_key, cluster_slot_tag(slot));
        epoch_key = key;
    }
    /* SCRIPT LOAD replies came first (one connection, in order). */
    redisAsyncCommand(ac, on_epoch, s, "EVALSHA %s 1 %s %s", s->sha[SC_EPOCH], epoch_key, run_id);
}

void rstore_on_best_effort(redisAsyncContext *ac, void *r, void *privdata)
{
    redis_store *s = ac->data;
    redisReply *reply = r;
    if (reply && reply->type == REDIS_REPLY_ERROR)
        LOG_WARN("redis %s: %s: %s (continuing)", s->address, (const char *)privdata, reply->str);
}

/* Adds the E (keyevent) and x (expired) classes to whatever is configured. */
static void on_notify_config(redisAsyncContext *ac, void *r, void *privdata)
{
    redis_store *s = privdata;
    redisReply *reply = r;
    if (!reply || ac != s->cmd)
        return;
    const char *cur;
    if (reply->type != REDIS_REPLY_ARRAY || rstore_el_str(reply, 1, &cur) != 0) {
        LOG_WARN("redis %s: CONFIG GET notify-keyspace-events failed (%s); expirations are seen only by "
                 "polling",
                 s->address, reply->type == REDIS_REPLY_ERROR ? reply->str : "unexpected reply");
        return;
    }
    char want[64];
    snprintf(want, sizeof(want), "%s%s%s", cur, strchr(cur, 'E') ? "" : "E",
             (strchr(cur, 'x') || strchr(cur, 'A')) ? "" : "x");
    if (strcmp(want, cur) != 0)
        redisAsyncCommand(ac, rstore_on_best_effort, (void *)"CONFIG SET notify-keyspace-events",
                          "CONFIG SET notify-keyspace-events %s", want);
}

static void on_cmd_connect(const redisAsyncContext *ac, int status)
{
    redis_store *s = ac->data;
    if (status == REDIS_OK)
        return;
    /* hiredis frees ac after this returns. */
    LOG_WARN("redis %s: connect failed: %s", s->address, ac->errstr);
    if (ac == s->cmd) {
        s->cmd = NULL;
        s->cmd_ready = 0;
        rstore_update_state(s);
        rstore_arm_reconnect(s);
    }
}

static void on_cmd_disconnect(const redisAsyncContext *ac, int status)
{
    redis_store *s = ac->data;
    if (ac != s->cmd) /* dropped by us: already handled */
        return;
    LOG_WARN("redis %s: command connection lost: %s", s->address, ac->errstr[0] ? ac->errstr : "closed");
    s->cmd = NULL;
    s->cmd_ready = 0;
    rstore_update_state(s);
    rstore_arm_reconnect(s);
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
void rstore_on_flush(evutil_socket_t fd, short what, void *arg)
{
    redis_store *s = arg;
    if (s->cmd && (s->cmd->c.flags & REDIS_CONNECTED))
        redisAsyncHandleWrite(s->cmd);
}

/* Commands queue up in hiredis until the connection completes. */
void rstore_cmd_open(redis_store *s)
{
    redisAsyncContext *ac = rstore_conn_open(s, on_cmd_connect, on_cmd_disconnect);
    if (!ac)
        return;
    s->cmd = ac;
    s->cmd_ready = 0;
    /* Replies at the same priority as wake-ups: a release's reply can carry
     * the next waiter's grant (direct handoff), which should not wait behind
     * a loop turn of new requests. */
    rstore_prioritise(s->evb, ((redisLibeventEvents *)ac->ev.data)->rev);
    s->cmd_started_ms = clock_mono_ms();
    s->cmd_init_left = 0;
    if (s->password && s->username) {
        redisAsyncCommand(ac, on_cmd_init, s, "AUTH %s %s", s->username, s->password);
        s->cmd_init_left++;
    } else if (s->password) {
        redisAsyncCommand(ac, on_cmd_init, s, "AUTH %s", s->password);
        s->cmd_init_left++;
    }
    if (s->sentinel) {
        redisAsyncCommand(ac, on_role, s, "ROLE");
        s->cmd_init_left++;
    }
    if (s->db != 0) {
        redisAsyncCommand(ac, on_cmd_init, s, "SELECT %d", s->db);
        s->cmd_init_left++;
    }
    redisAsyncCommand(ac, rstore_on_best_effort, (void *)"CLIENT SETNAME", "CLIENT SETNAME baton-cmd-%ld",
                      (long)getpid());
    for (int i = 0; i < SC_COUNT; i++) {
        redisAsyncCommand(ac, on_script_loaded, &s->loader[i], "SCRIPT LOAD %s", s->text[i]);
        s->cmd_init_left++;
    }
    redisAsyncCommand(ac, on_info, s, "INFO server");
    s->cmd_init_left++; /* done when epoch.lua answers */
    if (s->keyspace_events)
        redisAsyncCommand(ac, on_notify_config, s, "CONFIG GET notify-keyspace-events");
}
