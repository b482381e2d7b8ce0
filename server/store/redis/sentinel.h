#ifndef BATON_REDIS_SENTINEL_H
#define BATON_REDIS_SENTINEL_H

/*
 * Redis Sentinel for the store: which Redis is the primary of MASTER_NAME,
 * and when that changes. Runs on the store's libevent loop.
 *
 * Discovery: sentinel_discover asks the sentinels of the address one at a
 * time (the last one that answered first) with SENTINEL
 * get-master-addr-by-name, each with the store's command timeout, and calls
 * `found` with the first answer or `failed` when none answered. The store
 * then connects to that address and checks with ROLE that it is a primary
 * (sentinel_role_is_primary): a sentinel's answer can be stale.
 *
 * Following: one more connection to a sentinel SUBSCRIBEs to +switch-master
 * and calls `switched` for a switch of MASTER_NAME (a failover finished).
 * When that connection breaks it moves to the next sentinel.
 *
 * Callbacks run on the loop, never from inside a sentinel_* call; none is
 * called after sentinel_free. The reply parsers are pure (unit-tested from
 * hand-built replies).
 */

#include <stddef.h>
#include <stdint.h>

#include "address.h"

struct event_base;
struct redisReply;

typedef struct sentinel sentinel;

typedef struct sentinel_hooks {
    void (*found)(void *ud, const char *host, int port);
    void (*failed)(void *ud, const char *why);
    void (*switched)(void *ud, const char *host, int port);
    void *ud;
} sentinel_hooks;

/* addr must be a REDIS_ADDR_SENTINEL address (copied). password: the
 * sentinels' own (redis.sentinel_password); NULL or "" = no AUTH. Starts
 * following at once. NULL on OOM. */
sentinel *sentinel_new(struct event_base *base, const redis_addr *addr, const char *password,
                       int64_t timeout_ms, const sentinel_hooks *hooks);
/* Starts a discovery round unless one is running. */
void sentinel_discover(sentinel *s);
void sentinel_free(sentinel *s);

/* ---- pure helpers */

/* The reply to SENTINEL get-master-addr-by-name: [host, port]. Returns 0 and
 * fills host/port, or -1 with *why set ("unknown master", "malformed reply"). */
int sentinel_parse_master_addr(const struct redisReply *r, char *host, size_t hostlen, int *port,
                               const char **why);
/* A +switch-master message: "<name> <old-ip> <old-port> <new-ip> <new-port>".
 * Returns 1 and fills host/port when it is about `master`; 0 otherwise. */
int sentinel_parse_switch(const char *msg, size_t len, const char *master, char *host, size_t hostlen,
                          int *port);
/* 1 when a ROLE reply says "master", 0 for anything else. */
int sentinel_role_is_primary(const struct redisReply *r);

#endif
