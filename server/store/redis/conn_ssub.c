/*
 * The pub/sub connection of a Redis Cluster node (cluster.c): sharded pub/sub.
 *
 * Each slot has its own events channel (rstore_channel_of: "P events{T}",
 * T hashing to the slot), so a script publishes with SPUBLISH where its keys
 * live and each shard carries only its own keys' events. This connection
 * SSUBSCRIBEs to the channel of every slot the node serves (one command per
 * slot: Redis wants one slot per SSUBSCRIBE) and PSUBSCRIBEs to the node's own
 * expirations. hiredis 0.14's async API knows neither SSUBSCRIBE nor its
 * pushes, so this runs on rconn (one callback for every reply, in order).
 *
 * Up (sub_ready) once every setup command has answered. Slots that move here
 * later are subscribed by rstore_ssub_update; a slot that moves away is
 * dropped by Redis itself (an unsolicited "sunsubscribe"), which also asks
 * cluster.c to read the slot map again.
 */
#include <string.h>

#include "internal.h"
#include "log.h"
#include "rconn.h"

static int el_is(const redisReply *r, size_t i, const char *str)
{
    const char *v;
    return rstore_el_str(r, i, &v) == 0 && strcmp(v, str) == 0;
}

static void setup_reply_done(redis_store *s)
{
    if (s->ssub_pending > 0 && --s->ssub_pending == 0 && !s->sub_ready) {
        LOG_INFO("redis %s: sharded pub/sub subscribed", s->address);
        s->sub_ready = 1;
        rstore_update_state(s);
    }
}

static void on_ssub_reply(void *ud, const redisReply *r)
{
    redis_store *s = ud;
    if (r->type == REDIS_REPLY_ARRAY && r->elements >= 3 && el_is(r, 0, "smessage") &&
        r->element[2]->type == REDIS_REPLY_STRING) {
        rstore_sub_payload(s, r->element[2]->str, r->element[2]->len);
        return;
    }
    if (r->type == REDIS_REPLY_ARRAY && r->elements >= 4 && el_is(r, 0, "pmessage") &&
        r->element[3]->type == REDIS_REPLY_STRING) {
        rstore_sub_expired(s, r->element[3]->str, r->element[3]->len);
        return;
    }
    if (r->type == REDIS_REPLY_ARRAY && r->elements >= 2 && el_is(r, 0, "sunsubscribe")) {
        /* Never asked for: the slot moved to another node. */
        if (r->element[1]->type == REDIS_REPLY_STRING)
            cl_set_bit(s->cl_subscribed, cluster_key_slot(r->element[1]->str, r->element[1]->len), 0);
        cluster__slots_changed(s->cl);
        return;
    }
    /* The answer to one of the setup commands (AUTH, PSUBSCRIBE,
     * SSUBSCRIBE), in the order they were sent. */
    if (r->type == REDIS_REPLY_ERROR) {
        cluster_redirect rd;
        if (cluster_redirect_parse(r->str, r->len, &rd) != CLUSTER_REDIRECT_NONE) {
            /* An SSUBSCRIBE for a slot that moved meanwhile: the map is stale. */
            if (rd.kind == CLUSTER_REDIRECT_MOVED)
                cl_set_bit(s->cl_subscribed, rd.slot, 0);
            cluster__slots_changed(s->cl);
        } else {
            /* AUTH refused, or SSUBSCRIBE unknown (Redis before 7). */
            LOG_ERROR("redis %s: pub/sub setup failed: %s", s->address, r->str);
            rstore_request_drop(s, 0, 1);
            return;
        }
    }
    setup_reply_done(s);
}

static void on_ssub_closed(void *ud, const char *why)
{
    redis_store *s = ud;
    LOG_WARN("redis %s: pub/sub connection lost: %s", s->address, why ? why : "closed");
    rstore_request_drop(s, 0, 1);
}

static void send_setup(redis_store *s, int rc)
{
    if (rc == 0)
        s->ssub_pending++;
}

void rstore_ssub_update(redis_store *s)
{
    if (!s->ssub)
        return;
    char chan[160];
    for (int slot = 0; slot < CLUSTER_NSLOTS; slot++) {
        int own = cl_bit(s->cl_owned, slot), sub = cl_bit(s->cl_subscribed, slot);
        if (own && !sub) {
            send_setup(s, rconn_command(s->ssub, "SSUBSCRIBE %s", rstore_slot_channel(s, slot, chan, sizeof chan)));
            cl_set_bit(s->cl_subscribed, slot, 1);
        } else if (!own && sub) {
            cl_set_bit(s->cl_subscribed, slot, 0); /* Redis drops it when the slot leaves */
        }
    }
}

void rstore_ssub_open(redis_store *s)
{
    rconn_hooks h = {.reply = on_ssub_reply, .closed = on_ssub_closed, .ud = s};
    rconn *c = rconn_open_tcp(s->evb, s->host, s->port, &h);
    if (!c) {
        LOG_WARN("redis %s: pub/sub connect failed", s->address);
        return;
    }
    s->ssub = c;
    s->sub_ready = 0;
    s->ssub_pending = 0;
    memset(s->cl_subscribed, 0, CLUSTER_NSLOTS / 8);
    if (event_base_get_npriorities(s->evb) > 1)
        rconn_set_priority(c, 0);
    s->sub_started_ms = clock_mono_ms();
    if (s->password && s->username)
        send_setup(s, rconn_command(c, "AUTH %s %s", s->username, s->password));
    else if (s->password)
        send_setup(s, rconn_command(c, "AUTH %s", s->password));
    if (s->keyspace_events)
        send_setup(s, rconn_command(c, "PSUBSCRIBE %s", s->pattern));
    rstore_ssub_update(s);
}

void rstore_ssub_close(redis_store *s)
{
    if (!s->ssub)
        return;
    rconn_free(s->ssub);
    s->ssub = NULL;
    s->ssub_pending = 0;
    if (s->cl_subscribed)
        memset(s->cl_subscribed, 0, CLUSTER_NSLOTS / 8);
}
