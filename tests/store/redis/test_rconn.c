/*
 * rconn (server/store/redis/rconn.h): the minimal RESP connection.
 *
 * Two kinds of cases:
 *   - against a fake server (a listening socket in this test, written to by
 *     hand): malformed RESP, oversized replies, the peer closing; these run
 *     always;
 *   - against the private redis-server named by BATON_TEST_REDIS
 *     ("unix:/path" or "host:port"; skipped when unset), with a second, plain
 *     hiredis sync connection to publish and kill; plus a one-node Redis
 *     Cluster this test starts itself for sharded pub/sub (skipped when
 *     redis-server cannot start one).
 * Each case drives a real libevent loop until the hooks report, with a
 * deadline that only catches hangs. Every hook also checks that it was not
 * called from inside rconn_open_* or rconn_command.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "redis_sync.h"
#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "rconn.h"

#define TEXT_MAX 160

/* ------------------------------------------------------------- fixture */

enum free_at { FREE_NEVER, FREE_IN_CONNECTED, FREE_IN_REPLY, FREE_IN_CLOSED };

typedef struct fixture {
    struct event_base *base;
    struct event *tick;
    rconn *c;
    int in_api;        /* > 0 while the test is inside rconn_open_* / rconn_command */
    int hooks_in_api;  /* hooks called while in_api: must stay 0 */
    enum free_at free_at;
    int connected, closed;
    char why[TEXT_MAX];
    int nreplies, cap;
    int *type;
    char (*text)[TEXT_MAX];
} fixture;

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
}

/* A reply as text: strings as is, integers in decimal, nil as "(nil)",
 * arrays as "[a,b,c]". */
static void render(const redisReply *r, char *buf, size_t cap)
{
    size_t n = 0;
    switch (r->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_ERROR:
        snprintf(buf, cap, "%.*s", (int)r->len, r->str);
        return;
    case REDIS_REPLY_INTEGER:
        snprintf(buf, cap, "%lld", r->integer);
        return;
    case REDIS_REPLY_NIL:
        snprintf(buf, cap, "(nil)");
        return;
    case REDIS_REPLY_ARRAY:
        n += (size_t)snprintf(buf, cap, "[");
        for (size_t i = 0; i < r->elements && n < cap; i++) {
            char el[TEXT_MAX];
            render(r->element[i], el, sizeof(el));
            n += (size_t)snprintf(buf + n, cap - n, "%s%s", i ? "," : "", el);
        }
        if (n < cap)
            snprintf(buf + n, cap - n, "]");
        return;
    default:
        snprintf(buf, cap, "?%d", r->type);
    }
}

static void on_connected(void *ud)
{
    fixture *f = ud;
    f->hooks_in_api += f->in_api > 0;
    f->connected++;
    if (f->free_at == FREE_IN_CONNECTED) {
        rconn_free(f->c);
        f->c = NULL;
    }
}

static void on_reply(void *ud, const redisReply *r)
{
    fixture *f = ud;
    f->hooks_in_api += f->in_api > 0;
    if (f->nreplies == f->cap) {
        f->cap = f->cap ? f->cap * 2 : 64;
        f->type = realloc(f->type, (size_t)f->cap * sizeof(*f->type));
        f->text = realloc(f->text, (size_t)f->cap * sizeof(*f->text));
        assert_non_null(f->type);
        assert_non_null(f->text);
    }
    f->type[f->nreplies] = r->type;
    render(r, f->text[f->nreplies], TEXT_MAX);
    f->nreplies++;
    if (f->free_at == FREE_IN_REPLY) {
        rconn_free(f->c);
        f->c = NULL;
    }
}

static void on_closed(void *ud, const char *why)
{
    fixture *f = ud;
    f->hooks_in_api += f->in_api > 0;
    f->closed++;
    snprintf(f->why, sizeof(f->why), "%s", why);
    if (f->free_at == FREE_IN_CLOSED) {
        rconn_free(f->c);
        f->c = NULL;
    }
}

static fixture *fx_new(void)
{
    fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->base = event_base_new();
    assert_non_null(f->base);
    f->tick = event_new(f->base, -1, EV_PERSIST, on_tick, NULL);
    struct timeval tv = {0, 5000};
    event_add(f->tick, &tv);
    return f;
}

static void fx_free(fixture *f)
{
    rconn_free(f->c);
    event_free(f->tick);
    event_base_free(f->base);
    free(f->type);
    free(f->text);
    free(f);
}

static const rconn_hooks *hooks_for(fixture *f)
{
    static rconn_hooks h;
    h = (rconn_hooks){.connected = on_connected, .reply = on_reply, .closed = on_closed, .ud = f};
    return &h;
}

static rconn *fx_open_tcp(fixture *f, const char *host, int port)
{
    f->in_api++;
    rconn *c = rconn_open_tcp(f->base, host, port, hooks_for(f));
    f->in_api--;
    assert_non_null(c);
    f->c = c;
    return c;
}

static int fx_cmd(fixture *f, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    f->in_api++;
    int rc = rconn_vcommand(f->c, fmt, ap);
    f->in_api--;
    va_end(ap);
    return rc;
}

/* --------------------------------------------------------- fake server */

/* A listening socket on 127.0.0.1; *port gets its port. */
static int listen_local(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(fd, 4), 0);
    socklen_t len = sizeof(a);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

static void send_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        assert_true(w > 0);
        p += w;
        n -= (size_t)w;
    }
}

static void send_str(int fd, const char *s)
{
    send_all(fd, s, strlen(s));
}

/* Connects an rconn to a fake server; returns the server's end. */
static int fake_connect(fixture *f, int *lfd)
{
    int port;
    *lfd = listen_local(&port);
    fx_open_tcp(f, "127.0.0.1", port);
    RUN_UNTIL(f, f->connected == 1 || f->closed);
    assert_int_equal(f->connected, 1);
    int sfd = accept(*lfd, NULL, NULL); /* already queued: does not block */
    assert_true(sfd >= 0);
    return sfd;
}

/* Reads exactly n bytes from the fake server's end. */
static void recv_exact(fixture *f, int fd, char *buf, size_t n)
{
    size_t got = 0;
    int64_t deadline = now_ms() + WAIT_MS;
    while (got < n && now_ms() < deadline) {
        event_base_loop(f->base, EVLOOP_NONBLOCK); /* lets the rconn write */
        ssize_t r = recv(fd, buf + got, n - got, MSG_DONTWAIT);
        if (r > 0)
            got += (size_t)r;
        else if (r == 0)
            break;
        else
            usleep(1000);
    }
    assert_int_equal(got, n);
}

static void test_bad_arguments(void **state)
{
    (void)state;
    fixture *f = fx_new();
    rconn_hooks h = *hooks_for(f);
    assert_null(rconn_open_tcp(NULL, "127.0.0.1", 6379, &h));
    assert_null(rconn_open_tcp(f->base, NULL, 6379, &h));
    assert_null(rconn_open_tcp(f->base, "127.0.0.1", 0, &h));
    assert_null(rconn_open_tcp(f->base, "127.0.0.1", 65536, &h));
    assert_null(rconn_open_unix(f->base, NULL, &h));
    assert_null(rconn_open_tcp(f->base, "127.0.0.1", 6379, NULL));
    rconn_hooks no_reply = h;
    no_reply.reply = NULL;
    assert_null(rconn_open_tcp(f->base, "127.0.0.1", 6379, &no_reply));
    rconn_hooks no_closed = h;
    no_closed.closed = NULL;
    assert_null(rconn_open_unix(f->base, "/nonexistent", &no_closed));
    assert_int_equal(rconn_command(NULL, "PING"), -1);
    rconn_free(NULL);
    fx_free(f);
}

static void test_connect_refused(void **state)
{
    (void)state;
    fixture *f = fx_new();
    int port;
    int lfd = listen_local(&port);
    close(lfd); /* nothing listens there now */
    fx_open_tcp(f, "127.0.0.1", port);
    fx_cmd(f, "PING"); /* may be refused already: either way no hook now */
    assert_int_equal(f->closed, 0);
    RUN_UNTIL(f, f->closed > 0);
    run_for(f, 50);
    assert_int_equal(f->closed, 1);
    assert_int_equal(f->connected, 0);
    assert_int_equal(f->nreplies, 0);
    assert_non_null(strstr(f->why, "connect"));
    assert_int_equal(fx_cmd(f, "PING"), -1);
    assert_int_equal(f->hooks_in_api, 0);
    fx_free(f);
}

static void test_connect_missing_unix_socket(void **state)
{
    (void)state;
    fixture *f = fx_new();
    f->in_api++;
    f->c = rconn_open_unix(f->base, "/nonexistent/rconn.sock", hooks_for(f));
    f->in_api--;
    assert_non_null(f->c);
    assert_int_equal(f->closed, 0);
    RUN_UNTIL(f, f->closed > 0);
    assert_int_equal(f->closed, 1);
    assert_int_equal(f->hooks_in_api, 0);
    fx_free(f);
}

/* Queued before connect, written once connected, in order; replies split
 * across reads are put together. */
static void test_fake_queued_and_split(void **state)
{
    (void)state;
    fixture *f = fx_new();
    int port;
    int lfd = listen_local(&port);
    fx_open_tcp(f, "127.0.0.1", port);
    assert_int_equal(fx_cmd(f, "PING"), 0);
    assert_int_equal(fx_cmd(f, "ECHO %b", "a\0b", (size_t)3), 0);
    const char *argv[] = {"SET", "k", "v"};
    f->in_api++;
    assert_int_equal(rconn_command_argv(f->c, 3, argv, NULL), 0);
    f->in_api--;
    RUN_UNTIL(f, f->connected == 1);
    int sfd = accept(lfd, NULL, NULL);
    assert_true(sfd >= 0);
    static const char want[] = "*1\r\n$4\r\nPING\r\n"
                               "*2\r\n$4\r\nECHO\r\n$3\r\na\0b\r\n"
                               "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n";
    char got[sizeof(want) - 1];
    recv_exact(f, sfd, got, sizeof(got));
    assert_memory_equal(got, want, sizeof(got));
    send_str(sfd, "+PONG\r\n$3\r\nab");
    RUN_UNTIL(f, f->nreplies == 1);
    send_str(sfd, "c\r\n:42\r\n*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$-1\r\n-ERR no\r\n");
    RUN_UNTIL(f, f->nreplies == 5);
    assert_int_equal(f->type[0], REDIS_REPLY_STATUS);
    assert_string_equal(f->text[0], "PONG");
    assert_string_equal(f->text[1], "abc");
    assert_string_equal(f->text[2], "42");
    assert_string_equal(f->text[3], "[message,c,(nil)]");
    assert_int_equal(f->type[4], REDIS_REPLY_ERROR);
    assert_string_equal(f->text[4], "ERR no");
    assert_int_equal(f->closed, 0);
    assert_int_equal(f->hooks_in_api, 0);
    close(sfd);
    close(lfd);
    fx_free(f);
}

static void test_fake_malformed(void **state)
{
    (void)state;
    fixture *f = fx_new();
    int lfd;
    int sfd = fake_connect(f, &lfd);
    send_str(sfd, "+OK\r\n?what\r\n+NEVER\r\n");
    RUN_UNTIL(f, f->closed > 0);
    run_for(f, 50);
    assert_int_equal(f->closed, 1);
    assert_string_equal(f->why, "protocol error");
    assert_int_equal(f->nreplies, 1);
    assert_string_equal(f->text[0], "OK");
    assert_int_equal(fx_cmd(f, "PING"), -1);
    close(sfd);
    close(lfd);
    fx_free(f);
}

/* A bulk string over the bound closes the connection before it is all in;
 * one within the bound passes. */
static void test_fake_oversized_bulk(void **state)
{
    (void)state;
    fixture *f = fx_new();
    int lfd;
    int sfd = fake_connect(f, &lfd);
    rconn_set_max_reply(f->c, 1024);
    char small[600];
    memset(small, 'x', sizeof(small));
    send_str(sfd, "$600\r\n");
    send_all(sfd, small, sizeof(small));
    send_str(sfd, "\r\n$100000\r\n");
    char chunk[4096];
    memset(chunk, 'y', sizeof(chunk));
    send_all(sfd, chunk, sizeof(chunk)); /* the rest never comes */
    RUN_UNTIL(f, f->closed > 0);
    assert_int_equal(f->closed, 1);
    assert_string_equal(f->why, "protocol error");
    assert_int_equal(f->nreplies, 1);
    assert_int_equal(strlen(f->text[0]), TEXT_MAX - 1); /* 600 x's, cut by render */
    close(sfd);
    close(lfd);
    fx_free(f);
}

/* An array announcing more elements than the bound could hold is refused
 * before anything is allocated for it (default bound, 512 MiB). */
static void test_fake_huge_array(void **state)
{
    (void)state;
    fixture *f = fx_new();
    int lfd;
    int sfd = fake_connect(f, &lfd);
    send_str(sfd, "*100000000\r\n");
    RUN_UNTIL(f, f->closed > 0);
    assert_int_equal(f->closed, 1);
    assert_string_equal(f->why, "protocol error");
    assert_int_equal(f->nreplies, 0);
    close(sfd);
    close(lfd);
    fx_free(f);
}

/* Many small strings adding up past the bound. */
static void test_fake_oversized_array_total(void **state)
{
    (void)state;
    fixture *f = fx_new();
    int lfd;
    int sfd = fake_connect(f, &lfd);
    rconn_set_max_reply(f->c, 2048); /* the array itself: about 850 bytes */
    send_str(sfd, "*100\r\n");
    for (int i = 0; i < 100; i++)
        send_str(sfd, "$5\r\nhello\r\n");
    RUN_UNTIL(f, f->closed > 0);
    assert_string_equal(f->why, "protocol error");
    assert_int_equal(f->nreplies, 0);
    close(sfd);
    close(lfd);
    fx_free(f);
}

/* The peer goes away: a command queued then calls no hook; closed() comes
 * once from the loop. Freeing inside closed() is fine. */
static void test_fake_peer_closes(void **state)
{
    (void)state;
    fixture *f = fx_new();
    int lfd;
    int sfd = fake_connect(f, &lfd);
    close(sfd);
    assert_int_equal(fx_cmd(f, "PING"), 0);
    f->free_at = FREE_IN_CLOSED;
    RUN_UNTIL(f, f->closed > 0);
    run_for(f, 50);
    assert_int_equal(f->closed, 1);
    assert_null(f->c);
    assert_int_equal(f->hooks_in_api, 0);
    close(lfd);
    fx_free(f);
}

/* --------------------------------------------------------- real Redis */

static const char *redis_addr(void)
{
    const char *a = getenv("BATON_TEST_REDIS");
    return a && a[0] ? a : NULL;
}

static void fx_open_redis(fixture *f, const char *addr)
{
    f->in_api++;
    if (strncmp(addr, "unix:", 5) == 0) {
        f->c = rconn_open_unix(f->base, addr + 5, hooks_for(f));
    } else {
        char host[256];
        const char *colon = strrchr(addr, ':');
        assert_non_null(colon);
        snprintf(host, sizeof(host), "%.*s", (int)(colon - addr), addr);
        f->c = rconn_open_tcp(f->base, host, atoi(colon + 1), hooks_for(f));
    }
    f->in_api--;
    assert_non_null(f->c);
}

#define REDIS_OR_SKIP(addr)                                                                                  \
    const char *addr = redis_addr();                                                                         \
    if (!addr)                                                                                               \
        skip();

static void test_redis_ping_before_connect(void **state)
{
    (void)state;
    REDIS_OR_SKIP(addr);
    fixture *f = fx_new();
    fx_open_redis(f, addr);
    assert_int_equal(fx_cmd(f, "PING"), 0);
    assert_int_equal(f->connected, 0);
    RUN_UNTIL(f, f->nreplies == 1);
    assert_int_equal(f->connected, 1);
    assert_int_equal(f->type[0], REDIS_REPLY_STATUS);
    assert_string_equal(f->text[0], "PONG");
    assert_true(rconn_is_connected(f->c));
    assert_int_equal(rconn_pending_output(f->c), 0);
    assert_int_equal(f->hooks_in_api, 0);
    fx_free(f);
}

static void test_redis_error_reply_is_a_reply(void **state)
{
    (void)state;
    REDIS_OR_SKIP(addr);
    fixture *f = fx_new();
    fx_open_redis(f, addr);
    fx_cmd(f, "RCONNNOSUCHCOMMAND x");
    fx_cmd(f, "PING");
    RUN_UNTIL(f, f->nreplies == 2);
    assert_int_equal(f->type[0], REDIS_REPLY_ERROR);
    assert_non_null(strstr(f->text[0], "unknown command"));
    assert_string_equal(f->text[1], "PONG");
    assert_int_equal(f->closed, 0);
    fx_free(f);
}

/* Pushes come through the same callback, in order with replies; PING while
 * subscribed (a reply hiredis async cannot route) is just another reply. */
static void test_redis_subscribe_publish(void **state)
{
    (void)state;
    REDIS_OR_SKIP(addr);
    fixture *f = fx_new();
    redisContext *sync = sync_connect(addr);
    char ch[64], want[TEXT_MAX];
    snprintf(ch, sizeof(ch), "rconn-test-%ld", (long)getpid());
    fx_open_redis(f, addr);
    fx_cmd(f, "SUBSCRIBE %s", ch);
    RUN_UNTIL(f, f->nreplies == 1);
    snprintf(want, sizeof(want), "[subscribe,%s,1]", ch);
    assert_string_equal(f->text[0], want);
    redisReply *r = redisCommand(sync, "PUBLISH %s %s", ch, "hello");
    assert_non_null(r);
    assert_int_equal(r->integer, 1);
    freeReplyObject(r);
    fx_cmd(f, "PING");
    RUN_UNTIL(f, f->nreplies == 3);
    snprintf(want, sizeof(want), "[message,%s,hello]", ch);
    assert_string_equal(f->text[1], want);
    assert_string_equal(f->text[2], "[pong,]");
    fx_cmd(f, "UNSUBSCRIBE %s", ch);
    RUN_UNTIL(f, f->nreplies == 4);
    snprintf(want, sizeof(want), "[unsubscribe,%s,0]", ch);
    assert_string_equal(f->text[3], want);
    assert_int_equal(f->closed, 0);
    redisFree(sync);
    fx_free(f);
}

/* 5000 commands queued at once (about 700 KB, more than one write) come
 * back all, in order. */
static void test_redis_pipeline(void **state)
{
    (void)state;
    REDIS_OR_SKIP(addr);
    enum { N = 5000 };
    fixture *f = fx_new();
    fx_open_redis(f, addr);
    char pad[121];
    memset(pad, 'p', sizeof(pad) - 1);
    pad[sizeof(pad) - 1] = '\0';
    for (int i = 0; i < N; i++)
        assert_int_equal(fx_cmd(f, "ECHO %d-%s", i, pad), 0);
    assert_true(rconn_pending_output(f->c) > 500000);
    RUN_UNTIL(f, f->nreplies == N || f->closed);
    assert_int_equal(f->nreplies, N);
    for (int i = 0; i < N; i++) {
        char want[TEXT_MAX];
        snprintf(want, sizeof(want), "%d-%s", i, pad);
        assert_string_equal(f->text[i], want);
    }
    assert_int_equal(rconn_pending_output(f->c), 0);
    fx_free(f);
}

/* Redis closes the connection: closed() exactly once, commands refused. */
static void test_redis_client_kill(void **state)
{
    (void)state;
    REDIS_OR_SKIP(addr);
    fixture *f = fx_new();
    redisContext *sync = sync_connect(addr);
    fx_open_redis(f, addr);
    fx_cmd(f, "CLIENT ID");
    RUN_UNTIL(f, f->nreplies == 1);
    long long id = atoll(f->text[0]);
    assert_true(id > 0);
    redisReply *r = redisCommand(sync, "CLIENT KILL ID %lld", id);
    assert_non_null(r);
    assert_int_equal(r->integer, 1);
    freeReplyObject(r);
    RUN_UNTIL(f, f->closed > 0);
    run_for(f, 50);
    assert_int_equal(f->closed, 1);
    assert_int_equal(f->nreplies, 1);
    assert_false(rconn_is_connected(f->c));
    assert_int_equal(fx_cmd(f, "PING"), -1);
    redisFree(sync);
    fx_free(f);
}

/* The same for a subscribed connection. */
static void test_redis_kill_subscribed(void **state)
{
    (void)state;
    REDIS_OR_SKIP(addr);
    fixture *f = fx_new();
    redisContext *sync = sync_connect(addr);
    fx_open_redis(f, addr);
    fx_cmd(f, "CLIENT ID");
    fx_cmd(f, "SUBSCRIBE rconn-kill-%ld", (long)getpid());
    RUN_UNTIL(f, f->nreplies == 2);
    redisReply *r = redisCommand(sync, "CLIENT KILL ID %s", f->text[0]);
    assert_non_null(r);
    assert_int_equal(r->integer, 1);
    freeReplyObject(r);
    RUN_UNTIL(f, f->closed > 0);
    run_for(f, 50);
    assert_int_equal(f->closed, 1);
    redisFree(sync);
    fx_free(f);
}

/* rconn_free() inside reply(): no further hook, even with replies pending. */
static void test_redis_free_inside_reply(void **state)
{
    (void)state;
    REDIS_OR_SKIP(addr);
    fixture *f = fx_new();
    fx_open_redis(f, addr);
    for (int i = 0; i < 3; i++)
        fx_cmd(f, "PING");
    f->free_at = FREE_IN_REPLY;
    RUN_UNTIL(f, f->nreplies > 0);
    assert_null(f->c);
    run_for(f, 50);
    assert_int_equal(f->nreplies, 1);
    assert_int_equal(f->closed, 0);
    fx_free(f);
}

/* rconn_free() inside connected(): the queued command gets no reply hook. */
static void test_redis_free_inside_connected(void **state)
{
    (void)state;
    REDIS_OR_SKIP(addr);
    fixture *f = fx_new();
    fx_open_redis(f, addr);
    fx_cmd(f, "PING");
    f->free_at = FREE_IN_CONNECTED;
    RUN_UNTIL(f, f->connected > 0);
    assert_null(f->c);
    run_for(f, 50);
    assert_int_equal(f->nreplies, 0);
    assert_int_equal(f->closed, 0);
    fx_free(f);
}

/* ---------------------------------------------- one-node Redis Cluster */

typedef struct cluster {
    char dir[64];
    int port;
    int started;
} cluster;

static int port_bindable(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return 0;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int ok = bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    close(fd);
    return ok;
}

static void cluster_file(const cluster *cl, const char *name, char *out, size_t cap)
{
    snprintf(out, cap, "%s/%s", cl->dir, name);
}

static int cluster_teardown(void **state)
{
    cluster *cl = *state;
    if (!cl)
        return 0;
    if (cl->started) {
        redisContext *c = redisConnect("127.0.0.1", cl->port);
        if (c && !c->err) {
            redisReply *r = redisCommand(c, "SHUTDOWN NOSAVE");
            if (r)
                freeReplyObject(r);
        }
        if (c)
            redisFree(c);
        /* SHUTDOWN did not take: stop it through its pid file. */
        char path[128];
        cluster_file(cl, "redis.pid", path, sizeof(path));
        FILE *pf = fopen(path, "r");
        long pid = 0;
        if (pf) {
            if (fscanf(pf, "%ld", &pid) == 1 && pid > 0)
                kill((pid_t)pid, SIGTERM);
            fclose(pf);
        }
    }
    if (cl->dir[0]) {
        static const char *files[] = {"nodes.conf", "redis.log", "redis.pid", "dump.rdb"};
        char path[128];
        for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
            cluster_file(cl, files[i], path, sizeof(path));
            unlink(path);
        }
        rmdir(cl->dir);
    }
    free(cl);
    *state = NULL;
    return 0;
}

/* Starts a one-node cluster owning every slot; 0, or -1 when redis-server
 * cannot (not installed, no cluster support, no port). */
static int cluster_start(cluster *cl)
{
    snprintf(cl->dir, sizeof(cl->dir), "/tmp/rconn-cluster-XXXXXX");
    if (!mkdtemp(cl->dir)) {
        cl->dir[0] = '\0';
        return -1;
    }
    /* The cluster bus listens on port + 10000: both must be free. */
    int base = 20000 + (int)(getpid() % 9000);
    for (int i = 0; i < 200 && !cl->port; i++) {
        int p = 20000 + (base - 20000 + i * 37) % 9000;
        if (port_bindable(p) && port_bindable(p + 10000))
            cl->port = p;
    }
    if (!cl->port)
        return -1;
    char cmdline[1024];
    snprintf(cmdline, sizeof(cmdline),
             "redis-server --port %d --bind 127.0.0.1 --cluster-enabled yes"
             " --cluster-config-file %s/nodes.conf --dir %s --save '' --appendonly no"
             " --daemonize yes --pidfile %s/redis.pid --logfile %s/redis.log >/dev/null 2>&1",
             cl->port, cl->dir, cl->dir, cl->dir, cl->dir);
    if (system(cmdline) != 0)
        return -1;
    cl->started = 1;
    redisContext *c = NULL;
    int64_t deadline = now_ms() + WAIT_MS;
    while (now_ms() < deadline) {
        c = redisConnect("127.0.0.1", cl->port);
        if (c && !c->err)
            break;
        if (c)
            redisFree(c);
        c = NULL;
        usleep(20000);
    }
    if (!c)
        return -1;
    redisReply *r = redisCommand(c, "CLUSTER ADDSLOTSRANGE 0 16383");
    int ok = r && r->type == REDIS_REPLY_STATUS;
    if (r)
        freeReplyObject(r);
    while (ok && now_ms() < deadline) {
        r = redisCommand(c, "CLUSTER INFO");
        int up = r && r->type == REDIS_REPLY_STRING && strstr(r->str, "cluster_state:ok");
        if (r)
            freeReplyObject(r);
        if (up)
            break;
        usleep(20000);
    }
    redisFree(c);
    return ok && now_ms() < deadline ? 0 : -1;
}

/* Sharded pub/sub, the reason rconn exists. */
static void test_cluster_sharded_pubsub(void **state)
{
    REDIS_OR_SKIP(addr);
    (void)addr;
    cluster *cl = calloc(1, sizeof(*cl));
    assert_non_null(cl);
    *state = cl;
    if (cluster_start(cl) != 0) {
        print_message("redis-server cannot start a cluster node here: skipped\n");
        skip();
    }
    fixture *f = fx_new();
    fx_open_tcp(f, "127.0.0.1", cl->port);
    fx_cmd(f, "SSUBSCRIBE {rconn}ch");
    RUN_UNTIL(f, f->nreplies == 1 || f->closed);
    assert_string_equal(f->text[0], "[ssubscribe,{rconn}ch,1]");
    redisContext *sync = redisConnect("127.0.0.1", cl->port);
    assert_non_null(sync);
    assert_int_equal(sync->err, 0);
    redisReply *r = redisCommand(sync, "SPUBLISH {rconn}ch hello");
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    assert_int_equal(r->integer, 1);
    freeReplyObject(r);
    RUN_UNTIL(f, f->nreplies == 2 || f->closed);
    assert_string_equal(f->text[1], "[smessage,{rconn}ch,hello]");
    fx_cmd(f, "SUNSUBSCRIBE {rconn}ch");
    RUN_UNTIL(f, f->nreplies == 3 || f->closed);
    assert_string_equal(f->text[2], "[sunsubscribe,{rconn}ch,0]");
    assert_int_equal(f->closed, 0);
    assert_int_equal(f->hooks_in_api, 0);
    redisFree(sync);
    fx_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_connect_refused),
        cmocka_unit_test(test_connect_missing_unix_socket),
        cmocka_unit_test(test_fake_queued_and_split),
        cmocka_unit_test(test_fake_malformed),
        cmocka_unit_test(test_fake_oversized_bulk),
        cmocka_unit_test(test_fake_huge_array),
        cmocka_unit_test(test_fake_oversized_array_total),
        cmocka_unit_test(test_fake_peer_closes),
        cmocka_unit_test(test_redis_ping_before_connect),
        cmocka_unit_test(test_redis_error_reply_is_a_reply),
        cmocka_unit_test(test_redis_subscribe_publish),
        cmocka_unit_test(test_redis_pipeline),
        cmocka_unit_test(test_redis_client_kill),
        cmocka_unit_test(test_redis_kill_subscribed),
        cmocka_unit_test(test_redis_free_inside_reply),
        cmocka_unit_test(test_redis_free_inside_connected),
        cmocka_unit_test_teardown(test_cluster_sharded_pubsub, cluster_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
