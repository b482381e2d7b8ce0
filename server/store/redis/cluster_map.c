/* Redis Cluster routing, the pure part: see cluster_map.h. No I/O. */
#include "cluster_map.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

/* ------------------------------------------------------------ slots, tags */

uint16_t cluster_crc16(const char *buf, size_t len)
{
    /* CRC16-CCITT as XMODEM: polynomial 0x1021, initial value 0, no
     * reflection, no final xor; bitwise (the keys are short). */
    uint16_t crc = 0;
    for (size_t i = 0; i < len; i++) {
        crc ^= (uint16_t)((unsigned char)buf[i] << 8);
        for (int b = 0; b < 8; b++)
            crc = (crc & 0x8000u) ? (uint16_t)((crc << 1) ^ 0x1021u) : (uint16_t)(crc << 1);
    }
    return crc;
}

static int slot_of(const char *buf, size_t len)
{
    return cluster_crc16(buf, len) & (CLUSTER_NSLOTS - 1);
}

int cluster_key_slot(const char *key, size_t len)
{
    const char *open = memchr(key, '{', len);
    if (open) {
        size_t s = (size_t)(open - key);
        const char *close = memchr(open + 1, '}', len - s - 1);
        if (close && close > open + 1)
            return slot_of(open + 1, (size_t)(close - open - 1));
    }
    return slot_of(key, len);
}

size_t cluster_name_tag_len(const char *name)
{
    /* Up to the first '/' that is not the first byte: a name "/x" would
     * otherwise get an empty tag, and Redis hashes a whole key whose {} is
     * empty, so the records of "/x" would land in different slots. With this
     * rule a pool P and its devices P/i still share P's tag ("/p" and "/p/0"
     * both have tag "/p"). */
    if (!name[0])
        return 0;
    const char *slash = strchr(name + 1, '/');
    return slash ? (size_t)(slash - name) : strlen(name);
}

int cluster_name_slot(const char *name)
{
    return slot_of(name, cluster_name_tag_len(name));
}

int cluster_record_name(char *out, size_t outlen, const char *prefix, const char *kind, const char *name,
                        const char *rec)
{
    size_t tag = cluster_name_tag_len(name);
    if (tag > (size_t)0x7fffffff)
        return -1;
    int n =
        snprintf(out, outlen, "%s%s{%.*s}%s:%s", prefix, kind ? kind : "", (int)tag, name, name + tag, rec);
    if (n < 0 || (size_t)n >= outlen)
        return -1;
    return n;
}

int cluster_lock_key_of(const char *redis_key, size_t len, const char *prefix, char *key, size_t keylen)
{
    static const char tail[] = ":lock";
    size_t plen = strlen(prefix), tlen = sizeof(tail) - 1;
    /* prefix '{' at least one byte '}' ":lock" */
    if (len < plen + 3 + tlen || memcmp(redis_key, prefix, plen) != 0 || redis_key[plen] != '{' ||
        memcmp(redis_key + len - tlen, tail, tlen) != 0)
        return -1;
    const char *in = redis_key + plen + 1, *end = redis_key + len - tlen;
    const char *close = memchr(in, '}', (size_t)(end - in));
    if (!close || close == in)
        return -1;
    size_t taglen = (size_t)(close - in), restlen = (size_t)(end - close - 1);
    const char *rest = close + 1;
    /* Only what cluster_record_name (or the standalone "{N}") writes: REST
     * is empty or "/..." after a tag without a '/' past its first byte; no
     * braces or NULs anywhere in the name. */
    if (restlen > 0 && (rest[0] != '/' || memchr(in + 1, '/', taglen - 1)))
        return -1;
    if (memchr(in, '{', taglen) || memchr(in, '\0', taglen) || memchr(rest, '{', restlen) ||
        memchr(rest, '}', restlen) || memchr(rest, '\0', restlen))
        return -1;
    if (taglen + restlen >= keylen)
        return -1;
    memcpy(key, in, taglen);
    memcpy(key + taglen, rest, restlen);
    key[taglen + restlen] = '\0';
    return 0;
}

/* 16384 tags of at most 4 base-36 digits (the table fills before 36^4),
 * built on first use. Building is deterministic, so building again (it is
 * not, once `tags_built` is set) would write the same bytes. */
static char slot_tags[CLUSTER_NSLOTS][CLUSTER_TAG_MAX];
static bool tags_built;

static void build_slot_tags(void)
{
    static const char digits[] = "0123456789abcdefghijklmnopqrstuvwxyz";
    int filled = 0;
    for (unsigned long i = 0; filled < CLUSTER_NSLOTS; i++) {
        char rev[CLUSTER_TAG_MAX], tag[CLUSTER_TAG_MAX];
        size_t n = 0;
        unsigned long v = i;
        do {
            rev[n++] = digits[v % 36];
            v /= 36;
        } while (v && n < CLUSTER_TAG_MAX - 1);
        if (v) /* out of short tags: cannot happen, 36^7 numbers cover every slot */
            break;
        for (size_t k = 0; k < n; k++)
            tag[k] = rev[n - 1 - k];
        tag[n] = '\0';
        int s = slot_of(tag, n);
        if (!slot_tags[s][0]) {
            memcpy(slot_tags[s], tag, n + 1);
            filled++;
        }
    }
    tags_built = true;
}

const char *cluster_slot_tag(int slot)
{
    if (slot < 0 || slot >= CLUSTER_NSLOTS)
        return NULL;
    if (!tags_built)
        build_slot_tags();
    return slot_tags[slot];
}

/* ------------------------------------------------------------ the slot map */

static void map_reset(cluster_map *m)
{
    for (int i = 0; i < CLUSTER_NSLOTS; i++)
        m->slot_node[i] = CLUSTER_NO_NODE;
    m->nnodes = 0;
}

/* Writes "CLUSTER SLOTS entry <entry>: <reason>" to err; returns -1. */
static int fail(char *err, size_t errlen, size_t entry, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(char *err, size_t errlen, size_t entry, const char *fmt, ...)
{
    if (err && errlen) {
        char what[160];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(what, sizeof what, fmt, ap);
        va_end(ap);
        snprintf(err, errlen, "CLUSTER SLOTS entry %zu: %s", entry, what);
    }
    return -1;
}

/* Redis 7's node metadata: a map (RESP3, hiredis >= 1.0) or, on RESP2, a
 * flat array of name/value pairs. */
static int is_map(const redisReply *r)
{
#ifdef REDIS_REPLY_MAP
    if (r && r->type == REDIS_REPLY_MAP)
        return 1;
#endif
    return r && r->type == REDIS_REPLY_ARRAY && r->elements % 2 == 0;
}

/* Checks node element `node` ({host, port[, id[, metadata]]}) and gives its
 * host (from_host for "" or "?") and port; -1 with a reason otherwise. */
static int node_of(const redisReply *node, const char *from_host, const char **host, size_t *hostlen,
                   int *port, size_t entry, char *err, size_t errlen)
{
    if (!node || node->type != REDIS_REPLY_ARRAY || node->elements < 2 || !node->element)
        return fail(err, errlen, entry, "a node is not an array of at least host and port");
    const redisReply *h = node->element[0], *p = node->element[1];
    if (!h || h->type != REDIS_REPLY_STRING || (!h->str && h->len))
        return fail(err, errlen, entry, "a node's host is not a string");
    if (!p || p->type != REDIS_REPLY_INTEGER)
        return fail(err, errlen, entry, "a node's port is not an integer");
    if (p->integer < 1 || p->integer > 65535)
        return fail(err, errlen, entry, "node port %lld out of range 1..65535", p->integer);
    if (node->elements > 2 && (!node->element[2] || node->element[2]->type != REDIS_REPLY_STRING))
        return fail(err, errlen, entry, "a node's id is not a string");
    if (node->elements > 3 && !is_map(node->element[3]))
        return fail(err, errlen, entry, "a node's metadata is not a map");
    const char *hs = h->str ? h->str : "";
    size_t hl = h->len;
    if (hl == 0 || (hl == 1 && hs[0] == '?')) {
        if (!from_host || !from_host[0])
            return fail(err, errlen, entry, "a node's host is unknown and so is the replying node's");
        hs = from_host;
        hl = strlen(from_host);
    }
    if (hl >= CLUSTER_HOST_MAX)
        return fail(err, errlen, entry, "a node's host is %zu bytes, more than %d", hl, CLUSTER_HOST_MAX - 1);
    if (memchr(hs, '\0', hl))
        return fail(err, errlen, entry, "a node's host holds a NUL byte");
    *host = hs;
    *hostlen = hl;
    *port = (int)p->integer;
    return 0;
}

int cluster_map_parse_slots(const redisReply *r, const char *from_host, cluster_map *out, char *err,
                            size_t errlen)
{
    map_reset(out);
    if (!r || r->type != REDIS_REPLY_ARRAY || (r->elements && !r->element)) {
        if (err && errlen)
            snprintf(err, errlen, "CLUSTER SLOTS reply is not an array");
        return -1;
    }
    for (size_t e = 0; e < r->elements; e++) {
        const redisReply *en = r->element[e];
        if (!en || en->type != REDIS_REPLY_ARRAY || en->elements < 3 || !en->element) {
            map_reset(out);
            return fail(err, errlen, e, "not an array of start, end and a primary");
        }
        const redisReply *a = en->element[0], *b = en->element[1];
        if (!a || a->type != REDIS_REPLY_INTEGER || !b || b->type != REDIS_REPLY_INTEGER) {
            map_reset(out);
            return fail(err, errlen, e, "start or end slot is not an integer");
        }
        if (a->integer < 0 || a->integer >= CLUSTER_NSLOTS || b->integer < 0 ||
            b->integer >= CLUSTER_NSLOTS) {
            map_reset(out);
            return fail(err, errlen, e, "slot range %lld-%lld out of 0..16383", a->integer, b->integer);
        }
        if (a->integer > b->integer) {
            map_reset(out);
            return fail(err, errlen, e, "slot range %lld-%lld starts after its end", a->integer, b->integer);
        }
        const char *host = NULL;
        size_t hostlen = 0;
        int port = 0, idx = -1;
        for (size_t k = 2; k < en->elements; k++) { /* the primary, then replicas: all checked */
            const char *h = NULL;
            size_t hl = 0;
            int p = 0;
            if (node_of(en->element[k], from_host, &h, &hl, &p, e, err, errlen) != 0) {
                map_reset(out);
                return -1;
            }
            if (k == 2) {
                host = h;
                hostlen = hl;
                port = p;
            }
        }
        for (int i = 0; i < out->nnodes; i++)
            if (out->nodes[i].port == port && strlen(out->nodes[i].host) == hostlen &&
                memcmp(out->nodes[i].host, host, hostlen) == 0)
                idx = i;
        if (idx < 0) {
            if (out->nnodes >= CLUSTER_MAX_NODES) {
                map_reset(out);
                return fail(err, errlen, e, "more than %d primaries", CLUSTER_MAX_NODES);
            }
            idx = out->nnodes++;
            memcpy(out->nodes[idx].host, host, hostlen);
            out->nodes[idx].host[hostlen] = '\0';
            out->nodes[idx].port = port;
        }
        for (long long s = a->integer; s <= b->integer; s++) {
            if (out->slot_node[s] != CLUSTER_NO_NODE) {
                map_reset(out);
                return fail(err, errlen, e, "slot %lld already served by another entry", s);
            }
            out->slot_node[s] = (uint16_t)idx;
        }
    }
    return 0;
}

int cluster_map_uncovered(const cluster_map *m)
{
    int n = 0;
    for (int i = 0; i < CLUSTER_NSLOTS; i++)
        if (m->slot_node[i] == CLUSTER_NO_NODE)
            n++;
    return n;
}

int cluster_map_find(const cluster_map *m, const char *host, int port)
{
    for (int i = 0; i < m->nnodes; i++)
        if (m->nodes[i].port == port && strcmp(m->nodes[i].host, host) == 0)
            return i;
    return -1;
}

/* ------------------------------------------------------------- redirects */

/* 1 if err (len bytes) is `word` alone or `word` and a space and more. */
static int starts_word(const char *err, size_t len, const char *word)
{
    size_t wl = strlen(word);
    return len >= wl && memcmp(err, word, wl) == 0 && (len == wl || err[wl] == ' ');
}

/* Decimal digits only, no sign, in lo..hi. */
static int parse_num(const char *s, size_t len, long lo, long hi, int *out)
{
    if (len == 0 || len > 5)
        return -1;
    long v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    if (v < lo || v > hi)
        return -1;
    *out = (int)v;
    return 0;
}

/* "<slot> <host>:<port>" to the end; host "" (or "?", Redis' unknown
 * endpoint) means the node that answered and is given as "". */
static int parse_target(const char *s, size_t len, cluster_redirect *out)
{
    const char *sp = memchr(s, ' ', len);
    if (!sp || parse_num(s, (size_t)(sp - s), 0, CLUSTER_NSLOTS - 1, &out->slot) != 0)
        return -1;
    const char *addr = sp + 1;
    size_t alen = len - (size_t)(addr - s), colon = alen;
    for (size_t i = 0; i < alen; i++) {
        unsigned char c = (unsigned char)addr[i];
        if (c <= ' ' || c >= 0x7f) /* spaces, controls, NULs */
            return -1;
        if (c == ':')
            colon = i;
    }
    if (colon == alen || parse_num(addr + colon + 1, alen - colon - 1, 1, 65535, &out->port) != 0)
        return -1;
    if (colon >= CLUSTER_HOST_MAX)
        return -1;
    if (colon == 1 && addr[0] == '?')
        colon = 0;
    memcpy(out->host, addr, colon);
    out->host[colon] = '\0';
    return 0;
}

cluster_redirect_kind cluster_redirect_parse(const char *err, size_t len, cluster_redirect *out)
{
    cluster_redirect local;
    if (!out)
        out = &local;
    out->kind = CLUSTER_REDIRECT_NONE;
    out->slot = -1;
    out->host[0] = '\0';
    out->port = 0;
    if (!err)
        return CLUSTER_REDIRECT_NONE;
    cluster_redirect_kind k = CLUSTER_REDIRECT_NONE;
    size_t skip = 0;
    if (starts_word(err, len, "MOVED"))
        k = CLUSTER_REDIRECT_MOVED, skip = 6;
    else if (starts_word(err, len, "ASK"))
        k = CLUSTER_REDIRECT_ASK, skip = 4;
    else if (starts_word(err, len, "TRYAGAIN"))
        k = CLUSTER_REDIRECT_TRYAGAIN;
    else if (starts_word(err, len, "CLUSTERDOWN"))
        k = CLUSTER_REDIRECT_DOWN;
    if (k == CLUSTER_REDIRECT_MOVED || k == CLUSTER_REDIRECT_ASK) {
        if (len < skip || parse_target(err + skip, len - skip, out) != 0) {
            out->slot = -1;
            out->host[0] = '\0';
            out->port = 0;
            return CLUSTER_REDIRECT_NONE;
        }
    }
    out->kind = k;
    return k;
}
