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
 *   - the store is up (update_state) once every primary of a full map is
 *     up, and then while any is: a shard that is down fails only its own
 *     keys' ops, UNAVAILABLE;
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

#include "cluster_internal.h"
#include "log.h"


int cluster__is(const baton_store *b)
{
    return b && b->ops == &cl_ops;
}

int cluster__is_up(const baton_store *b)
{
    return ((const cluster_store *)b)->up;
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

static void update_state(cluster_store *c);

static void node_on_state(void *ud, int up)
{
    cluster_store *c = ud;
    if (!up)
        cl_request_refresh(c); /* a primary gone: its replica may be taking over */
    update_state(c);
}

static cl_node *node_find(cluster_store *c, const char *host, int port)
{
    for (int i = 0; i < c->nnodes; i++)
        if (c->nodes[i].st->port == port && strcmp(c->nodes[i].st->host, host) == 0)
            return &c->nodes[i];
    return NULL;
}

/* The node for host:port, created (not yet connected) when new. */
cl_node *cl_node_get(cluster_store *c, const char *host, int port)
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
    /* After the first map: a promoted replica, say. Its first connection
     * counts as a new primary (on_new_primary: holds re-assert; grace). */
    st->cl_fresh = c->have_map;
    return n;
}

/* Disconnects (ops in flight complete UNAVAILABLE: the outcome is unknown)
 * and frees a node that serves no slot any more. */
static void node_retire(cluster_store *c, int i)
{
    redis_store *st = c->nodes[i].st;
    LOG_INFO("redis %s: node %s:%d left the map", c->address, st->host, st->port);
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

/*
 * Up: the first time, once the map covers every slot and every primary in it
 * is up; from then on while the map is there and at least one primary is up.
 * A shard that is down (its primary unreachable, or failing over) fails its
 * own keys' ops UNAVAILABLE while the others go on, so one shard's failover
 * does not stop the locks of the rest. When a primary comes (back) up while
 * the store is up, the engine re-checks every hold and waiter, as after any
 * reconnection (its events may have been missed), and hears on_new_primary
 * first when that primary may lack writes.
 */
static void update_state(cluster_store *c)
{
    int serving = 0, reachable = 0, back = 0;
    for (int i = 0; i < c->nnodes; i++) {
        cl_node *n = &c->nodes[i];
        if (n->serving) {
            serving++;
            reachable += n->st->up;
        }
        if (n->st->up && !n->was_up)
            back = 1; /* a node not written to before said so: node_on_new_primary */
        if (!n->st->up && n->was_up && c->up)
            LOG_WARN("redis %s: primary %s:%d is down: its keys are unavailable until it (or its replica) "
                     "is back",
                     c->address, n->st->host, n->st->port);
        n->was_up = n->st->up;
    }
    int up = c->have_map && cl_alive(c) &&
             (c->was_up ? reachable > 0 : c->full && serving > 0 && reachable == serving);
    if (up == c->up && !(up && back))
        return;
    if (up != c->up)
        LOG_INFO("redis %s: store %s (%d of %d primaries up)", c->address, up ? "up" : "down", reachable, serving);
    c->up = up;
    c->was_up |= up;
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
        want[i] = cl_node_get(c, m->nodes[i].host, m->nodes[i].port);
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
        *host = c->nodes[i].st->host;
        *port = c->nodes[i].st->port;
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

void cl_request_refresh(cluster_store *c)
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

void cluster__routing_error(struct cluster_store *c, const cluster_redirect *rd)
{
    if (rd->kind == CLUSTER_REDIRECT_MOVED || rd->kind == CLUSTER_REDIRECT_DOWN)
        cl_request_refresh(c);
}

void cluster__slots_changed(struct cluster_store *c)
{
    cl_request_refresh(c);
}

/* -------------------------------------------------------- create / free */

static void cl_destroy(cluster_store *c)
{
    c->free_requested = 1;
    while (c->calls)
        cl_call_free(c->calls); /* dropped: no callbacks (store.h) */
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

void cl_free(baton_store *b)
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
    c->base.ops = &cl_ops;
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
