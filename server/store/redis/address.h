#ifndef BATON_REDIS_ADDRESS_H
#define BATON_REDIS_ADDRESS_H

/*
 * redis.address / --redis, parsed (pure: no I/O). Forms:
 *   host:port, [v6]:port, redis://host:port   one Redis
 *   unix:/path/to/redis.sock                  one Redis on a unix socket
 *   sentinel://H:P[,H:P...]/MASTER_NAME       the primary that Sentinel names
 *   cluster://H:P[,H:P...]                    a Redis Cluster, from seed nodes
 */

#include <stddef.h>

#define REDIS_ADDR_MAX_NODES 16
#define REDIS_ADDR_HOST_MAX 256
#define REDIS_ADDR_NAME_MAX 128

typedef enum redis_addr_kind {
    REDIS_ADDR_TCP,
    REDIS_ADDR_UNIX,
    REDIS_ADDR_SENTINEL,
    REDIS_ADDR_CLUSTER,
} redis_addr_kind;

typedef struct redis_node_addr {
    char host[REDIS_ADDR_HOST_MAX]; /* without the brackets of a v6 address */
    int port;
} redis_node_addr;

typedef struct redis_addr {
    redis_addr_kind kind;
    char path[REDIS_ADDR_HOST_MAX]; /* UNIX */
    /* TCP: nodes[0]; SENTINEL: the sentinels; CLUSTER: the seed nodes */
    redis_node_addr nodes[REDIS_ADDR_MAX_NODES];
    int nnodes;
    char master[REDIS_ADDR_NAME_MAX]; /* SENTINEL: the master name */
} redis_addr;

/* Parses s into *out. Returns 0, or -1 with a reason in err (for example
 * "sentinel://: expected HOST:PORT[,HOST:PORT...]/MASTER_NAME"). */
int redis_addr_parse(const char *s, redis_addr *out, char *err, size_t errlen);

/* Parses one "host:port" or "[v6]:port" of len bytes. Returns 0 or -1. */
int redis_node_parse(const char *s, size_t len, redis_node_addr *out);

/* The kind's name as written in an address: "redis", "unix", "sentinel", "cluster". */
const char *redis_addr_kind_name(redis_addr_kind k);

#endif
