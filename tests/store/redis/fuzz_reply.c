/*
 * libFuzzer target for the Redis store's reply decoders (reply.c): the fuzz
 * bytes describe a redisReply tree (any types, any integers, short or long
 * arrays, NULL slots, strings with NULs) and every decoder runs on it, in
 * every mode. They must never crash or read out of bounds; whatever they
 * return must be self-consistent (checked with abort()).
 *   see tests/store/CMakeLists.txt for how to build and run it.
 */
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "reply.h"
#include "reply_build.h"

typedef struct input {
    const uint8_t *p;
    size_t n;
} input;

static uint8_t byte(input *in)
{
    if (in->n == 0)
        return 0;
    in->n--;
    return *in->p++;
}

static long long integer(input *in)
{
    uint8_t sel = byte(in);
    switch (sel % 6) {
    case 0: return (int8_t)byte(in); /* small values, -1 and 0 .. 2 most of all */
    case 1: return LLONG_MAX;
    case 2: return LLONG_MIN;
    case 3: return (long long)INT32_MAX + (int8_t)byte(in);
    default: {
        uint64_t v = 0;
        for (int i = 0; i < 8; i++)
            v = v << 8 | byte(in);
        return (long long)v;
    }
    }
}

static redisReply *node(input *in, int depth)
{
    uint8_t t = byte(in);
    switch (t % 7) {
    case 0:
    case 1: return reply_int(integer(in));
    case 2:
    case 3: {
        size_t len = byte(in) % 48;
        if (len > in->n)
            len = in->n;
        redisReply *r =
            reply_strn((t & 0x80) ? REDIS_REPLY_ERROR : REDIS_REPLY_STRING, (const char *)in->p, len);
        in->p += len;
        in->n -= len;
        return r;
    }
    case 4: return reply_node(REDIS_REPLY_NIL);
    case 5: return NULL; /* a NULL slot */
    default: {
        if (depth >= 3)
            return reply_int(integer(in));
        size_t n = byte(in) % 10;
        redisReply *r = reply_arr(0);
        r->element = n ? calloc(n, sizeof(*r->element)) : NULL;
        if (n && !r->element)
            abort();
        r->elements = n;
        for (size_t i = 0; i < n; i++)
            r->element[i] = node(in, depth + 1);
        return r;
    }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    input in = {data, size};
    uint8_t mode = byte(&in);
    redisReply *r = node(&in, 0);

    rstore_acquire_dec a;
    for (int pool = 0; pool <= 1; pool++) {
        int err = rstore_decode_acquire(r, pool ? "gpu" : "k", pool, &a);
        if (err != a.err || (err == BATON_OK) != (a.msg == NULL))
            abort();
        if (err == BATON_OK && a.res.granted) {
            if (!a.res.key || (pool ? a.res.device < 0 : a.res.device != -1))
                abort();
            (void)strlen(a.res.key);
        } else if (err == BATON_OK) {
            (void)strlen(a.res.holder_owner);
            (void)strlen(a.res.head_token);
        } else {
            (void)strlen(a.msg);
        }
    }
    rstore_hold_dec h;
    for (int m = 0; m < 4; m++) {
        int err = rstore_decode_hold(r, m & 1, (m & 2) ? "k" : NULL, &h);
        if (err != h.err || (err == BATON_OK) != (h.msg == NULL))
            abort();
        if (err == BATON_OK || err == BATON_E_NOT_HOLDER) {
            (void)strlen(h.res.holder_owner);
            if (h.res.next && h.res.next->granted && strcmp(h.res.next->key, "k") != 0)
                abort();
        } else if (err != BATON_E_INTERNAL || h.res.next) {
            abort();
        }
    }
    rstore_describe_dec d;
    if (rstore_decode_describe(r, &d) == BATON_OK)
        (void)strlen(d.res.owner);
    const char *tokens[8];
    size_t n, cap = mode % 9;
    if (rstore_decode_missing(r, tokens, cap, &n) == BATON_OK) {
        if (n > cap)
            abort();
        for (size_t i = 0; i < n; i++)
            (void)strlen(tokens[i]);
    } else if (n != 0) {
        abort();
    }
    long long v;
    const char *s;
    for (size_t i = 0; i < 12; i++) {
        rstore_el_int(r, i, &v);
        if (rstore_el_str(r, i, &s) == 0)
            (void)strlen(s);
    }
    reply_free(r);
    return 0;
}
