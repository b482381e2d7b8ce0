/* The lock protocol done directly on Redis, the way redis-py's Lock does it:
 * SET key token NX PX ttl; waiters poll; release is an owner-checked Lua
 * script (GET == token then DEL). One sync hiredis context per client. */
#include <hiredis/hiredis.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"

static const char RELEASE_LUA[] =
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0";

typedef struct redis_client {
    redisContext *rc;
    int64_t ttl_ms;
    int64_t poll_ns;
    char sha[48];
    unsigned id;
    uint64_t seq;
} redis_client;

static atomic_uint g_ids;

static void rc_free(void *p)
{
    redis_client *c = p;
    if (!c)
        return;
    if (c->rc)
        redisFree(c->rc);
    free(c);
}

/* A sync context for "unix:/path" or "host:port"; NULL when out of memory. */
static redisContext *connect_addr(const char *addr)
{
    if (strncmp(addr, "unix:", 5) == 0)
        return redisConnectUnix(addr + 5);
    char host[256];
    int port = 6379;
    snprintf(host, sizeof host, "%s", addr);
    char *colon = strrchr(host, ':');
    if (colon) {
        *colon = 0;
        port = atoi(colon + 1);
    }
    return redisConnect(host, port);
}

/* A connected context or NULL (freed). */
static redisContext *connect_ok(const char *addr)
{
    redisContext *rc = connect_addr(addr);
    if (rc && rc->err) {
        redisFree(rc);
        rc = NULL;
    }
    return rc;
}

/* The numbers after `field` in `cmd`'s reply (an INFO section); -1 if absent. */
static double info_num(redisContext *rc, const char *cmd, const char *field)
{
    double v = -1;
    redisReply *r = redisCommand(rc, cmd);
    if (r && r->type == REDIS_REPLY_STRING) {
        const char *p = strstr(r->str, field);
        if (p)
            v = atof(p + strlen(field));
    }
    if (r)
        freeReplyObject(r);
    return v;
}

/* used_cpu_user + used_cpu_sys of one node in seconds, -1 if unknown. */
static double node_cpu_sec(redisContext *rc)
{
    double u = info_num(rc, "INFO cpu", "used_cpu_user:"), s = info_num(rc, "INFO cpu", "used_cpu_sys:");
    return u >= 0 && s >= 0 ? u + s : -1;
}

static int cmp_node(const void *a, const void *b)
{
    return strcmp(((const bench_redis_node *)a)->addr, ((const bench_redis_node *)b)->addr);
}

/* The nodes of env->redis_addr, sorted by address: that one Redis, or for
 * "cluster://SEED[,SEED...]" every node CLUSTER NODES lists on the first seed
 * that answers (failed or address-less nodes left out). Returns the count, or
 * -1 when no node answers. */
static int list_nodes(const bench_env *env, bench_redis_node *out, int max)
{
    if (strncmp(env->redis_addr, "cluster://", 10)) {
        if (max < 1)
            return -1;
        memset(out, 0, sizeof *out);
        snprintf(out->addr, sizeof out->addr, "%s", env->redis_addr);
        out->primary = 1;
        return 1;
    }
    char seeds[256], host[128] = "";
    snprintf(seeds, sizeof seeds, "%s", env->redis_addr + 10);
    redisReply *r = NULL;
    for (char *save = NULL, *t = strtok_r(seeds, ",", &save); t && !r; t = strtok_r(NULL, ",", &save)) {
        snprintf(host, sizeof host, "%.*s", (int)strcspn(t, ":"), t);
        redisContext *rc = connect_ok(t);
        if (!rc)
            continue;
        r = redisCommand(rc, "CLUSTER NODES");
        redisFree(rc);
        if (r && r->type != REDIS_REPLY_STRING) {
            freeReplyObject(r);
            r = NULL;
        }
    }
    if (!r)
        return -1;
    int n = 0;
    /* <id> <ip:port@cport[,hostname]> <flags> <primary> <ping> <pong> <epoch> <link> <slots...> */
    for (char *save = NULL, *line = strtok_r(r->str, "\n", &save); line && n < max;
         line = strtok_r(NULL, "\n", &save)) {
        char addr[128], flags[128];
        if (sscanf(line, "%*s %127s %127s", addr, flags) != 2 || strstr(flags, "fail") ||
            strstr(flags, "noaddr") || strstr(flags, "handshake"))
            continue;
        addr[strcspn(addr, "@,")] = 0;
        memset(&out[n], 0, sizeof out[n]);
        /* A node that has met no other one lists itself as ":PORT": the seed's host. */
        snprintf(out[n].addr, sizeof out[n].addr, "%s%s", addr[0] == ':' ? host : "", addr);
        out[n].primary = strstr(flags, "master") != NULL;
        n++;
    }
    freeReplyObject(r);
    qsort(out, (size_t)n, sizeof *out, cmp_node);
    return n;
}

int bench_redis_nodes(const bench_env *env, bench_redis_node *out, int max)
{
    int n = list_nodes(env, out, max);
    for (int i = 0; i < n; i++) {
        out[i].cpu_sec = out[i].evalsha_calls = -1;
        redisContext *rc = connect_ok(out[i].addr);
        if (!rc)
            continue;
        out[i].cpu_sec = node_cpu_sec(rc);
        out[i].evalsha_calls = info_num(rc, "INFO commandstats", "cmdstat_evalsha:calls=");
        if (out[i].evalsha_calls < 0)
            out[i].evalsha_calls = 0; /* no EVALSHA yet on this node */
        redisFree(rc);
    }
    return n;
}

double bench_redis_cpu_sec(const bench_env *env)
{
    bench_redis_node nodes[BENCH_MAX_NODES];
    int n = bench_redis_nodes(env, nodes, BENCH_MAX_NODES);
    double sec = n > 0 ? 0 : -1;
    for (int i = 0; i < n && sec >= 0; i++)
        sec = nodes[i].cpu_sec >= 0 ? sec + nodes[i].cpu_sec : -1;
    return sec;
}

int bench_redis_cluster_create(const int *ports, const int *bus_ports, int n, char *err, size_t errlen)
{
    redisContext *rc[BENCH_MAX_NODES] = {0};
    int rv = -1;
    if (n < 1 || n > BENCH_MAX_NODES) {
        snprintf(err, errlen, "cluster of %d nodes", n);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        char addr[64];
        snprintf(addr, sizeof addr, "127.0.0.1:%d", ports[i]);
        if (!(rc[i] = connect_ok(addr))) {
            snprintf(err, errlen, "connect %s", addr);
            goto out;
        }
    }
    /* Slots split evenly, as redis-cli --cluster create does; then every
     * node meets the first one and gossip does the rest. */
    for (int i = 0; i < n; i++) {
        int lo = CLUSTER_SLOTS_N * i / n, hi = CLUSTER_SLOTS_N * (i + 1) / n - 1;
        redisReply *r = redisCommand(rc[i], "CLUSTER ADDSLOTSRANGE %d %d", lo, hi);
        int ok = r && r->type == REDIS_REPLY_STATUS;
        if (!ok)
            snprintf(err, errlen, "CLUSTER ADDSLOTSRANGE on %d: %s", ports[i],
                     r && r->type == REDIS_REPLY_ERROR ? r->str : "no reply");
        if (r)
            freeReplyObject(r);
        if (!ok)
            goto out;
        if (i == 0)
            continue;
        r = redisCommand(rc[i], "CLUSTER MEET 127.0.0.1 %d %d", ports[0], bus_ports[0]);
        ok = r && r->type == REDIS_REPLY_STATUS;
        if (!ok)
            snprintf(err, errlen, "CLUSTER MEET from %d: %s", ports[i],
                     r && r->type == REDIS_REPLY_ERROR ? r->str : "no reply");
        if (r)
            freeReplyObject(r);
        if (!ok)
            goto out;
    }
    /* Ready when every node sees all slots served and all n nodes known. */
    int64_t deadline = bench_now_ns() + 20000000000LL;
    for (;;) {
        int ready = 1;
        for (int i = 0; i < n && ready; i++) {
            redisReply *r = redisCommand(rc[i], "CLUSTER INFO");
            char want[32];
            snprintf(want, sizeof want, "cluster_known_nodes:%d\r", n);
            ready = r && r->type == REDIS_REPLY_STRING && strstr(r->str, "cluster_state:ok") &&
                    strstr(r->str, want);
            if (r)
                freeReplyObject(r);
        }
        if (ready)
            break;
        if (bench_now_ns() > deadline) {
            snprintf(err, errlen, "cluster_state not ok on every node after 20 s");
            goto out;
        }
        bench_sleep_ns(50000000);
    }
    rv = 0;
out:
    for (int i = 0; i < n; i++)
        if (rc[i])
            redisFree(rc[i]);
    return rv;
}

/* Caller frees with client_free. */
static void *rc_new(const bench_env *env, int64_t ttl_ms, char *err, size_t errlen)
{
    redis_client *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    c->ttl_ms = ttl_ms;
    c->poll_ns = env->poll_ms * 1000000;
    c->id = atomic_fetch_add(&g_ids, 1) + (unsigned)getpid() * 65536u;
    c->rc = connect_addr(env->redis_addr);
    if (!c->rc || c->rc->err) {
        snprintf(err, errlen, "redis connect %s: %s", env->redis_addr, c->rc ? c->rc->errstr : "oom");
        goto fail;
    }
    redisReply *r = redisCommand(c->rc, "SCRIPT LOAD %s", RELEASE_LUA);
    if (!r || r->type != REDIS_REPLY_STRING) {
        snprintf(err, errlen, "SCRIPT LOAD failed");
        if (r)
            freeReplyObject(r);
        goto fail;
    }
    snprintf(c->sha, sizeof c->sha, "%s", r->str);
    freeReplyObject(r);
    return c;
fail:
    rc_free(c);
    return NULL;
}

static int rc_acquire(void *p, const char *key, bench_hold *h, char *err, size_t errlen)
{
    redis_client *c = p;
    snprintf(h->key, sizeof h->key, "bench:%s", key);
    h->token_len =
        (size_t)snprintf(h->token, sizeof h->token, "%08x-%llu", c->id, (unsigned long long)++c->seq);
    for (;;) {
        redisReply *r =
            redisCommand(c->rc, "SET %s %b NX PX %lld", h->key, h->token, h->token_len, (long long)c->ttl_ms);
        if (!r) {
            snprintf(err, errlen, "redis SET: %s", c->rc->errstr);
            return -1;
        }
        int ok = r->type == REDIS_REPLY_STATUS;
        int bad = r->type == REDIS_REPLY_ERROR;
        if (bad)
            snprintf(err, errlen, "redis SET: %s", r->str);
        freeReplyObject(r);
        if (ok)
            return 0;
        if (bad)
            return -1;
        bench_sleep_ns(c->poll_ns);
    }
}

static int rc_release(void *p, bench_hold *h, char *err, size_t errlen)
{
    redis_client *c = p;
    redisReply *r = redisCommand(c->rc, "EVALSHA %s 1 %s %b", c->sha, h->key, h->token, h->token_len);
    if (!r) {
        snprintf(err, errlen, "redis EVALSHA: %s", c->rc->errstr);
        return -1;
    }
    int rv = 0;
    if (r->type != REDIS_REPLY_INTEGER || r->integer != 1) {
        snprintf(err, errlen, "redis release of %s: not the holder (%s)", h->key,
                 r->type == REDIS_REPLY_ERROR ? r->str : "lock expired?");
        rv = -1;
    }
    freeReplyObject(r);
    return rv;
}

const bench_backend bench_backend_redis = {
    .name = "redis",
    .family = "redis",
    .client_new = rc_new,
    .acquire = rc_acquire,
    .release = rc_release,
    .client_free = rc_free,
};
