/* The Redis store: turning script replies into store.h results. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "internal.h"
#include "log.h"

/* Element i of an array reply as an integer / a string; -1 if it is not one. */
int rstore_el_int(const redisReply *r, size_t i, long long *out)
{
    if (i >= r->elements || r->element[i]->type != REDIS_REPLY_INTEGER)
        return -1;
    *out = r->element[i]->integer;
    return 0;
}

int rstore_el_str(const redisReply *r, size_t i, const char **out)
{
    if (i >= r->elements || r->element[i]->type != REDIS_REPLY_STRING)
        return -1;
    *out = r->element[i]->str;
    return 0;
}

void deliver_acquire(store_op *o, const redisReply *r)
{
    long long granted, a, b, c, d;
    const char *owner, *head;
    store_acquire_res res = {0};
    char devkey[BATON_KEY_MAX + 16];
    if (r->type != REDIS_REPLY_ARRAY || rstore_el_int(r, 0, &granted) != 0)
        goto bad;
    if (granted == 2) {
        /* A pool whose waiters use another device count (acquire.lua). */
        char msg[BATON_KEY_MAX + 128];
        if (rstore_el_int(r, 1, &a) != 0)
            goto bad;
        snprintf(msg, sizeof msg,
                 "pool '%s' has waiters that use %lld devices; a request for it must use the same "
                 "count while they wait",
                 o->name ? o->name : "?", a);
        rstore_op_fail(o, BATON_E_INVALID, msg);
        return;
    }
    if (granted) {
        if (rstore_el_int(r, 1, &a) || rstore_el_int(r, 2, &b) || rstore_el_int(r, 3, &c))
            goto bad;
        res.granted = 1;
        res.device = (int32_t)a;
        res.fencing = (uint64_t)b;
        res.ttl_ms = c;
        res.key = o->name;
        if (o->pool) {
            snprintf(devkey, sizeof(devkey), "%s/%lld", o->name, a);
            res.key = devkey;
        }
    } else {
        if (rstore_el_int(r, 1, &a) || rstore_el_int(r, 2, &b) || rstore_el_str(r, 3, &owner) ||
            rstore_el_int(r, 4, &c) || rstore_el_int(r, 5, &d) || rstore_el_str(r, 6, &head))
            goto bad;
        res.device = -1;
        res.position = a;
        res.queue_len = b;
        res.holder_owner = owner;
        res.holder_fencing = (uint64_t)c;
        res.retry_ms = d;
        res.head_token = head;
    }
    if (o->cb.acquire)
        o->cb.acquire(o->ud, BATON_OK, NULL, &res);
    return;
bad:
    rstore_op_fail(o, BATON_E_INTERNAL, "unexpected reply to acquire");
}

/* {1, ...} or {0, holder_owner, holder_fencing} of renew / release / force_release. */
void deliver_hold(store_op *o, const redisReply *r)
{
    long long ok, a, b;
    const char *owner;
    store_hold_res res = {0};
    char msg[BATON_OWNER_MAX + 96];
    if (r->type != REDIS_REPLY_ARRAY || rstore_el_int(r, 0, &ok) != 0)
        goto bad;
    if (ok && o->kind == OP_RENEW) {
        if (rstore_el_int(r, 1, &a))
            goto bad;
        res.ttl_ms = a;
        res.holder_owner = "";
        if (o->cb.hold)
            o->cb.hold(o->ud, BATON_OK, NULL, &res);
        return;
    }
    if (rstore_el_str(r, 1, &owner) || rstore_el_int(r, 2, &b))
        goto bad;
    res.holder_owner = owner;
    res.holder_fencing = (uint64_t)b;
    store_acquire_res next = {.device = -1, .retry_ms = -1};
    if (o->handoff) {
        res.next = &next;
        if (ok && r->elements >= 5) {
            long long f, ttl;
            if (rstore_el_int(r, 3, &f) || rstore_el_int(r, 4, &ttl))
                goto bad;
            next.granted = 1;
            next.key = o->name;
            next.fencing = (uint64_t)f;
            next.ttl_ms = ttl;
        }
    }
    if (ok) {
        if (o->cb.hold)
            o->cb.hold(o->ud, BATON_OK, NULL, &res);
        return;
    }
    if (res.holder_fencing)
        snprintf(msg, sizeof(msg), "not the holder: held by \"%s\" (fencing %" PRIu64 ")", owner,
                 res.holder_fencing);
    else
        snprintf(msg, sizeof(msg), "not the holder: the key is not held");
    if (o->cb.hold)
        o->cb.hold(o->ud, BATON_E_NOT_HOLDER, msg, &res);
    return;
bad:
    rstore_op_fail(o, BATON_E_INTERNAL, "unexpected reply to a hold script");
}

void deliver_describe(store_op *o, const redisReply *r)
{
    long long held, fencing, ttl, waiters;
    const char *owner;
    if (r->type != REDIS_REPLY_ARRAY || rstore_el_int(r, 0, &held) || rstore_el_str(r, 1, &owner) ||
        rstore_el_int(r, 2, &fencing) || rstore_el_int(r, 3, &ttl) || rstore_el_int(r, 4, &waiters)) {
        rstore_op_fail(o, BATON_E_INTERNAL, "unexpected reply to describe");
        return;
    }
    store_describe_res res = {
        .held = held != 0, .owner = owner, .fencing = (uint64_t)fencing, .ttl_ms = ttl, .waiters = waiters};
    if (o->cb.describe)
        o->cb.describe(o->ud, BATON_OK, NULL, &res);
}

/* A refresh reply: the tokens of the batch's target without a queue entry. */
void deliver_missing(store_op *o, const redisReply *r)
{
    redis_store *s = o->s;
    if (r->type != REDIS_REPLY_ARRAY || !o->name) {
        LOG_WARN("redis: unexpected reply to refresh");
        return;
    }
    store_target t = {.key = o->pool ? NULL : o->name, .pool = o->pool ? o->name : NULL};
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *e = r->element[i];
        if (e->type != REDIS_REPLY_STRING || !s->base.hooks.on_missing)
            continue;
        s->base.hooks.on_missing(s->base.hooks.ud, &t, e->str);
        if (!callbacks_allowed(s))
            return; /* freed from inside the hook */
    }
}
