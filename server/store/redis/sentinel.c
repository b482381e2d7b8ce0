/*
 * Redis Sentinel discovery and following (sentinel.h). Two hiredis async
 * connections at most: `ask` for one discovery question at a time, `follow`
 * subscribed to +switch-master. A connection we give up on is detached
 * (ac->data = NULL) before it is disconnected or freed, so none of its late
 * callbacks reaches the sentinel, which may be gone by then.
 */
#include "sentinel.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "log.h"

struct sentinel {
    struct event_base *base;
    redis_addr addr;
    char *password;
    int64_t timeout_ms;
    sentinel_hooks hooks;

    redisAsyncContext *ask;
    struct event *ask_timer;
    int ask_idx;   /* the sentinel being asked */
    int ask_tries; /* sentinels asked in this round */
    int good;      /* the last sentinel that answered: asked first */

    redisAsyncContext *follow;
    struct event *follow_timer;
    int follow_idx;
};

/* ---------------------------------------------------------- pure helpers */

int sentinel_parse_master_addr(const redisReply *r, char *host, size_t hostlen, int *port, const char **why)
{
    if (!r || r->type == REDIS_REPLY_NIL) {
        *why = "unknown master name";
        return -1;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        *why = "error reply";
        return -1;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 || r->element[0]->type != REDIS_REPLY_STRING ||
        r->element[1]->type != REDIS_REPLY_STRING || r->element[0]->len == 0 ||
        r->element[0]->len >= hostlen) {
        *why = "malformed reply";
        return -1;
    }
    const redisReply *p = r->element[1];
    int v = 0;
    for (size_t i = 0; i < p->len; i++) {
        if (p->str[i] < '0' || p->str[i] > '9' || v > 65535) {
            *why = "malformed port";
            return -1;
        }
        v = v * 10 + (p->str[i] - '0');
    }
    if (p->len == 0 || v <= 0 || v > 65535) {
        *why = "malformed port";
        return -1;
    }
    memcpy(host, r->element[0]->str, r->element[0]->len);
    host[r->element[0]->len] = '\0';
    *port = v;
    return 0;
}

int sentinel_parse_switch(const char *msg, size_t len, const char *master, char *host, size_t hostlen, int *port)
{
    /* name old-ip old-port new-ip new-port */
    const char *f[5];
    size_t fl[5];
    size_t i = 0;
    int n = 0;
    while (n < 5) {
        while (i < len && msg[i] == ' ')
            i++;
        if (i >= len)
            break;
        f[n] = msg + i;
        while (i < len && msg[i] != ' ')
            i++;
        fl[n] = (size_t)(msg + i - f[n]);
        n++;
    }
    while (i < len && msg[i] == ' ')
        i++;
    if (n != 5 || i != len || fl[0] != strlen(master) || memcmp(f[0], master, fl[0]) != 0)
        return 0;
    if (fl[3] == 0 || fl[3] >= hostlen || fl[4] == 0 || fl[4] > 5)
        return 0;
    int v = 0;
    for (size_t k = 0; k < fl[4]; k++) {
        if (f[4][k] < '0' || f[4][k] > '9')
            return 0;
        v = v * 10 + (f[4][k] - '0');
    }
    if (v <= 0 || v > 65535)
        return 0;
    memcpy(host, f[3], fl[3]);
    host[fl[3]] = '\0';
    *port = v;
    return 1;
}

int sentinel_role_is_primary(const redisReply *r)
{
    return r && r->type == REDIS_REPLY_ARRAY && r->elements >= 1 && r->element[0]->type == REDIS_REPLY_STRING &&
           r->element[0]->len == 6 && memcmp(r->element[0]->str, "master", 6) == 0;
}

/* ---------------------------------------------------------- connections */

static struct timeval tv_ms(int64_t ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};
    return tv;
}

/* Lets go of a connection: none of its callbacks reaches us any more. */
static void detach(redisAsyncContext *ac, int in_callback)
{
    if (!ac)
        return;
    ac->data = NULL;
    if (in_callback)
        redisAsyncDisconnect(ac); /* hiredis disconnects once the callback returns */
    else
        redisAsyncFree(ac);
}

static redisAsyncContext *open_to(sentinel *s, int idx, redisConnectCallback *on_conn,
                                  redisDisconnectCallback *on_disc)
{
    const redis_node_addr *n = &s->addr.nodes[idx];
    redisAsyncContext *ac = redisAsyncConnect(n->host, n->port);
    if (!ac)
        return NULL;
    if (ac->err || redisLibeventAttach(ac, s->base) != REDIS_OK) {
        LOG_WARN("sentinel %s:%d: connect failed: %s", n->host, n->port, ac->errstr);
        redisAsyncFree(ac);
        return NULL;
    }
    ac->data = s;
    redisAsyncSetConnectCallback(ac, on_conn);
    redisAsyncSetDisconnectCallback(ac, on_disc);
    if (s->password)
        redisAsyncCommand(ac, NULL, NULL, "AUTH %s", s->password);
    return ac;
}

/* ---------------------------------------------------------- discovery */

static void ask_next(sentinel *s, const char *why);

static void on_master_addr(redisAsyncContext *ac, void *r, void *privdata)
{
    sentinel *s = ac->data;
    redisReply *reply = r;
    if (!s || !reply || ac != s->ask)
        return;
    char host[REDIS_ADDR_HOST_MAX];
    int port;
    const char *why;
    if (reply->type == REDIS_REPLY_ERROR) {
        LOG_WARN("sentinel %s:%d: %s", s->addr.nodes[s->ask_idx].host, s->addr.nodes[s->ask_idx].port,
                 reply->str);
        ask_next(s, "error reply");
        return;
    }
    if (sentinel_parse_master_addr(reply, host, sizeof host, &port, &why) != 0) {
        ask_next(s, why);
        return;
    }
    s->ask = NULL;
    detach(ac, 1);
    evtimer_del(s->ask_timer);
    s->good = s->ask_idx;
    LOG_INFO("sentinel %s:%d: primary of %s is %s:%d", s->addr.nodes[s->ask_idx].host,
             s->addr.nodes[s->ask_idx].port, s->addr.master, host, port);
    s->hooks.found(s->hooks.ud, host, port);
}

static void on_ask_connect(const redisAsyncContext *ac, int status)
{
    sentinel *s = ac->data;
    if (status == REDIS_OK || !s || ac != s->ask)
        return;
    s->ask = NULL; /* hiredis frees ac after this returns */
    ask_next(s, ac->errstr);
}

static void on_ask_disconnect(const redisAsyncContext *ac, int status)
{
    sentinel *s = ac->data;
    if (!s || ac != s->ask)
        return;
    s->ask = NULL;
    ask_next(s, "connection lost");
}

static void ask(sentinel *s)
{
    s->ask = open_to(s, s->ask_idx, on_ask_connect, on_ask_disconnect);
    if (!s->ask) {
        ask_next(s, "cannot connect");
        return;
    }
    redisAsyncCommand(s->ask, on_master_addr, NULL, "SENTINEL get-master-addr-by-name %s", s->addr.master);
    struct timeval tv = tv_ms(s->timeout_ms);
    evtimer_add(s->ask_timer, &tv);
}

/* The sentinel asked could not answer: ask the next, or give up the round. */
static void ask_next(sentinel *s, const char *why)
{
    const redis_node_addr *n = &s->addr.nodes[s->ask_idx];
    LOG_WARN("sentinel %s:%d: no primary for %s: %s", n->host, n->port, s->addr.master, why);
    if (s->ask) {
        redisAsyncContext *ac = s->ask;
        s->ask = NULL;
        /* Called from this connection's reply callback or from the timer. */
        detach(ac, (ac->c.flags & REDIS_IN_CALLBACK) != 0);
    }
    evtimer_del(s->ask_timer);
    if (++s->ask_tries >= s->addr.nnodes) {
        s->ask_tries = 0;
        s->hooks.failed(s->hooks.ud, "no sentinel named a primary");
        return;
    }
    s->ask_idx = (s->ask_idx + 1) % s->addr.nnodes;
    ask(s);
}

static void on_ask_timeout(evutil_socket_t fd, short what, void *arg)
{
    ask_next(arg, "timed out");
}

void sentinel_discover(sentinel *s)
{
    if (s->ask || evtimer_pending(s->ask_timer, NULL))
        return;
    s->ask_idx = s->good;
    s->ask_tries = 0;
    ask(s);
}

/* ---------------------------------------------------------- following */

static void follow_open(sentinel *s);

static void follow_retry(sentinel *s)
{
    s->follow_idx = (s->follow_idx + 1) % s->addr.nnodes;
    struct timeval tv = tv_ms(s->timeout_ms < 1000 ? s->timeout_ms : 1000);
    evtimer_add(s->follow_timer, &tv);
}

static void on_switch(redisAsyncContext *ac, void *r, void *privdata)
{
    sentinel *s = ac->data;
    redisReply *reply = r;
    if (!s || !reply || ac != s->follow)
        return;
    if (reply->type == REDIS_REPLY_ERROR) { /* NOAUTH and the like */
        LOG_WARN("sentinel %s:%d: SUBSCRIBE +switch-master: %s", s->addr.nodes[s->follow_idx].host,
                 s->addr.nodes[s->follow_idx].port, reply->str);
        s->follow = NULL;
        detach(ac, 1);
        follow_retry(s);
        return;
    }
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 || reply->element[0]->type != REDIS_REPLY_STRING ||
        strcmp(reply->element[0]->str, "message") != 0 || reply->element[2]->type != REDIS_REPLY_STRING)
        return; /* the subscribe confirmation */
    char host[REDIS_ADDR_HOST_MAX];
    int port;
    if (sentinel_parse_switch(reply->element[2]->str, reply->element[2]->len, s->addr.master, host, sizeof host,
                              &port)) {
        LOG_INFO("sentinel: +switch-master %s -> %s:%d", s->addr.master, host, port);
        s->hooks.switched(s->hooks.ud, host, port);
    }
}

static void on_follow_connect(const redisAsyncContext *ac, int status)
{
    sentinel *s = ac->data;
    if (status == REDIS_OK || !s || ac != s->follow)
        return;
    s->follow = NULL;
    follow_retry(s);
}

static void on_follow_disconnect(const redisAsyncContext *ac, int status)
{
    sentinel *s = ac->data;
    if (!s || ac != s->follow)
        return;
    LOG_WARN("sentinel %s:%d: +switch-master subscription lost", s->addr.nodes[s->follow_idx].host,
             s->addr.nodes[s->follow_idx].port);
    s->follow = NULL;
    follow_retry(s);
}

static void follow_open(sentinel *s)
{
    s->follow = open_to(s, s->follow_idx, on_follow_connect, on_follow_disconnect);
    if (!s->follow) {
        follow_retry(s);
        return;
    }
    redisAsyncCommand(s->follow, on_switch, NULL, "SUBSCRIBE +switch-master");
}

static void on_follow_timer(evutil_socket_t fd, short what, void *arg)
{
    follow_open(arg);
}

/* ---------------------------------------------------------- lifecycle */

sentinel *sentinel_new(struct event_base *base, const redis_addr *addr, const char *password, int64_t timeout_ms,
                       const sentinel_hooks *hooks)
{
    if (addr->kind != REDIS_ADDR_SENTINEL || addr->nnodes < 1)
        return NULL;
    sentinel *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->base = base;
    s->addr = *addr;
    s->timeout_ms = timeout_ms > 0 ? timeout_ms : 1000;
    s->hooks = *hooks;
    if (password && password[0] && !(s->password = strdup(password)))
        goto fail;
    s->ask_timer = evtimer_new(base, on_ask_timeout, s);
    s->follow_timer = evtimer_new(base, on_follow_timer, s);
    if (!s->ask_timer || !s->follow_timer)
        goto fail;
    follow_open(s);
    return s;
fail:
    sentinel_free(s);
    return NULL;
}

void sentinel_free(sentinel *s)
{
    if (!s)
        return;
    detach(s->ask, 0);
    detach(s->follow, 0);
    if (s->ask_timer)
        event_free(s->ask_timer);
    if (s->follow_timer)
        event_free(s->follow_timer);
    free(s->password);
    free(s);
}
