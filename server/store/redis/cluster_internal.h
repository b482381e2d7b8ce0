/*
 * The cluster store's private header (cluster.c has the overview): its
 * structs, shared by cluster.c (nodes, slot map, state, create / free) and
 * cluster_calls.c (the store ops: routing and redirects).
 */
#ifndef BATON_STORE_REDIS_CLUSTER_INTERNAL_H
#define BATON_STORE_REDIS_CLUSTER_INTERNAL_H

#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define CL_MAX_REDIRECTS 16
#define CL_REFRESH_MIN_MS 100
#define CL_REFRESH_UP_MS 5000
#define CL_TICK_MS 500
#define CL_MAX_KNOWN (CLUSTER_MAX_NODES * 2)

typedef struct cl_node {
    redis_store *st; /* its host and port are the node's */
    int serving;     /* serves slots in the current map */
    int was_up;
} cl_node;

typedef enum cl_kind { K_ACQUIRE, K_DEQUEUE, K_RENEW, K_RELEASE, K_REASSERT, K_FORCE, K_DESCRIBE, K_LIST } cl_kind;

typedef struct cl_call {
    struct cl_call *prev, *next;
    struct cluster_store *c;
    cl_kind kind;
    int slot;
    store_acquire_req req, nreq; /* acquire / dequeue target; release's next */
    int has_next;
    char *name, *token, *owner, *ntoken, *nowner, *prefix;
    int64_t ttl_ms;
    uint64_t fencing;
    int32_t limit;
    int list_node;
    char cursor[24];
    union {
        store_acquire_cb acquire;
        store_done_cb done;
        store_hold_cb hold;
        store_describe_cb describe;
        store_list_cb list;
    } cb;
    void *ud;
    int redirects, tries;
    int64_t deadline_ms;
    int ask; /* the next send goes to ask_host:ask_port after ASKING */
    char ask_host[CLUSTER_HOST_MAX];
    int ask_port;
    struct event *timer;
} cl_call;

typedef struct cluster_store {
    baton_store base; /* first */
    struct event_base *evb;
    store_redis_opts opts; /* its strings point at the copies below */
    char *address, *username, *password, *prefix;
    redis_addr seeds;
    cl_node nodes[CL_MAX_KNOWN];
    int nnodes;
    cl_node *slot_node[CLUSTER_NSLOTS];
    int have_map, up, was_up, new_primary, full;
    redisAsyncContext *ctl;
    int ctl_busy, ctl_next, refresh_wanted;
    int64_t ctl_sent_ms, last_refresh_ms;
    struct event *tick_ev, *free_ev;
    cl_call *calls;
    int cb_depth, free_requested;
} cluster_store;

extern const store_ops cl_ops; /* cluster_calls.c */

static inline cluster_store *cs(baton_store *b)
{
    return (cluster_store *)b;
}

/* *dst = a copy of src (NULL stays NULL); -1 when out of memory. */
static inline int dup_or(char **dst, const char *src)
{
    if (!src)
        return 0;
    *dst = strdup(src);
    return *dst ? 0 : -1;
}

static inline int cl_alive(const cluster_store *c)
{
    return !c->free_requested;
}

/* cluster.c */
cl_node *cl_node_get(cluster_store *c, const char *host, int port);
void cl_request_refresh(cluster_store *c);
void cl_free(baton_store *b);

/* cluster_calls.c */
void cl_call_free(cl_call *k);

#endif
