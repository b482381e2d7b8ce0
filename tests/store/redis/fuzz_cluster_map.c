/*
 * libFuzzer target for Redis Cluster routing's pure part (cluster_map.c):
 * the fuzz bytes give a redirect error text, a Redis key for
 * cluster_lock_key_of, and a redisReply tree (any types, any integers, short
 * or long arrays, NULL slots, strings with NULs; built the way fuzz_reply.c
 * does) for cluster_map_parse_slots. Nothing may crash or read out of
 * bounds; whatever they return must be self-consistent (checked with
 * abort()).
 *   see tests/store/CMakeLists.txt for how to build and run it.
 */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster_map.h"
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
    switch (sel % 7) {
    case 0: return (int8_t)byte(in); /* small values, -1 and 0 .. 2 most of all */
    case 1: return LLONG_MAX;
    case 2: return LLONG_MIN;
    case 3: return (long long)INT32_MAX + (int8_t)byte(in);
    case 4: return (long long)(byte(in) << 8 | byte(in)); /* 0 .. 65535: slots and ports */
    default: {
        uint64_t v = 0;
        for (int i = 0; i < 8; i++)
            v = v << 8 | byte(in);
        return (long long)v;
    }
    }
}

/* Up to max bytes of the input (the length from the input too). */
static size_t chunk(input *in, size_t max, const char **out)
{
    size_t len = (size_t)(byte(in) << 8 | byte(in)) % (max + 1);
    if (len > in->n)
        len = in->n;
    *out = (const char *)in->p;
    in->p += len;
    in->n -= len;
    return len;
}

static redisReply *node(input *in, int depth)
{
    uint8_t t = byte(in);
    switch (t % 7) {
    case 0:
    case 1: return reply_int(integer(in));
    case 2:
    case 3: {
        const char *s;
        size_t len = (t & 0x40) ? chunk(in, 300, &s) : chunk(in, 16, &s);
        return reply_strn((t & 0x80) ? REDIS_REPLY_ERROR : REDIS_REPLY_STRING, s, len);
    }
    case 4: return reply_node(REDIS_REPLY_NIL);
    case 5: return NULL; /* a NULL slot */
    default: {
        if (depth >= 4)
            return reply_int(integer(in));
        size_t n = byte(in) % ((t & 0x80) ? 80 : 6); /* sometimes more than 64 entries */
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

/* A CLUSTER SLOTS reply in its real shape ({start, end, node, ...} entries,
 * nodes {host, port, id[, metadata]}), with any element swapped for a random
 * one where the input says so: reaches the parser's success paths. */
static redisReply *el(input *in, uint8_t *bad, redisReply *good, int depth)
{
    if (*bad & 1) {
        reply_free(good);
        good = node(in, depth);
    }
    *bad >>= 1;
    return good;
}

static redisReply *slots_reply(input *in)
{
    size_t n = byte(in) % 70;
    redisReply *r = reply_arr(0);
    r->element = n ? calloc(n, sizeof(*r->element)) : NULL;
    if (n && !r->element)
        abort();
    r->elements = n;
    for (size_t i = 0; i < n; i++) {
        uint8_t bad = byte(in) & byte(in) & byte(in); /* mostly well-formed */
        size_t nn = 1 + byte(in) % 3;
        redisReply *e = reply_arr(0);
        e->elements = 2 + nn;
        e->element = calloc(e->elements, sizeof(*e->element));
        if (!e->element)
            abort();
        int start = (byte(in) << 8 | byte(in)) % 16500;
        e->element[0] = el(in, &bad, reply_int(start), 2);
        e->element[1] = el(in, &bad, reply_int(start + byte(in) % 200 - 2), 2);
        for (size_t k = 0; k < nn; k++) {
            static const char *const hosts[] = {"10.0.0.1", "10.0.0.2", "", "?", "::1", "h"};
            uint8_t b = byte(in);
            const char *h;
            size_t hl;
            if (b < 6 * 40) {
                h = hosts[b % 6];
                hl = strlen(h);
            } else {
                hl = chunk(in, 300, &h);
            }
            size_t nf = 2 + byte(in) % 3;
            redisReply *nd = reply_arr(0);
            nd->elements = nf;
            nd->element = calloc(nf, sizeof(*nd->element));
            if (!nd->element)
                abort();
            nd->element[0] = el(in, &bad, reply_strn(REDIS_REPLY_STRING, h, hl), 3);
            nd->element[1] = el(in, &bad, reply_int(7000 + byte(in) % 80 - 8), 3);
            if (nf > 2)
                nd->element[2] = R_STR("0123abcd");
            if (nf > 3)
                nd->element[3] = node(in, 3);
            e->element[2 + k] = el(in, &bad, nd, 2);
        }
        r->element[i] = el(in, &bad, e, 1);
    }
    return r;
}

static void check_redirect(const char *err, size_t len)
{
    cluster_redirect rd;
    cluster_redirect_kind k = cluster_redirect_parse(err, len, &rd);
    if (k != rd.kind || cluster_redirect_parse(err, len, NULL) != k)
        abort();
    if (strnlen(rd.host, sizeof rd.host) >= sizeof rd.host)
        abort();
    if (k == CLUSTER_REDIRECT_MOVED || k == CLUSTER_REDIRECT_ASK) {
        if (rd.slot < 0 || rd.slot >= CLUSTER_NSLOTS || rd.port < 1 || rd.port > 65535)
            abort();
        /* what was parsed is what the text says */
        char again[CLUSTER_HOST_MAX + 64];
        int n = snprintf(again, sizeof again, "%s %d %s:%d", k == CLUSTER_REDIRECT_MOVED ? "MOVED" : "ASK",
                         rd.slot, rd.host, rd.port);
        if (n < 0 || (size_t)n >= sizeof again)
            abort();
        cluster_redirect rd2;
        if (cluster_redirect_parse(again, (size_t)n, &rd2) != k || rd2.slot != rd.slot ||
            rd2.port != rd.port || strcmp(rd2.host, rd.host) != 0)
            abort();
    } else if (rd.slot != -1 || rd.host[0] || rd.port != 0) {
        abort();
    }
}

static void check_lock_key(const char *rk, size_t len, const char *prefix, size_t keylen)
{
    char key[80];
    memset(key, 'X', sizeof key);
    if (cluster_lock_key_of(rk, len, prefix, key, keylen) != 0) {
        for (size_t i = 0; i < sizeof key; i++) /* nothing written */
            if (key[i] != 'X')
                abort();
        return;
    }
    size_t klen = strlen(key);
    if (klen == 0 || klen >= keylen)
        abort();
    for (size_t i = keylen; i < sizeof key; i++)
        if (key[i] != 'X')
            abort();
    /* rk is the Cluster record of key, or the standalone one */
    char rec[256];
    int n = cluster_record_name(rec, sizeof rec, prefix, "", key, "lock");
    if (n < 0)
        abort();
    if ((size_t)n == len && memcmp(rec, rk, len) == 0)
        return;
    n = snprintf(rec, sizeof rec, "%s{%s}:lock", prefix, key);
    if (n < 0 || (size_t)n != len || memcmp(rec, rk, len) != 0)
        abort();
}

static void check_map(const redisReply *r, const char *from)
{
    static cluster_map m;
    char err[128];
    err[0] = '\0';
    int rc = cluster_map_parse_slots(r, from, &m, err, sizeof err);
    if (rc != 0) {
        if (rc != -1 || !err[0] || strnlen(err, sizeof err) >= sizeof err || m.nnodes != 0 ||
            cluster_map_uncovered(&m) != CLUSTER_NSLOTS)
            abort();
        return;
    }
    if (m.nnodes < 0 || m.nnodes > CLUSTER_MAX_NODES)
        abort();
    int used[CLUSTER_MAX_NODES] = {0}, uncovered = 0;
    for (int s = 0; s < CLUSTER_NSLOTS; s++) {
        if (m.slot_node[s] == CLUSTER_NO_NODE)
            uncovered++;
        else if (m.slot_node[s] >= m.nnodes)
            abort();
        else
            used[m.slot_node[s]] = 1;
    }
    if (uncovered != cluster_map_uncovered(&m))
        abort();
    for (int i = 0; i < m.nnodes; i++) {
        size_t hl = strnlen(m.nodes[i].host, sizeof m.nodes[i].host);
        if (!used[i] || hl == 0 || hl >= sizeof m.nodes[i].host || m.nodes[i].port < 1 ||
            m.nodes[i].port > 65535)
            abort();
        if (cluster_map_find(&m, m.nodes[i].host, m.nodes[i].port) != i) /* one node per host:port */
            abort();
    }
}

/* Text from the input, often in the shape wanted: pieces[i] first when bit i
 * of a selector byte is set, then input bytes. */
static size_t shaped(input *in, char *buf, size_t cap, const char *const *pieces, size_t npieces)
{
    uint8_t sel = byte(in);
    size_t n = 0;
    for (size_t i = 0; i < npieces; i++) {
        const char *s;
        size_t len = (sel >> i & 1) ? strlen(pieces[i]) : chunk(in, 24, &s);
        if (sel >> i & 1)
            s = pieces[i];
        if (len > cap - n)
            len = cap - n;
        memcpy(buf + n, s, len);
        n += len;
    }
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    input in = {data, size};
    uint8_t mode = byte(&in);
    const char *s;
    char buf[400];
    size_t len;
    if (mode & 2) {
        static const char *const words[] = {"MOVED", " ", "12", " ", "h", ":", "6379"};
        static const char *const other[] = {"ASK", " ", "16383", " ", "::1", ":", "1"};
        len = shaped(&in, buf, sizeof buf, (mode & 4) ? other : words, 7);
        s = buf;
    } else {
        len = chunk(&in, 300, &s);
    }
    check_redirect(s, len);
    /* every slot computation is in range and agrees with the hash-tag rule */
    int slot = cluster_key_slot(s, len);
    if (slot < 0 || slot >= CLUSTER_NSLOTS)
        abort();
    const char *tag = cluster_slot_tag(slot);
    if (!tag || strlen(tag) >= CLUSTER_TAG_MAX || cluster_key_slot(tag, strlen(tag)) != slot)
        abort();

    const char *prefix = (mode & 1) ? "baton:" : "";
    if (mode & 8) {
        const char *const pieces[] = {prefix, "{", "gpu", "}", "/3", ":lock"};
        len = shaped(&in, buf, sizeof buf, pieces, 6);
        s = buf;
    } else {
        len = chunk(&in, 120, &s);
    }
    check_lock_key(s, len, prefix, 1 + (mode >> 4) % 16 * 5);

    redisReply *r = (mode & 0x40) ? slots_reply(&in) : node(&in, 0);
    check_map(r, (mode & 0x80) ? NULL : "from.host");
    reply_free(r);
    return 0;
}
