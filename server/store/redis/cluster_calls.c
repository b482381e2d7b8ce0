/* The cluster store's ops (cluster.c has the overview): each op's request
 * is copied into a call, sent to the node of its slot, and sent again where
 * a routing error (MOVED, ASK, TRYAGAIN, CLUSTERDOWN) says, until the
 * deadline. */
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

/* ---------------------------------------------------------------- calls */

void cl_call_free(cl_call *k)
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
    cl_call_free(k);
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
        n = cl_node_get(c, k->ask_host, k->ask_port);
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
        cl_node *n = rd.host[0] ? cl_node_get(c, rd.host, rd.port) : NULL;
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
        cl_call_free(k);                                                                                      \
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
        cl_call_free(k);
    return rc;
}

/* ------------------------------------------------------------ store ops */

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
        cl_call_free(k);
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
        cl_call_free(k);
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
        cl_call_free(k);
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
            cl_call_free(k);
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
        cl_call_free(k);
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
        cl_call_free(k);
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

const store_ops cl_ops = {
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
    .free = cl_free, /* cluster.c */
};
