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

double bench_redis_cpu_sec(const bench_env *env)
{
    redisContext *rc = connect_addr(env->redis_addr);
    double sec = -1;
    redisReply *r = rc && !rc->err ? redisCommand(rc, "INFO cpu") : NULL;
    if (r && r->type == REDIS_REPLY_STRING) {
        const char *u = strstr(r->str, "used_cpu_user:"), *s = strstr(r->str, "used_cpu_sys:");
        if (u && s)
            sec = atof(u + strlen("used_cpu_user:")) + atof(s + strlen("used_cpu_sys:"));
    }
    if (r)
        freeReplyObject(r);
    if (rc)
        redisFree(rc);
    return sec;
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
