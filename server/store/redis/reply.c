/* The Redis store: turning script replies into store.h results (reply.h).
 * Pure: nothing here touches a connection, the store or the log. */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reply.h"

/* Element i of an array, or NULL (not an array, too short, a NULL slot). */
static const redisReply *el(const redisReply *r, size_t i)
{
    if (!r || r->type != REDIS_REPLY_ARRAY || !r->element || i >= r->elements)
        return NULL;
    return r->element[i];
}

int rstore_el_int(const redisReply *r, size_t i, long long *out)
{
    const redisReply *e = el(r, i);
    if (!e || e->type != REDIS_REPLY_INTEGER)
        return -1;
    *out = e->integer;
    return 0;
}

int rstore_el_str(const redisReply *r, size_t i, const char **out)
{
    const redisReply *e = el(r, i);
    if (!e || e->type != REDIS_REPLY_STRING || !e->str)
        return -1;
    *out = e->str;
    return 0;
}

/* A fencing token: never negative (it is handed out as a uint64). */
static int el_fencing(const redisReply *r, size_t i, uint64_t *out)
{
    long long v;
    if (rstore_el_int(r, i, &v) != 0 || v < 0)
        return -1;
    *out = (uint64_t)v;
    return 0;
}

/* The {device, fencing} pairs after a pool grant's first four elements
 * into out->devs / out->fencs and res (none: a reply from before them). */
static int decode_grant_devices(const redisReply *r, rstore_acquire_dec *out)
{
    size_t n = r->elements > 4 ? (r->elements - 4) / 2 : 0;
    if (r->elements != 4 + 2 * n || n > RSTORE_MAX_GRANT_DEVICES)
        return -1;
    for (size_t i = 0; i < n; i++) {
        long long d;
        if (rstore_el_int(r, 4 + 2 * i, &d) || d < 0 || d > INT32_MAX ||
            el_fencing(r, 5 + 2 * i, &out->fencs[i]))
            return -1;
        out->devs[i] = (int32_t)d;
    }
    out->res.ndevices = (int32_t)n;
    out->res.devices = n ? out->devs : NULL;
    out->res.fencings = n ? out->fencs : NULL;
    return 0;
}

int rstore_decode_acquire(const redisReply *r, const char *name, int pool, rstore_acquire_dec *out)
{
    long long granted, a, b, c, d;
    const char *owner, *head;
    store_acquire_res *res = &out->res;
    *res = (store_acquire_res){0};
    out->msg = NULL;
    out->devices = 0;
    if (rstore_el_int(r, 0, &granted) != 0)
        goto bad;
    if (granted == 2) {
        /* A pool whose waiters use another device count (acquire.lua). */
        if (rstore_el_int(r, 1, &a) != 0)
            goto bad;
        out->devices = a;
        snprintf(out->buf, sizeof out->buf,
                 "pool '%s' has waiters that use %lld devices; a request for it must use the same "
                 "count while they wait",
                 name ? name : "?", a);
        out->err = BATON_E_INVALID;
        out->msg = out->buf;
        return out->err;
    }
    if (granted == 1) {
        if (rstore_el_int(r, 1, &a) || el_fencing(r, 2, &res->fencing) || rstore_el_int(r, 3, &c))
            goto bad;
        /* a device index of a pool: 0 .. INT32_MAX; a plain key: -1 */
        if (pool ? (a < 0 || a > INT32_MAX) : a != -1)
            goto bad;
        res->granted = 1;
        res->device = (int32_t)a;
        res->ttl_ms = c;
        res->key = name;
        if (pool) {
            snprintf(out->buf, sizeof out->buf, "%s/%lld", name ? name : "?", a);
            res->key = out->buf;
            if (decode_grant_devices(r, out) != 0)
                goto bad;
        }
    } else if (granted == 0) {
        if (rstore_el_int(r, 1, &a) || rstore_el_int(r, 2, &b) || rstore_el_str(r, 3, &owner) ||
            el_fencing(r, 4, &res->holder_fencing) || rstore_el_int(r, 5, &d) || rstore_el_str(r, 6, &head))
            goto bad;
        res->device = -1;
        res->position = a;
        res->queue_len = b;
        res->holder_owner = owner;
        res->retry_ms = d;
        res->head_token = head;
    } else {
        goto bad;
    }
    out->err = BATON_OK;
    return BATON_OK;
bad:
    *res = (store_acquire_res){0};
    out->err = BATON_E_INTERNAL;
    out->msg = "unexpected reply to acquire";
    return out->err;
}

int rstore_decode_hold(const redisReply *r, int renew, const char *handoff_key, rstore_hold_dec *out)
{
    long long ok, a;
    const char *owner;
    store_hold_res *res = &out->res;
    *res = (store_hold_res){0};
    out->msg = NULL;
    if (rstore_el_int(r, 0, &ok) != 0 || (ok != 0 && ok != 1))
        goto bad;
    if (ok && renew) {
        if (rstore_el_int(r, 1, &a))
            goto bad;
        res->ttl_ms = a;
        res->holder_owner = "";
        out->err = BATON_OK;
        return BATON_OK;
    }
    if (rstore_el_str(r, 1, &owner) || el_fencing(r, 2, &res->holder_fencing))
        goto bad;
    res->holder_owner = owner;
    if (handoff_key) {
        out->next = (store_acquire_res){.device = -1, .retry_ms = -1};
        res->next = &out->next;
        if (ok && r->elements >= 5) {
            long long ttl;
            if (el_fencing(r, 3, &out->next.fencing) || rstore_el_int(r, 4, &ttl))
                goto bad;
            out->next.granted = 1;
            out->next.key = handoff_key;
            out->next.ttl_ms = ttl;
        }
    }
    if (ok) {
        out->err = BATON_OK;
        return BATON_OK;
    }
    if (res->holder_fencing)
        snprintf(out->buf, sizeof(out->buf), "not the holder: held by \"%s\" (fencing %" PRIu64 ")", owner,
                 res->holder_fencing);
    else
        snprintf(out->buf, sizeof(out->buf), "not the holder: the key is not held");
    out->err = BATON_E_NOT_HOLDER;
    out->msg = out->buf;
    return out->err;
bad:
    *res = (store_hold_res){0};
    out->err = BATON_E_INTERNAL;
    out->msg = "unexpected reply to a hold script";
    return out->err;
}

int rstore_decode_describe(const redisReply *r, rstore_describe_dec *out)
{
    long long held, ttl, waiters;
    const char *owner;
    store_describe_res *res = &out->res;
    *res = (store_describe_res){0};
    out->msg = NULL;
    if (rstore_el_int(r, 0, &held) || rstore_el_str(r, 1, &owner) || el_fencing(r, 2, &res->fencing) ||
        rstore_el_int(r, 3, &ttl) || rstore_el_int(r, 4, &waiters)) {
        *res = (store_describe_res){0};
        out->err = BATON_E_INTERNAL;
        out->msg = "unexpected reply to describe";
        return out->err;
    }
    res->held = held != 0;
    res->owner = owner;
    res->ttl_ms = ttl;
    res->waiters = waiters;
    out->err = BATON_OK;
    return BATON_OK;
}

int rstore_decode_missing(const redisReply *r, const char **tokens, size_t cap, size_t *n)
{
    *n = 0;
    if (!r || r->type != REDIS_REPLY_ARRAY || (r->elements > 0 && !r->element))
        return BATON_E_INTERNAL;
    for (size_t i = 0; i < r->elements; i++) {
        const char *tok;
        if (rstore_el_str(r, i, &tok) != 0)
            continue;
        if (*n == cap) {
            *n = 0;
            return BATON_E_INTERNAL;
        }
        tokens[(*n)++] = tok;
    }
    return BATON_OK;
}

int rstore_parse_run_id(const char *info, size_t len, char *out, size_t outlen)
{
    static const char tag[] = "run_id:";
    const size_t tlen = sizeof tag - 1;
    for (size_t i = 0; i + tlen <= len; i++) {
        if ((i == 0 || info[i - 1] == '\n') && memcmp(info + i, tag, tlen) == 0) {
            size_t b = i + tlen, e = b;
            while (e < len && info[e] != '\r' && info[e] != '\n')
                e++;
            if (e == b || e - b >= outlen)
                return -1;
            for (size_t k = b; k < e; k++)
                if (info[k] <= ' ' || info[k] > '~')
                    return -1;
            memcpy(out, info + b, e - b);
            out[e - b] = '\0';
            return 0;
        }
    }
    return -1;
}

int rstore_parse_u64(const char *s, size_t len, unsigned long long *out)
{
    unsigned long long v = 0;
    if (len == 0 || len > 20)
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (~0ULL - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

int rstore_decode_list(const redisReply *r, store_lock_info *locks, size_t cap, size_t *n,
                       const char **cursor)
{
    *n = 0;
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 || (r->elements - 1) % 6 != 0 ||
        rstore_el_str(r, 0, cursor) || (r->elements - 1) / 6 > cap)
        return BATON_E_INTERNAL;
    size_t count = (r->elements - 1) / 6;
    for (size_t i = 0; i < count; i++) {
        size_t b = 1 + 6 * i;
        const char *fencing;
        char *end;
        long long ttl, held, waiters;
        if (rstore_el_str(r, b, &locks[i].key) || rstore_el_str(r, b + 1, &locks[i].owner) ||
            rstore_el_str(r, b + 2, &fencing) || rstore_el_int(r, b + 3, &ttl) ||
            rstore_el_int(r, b + 4, &held) || rstore_el_int(r, b + 5, &waiters))
            return BATON_E_INTERNAL;
        locks[i].fencing = strtoull(fencing, &end, 10);
        if (*end != '\0')
            return BATON_E_INTERNAL;
        locks[i].ttl_ms = ttl;
        locks[i].held_for_ms = held;
        locks[i].waiters = waiters;
    }
    *n = count;
    return BATON_OK;
}
