#include "address.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *redis_addr_kind_name(redis_addr_kind k)
{
    switch (k) {
    case REDIS_ADDR_TCP: return "redis";
    case REDIS_ADDR_UNIX: return "unix";
    case REDIS_ADDR_SENTINEL: return "sentinel";
    case REDIS_ADDR_CLUSTER: return "cluster";
    }
    return "?";
}

int redis_node_parse(const char *s, size_t len, redis_node_addr *out)
{
    const char *colon = NULL;
    for (size_t i = len; i > 0; i--)
        if (s[i - 1] == ':') {
            colon = s + i - 1;
            break;
        }
    if (!colon || colon == s)
        return -1;
    size_t plen = (size_t)(s + len - colon - 1);
    if (plen == 0 || plen > 5)
        return -1;
    int port = 0;
    for (size_t i = 0; i < plen; i++) {
        char c = colon[1 + i];
        if (c < '0' || c > '9')
            return -1;
        port = port * 10 + (c - '0');
    }
    if (port <= 0 || port > 65535)
        return -1;
    const char *h = s;
    size_t hlen = (size_t)(colon - s);
    if (h[0] == '[') {
        if (hlen < 3 || h[hlen - 1] != ']')
            return -1;
        h++;
        hlen -= 2;
    } else if (memchr(h, ':', hlen) || memchr(h, '[', hlen) || memchr(h, ']', hlen)) {
        return -1; /* a v6 address needs brackets */
    }
    if (hlen == 0 || hlen >= sizeof out->host || memchr(h, '/', hlen) || memchr(h, ',', hlen) ||
        memchr(h, '@', hlen))
        return -1;
    memcpy(out->host, h, hlen);
    out->host[hlen] = '\0';
    out->port = port;
    return 0;
}

/* "H:P[,H:P...]" of len bytes into out->nodes. */
static int parse_nodes(const char *s, size_t len, redis_addr *out)
{
    out->nnodes = 0;
    const char *end = s + len;
    while (s <= end) {
        const char *comma = memchr(s, ',', (size_t)(end - s));
        const char *stop = comma ? comma : end;
        if (out->nnodes == REDIS_ADDR_MAX_NODES)
            return -1;
        if (redis_node_parse(s, (size_t)(stop - s), &out->nodes[out->nnodes]) != 0)
            return -1;
        out->nnodes++;
        if (!comma)
            break;
        s = comma + 1;
    }
    return out->nnodes > 0 ? 0 : -1;
}

int redis_addr_parse(const char *s, redis_addr *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (!s || !s[0]) {
        snprintf(err, errlen, "empty address");
        return -1;
    }
    if (strncmp(s, "unix:", 5) == 0) {
        const char *p = s + 5;
        if (strncmp(p, "//", 2) == 0) /* unix:///path */
            p += 2;
        if (p[0] != '/' || strlen(p) >= sizeof out->path) {
            snprintf(err, errlen, "%s: expected unix:/path/to/redis.sock", s);
            return -1;
        }
        out->kind = REDIS_ADDR_UNIX;
        strcpy(out->path, p);
        return 0;
    }
    if (strncmp(s, "sentinel://", 11) == 0) {
        const char *p = s + 11, *slash = strchr(p, '/');
        out->kind = REDIS_ADDR_SENTINEL;
        if (!slash || !slash[1] || strlen(slash + 1) >= sizeof out->master || strchr(slash + 1, '/') ||
            strpbrk(slash + 1, " \t,") || parse_nodes(p, (size_t)(slash - p), out) != 0) {
            snprintf(err, errlen, "%s: expected sentinel://HOST:PORT[,HOST:PORT...]/MASTER_NAME (at most %d)",
                     s, REDIS_ADDR_MAX_NODES);
            return -1;
        }
        strcpy(out->master, slash + 1);
        return 0;
    }
    if (strncmp(s, "cluster://", 10) == 0) {
        const char *p = s + 10;
        size_t len = strlen(p);
        if (len && p[len - 1] == '/')
            len--;
        out->kind = REDIS_ADDR_CLUSTER;
        if (parse_nodes(p, len, out) != 0) {
            snprintf(err, errlen, "%s: expected cluster://HOST:PORT[,HOST:PORT...] (at most %d seed nodes)", s,
                     REDIS_ADDR_MAX_NODES);
            return -1;
        }
        return 0;
    }
    const char *p = s;
    if (strncmp(s, "redis://", 8) == 0)
        p = s + 8;
    else if (strstr(s, "://")) {
        snprintf(err, errlen, "%s: unknown scheme (use host:port, redis://, unix:, sentinel:// or cluster://)", s);
        return -1;
    }
    size_t len = strlen(p);
    if (len && p[len - 1] == '/')
        len--;
    out->kind = REDIS_ADDR_TCP;
    if (redis_node_parse(p, len, &out->nodes[0]) != 0) {
        snprintf(err, errlen, "%s: expected host:port, [v6]:port, redis://host:port or unix:/path", s);
        return -1;
    }
    out->nnodes = 1;
    return 0;
}
