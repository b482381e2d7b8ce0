/*
 * cluster.c - the store on a Redis Cluster (redis.address cluster://SEEDS).
 *
 * One ordinary Redis store (store_redis.c, a "node") per primary, each with
 * its own connections, scripts, fencing floor and sharded pub/sub
 * (conn_ssub.c). This file only routes:
 *   - the slot map comes from CLUSTER SLOTS, asked on a control connection of
 *     its own (a seed, or any node of the last map): at start, every 5 s,
 *     every 0.5 s while the store is down, and soon after a MOVED, a
 *     CLUSTERDOWN or a slot leaving a node's pub/sub;
 *   - every op goes to the node serving the slot of its key or pool
 *     (cluster_map.h: a name hashes by its tag, so a pool and its devices
 *     share one slot); its request is copied so that it can be sent again:
 *       MOVED       the slot lives elsewhere now: send it there (and read the map)
 *       ASK         the slot is moving: send it there once, after ASKING
 *       TRYAGAIN    a multi-key script on a slot half moved: again in 5-50 ms
 *       CLUSTERDOWN again in 100 ms, with the map read again
 *     A routing error means the script did not run, so sending it again is
 *     safe; after 16 MOVED or past the deadline (twice the command timeout,
 *     at least 3 s) the op fails UNAVAILABLE.
 *     Any other outcome (including UNAVAILABLE: the outcome is unknown) goes
 *     to the engine as it is;
 *   - the store is up while the map covers every slot and every node serving
 *     a slot is up: as Redis Cluster itself (cluster-require-full-coverage)
 *     refuses writes while a slot has no primary;
 *   - a node that appears after the first map (a promoted replica, or slots
 *     moved to a new primary) may lack writes: hooks.on_new_primary runs
 *     before the next up, so stream holds re-assert themselves there. Each
 *     node also keeps its own fencing floor (epoch.lua), so fencing never
 *     goes back on any shard.
 * List walks the primaries one after the other: its cursor is "1" + the
 * node's index (2 digits) + that node's own SCAN cursor ("0" = done).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "internal.h"
#include "log.h"

#define CL_MAX_REDIRECTS 16
#define CL_REFRESH_MIN_MS 100
#define CL_REFRESH_UP_MS 5000
#define CL_TICK_MS 500
#define CL_MAX_KNOWN (CLUSTER_MAX_NODES * 2)

typedef struct cl_node {
    redis_store *st;
    char host[CLUSTER_HOST_MAX];
    int port;
    int serving; /* serves slots in the current map */
    int fresh;   /* appeared after the first map: may lack writes */
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
    int have_map, up, new_primary, full;
    redisAsyncContext *ctl;
    int ctl_busy, ctl_next, refresh_wanted;
    int64_t ctl_sent_ms, last_refresh_ms;
    struct event *tick_ev, *free_ev;
    cl_call *calls;
    int cb_depth, free_requested;
} cluster_store;

static const store_ops cluster_ops;

int cluster__is(const baton_store *b)
{
    return b && b->ops == &cluster_ops;
}

int cluster__is_up(const baton_store *b)
{
    return ((const cluster_store *)b)->up;
}

static int cl_alive(const cluster_store *c)
{
    return !c->free_requested;
}

/* ---------------------------------------------------------------- nodes */

static void node_on_event(void *ud, const store_event *ev)
{
    cluster_store *c = ud;
    if (cl_alive(c) && c->base.hooks.on_event) {
        c->cb_depth++;
        c->base.hooks.on_event(c->base.hooks.ud, ev);
        c->cb_depth--;
    }
}

static void node_on_missing(void *ud, const store_target *t, const char *token)
{
    cluster_store *c = ud;
    if (cl_alive(c) && c->base.hooks.on_missing) {
        c->cb_depth++;
        c->base.hooks.on_missing(c->base.hooks.ud, t, token);
        c->cb_depth--;
    }
}

static void node_on_new_primary(void *ud)
{
    cluster_store *c = ud;
    c->new_primary = 1;
}

static void request_refresh(cluster_store *c);
static void update_state(cluster_store *c);

static void node_on_state(void *ud, int up)
{
    cluster_store *c = ud;
    (void)up;
    if (!up)
        request_refresh(c); /* a primary gone: its replica may be taking over */
    update_state(c);
}

static cl_node *node_find(cluster_store *c, const char *host, int port)
{
    for (int i = 0; i < c->nnodes; i++)
        if (c->nodes[i].port == port && strcmp(c->nodes[i].host, host) == 0)
            return &c->nodes[i];
    return NULL;
}

/* The node for host:port, created (not yet connected) when new. */
static cl_node *node_get(cluster_store *c, const char *host, int port)
{
    cl_node *n = node_find(c, host, port);
    if (n || c->nnodes == CL_MAX_KNOWN)
        return n;
    char addr[CLUSTER_HOST_MAX + 16];
    snprintf(addr, sizeof addr, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
    store_redis_opts o = c->opts;
    o.address = addr;
    redis_store *st = rstore_create(c->evb, &o, c);
    if (!st) {
        LOG_WARN("redis %s: cannot create the store of node %s", c->address, addr);
        return NULL;
    }
    st->base.hooks = (store_hooks){.on_event = node_on_event,
                                   .on_state = node_on_state,
                                   .on_new_primary = node_on_new_primary,
                                   .on_missing = node_on_missing,
                                   .ud = c};
    n = &c->nodes[c->nnodes++];
    memset(n, 0, sizeof *n);
    n->st = st;
    snprintf(n->host, sizeof n->host, "%s", host);
    n->port = port;
    n->fresh = c->have_map;
    st->cl_fresh = n->fresh; /* new primary on its first connection: re-assert, grace */
    return n;
}

/* Disconnects (ops in flight complete UNAVAILABLE: the outcome is unknown)
 * and frees a node that serves no slot any more. */
static void node_retire(cluster_store *c, int i)
{
    redis_store *st = c->nodes[i].st;
    LOG_INFO("redis %s: node %s:%d left the map", c->address, c->nodes[i].host, c->nodes[i].port);
    for (int s = 0; s < CLUSTER_NSLOTS; s++)
        if (c->slot_node[s] == &c->nodes[i])
            c->slot_node[s] = NULL;
    st->base.hooks = (store_hooks){0};
    rstore_disconnect(st); /* its ops in flight complete, UNAVAILABLE */
    c->nodes[i] = c->nodes[--c->nnodes];
    /* The moved entry's slots point at its old place. */
    if (i < c->nnodes)
        for (int s = 0; s < CLUSTER_NSLOTS; s++)
            if (c->slot_node[s] == &c->nodes[c->nnodes])
                c->slot_node[s] = &c->nodes[i];
    st->base.ops->free(&st->base);
}

/* ---------------------------------------------------------------- state */

static void update_state(cluster_store *c)
{
    int up = c->have_map && c->full && cl_alive(c);
    for (int i = 0; up && i < c->nnodes; i++)
        if (c->nodes[i].serving && !c->nodes[i].st->up)
            up = 0;
    for (int i = 0; i < c->nnodes; i++) {
        cl_node *n = &c->nodes[i];
        if (n->st->up && !n->was_up && n->fresh)
            c->new_primary = 1; /* a node not written to before */
        n->was_up = n->st->up;
    }
    if (up == c->up)
        return;
    c->up = up;
    LOG_INFO("redis %s: store %s", c->address, up ? "up" : "down");
    if (!cl_alive(c) || !c->base.hooks.on_state)
        return;
    c->cb_depth++;
    if (up && c->new_primary) {
        c->new_primary = 0;
        if (c->base.hooks.on_new_primary)
            c->base.hooks.on_new_primary(c->base.hooks.ud);
    }
    c->base.hooks.on_state(c->base.hooks.ud, up);
    c->cb_depth--;
}

/* ---------------------------------------------------------- the slot map */

static void ctl_drop(cluster_store *c)
{
    if (c->ctl) {
        redisAsyncContext *ac = c->ctl;
        c->ctl = NULL;
        c->ctl_busy = 0;
        redisAsyncFree(ac);
    }
}

static void apply_map(cluster_store *c, const cluster_map *m)
{
    cl_node *want[CLUSTER_MAX_NODES];
    for (int i = 0; i < m->nnodes; i++)
        want[i] = node_get(c, m->nodes[i].host, m->nodes[i].port);
    int moved = 0;
    c->full = 1;
    for (int s = 0; s < CLUSTER_NSLOTS; s++) {
        uint16_t k = m->slot_node[s];
        cl_node *n = k == CLUSTER_NO_NODE ? NULL : want[k];
        if (!n)
            c->full = 0;
        /* Moved since the last map (not since a MOVED patched slot_node). */
        if (n && c->have_map && !cl_bit(n->st->cl_owned, s))
            moved++;
        c->slot_node[s] = n;
    }
    for (int i = 0; i < c->nnodes; i++) {
        cl_node *n = &c->nodes[i];
        memset(n->st->cl_owned, 0, CLUSTER_NSLOTS / 8);
        n->serving = 0;
    }
    for (int s = 0; s < CLUSTER_NSLOTS; s++)
        if (c->slot_node[s]) {
            cl_set_bit(c->slot_node[s]->st->cl_owned, s, 1);
            c->slot_node[s]->serving = 1;
        }
    for (int i = c->nnodes - 1; i >= 0; i--)
        if (!c->nodes[i].serving)
            node_retire(c, i);
    int first = !c->have_map;
    c->have_map = 1;
    for (int i = 0; i < c->nnodes; i++) {
        redis_store *st = c->nodes[i].st;
        if (!st->cmd && !st->ssub)
            rstore_start(st);
        else
            rstore_ssub_update(st);
    }
    if (first)
        LOG_INFO("redis %s: %d primaries serve the %d slots", c->address, c->nnodes, CLUSTER_NSLOTS);
    else if (moved)
        LOG_INFO("redis %s: %d slots moved", c->address, moved);
    /* Events of a moving slot may have been missed: re-check every waiter
     * and hold, as after any reconnection (store.h on_state). */
    if (moved && c->up && cl_alive(c) && c->base.hooks.on_state) {
        c->cb_depth++;
        c->base.hooks.on_state(c->base.hooks.ud, 1);
        c->cb_depth--;
    }
    update_state(c);
}

static void on_slots(redisAsyncContext *ac, void *r, void *privdata)
{
    cluster_store *c = privdata;
    redisReply *reply = r;
    if (!reply || ac != c->ctl)
        return;
    c->ctl_busy = 0;
    c->last_refresh_ms = clock_mono_ms();
    cluster_map *m = malloc(sizeof *m);
    char why[200];
    if (!m) {
        LOG_WARN("redis %s: out of memory reading the slot map", c->address);
    } else if (reply->type == REDIS_REPLY_ERROR) {
        LOG_WARN("redis %s: CLUSTER SLOTS: %s", c->address, reply->str);
        c->ctl_next++;
    } else if (cluster_map_parse_slots(reply, ac->c.tcp.host, m, why, sizeof why) != 0) {
        LOG_WARN("redis %s: CLUSTER SLOTS: %s", c->address, why);
        c->ctl_next++;
    } else {
        c->cb_depth++;
        apply_map(c, m);
        c->cb_depth--;
    }
    free(m);
}

static void on_ctl_init(redisAsyncContext *ac, void *r, void *privdata)
{
    cluster_store *c = privdata;
    redisReply *reply = r;
    if (reply && ac == c->ctl && reply->type == REDIS_REPLY_ERROR)
        LOG_WARN("redis %s: AUTH: %s", c->address, reply->str);
}

static void on_ctl_disconnect(const redisAsyncContext *ac, int status)
{
    cluster_store *c = ac->data;
    (void)status;
    if (ac == c->ctl) {
        c->ctl = NULL;
        c->ctl_busy = 0;
        c->ctl_next++;
    }
}

static void on_ctl_connect(const redisAsyncContext *ac, int status)
{
    cluster_store *c = ac->data;
    if (status != REDIS_OK && ac == c->ctl) {
        LOG_WARN("redis %s: %s:%d: %s", c->address, ac->c.tcp.host ? ac->c.tcp.host : "?", ac->c.tcp.port,
                 ac->errstr);
        c->ctl = NULL;
        c->ctl_busy = 0;
        c->ctl_next++;
    }
}

/* The next node to ask for the map: the last map's nodes, then the seeds. */
static void ctl_target(cluster_store *c, const char **host, int *port)
{
    int n = c->nnodes + c->seeds.nnodes;
    int i = c->ctl_next % n;
    if (i < c->nnodes) {
        *host = c->nodes[i].host;
        *port = c->nodes[i].port;
    } else {
        *host = c->seeds.nodes[i - c->nnodes].host;
        *port = c->seeds.nodes[i - c->nnodes].port;
    }
}

static void send_refresh(cluster_store *c)
{
    if (!c->ctl) {
        const char *host;
        int port;
        ctl_target(c, &host, &port);
        redisAsyncContext *ac = redisAsyncConnect(host, port);
        if (!ac || ac->err) {
            if (ac)
                redisAsyncFree(ac);
            c->ctl_next++;
            return;
        }
        ac->data = c;
        if (redisLibeventAttach(ac, c->evb) != REDIS_OK) {
            redisAsyncFree(ac);
            return;
        }
        redisAsyncSetConnectCallback(ac, on_ctl_connect);
        redisAsyncSetDisconnectCallback(ac, on_ctl_disconnect);
        c->ctl = ac;
        if (c->password && c->username)
            redisAsyncCommand(ac, on_ctl_init, c, "AUTH %s %s", c->username, c->password);
        else if (c->password)
            redisAsyncCommand(ac, on_ctl_init, c, "AUTH %s", c->password);
    }
    if (redisAsyncCommand(c->ctl, on_slots, c, "CLUSTER SLOTS") == REDIS_OK) {
        c->ctl_busy = 1;
        c->refresh_wanted = 0;
        c->ctl_sent_ms = clock_mono_ms();
    }
}

static void maybe_refresh(cluster_store *c)
{
    int64_t now = clock_mono_ms();
    if (c->ctl_busy) {
        if (now - c->ctl_sent_ms <= c->opts.command_timeout_ms)
            return;
        LOG_WARN("redis %s: CLUSTER SLOTS timed out; asking another node", c->address);
        ctl_drop(c);
        c->ctl_next++;
    }
    int64_t every = c->up ? CL_REFRESH_UP_MS : CL_TICK_MS;
    if (c->refresh_wanted ? now - c->last_refresh_ms >= CL_REFRESH_MIN_MS : now - c->last_refresh_ms >= every)
        send_refresh(c);
}

static void request_refresh(cluster_store *c)
{
    c->refresh_wanted = 1;
    if (!c->ctl_busy && clock_mono_ms() - c->last_refresh_ms >= CL_REFRESH_MIN_MS)
        send_refresh(c);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    maybe_refresh(arg);
}

void cluster__routing_error(struct cluster_store *c, redis_store *node, const char *err)
{
    (void)node;
    cluster_redirect rd;
    cluster_redirect_kind k = cluster_redirect_parse(err, strlen(err), &rd);
    if (k == CLUSTER_REDIRECT_MOVED || k == CLUSTER_REDIRECT_DOWN)
        request_refresh(c);
}

void cluster__slots_changed(struct cluster_store *c)
{
    request_refresh(c);
}

/* ---------------------------------------------------------------- calls */

static void call_free(cl_call *k)
{
    cluster_store *c = k->c;
    if (k->prev)
        k->prev->next = k->next;
    else
        c->calls = k->next;
    if (k->next)
        k->next->prev = k->prev;
    if (k->timer)
        event_free(k->timer);
    free(k->name);
    free(k->token);
    free(k->owner);
    free(k->ntoken);
    free(k->nowner);
    free(k->prefix);
    free(k);
}

static cl_call *call_new(cluster_store *c, cl_kind kind, const char *name, void *ud)
{
    cl_call *k = calloc(1, sizeof *k);
    if (!k)
        return NULL;
    k->c = c;
    k->kind = kind;
    k->ud = ud;
    if (name && !(k->name = strdup(name))) {
        free(k);
        return NULL;
    }
    k->slot = name ? cluster_name_slot(name) : 0;
    int64_t grace = c->opts.command_timeout_ms * 2;
    k->deadline_ms = clock_mono_ms() + (grace > 3000 ? grace : 3000);
    k->next = c->calls;
    if (c->calls)
        c->calls->prev = k;
    c->calls = k;
    return k;
}

static int dup_or(char **dst, const char *src)
{
    if (!src)
        return 0;
    *dst = strdup(src);
    return *dst ? 0 : -1;
}

/* Completes a call with an error of ours (res NULL). */
static void call_fail(cl_call *k, int err, const char *msg)
{
    cluster_store *c = k->c;
    if (cl_alive(c)) {
        c->cb_depth++;
        switch (k->kind) {
        case K_ACQUIRE:
            if (k->cb.acquire)
                k->cb.acquire(k->ud, err, msg, NULL);
            break;
        case K_DEQUEUE:
            if (k->cb.done)
                k->cb.done(k->ud, err, msg);
            break;
        case K_RENEW:
        case K_RELEASE:
        case K_REASSERT:
        case K_FORCE:
            if (k->cb.hold)
                k->cb.hold(k->ud, err, msg, NULL);
            break;
        case K_DESCRIBE:
            if (k->cb.describe)
                k->cb.describe(k->ud, err, msg, NULL);
            break;
        case K_LIST:
            if (k->cb.list)
                k->cb.list(k->ud, err, msg, NULL);
            break;
        }
        c->cb_depth--;
    }
    call_free(k);
}

static void on_acquire(void *ud, int err, const char *msg, const store_acquire_res *res);
static void on_done(void *ud, int err, const char *msg);
static void on_hold(void *ud, int err, const char *msg, const store_hold_res *res);
static void on_describe(void *ud, int err, const char *msg, const store_describe_res *res);
static void on_list(void *ud, int err, const char *msg, const store_list_res *res);

/* The nodes that serve slots, in their order in nodes[] (List's walk). */
static cl_node *serving_node(cluster_store *c, int idx)
{
    for (int i = 0, n = 0; i < c->nnodes; i++)
        if (c->nodes[i].serving && n++ == idx)
            return &c->nodes[i];
    return NULL;
}

/* Sends k to the node its slot (or an ASK) names. 0, or an error with
 * nothing sent (BATON_E_UNAVAILABLE: no node for it is up). */
static int call_send(cl_call *k)
{
    cluster_store *c = k->c;
    cl_node *n;
    if (k->kind == K_LIST)
        n = serving_node(c, k->list_node);
    else if (k->ask)
        n = node_get(c, k->ask_host, k->ask_port);
    else
        n = c->slot_node[k->slot];
    if (!n)
        return k->kind == K_LIST ? BATON_E_INVALID : BATON_E_UNAVAILABLE;
    if (!n->st->cmd && !n->st->ssub)
        rstore_start(n->st); /* an ASK target outside the map */
    if (!n->st->up)
        return BATON_E_UNAVAILABLE;
    baton_store *b = &n->st->base;
    n->st->ask_next = k->ask;
    k->ask = 0;
    k->tries++;
    int rc = BATON_E_INTERNAL;
    switch (k->kind) {
    case K_ACQUIRE: rc = rstore_acquire(b, &k->req, on_acquire, k); break;
    case K_DEQUEUE: rc = rstore_dequeue(b, &k->req.target, k->token, on_done, k); break;
    case K_RENEW: rc = rstore_renew(b, k->name, k->token, k->ttl_ms, on_hold, k); break;
    case K_RELEASE: rc = rstore_release(b, k->name, k->token, k->has_next ? &k->nreq : NULL, on_hold, k); break;
    case K_REASSERT:
        rc = rstore_reassert(b, k->name, k->token, k->owner, k->fencing, k->ttl_ms, on_hold, k);
        break;
    case K_FORCE: rc = rstore_force_release(b, k->name, k->fencing, on_hold, k); break;
    case K_DESCRIBE: rc = rstore_describe(b, k->name, on_describe, k); break;
    case K_LIST: rc = rstore_list(b, k->prefix, k->limit, k->cursor, on_list, k); break;
    }
    n->st->ask_next = 0;
    return rc;
}

static void on_call_timer(evutil_socket_t fd, short what, void *arg);

/* Sends k again after delay_ms (0: on the next loop turn). */
static void call_later(cl_call *k, int64_t delay_ms)
{
    if (!k->timer && !(k->timer = evtimer_new(k->c->evb, on_call_timer, k))) {
        call_fail(k, BATON_E_NOMEM, "out of memory");
        return;
    }
    struct timeval tv = {.tv_sec = (time_t)(delay_ms / 1000), .tv_usec = (suseconds_t)(delay_ms % 1000) * 1000};
    evtimer_add(k->timer, &tv);
}

static void call_retry(cl_call *k)
{
    if (clock_mono_ms() > k->deadline_ms) {
        call_fail(k, BATON_E_UNAVAILABLE, "redis cluster: the key's slot is moving or its shard is failing "
                                          "over; try again");
        return;
    }
    int rc = call_send(k);
    if (rc == BATON_E_UNAVAILABLE) {
        int64_t d = 10 << (k->tries < 5 ? k->tries : 5);
        call_later(k, d > 200 ? 200 : d);
    } else if (rc != 0) {
        call_fail(k, rc, rc == BATON_E_NOMEM ? "out of memory" : "redis cluster: cannot send the command");
    }
}

static void on_call_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    call_retry(arg);
}

/* A node answered k with a routing error: the script did not run. */
static void call_redirected(cl_call *k, const char *msg)
{
    cluster_store *c = k->c;
    cluster_redirect rd;
    cluster_redirect_kind kind = cluster_redirect_parse(msg, strlen(msg), &rd);
    /* MOVED again and again is a map that does not settle; ASK and
     * TRYAGAIN last while a slot moves and are bounded by the deadline. */
    if (kind == CLUSTER_REDIRECT_MOVED && ++k->redirects > CL_MAX_REDIRECTS) {
        LOG_WARN("redis %s: %s: too many redirects, the last: %s", c->address, k->name ? k->name : "list", msg);
        call_fail(k, BATON_E_UNAVAILABLE, "redis cluster: too many redirects; try again");
        return;
    }
    switch (kind) {
    case CLUSTER_REDIRECT_MOVED:
    case CLUSTER_REDIRECT_ASK: {
        cl_node *n = rd.host[0] ? node_get(c, rd.host, rd.port) : NULL;
        if (!n) {
            call_later(k, 50);
            return;
        }
        if (kind == CLUSTER_REDIRECT_MOVED) {
            if (rd.slot >= 0 && rd.slot < CLUSTER_NSLOTS)
                c->slot_node[rd.slot] = n; /* until the map is read again */
        } else {
            k->ask = 1;
            snprintf(k->ask_host, sizeof k->ask_host, "%s", rd.host);
            k->ask_port = rd.port;
        }
        call_retry(k);
        return;
    }
    case CLUSTER_REDIRECT_TRYAGAIN: call_later(k, k->tries < 4 ? 5 << k->tries : 50); return;
    case CLUSTER_REDIRECT_DOWN:
    case CLUSTER_REDIRECT_NONE: call_later(k, 100); return;
    }
}

/* Node callbacks: a routing error is retried, anything else goes up. */
#define CL_DELIVER(k, cbfield, ...)                                                                        \
    do {                                                                                                   \
        cluster_store *c_ = (k)->c;                                                                        \
        if (cl_alive(c_) && (k)->cb.cbfield) {                                                             \
            c_->cb_depth++;                                                                                \
            (k)->cb.cbfield(__VA_ARGS__);                                                                  \
            c_->cb_depth--;                                                                                \
        }                                                                                                  \
        call_free(k);                                                                                      \
    } while (0)

static void on_acquire(void *ud, int err, const char *msg, const store_acquire_res *res)
{
    cl_call *k = ud;
    if (err == BATON_E_REDIRECT)
        call_redirected(k, msg);
    else
        CL_DELIVER(k, acquire, k->ud, err, msg, res);
}

static void on_done(void *ud, int err, const char *msg)
{
    cl_call *k = ud;
    if (err == BATON_E_REDIRECT)
        call_redirected(k, msg);
    else
        CL_DELIVER(k, done, k->ud, err, msg);
}

static void on_hold(void *ud, int err, const char *msg, const store_hold_res *res)
{
    cl_call *k = ud;
    if (err == BATON_E_REDIRECT)
        call_redirected(k, msg);
    else
        CL_DELIVER(k, hold, k->ud, err, msg, res);
}

static void on_describe(void *ud, int err, const char *msg, const store_describe_res *res)
{
    cl_call *k = ud;
    if (err == BATON_E_REDIRECT)
        call_redirected(k, msg);
    else
        CL_DELIVER(k, describe, k->ud, err, msg, res);
}

static void on_list(void *ud, int err, const char *msg, const store_list_res *res)
{
    cl_call *k = ud;
    if (err == BATON_E_REDIRECT) {
        call_redirected(k, msg);
        return;
    }
    char cursor[32];
    store_list_res out;
    if (err == BATON_OK && res) {
        out = *res;
        if (strcmp(res->next_cursor, "0") != 0)
            snprintf(cursor, sizeof cursor, "1%02d%s", k->list_node, res->next_cursor);
        else if (serving_node(k->c, k->list_node + 1))
            snprintf(cursor, sizeof cursor, "1%02d0", k->list_node + 1);
        else
            snprintf(cursor, sizeof cursor, "0");
        out.next_cursor = cursor;
        res = &out;
    }
    CL_DELIVER(k, list, k->ud, err, msg, res);
}

/* First send of a new call: an error completes nothing (store.h). */
static int call_start(cl_call *k)
{
    int rc = call_send(k);
    if (rc != 0)
        call_free(k);
    return rc;
}

/* ------------------------------------------------------------ store ops */

static cluster_store *cs(baton_store *b)
{
    return (cluster_store *)b;
}

static int copy_target(cl_call *k, const store_target *t)
{
    k->req.target = *t;
    if (t->key)
        k->req.target.key = k->name;
    else
        k->req.target.pool = k->name;
    return 0;
}

static int cl_acquire(baton_store *b, const store_acquire_req *req, store_acquire_cb cb, void *ud)
{
    cluster_store *c = cs(b);
    if (!req || !rstore_target_ok(&req->target) || !req->token)
        return BATON_E_INVALID;
    if (!c->up)
        return BATON_E_UNAVAILABLE;
    cl_call *k = call_new(c, K_ACQUIRE, req->target.key ? req->target.key : req->target.pool, ud);
    if (!k)
        return BATON_E_NOMEM;
    k->cb.acquire = cb;
    k->req = *req;
    copy_target(k, &req->target);
    if (dup_or(&k->token, req->token) || dup_or(&k->owner, req->owner)) {
        call_free(k);
        return BATON_E_NOMEM;
    }
    k->req.token = k->token;
    k->req.owner = k->owner;
    return call_start(k);
}

static int cl_dequeue(baton_store *b, const store_target *t, const char *token, store_done_cb cb, void *ud)
{
    cluster_store *c = cs(b);
    if (!rstore_target_ok(t) || !token)
        return BATON_E_INVALID;
    if (!c->up)
        return BATON_E_UNAVAILABLE;
    cl_call *k = call_new(c, K_DEQUEUE, t->key ? t->key : t->pool, ud);
    if (!k)
        return BATON_E_NOMEM;
    k->cb.done = cb;
    copy_target(k, t);
    if (dup_or(&k->token, token)) {
        call_free(k);
        return BATON_E_NOMEM;
    }
    return call_start(k);
}

/* A call about one key: renew, release, reassert, force_release, describe. */
static cl_call *key_call(cluster_store *c, cl_kind kind, const char *key, const char *token, void *ud, int *rc)
{
    *rc = BATON_E_INVALID;
    if (!key || !key[0])
        return NULL;
    *rc = BATON_E_UNAVAILABLE;
    if (!c->up)
        return NULL;
    *rc = BATON_E_NOMEM;
    cl_call *k = call_new(c, kind, key, ud);
    if (!k)
        return NULL;
    if (dup_or(&k->token, token)) {
        call_free(k);
        return NULL;
    }
    *rc = 0;
    return k;
}

static int cl_renew(baton_store *b, const char *key, const char *token, int64_t ttl_ms, store_hold_cb cb,
                    void *ud)
{
    int rc;
    if (!token || ttl_ms <= 0)
        return BATON_E_INVALID;
    cl_call *k = key_call(cs(b), K_RENEW, key, token, ud, &rc);
    if (!k)
        return rc;
    k->cb.hold = cb;
    k->ttl_ms = ttl_ms;
    return call_start(k);
}

static int cl_release(baton_store *b, const char *key, const char *token, const store_acquire_req *next,
                      store_hold_cb cb, void *ud)
{
    int rc;
    if (!token)
        return BATON_E_INVALID;
    if (next && (!next->token || !next->target.key || !key || strcmp(next->target.key, key) != 0))
        return BATON_E_INVALID;
    cl_call *k = key_call(cs(b), K_RELEASE, key, token, ud, &rc);
    if (!k)
        return rc;
    k->cb.hold = cb;
    if (next) {
        k->has_next = 1;
        k->nreq = *next;
        k->nreq.target.key = k->name;
        if (dup_or(&k->ntoken, next->token) || dup_or(&k->nowner, next->owner)) {
            call_free(k);
            return BATON_E_NOMEM;
        }
        k->nreq.token = k->ntoken;
        k->nreq.owner = k->nowner;
    }
    return call_start(k);
}

static int cl_reassert(baton_store *b, const char *key, const char *token, const char *owner, uint64_t fencing,
                       int64_t ttl_ms, store_hold_cb cb, void *ud)
{
    int rc;
    if (!token || fencing == 0 || ttl_ms <= 0)
        return BATON_E_INVALID;
    cl_call *k = key_call(cs(b), K_REASSERT, key, token, ud, &rc);
    if (!k)
        return rc;
    k->cb.hold = cb;
    k->fencing = fencing;
    k->ttl_ms = ttl_ms;
    if (dup_or(&k->owner, owner)) {
        call_free(k);
        return BATON_E_NOMEM;
    }
    return call_start(k);
}

static int cl_force_release(baton_store *b, const char *key, uint64_t fencing, store_hold_cb cb, void *ud)
{
    int rc;
    if (fencing == 0)
        return BATON_E_INVALID;
    cl_call *k = key_call(cs(b), K_FORCE, key, NULL, ud, &rc);
    if (!k)
        return rc;
    k->cb.hold = cb;
    k->fencing = fencing;
    return call_start(k);
}

static int cl_describe(baton_store *b, const char *key, store_describe_cb cb, void *ud)
{
    int rc;
    cl_call *k = key_call(cs(b), K_DESCRIBE, key, NULL, ud, &rc);
    if (!k)
        return rc;
    k->cb.describe = cb;
    return call_start(k);
}

static int cl_list(baton_store *b, const char *prefix, int32_t limit, const char *cursor, store_list_cb cb,
                   void *ud)
{
    cluster_store *c = cs(b);
    if (!prefix || !cursor || limit < 1)
        return BATON_E_INVALID;
    /* "0", or "1" + two digits of node + that node's cursor. */
    int node = 0;
    const char *ncur = "0";
    size_t n = strlen(cursor);
    if (strcmp(cursor, "0") != 0) {
        if (n < 4 || cursor[0] != '1' || strspn(cursor, "0123456789") != n)
            return BATON_E_INVALID;
        node = (cursor[1] - '0') * 10 + (cursor[2] - '0');
        ncur = cursor + 3;
    }
    if (!c->up)
        return BATON_E_UNAVAILABLE;
    cl_call *k = call_new(c, K_LIST, NULL, ud);
    if (!k)
        return BATON_E_NOMEM;
    k->cb.list = cb;
    k->limit = limit;
    k->list_node = node;
    snprintf(k->cursor, sizeof k->cursor, "%s", ncur);
    if (dup_or(&k->prefix, prefix)) {
        call_free(k);
        return BATON_E_NOMEM;
    }
    return call_start(k);
}

/* Fire and forget: one refresh per node, of its targets, order kept. */
static int cl_refresh(baton_store *b, const store_target *targets, const char *const *tokens, size_t n,
                      int64_t liveness_ms)
{
    cluster_store *c = cs(b);
    if (n > 0 && (!targets || !tokens))
        return BATON_E_INVALID;
    if (!c->up)
        return BATON_E_UNAVAILABLE;
    if (n == 0)
        return 0;
    store_target *t = malloc(n * sizeof *t);
    const char **tok = malloc(n * sizeof *tok);
    cl_node **owner = malloc(n * sizeof *owner);
    if (!t || !tok || !owner) {
        free(t);
        free(tok);
        free(owner);
        return BATON_E_NOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        const char *name = targets[i].key ? targets[i].key : targets[i].pool;
        owner[i] = name ? c->slot_node[cluster_name_slot(name)] : NULL;
    }
    for (int j = 0; j < c->nnodes; j++) {
        size_t m = 0;
        for (size_t i = 0; i < n; i++)
            if (owner[i] == &c->nodes[j]) {
                t[m] = targets[i];
                tok[m++] = tokens[i];
            }
        if (m > 0 && c->nodes[j].st->up)
            rstore_refresh(&c->nodes[j].st->base, t, tok, m, liveness_ms);
    }
    free(t);
    free(tok);
    free(owner);
    return 0;
}

static int cl_reap(baton_store *b, const char *key)
{
    cluster_store *c = cs(b);
    if (!key || !key[0])
        return BATON_E_INVALID;
    cl_node *n = c->slot_node[cluster_name_slot(key)];
    if (!c->up || !n || !n->st->up)
        return BATON_E_UNAVAILABLE;
    return rstore_reap(&n->st->base, key);
}

/* -------------------------------------------------------- create / free */

static void cl_destroy(cluster_store *c)
{
    c->free_requested = 1;
    while (c->calls)
        call_free(c->calls); /* dropped: no callbacks (store.h) */
    for (int i = 0; i < c->nnodes; i++) {
        c->nodes[i].st->base.hooks = (store_hooks){0};
        c->nodes[i].st->base.ops->free(&c->nodes[i].st->base);
    }
    c->nnodes = 0;
    ctl_drop(c);
    if (c->tick_ev)
        event_free(c->tick_ev);
    if (c->free_ev)
        event_free(c->free_ev);
    free(c->address);
    free(c->username);
    free(c->password);
    free(c->prefix);
    free(c);
}

static void on_deferred_free(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    cl_destroy(arg);
}

static void cl_free(baton_store *b)
{
    cluster_store *c = cs(b);
    if (!c)
        return;
    if (c->cb_depth > 0) {
        c->free_requested = 1;
        c->up = 0;
        event_active(c->free_ev, 0, 0);
        return;
    }
    cl_destroy(c);
}

baton_store *cluster__new(struct event_base *base, const store_redis_opts *opts)
{
    if (!base || !opts || opts->database != 0 || opts->command_timeout_ms <= 0 || opts->reconnect_ms <= 0)
        return NULL;
    cluster_store *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->base.ops = &cluster_ops;
    c->evb = base;
    c->opts = *opts;
    char why[320];
    if (redis_addr_parse(opts->address, &c->seeds, why, sizeof why) != 0 || c->seeds.kind != REDIS_ADDR_CLUSTER) {
        LOG_ERROR("redis.address: %s", why);
        free(c);
        return NULL;
    }
    if (dup_or(&c->address, opts->address) || dup_or(&c->prefix, opts->key_prefix ? opts->key_prefix : "baton:") ||
        (opts->password && opts->password[0] && dup_or(&c->password, opts->password)) ||
        (opts->username && opts->username[0] && dup_or(&c->username, opts->username)))
        goto fail;
    c->opts.address = c->address;
    c->opts.key_prefix = c->prefix;
    c->opts.password = c->password;
    c->opts.username = c->username;
    c->opts.sentinel_password = NULL;
    c->tick_ev = event_new(base, -1, EV_PERSIST, on_tick, c);
    c->free_ev = event_new(base, -1, 0, on_deferred_free, c);
    if (!c->tick_ev || !c->free_ev)
        goto fail;
    struct timeval tv = {.tv_sec = 0, .tv_usec = CL_TICK_MS * 1000};
    event_add(c->tick_ev, &tv);
    c->last_refresh_ms = clock_mono_ms() - CL_REFRESH_UP_MS;
    send_refresh(c);
    return &c->base;
fail:
    cl_destroy(c);
    return NULL;
}

static const store_ops cluster_ops = {
    .acquire = cl_acquire,
    .dequeue = cl_dequeue,
    .renew = cl_renew,
    .release = cl_release,
    .reassert = cl_reassert,
    .force_release = cl_force_release,
    .describe = cl_describe,
    .list = cl_list,
    .refresh = cl_refresh,
    .reap = cl_reap,
    .free = cl_free,
};
