/* A minimal non-blocking RESP connection (rconn.h has the contract). */
#include "rconn.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

enum rconn_state {
    RC_CONNECTING, /* write event armed for connect completion */
    RC_CONNECTED,
    RC_FAILING, /* failed before the loop ran: closed() is due from fail_ev */
    RC_DEAD,    /* closed() called (or being called): no more I/O */
};

struct rconn {
    struct event_base *base;
    rconn_hooks hooks;
    enum rconn_state state;
    redisContext *ctx; /* socket + reader; NULL once dead */
    struct event *rev, *wev, *fail_ev;
    char why[160]; /* closed()'s reason for a failure found outside the loop */

    /* Output not written yet: out[off, len). */
    char *out;
    size_t off, len, cap;

    /* The reader's reply builders, wrapped to bound one reply's size. */
    redisReplyObjectFunctions fns;
    redisReplyObjectFunctions *base_fns;
    size_t max_reply;
    size_t acc; /* bytes built so far for the reply being decoded */

    int in_hook;        /* > 0 while one of the hooks runs */
    int free_requested; /* rconn_free() called inside a hook */
};

/* ------------------------------------------------- bounded reply builders */

/* The rconn whose reader is decoding right now (set around
 * redisReaderGetReply only; the builders get no other handle on it). */
static _Thread_local rconn *tl_decoding;

static int charge(size_t n)
{
    rconn *c = tl_decoding;
    if (!c)
        return -1;
    if (n > c->max_reply || c->acc > c->max_reply - n)
        return -1;
    c->acc += n;
    return 0;
}

static void *build_string(const redisReadTask *t, char *str, size_t len)
{
    if (len > (size_t)-1 - sizeof(redisReply) - 1 || charge(sizeof(redisReply) + len + 1) != 0)
        return NULL;
    return tl_decoding->base_fns->createString(t, str, len);
}

static void *build_array(const redisReadTask *t, int n)
{
    if (n < 0 || charge(sizeof(redisReply) + (size_t)n * sizeof(redisReply *)) != 0)
        return NULL;
    return tl_decoding->base_fns->createArray(t, n);
}

static void *build_integer(const redisReadTask *t, long long v)
{
    if (charge(sizeof(redisReply)) != 0)
        return NULL;
    return tl_decoding->base_fns->createInteger(t, v);
}

static void *build_nil(const redisReadTask *t)
{
    if (charge(sizeof(redisReply)) != 0)
        return NULL;
    return tl_decoding->base_fns->createNil(t);
}

/* ------------------------------------------------------------ lifecycle */

static void destroy(rconn *c)
{
    if (c->rev)
        event_free(c->rev);
    if (c->wev)
        event_free(c->wev);
    if (c->fail_ev)
        event_free(c->fail_ev);
    if (c->ctx)
        redisFree(c->ctx); /* closes the socket, frees the reader */
    free(c->out);
    free(c);
}

/* Releases the socket and events; the struct stays for rconn_free(). */
static void release_io(rconn *c)
{
    if (c->rev)
        event_del(c->rev);
    if (c->wev)
        event_del(c->wev);
    if (c->ctx) {
        redisFree(c->ctx);
        c->ctx = NULL;
    }
    free(c->out);
    c->out = NULL;
    c->off = c->len = c->cap = 0;
}

/* Enters and leaves a hook. Returns 1 when the rconn was freed meanwhile:
 * the caller must not touch it any more. */
static void hook_enter(rconn *c)
{
    c->in_hook++;
}

static int hook_leave(rconn *c)
{
    c->in_hook--;
    if (c->in_hook == 0 && c->free_requested) {
        destroy(c);
        return 1;
    }
    return 0;
}

/* The connection is over: free the I/O, tell the owner once. Only called
 * from the loop (an event callback), never from the public functions.
 * Returns 1 when the rconn was freed inside closed(). */
static int die(rconn *c, const char *why)
{
    if (c->state == RC_DEAD)
        return 0;
    c->state = RC_DEAD;
    release_io(c);
    if (c->free_requested)
        return 0;
    hook_enter(c);
    c->hooks.closed(c->hooks.ud, why);
    return hook_leave(c);
}

static void die_errno(rconn *c, const char *what, int err)
{
    char why[160];
    snprintf(why, sizeof(why), "%s: %s", what, strerror(err));
    die(c, why);
}

/* ------------------------------------------------------------- output */

static int queue_bytes(rconn *c, const char *buf, size_t n)
{
    if (c->state != RC_CONNECTING && c->state != RC_CONNECTED)
        return -1;
    if (c->off > 0 && (c->off == c->len || c->len + n > c->cap)) {
        memmove(c->out, c->out + c->off, c->len - c->off);
        c->len -= c->off;
        c->off = 0;
    }
    if (c->len + n > c->cap) {
        size_t cap = c->cap ? c->cap : 4096;
        while (cap < c->len + n) {
            if (cap > ((size_t)-1) / 2)
                return -1;
            cap *= 2;
        }
        char *p = realloc(c->out, cap);
        if (!p)
            return -1;
        c->out = p;
        c->cap = cap;
    }
    memcpy(c->out + c->len, buf, n);
    c->len += n;
    /* The write happens from the loop: a failure there is reported there. */
    if (c->state == RC_CONNECTED && !event_pending(c->wev, EV_WRITE, NULL))
        event_add(c->wev, NULL);
    return 0;
}

/* Writes what the socket takes. Returns -1 when the rconn died (or was
 * freed inside closed()): do not touch it then. */
static int flush_out(rconn *c)
{
    while (c->off < c->len) {
        ssize_t n = send(c->ctx->fd, c->out + c->off, c->len - c->off, MSG_NOSIGNAL);
        if (n > 0) {
            c->off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!event_pending(c->wev, EV_WRITE, NULL))
                event_add(c->wev, NULL);
            return 0;
        }
        die_errno(c, "write", n < 0 ? errno : EPIPE);
        return -1;
    }
    c->off = c->len = 0;
    event_del(c->wev);
    return 0;
}

/* -------------------------------------------------------------- events */

static void on_writable(evutil_socket_t fd, short what, void *arg)
{
    rconn *c = arg;
    (void)what;
    if (c->state == RC_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
            err = errno;
        if (err) {
            die_errno(c, "connect", err);
            return;
        }
        c->state = RC_CONNECTED;
        event_add(c->rev, NULL);
        if (c->hooks.connected) {
            hook_enter(c);
            c->hooks.connected(c->hooks.ud);
            if (hook_leave(c) || c->state != RC_CONNECTED)
                return;
        }
    }
    if (c->state == RC_CONNECTED)
        flush_out(c);
}

/* Decodes and hands over every complete reply buffered. Returns -1 when the
 * rconn died or was freed. */
static int deliver_replies(rconn *c)
{
    for (;;) {
        void *reply = NULL;
        tl_decoding = c;
        int rc = redisReaderGetReply(c->ctx->reader, &reply);
        tl_decoding = NULL;
        if (rc != REDIS_OK) {
            die(c, "protocol error");
            return -1;
        }
        if (!reply)
            break;
        c->acc = 0;
        hook_enter(c);
        c->hooks.reply(c->hooks.ud, reply);
        freeReplyObject(reply);
        if (hook_leave(c) || c->free_requested)
            return -1;
    }
    /* What is left is the start of one reply: bound it too. */
    redisReader *r = c->ctx->reader;
    size_t undecoded = r->len - r->pos;
    if (undecoded > c->max_reply || c->acc > c->max_reply - undecoded) {
        die(c, "protocol error");
        return -1;
    }
    return 0;
}

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    rconn *c = arg;
    char buf[64 * 1024];
    (void)what;
    if (c->state != RC_CONNECTED)
        return;
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n == 0) {
        die(c, "connection closed by server");
        return;
    }
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            die_errno(c, "read", errno);
        return;
    }
    if (redisReaderFeed(c->ctx->reader, buf, (size_t)n) != REDIS_OK) {
        die(c, "out of memory");
        return;
    }
    deliver_replies(c);
}

static void on_fail(evutil_socket_t fd, short what, void *arg)
{
    rconn *c = arg;
    (void)fd, (void)what;
    char why[sizeof(c->why)];
    memcpy(why, c->why, sizeof(why));
    die(c, why);
}

/* ---------------------------------------------------------------- open */

static rconn *open_ctx(struct event_base *b, redisContext *ctx, const rconn_hooks *h)
{
    if (!ctx)
        return NULL;
    rconn *c = calloc(1, sizeof(*c));
    if (!c) {
        redisFree(ctx);
        return NULL;
    }
    c->base = b;
    c->hooks = *h;
    c->ctx = ctx;
    c->max_reply = RCONN_MAX_REPLY;
    c->fail_ev = event_new(b, -1, 0, on_fail, c);
    if (!c->fail_ev)
        goto oom;
    if (ctx->err || ctx->fd < 0 || !ctx->reader || !ctx->reader->fn) {
        /* Failed at once (refused, unresolvable ...): report from the loop. */
        snprintf(c->why, sizeof(c->why), "connect: %s", ctx->err ? ctx->errstr : "failed");
        c->state = RC_FAILING;
        redisFree(ctx);
        c->ctx = NULL;
        event_active(c->fail_ev, EV_TIMEOUT, 0);
        return c;
    }
    c->base_fns = ctx->reader->fn;
    c->fns = *c->base_fns;
    c->fns.createString = build_string;
    c->fns.createArray = build_array;
    c->fns.createInteger = build_integer;
    c->fns.createNil = build_nil;
    ctx->reader->fn = &c->fns;
    c->rev = event_new(b, ctx->fd, EV_READ | EV_PERSIST, on_readable, c);
    c->wev = event_new(b, ctx->fd, EV_WRITE | EV_PERSIST, on_writable, c);
    if (!c->rev || !c->wev)
        goto oom;
    /* Connect completion (immediate or not) shows as writability. */
    c->state = RC_CONNECTING;
    if (event_add(c->wev, NULL) != 0)
        goto oom;
    return c;
oom:
    destroy(c);
    return NULL;
}

static int hooks_ok(struct event_base *b, const rconn_hooks *h)
{
    return b && h && h->reply && h->closed;
}

rconn *rconn_open_tcp(struct event_base *b, const char *host, int port, const rconn_hooks *h)
{
    if (!hooks_ok(b, h) || !host || port <= 0 || port > 65535)
        return NULL;
    return open_ctx(b, redisConnectNonBlock(host, port), h);
}

rconn *rconn_open_unix(struct event_base *b, const char *path, const rconn_hooks *h)
{
    if (!hooks_ok(b, h) || !path)
        return NULL;
    return open_ctx(b, redisConnectUnixNonBlock(path), h);
}

/* ------------------------------------------------------------ commands */

int rconn_vcommand(rconn *c, const char *fmt, va_list ap)
{
    char *cmd = NULL;
    if (!c || !fmt || c->free_requested)
        return -1;
    int len = redisvFormatCommand(&cmd, fmt, ap);
    if (len < 0 || !cmd)
        return -1;
    int rc = queue_bytes(c, cmd, (size_t)len);
    redisFreeCommand(cmd);
    return rc;
}

int rconn_command(rconn *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = rconn_vcommand(c, fmt, ap);
    va_end(ap);
    return rc;
}

int rconn_command_argv(rconn *c, int argc, const char **argv, const size_t *argvlen)
{
    char *cmd = NULL;
    if (!c || argc <= 0 || !argv || c->free_requested)
        return -1;
    int len = redisFormatCommandArgv(&cmd, argc, argv, argvlen);
    if (len < 0 || !cmd)
        return -1;
    int rc = queue_bytes(c, cmd, (size_t)len);
    redisFreeCommand(cmd);
    return rc;
}

/* ------------------------------------------------------------- settings */

int rconn_set_priority(rconn *c, int prio)
{
    if (!c || !c->rev || prio < 0 || prio >= event_base_get_npriorities(c->base))
        return -1;
    return event_priority_set(c->rev, prio) == 0 ? 0 : -1;
}

void rconn_set_max_reply(rconn *c, size_t max_bytes)
{
    if (c)
        c->max_reply = max_bytes;
}

size_t rconn_pending_output(const rconn *c)
{
    return c ? c->len - c->off : 0;
}

int rconn_is_connected(const rconn *c)
{
    return c && c->state == RC_CONNECTED;
}

void rconn_free(rconn *c)
{
    if (!c)
        return;
    if (c->in_hook) {
        /* Stop everything now; the memory goes when the hook returns. */
        c->free_requested = 1;
        if (c->rev)
            event_del(c->rev);
        if (c->wev)
            event_del(c->wev);
        if (c->fail_ev)
            event_del(c->fail_ev);
        return;
    }
    destroy(c);
}
