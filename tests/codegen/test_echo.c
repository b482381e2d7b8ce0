/*
 * End-to-end tests of the generated grpc_c stubs (echo/test/echo.proto)
 * against an independent peer: echo_server.py (Python grpcio), spawned on
 * 127.0.0.1 with a free port. No gRPC header is included here on purpose:
 * grpc_c.h must be enough for callers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "echo/test/echo.grpc-c.h"

extern char **environ;

static pid_t server_pid = -1;
static int server_stdin = -1;
static char target[64];
static grpc_channel *ch;

/* Spawns the Python server and reads "PORT n" from its stdout. */
static int start_server(void)
{
    int in[2], out[2];
    if (pipe(in) != 0 || pipe(out) != 0)
        return -1;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_addclose(&fa, in[1]);
    posix_spawn_file_actions_addclose(&fa, out[0]);
    char *argv[] = {(char *)ECHO_PYTHON, (char *)ECHO_SERVER_PY, (char *)ECHO_PY_GEN, NULL};
    int rc = posix_spawn(&server_pid, ECHO_PYTHON, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(in[0]);
    close(out[1]);
    if (rc != 0)
        return -1;
    server_stdin = in[1];
    FILE *f = fdopen(out[0], "r");
    char line[64];
    int port = 0;
    if (!f || !fgets(line, sizeof line, f) || sscanf(line, "PORT %d", &port) != 1 || port <= 0) {
        if (f)
            fclose(f);
        return -1;
    }
    fclose(f);
    snprintf(target, sizeof target, "127.0.0.1:%d", port);
    return 0;
}

static int group_setup(void **state)
{
    (void)state;
    /* Spawn before gRPC starts its threads. */
    if (start_server() != 0) {
        fprintf(stderr, "cannot start %s\n", ECHO_SERVER_PY);
        return -1;
    }
    ch = grpc_c_channel_create_insecure(target, NULL);
    return ch ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    grpc_c_channel_destroy(ch);
    if (server_stdin >= 0)
        close(server_stdin); /* server exits on EOF */
    if (server_pid > 0) {
        int st;
        for (int i = 0; i < 100 && waitpid(server_pid, &st, WNOHANG) == 0; i++)
            usleep(50 * 1000);
        if (waitpid(server_pid, &st, WNOHANG) == 0) {
            kill(server_pid, SIGKILL);
            waitpid(server_pid, &st, 0);
        }
    }
    return 0;
}

static Echo__Test__EchoRequest req_of(const char *text, int code, int64_t sleep_ms, int count)
{
    Echo__Test__EchoRequest r = ECHO__TEST__ECHO_REQUEST__INIT;
    r.text = (char *)text;
    r.code = code;
    r.sleep_ms = sleep_ms;
    r.count = count;
    return r;
}

static int has_md(const Echo__Test__EchoReply *r, const char *kv)
{
    for (size_t i = 0; i < r->n_metadata; i++)
        if (strcmp(r->metadata[i], kv) == 0)
            return 1;
    return 0;
}

/* ---- unary ---- */

static void test_unary_ok(void **state)
{
    (void)state;
    Echo__Test__EchoRequest req = req_of("hello", 0, 0, 0);
    Echo__Test__EchoReply *resp = NULL;
    grpc_c_status st = GRPC_C_STATUS_INIT;
    assert_int_equal(echo__test__echo__grpc__unary(ch, &req, &resp, &st, NULL), GRPC_C_CODE_OK);
    assert_int_equal(st.code, GRPC_C_CODE_OK);
    assert_string_equal(st.message, "");
    assert_non_null(resp);
    assert_string_equal(resp->text, "hello");
    echo__test__echo_reply__free_unpacked(resp, NULL);
    grpc_c_status_clear(&st);
}

static void test_unary_server_status(void **state)
{
    (void)state;
    Echo__Test__EchoRequest req = req_of("key: must not be empty", GRPC_C_CODE_INVALID_ARGUMENT, 0, 0);
    Echo__Test__EchoReply *resp = (Echo__Test__EchoReply *)&req; /* must be reset */
    grpc_c_status st = GRPC_C_STATUS_INIT;
    assert_int_equal(echo__test__echo__grpc__unary(ch, &req, &resp, &st, NULL), GRPC_C_CODE_INVALID_ARGUMENT);
    assert_null(resp);
    assert_int_equal(st.code, GRPC_C_CODE_INVALID_ARGUMENT);
    assert_string_equal(st.message, "key: must not be empty");
    /* Reusing the status struct must not leak the previous message. */
    req = req_of("held by w-1", GRPC_C_CODE_ABORTED, 0, 0);
    assert_int_equal(echo__test__echo__grpc__unary(ch, &req, NULL, &st, NULL), GRPC_C_CODE_ABORTED);
    assert_string_equal(st.message, "held by w-1");
    assert_string_equal(grpc_c_code_name(st.code), "ABORTED");
    grpc_c_status_clear(&st);
    assert_null(st.message);
}

static void test_unary_deadline(void **state)
{
    (void)state;
    Echo__Test__EchoRequest req = req_of("slow", 0, 10000, 0);
    Echo__Test__EchoReply *resp = NULL;
    grpc_c_status st = GRPC_C_STATUS_INIT;
    grpc_c_call_options o = {0};
    o.timeout_ms = 200;
    assert_int_equal(echo__test__echo__grpc__unary(ch, &req, &resp, &st, &o), GRPC_C_CODE_DEADLINE_EXCEEDED);
    assert_null(resp);
    /* The same through an absolute (realtime) deadline. */
    grpc_c_call_options a = {0};
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    a.deadline_unix_ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000 + 200;
    time_t t0 = time(NULL);
    assert_int_equal(echo__test__echo__grpc__unary(ch, &req, &resp, &st, &a), GRPC_C_CODE_DEADLINE_EXCEEDED);
    assert_true(time(NULL) - t0 < 8); /* not the server's 10 s */
    grpc_c_status_clear(&st);
}

static void test_unary_metadata(void **state)
{
    (void)state;
    Echo__Test__EchoRequest req = req_of("md", 0, 0, 0);
    Echo__Test__EchoReply *resp = NULL;
    grpc_c_metadata md[] = {
        {"authorization", "Bearer s3cret", 0}, {"x-trace", "abc-123", 0}, {"x-len", "12345", 3}};
    grpc_c_call_options o = {0};
    o.metadata = md;
    o.metadata_count = 3;
    assert_int_equal(echo__test__echo__grpc__unary(ch, &req, &resp, NULL, &o), GRPC_C_CODE_OK);
    assert_true(has_md(resp, "authorization=Bearer s3cret"));
    assert_true(has_md(resp, "x-trace=abc-123"));
    assert_true(has_md(resp, "x-len=123")); /* value_len honoured */
    echo__test__echo_reply__free_unpacked(resp, NULL);
}

/* Second service; request type from an imported package. */
static void test_second_service(void **state)
{
    (void)state;
    Echo__Common__Note n = ECHO__COMMON__NOTE__INIT, *out = NULL;
    n.text = "ping";
    n.number = 41;
    assert_int_equal(echo__test__admin__grpc__ping(ch, &n, &out, NULL, NULL), GRPC_C_CODE_OK);
    assert_string_equal(out->text, "ping");
    assert_int_equal(out->number, 42);
    echo__common__note__free_unpacked(out, NULL);
    assert_string_equal(echo__test__admin__grpc_service.name, "echo.test.Admin");
    assert_string_equal(echo__test__admin__grpc__ping_method.path, "/echo.test.Admin/Ping");
}

struct unary_worker {
    int ok;
    int id;
};

static void *unary_worker(void *arg)
{
    struct unary_worker *w = arg;
    char text[32];
    for (int i = 0; i < 20; i++) {
        snprintf(text, sizeof text, "t%d-%d", w->id, i);
        Echo__Test__EchoRequest req = req_of(text, 0, 0, 0);
        Echo__Test__EchoReply *resp = NULL;
        if (echo__test__echo__grpc__unary(ch, &req, &resp, NULL, NULL) == GRPC_C_CODE_OK &&
            strcmp(resp->text, text) == 0)
            w->ok++;
        if (resp)
            echo__test__echo_reply__free_unpacked(resp, NULL);
    }
    return NULL;
}

static void test_unary_threads(void **state)
{
    (void)state;
    pthread_t t[4];
    struct unary_worker w[4] = {{0, 0}, {0, 1}, {0, 2}, {0, 3}};
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, unary_worker, &w[i]), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < 4; i++)
        assert_int_equal(w[i].ok, 20);
}

/* A TCP socket bound to a free loopback port (listening if `listening`);
 * writes "127.0.0.1:PORT" to t. */
static int loopback_socket(int listening, char *t, size_t tlen)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    socklen_t len = sizeof a;
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof a), 0);
    if (listening)
        assert_int_equal(listen(s, 16), 0);
    assert_int_equal(getsockname(s, (struct sockaddr *)&a, &len), 0);
    snprintf(t, tlen, "127.0.0.1:%d", ntohs(a.sin_port));
    return s;
}

static void test_unavailable(void **state)
{
    (void)state;
    /* A port nobody listens on: bind, learn the port, close. */
    char t[64];
    close(loopback_socket(0, t, sizeof t));
    grpc_channel *dead = grpc_c_channel_create_insecure(t, NULL);
    assert_non_null(dead);
    Echo__Test__EchoRequest req = req_of("x", 0, 0, 0);
    Echo__Test__EchoReply *resp = NULL;
    grpc_c_status st = GRPC_C_STATUS_INIT;
    grpc_c_call_options o = {0};
    o.timeout_ms = 5000;
    assert_int_equal(echo__test__echo__grpc__unary(dead, &req, &resp, &st, &o), GRPC_C_CODE_UNAVAILABLE);
    assert_null(resp);
    grpc_c_status_clear(&st);
    grpc_c_channel_destroy(dead);
}

/* A peer that completes TCP handshakes (the kernel does, from the backlog)
 * but never speaks HTTP/2, like a frozen server: a channel to it stays
 * CONNECTING for gRPC's 20 s connect timeout. start_timeout_ms must bound
 * a stream's start there; it has no deadline to do it. */
static void test_start_timeout_on_silent_peer(void **state)
{
    (void)state;
    char t[64];
    int s = loopback_socket(1, t, sizeof t);
    grpc_channel *silent = grpc_c_channel_create_insecure(t, NULL);
    assert_non_null(silent);

    grpc_c_call_options o = {0};
    o.start_timeout_ms = 300;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    grpc_c_call *c = echo__test__echo__grpc__bidi_start(silent, &o);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_non_null(c);
    long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    if (ms > 5000) /* far below the 20 s it took without start_timeout_ms */
        fail_msg("start returned after %ld ms", ms);
    Echo__Test__EchoReply *r;
    assert_int_equal(echo__test__echo__grpc__bidi_read(c, &r), GRPC_C_END);
    grpc_c_status st = GRPC_C_STATUS_INIT;
    assert_int_equal(echo__test__echo__grpc__bidi_finish(c, &st), GRPC_C_CODE_DEADLINE_EXCEEDED);
    assert_non_null(strstr(st.message, "could not start"));
    grpc_c_status_clear(&st);
    echo__test__echo__grpc__bidi_destroy(c);
    grpc_c_channel_destroy(silent);
    close(s);
}

/* ---- server streaming ---- */

static void test_server_stream(void **state)
{
    (void)state;
    Echo__Test__EchoRequest req = req_of("s", 0, 0, 5);
    grpc_c_metadata md[] = {{"x-who", "tester", 0}};
    grpc_c_call_options o = {0};
    o.metadata = md;
    o.metadata_count = 1;
    grpc_c_call *c = echo__test__echo__grpc__server_stream_start(ch, &req, &o);
    assert_non_null(c);
    Echo__Test__EchoReply *r;
    for (int i = 0; i < 5; i++) {
        assert_int_equal(echo__test__echo__grpc__server_stream_read(c, &r), GRPC_C_OK);
        assert_int_equal(r->index, i);
        assert_string_equal(r->text, "s");
        if (i == 0)
            assert_true(has_md(r, "x-who=tester"));
        echo__test__echo_reply__free_unpacked(r, NULL);
    }
    assert_int_equal(echo__test__echo__grpc__server_stream_read(c, &r), GRPC_C_END);
    assert_null(r);
    assert_int_equal(echo__test__echo__grpc__server_stream_read(c, &r), GRPC_C_END); /* stays ended */
    grpc_c_status st = GRPC_C_STATUS_INIT;
    assert_int_equal(echo__test__echo__grpc__server_stream_finish(c, &st), GRPC_C_CODE_OK);
    assert_int_equal(echo__test__echo__grpc__server_stream_finish(c, &st), GRPC_C_CODE_OK); /* repeatable */
    assert_int_equal(echo__test__echo__grpc__server_stream_read(c, &r), GRPC_C_ERR_STATE);
    grpc_c_status_clear(&st);
    echo__test__echo__grpc__server_stream_destroy(c);
}

static void test_server_stream_error_status(void **state)
{
    (void)state;
    Echo__Test__EchoRequest req = req_of("held by worker-3", GRPC_C_CODE_ABORTED, 0, 2);
    grpc_c_call *c = echo__test__echo__grpc__server_stream_start(ch, &req, NULL);
    Echo__Test__EchoReply *r;
    int n = 0;
    while (echo__test__echo__grpc__server_stream_read(c, &r) == GRPC_C_OK) {
        n++;
        echo__test__echo_reply__free_unpacked(r, NULL);
    }
    assert_int_equal(n, 2);
    grpc_c_status st = GRPC_C_STATUS_INIT;
    assert_int_equal(echo__test__echo__grpc__server_stream_finish(c, &st), GRPC_C_CODE_ABORTED);
    assert_string_equal(st.message, "held by worker-3");
    grpc_c_status_clear(&st);
    echo__test__echo__grpc__server_stream_destroy(c);
}

static void test_read_timeout(void **state)
{
    (void)state;
    Echo__Test__EchoRequest req = req_of("late", 0, 1000, 2);
    grpc_c_call *c = echo__test__echo__grpc__server_stream_start(ch, &req, NULL);
    Echo__Test__EchoReply *r = NULL;
    int timeouts = 0, got = 0, rc = GRPC_C_TIMEOUT;
    /* Bounded loop (catches hangs): at most ~10 s. */
    for (int i = 0; i < 1000 && got < 2; i++) {
        rc = echo__test__echo__grpc__server_stream_read_timeout(c, &r, 10);
        if (rc == GRPC_C_TIMEOUT) {
            assert_null(r);
            timeouts++;
        } else {
            assert_int_equal(rc, GRPC_C_OK);
            assert_int_equal(r->index, got); /* nothing lost across timeouts */
            got++;
            echo__test__echo_reply__free_unpacked(r, NULL);
        }
    }
    assert_int_equal(got, 2);
    assert_true(timeouts > 0);
    assert_int_equal(echo__test__echo__grpc__server_stream_read(c, &r), GRPC_C_END);
    assert_int_equal(echo__test__echo__grpc__server_stream_finish(c, NULL), GRPC_C_CODE_OK);
    echo__test__echo__grpc__server_stream_destroy(c);
}

static int64_t server_cancel_count(void)
{
    Echo__Common__Note n = ECHO__COMMON__NOTE__INIT, *out = NULL;
    n.text = "cancelled";
    if (echo__test__admin__grpc__ping(ch, &n, &out, NULL, NULL) != GRPC_C_CODE_OK)
        return -1;
    int64_t v = out->number;
    echo__common__note__free_unpacked(out, NULL);
    return v;
}

static void test_cancel_long_stream(void **state)
{
    (void)state;
    int64_t before = server_cancel_count();
    assert_true(before >= 0);
    Echo__Test__EchoRequest req = req_of("forever", 0, 20, 1000000);
    grpc_c_call *c = echo__test__echo__grpc__server_stream_start(ch, &req, NULL);
    Echo__Test__EchoReply *r;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(echo__test__echo__grpc__server_stream_read(c, &r), GRPC_C_OK);
        echo__test__echo_reply__free_unpacked(r, NULL);
    }
    echo__test__echo__grpc__server_stream_cancel(c);
    echo__test__echo__grpc__server_stream_cancel(c); /* idempotent */
    /* Messages already buffered may still come; then END. */
    int rc, n = 0;
    while ((rc = echo__test__echo__grpc__server_stream_read(c, &r)) == GRPC_C_OK && n++ < 1000)
        echo__test__echo_reply__free_unpacked(r, NULL);
    assert_int_equal(rc, GRPC_C_END);
    grpc_c_status st = GRPC_C_STATUS_INIT;
    assert_int_equal(echo__test__echo__grpc__server_stream_finish(c, &st), GRPC_C_CODE_CANCELLED);
    grpc_c_status_clear(&st);
    echo__test__echo__grpc__server_stream_destroy(c);
    /* The server must have seen the cancel (poll, generous bound). */
    int64_t after = before;
    for (int i = 0; i < 100 && after <= before; i++) {
        usleep(50 * 1000);
        after = server_cancel_count();
    }
    assert_true(after > before);
}

static void *cancel_later(void *arg)
{
    usleep(100 * 1000);
    grpc_c_call_cancel(arg);
    return NULL;
}

static void test_cancel_from_other_thread(void **state)
{
    (void)state;
    Echo__Test__EchoRequest req = req_of("never", 0, 60000, 1);
    grpc_c_call *c = echo__test__echo__grpc__server_stream_start(ch, &req, NULL);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, cancel_later, c), 0);
    time_t t0 = time(NULL);
    Echo__Test__EchoReply *r;
    assert_int_equal(echo__test__echo__grpc__server_stream_read(c, &r), GRPC_C_END); /* woken by cancel */
    pthread_join(t, NULL);
    assert_true(time(NULL) - t0 < 30);
    assert_int_equal(echo__test__echo__grpc__server_stream_finish(c, NULL), GRPC_C_CODE_CANCELLED);
    echo__test__echo__grpc__server_stream_destroy(c);
}

static void test_finish_discards_unread(void **state)
{
    (void)state;
    Echo__Test__EchoRequest req = req_of("many", 0, 0, 200);
    grpc_c_call *c = echo__test__echo__grpc__server_stream_start(ch, &req, NULL);
    Echo__Test__EchoReply *r;
    assert_int_equal(echo__test__echo__grpc__server_stream_read(c, &r), GRPC_C_OK);
    echo__test__echo_reply__free_unpacked(r, NULL);
    assert_int_equal(echo__test__echo__grpc__server_stream_finish(c, NULL), GRPC_C_CODE_OK);
    echo__test__echo__grpc__server_stream_destroy(c);
}

/* ---- client streaming ---- */

static void test_client_stream_sum(void **state)
{
    (void)state;
    grpc_c_call *c = echo__test__echo__grpc__client_stream_start(ch, NULL);
    assert_non_null(c);
    for (int i = 1; i <= 10; i++) {
        Echo__Test__Outer__Inner in = ECHO__TEST__OUTER__INNER__INIT;
        in.value = i;
        assert_int_equal(echo__test__echo__grpc__client_stream_write(c, &in), GRPC_C_OK);
    }
    assert_int_equal(echo__test__echo__grpc__client_stream_close_send(c), GRPC_C_OK);
    assert_int_equal(echo__test__echo__grpc__client_stream_close_send(c), GRPC_C_OK); /* idempotent */
    Echo__Test__Outer__Inner in = ECHO__TEST__OUTER__INNER__INIT;
    assert_int_equal(echo__test__echo__grpc__client_stream_write(c, &in), GRPC_C_ERR_STATE);
    Echo__Test__Outer__Inner *sum = NULL;
    grpc_c_status st = GRPC_C_STATUS_INIT;
    assert_int_equal(echo__test__echo__grpc__client_stream_finish(c, &sum, &st), GRPC_C_CODE_OK);
    assert_non_null(sum);
    assert_int_equal(sum->value, 55);
    protobuf_c_message_free_unpacked(&sum->base, NULL); /* nested: no typed helper */
    grpc_c_status_clear(&st);
    echo__test__echo__grpc__client_stream_destroy(c);

    /* finish half-closes by itself; an empty stream sums to 0. */
    c = echo__test__echo__grpc__client_stream_start(ch, NULL);
    assert_int_equal(echo__test__echo__grpc__client_stream_finish(c, &sum, NULL), GRPC_C_CODE_OK);
    assert_int_equal(sum->value, 0);
    protobuf_c_message_free_unpacked(&sum->base, NULL); /* nested: no typed helper */
    echo__test__echo__grpc__client_stream_destroy(c);
}

/* ---- bidi ---- */

static void test_bidi_ping_pong(void **state)
{
    (void)state;
    grpc_c_call *c = echo__test__echo__grpc__bidi_start(ch, NULL);
    assert_non_null(c);
    char text[32];
    for (int i = 0; i < 5; i++) {
        snprintf(text, sizeof text, "ping %d", i);
        Echo__Test__EchoRequest req = req_of(text, 0, 0, 0);
        assert_int_equal(echo__test__echo__grpc__bidi_write(c, &req), GRPC_C_OK);
        Echo__Test__EchoReply *r;
        assert_int_equal(echo__test__echo__grpc__bidi_read(c, &r), GRPC_C_OK);
        assert_string_equal(r->text, text);
        assert_int_equal(r->index, i);
        echo__test__echo_reply__free_unpacked(r, NULL);
    }
    assert_int_equal(echo__test__echo__grpc__bidi_close_send(c), GRPC_C_OK);
    Echo__Test__EchoReply *r;
    assert_int_equal(echo__test__echo__grpc__bidi_read(c, &r), GRPC_C_END);
    assert_int_equal(echo__test__echo__grpc__bidi_finish(c, NULL), GRPC_C_CODE_OK);
    echo__test__echo__grpc__bidi_destroy(c);
}

/* A read armed by read_timeout stays armed across a write (bidi in one thread). */
static void test_bidi_timeout_then_write(void **state)
{
    (void)state;
    grpc_c_call *c = echo__test__echo__grpc__bidi_start(ch, NULL);
    Echo__Test__EchoReply *r;
    assert_int_equal(echo__test__echo__grpc__bidi_read_timeout(c, &r, 50), GRPC_C_TIMEOUT);
    Echo__Test__EchoRequest req = req_of("after timeout", 0, 0, 0);
    assert_int_equal(echo__test__echo__grpc__bidi_write(c, &req), GRPC_C_OK);
    int rc = GRPC_C_TIMEOUT;
    for (int i = 0; i < 100 && rc == GRPC_C_TIMEOUT; i++)
        rc = echo__test__echo__grpc__bidi_read_timeout(c, &r, 100);
    assert_int_equal(rc, GRPC_C_OK);
    assert_string_equal(r->text, "after timeout");
    echo__test__echo_reply__free_unpacked(r, NULL);
    assert_int_equal(echo__test__echo__grpc__bidi_finish(c, NULL), GRPC_C_CODE_OK);
    echo__test__echo__grpc__bidi_destroy(c);
}

static void test_bidi_server_abort(void **state)
{
    (void)state;
    grpc_c_call *c = echo__test__echo__grpc__bidi_start(ch, NULL);
    Echo__Test__EchoRequest req = req_of("not the holder", GRPC_C_CODE_FAILED_PRECONDITION, 0, 0);
    assert_int_equal(echo__test__echo__grpc__bidi_write(c, &req), GRPC_C_OK);
    Echo__Test__EchoReply *r;
    assert_int_equal(echo__test__echo__grpc__bidi_read(c, &r), GRPC_C_END);
    grpc_c_status st = GRPC_C_STATUS_INIT;
    assert_int_equal(echo__test__echo__grpc__bidi_finish(c, &st), GRPC_C_CODE_FAILED_PRECONDITION);
    assert_string_equal(st.message, "not the holder");
    grpc_c_status_clear(&st);
    echo__test__echo__grpc__bidi_destroy(c);
}

/* Destroy with the call still open and a read armed: no hang, no leak. */
static void test_destroy_running(void **state)
{
    (void)state;
    grpc_c_call *c = echo__test__echo__grpc__bidi_start(ch, NULL);
    Echo__Test__EchoReply *r;
    assert_int_equal(echo__test__echo__grpc__bidi_read_timeout(c, &r, 10), GRPC_C_TIMEOUT);
    echo__test__echo__grpc__bidi_destroy(c);
    Echo__Test__EchoRequest req = req_of("x", 0, 0, 1000);
    c = echo__test__echo__grpc__server_stream_start(ch, &req, NULL);
    assert_int_equal(echo__test__echo__grpc__server_stream_read(c, &r), GRPC_C_OK);
    echo__test__echo_reply__free_unpacked(r, NULL);
    echo__test__echo__grpc__server_stream_destroy(c);
}

/* ---- misuse is reported, never crashes ---- */

static void test_misuse(void **state)
{
    (void)state;
    Echo__Test__EchoRequest req = req_of("x", 0, 0, 1);
    Echo__Common__Note wrong = ECHO__COMMON__NOTE__INIT;
    ProtobufCMessage *m = NULL;
    grpc_c_status st = GRPC_C_STATUS_INIT;
    /* wrong request type for the method */
    assert_int_equal(grpc_c_unary(ch, &echo__test__echo__grpc__unary_method, &wrong.base, &m, &st, NULL),
                     GRPC_C_CODE_INVALID_ARGUMENT);
    assert_null(m);
    /* unary method used as a stream and vice versa */
    assert_null(grpc_c_call_start(ch, &echo__test__echo__grpc__unary_method, &req.base, NULL));
    assert_int_equal(
        grpc_c_unary(ch, &echo__test__echo__grpc__server_stream_method, &req.base, &m, &st, NULL),
        GRPC_C_CODE_INVALID_ARGUMENT);
    assert_null(grpc_c_call_start(ch, &echo__test__echo__grpc__bidi_method, &req.base,
                                  NULL)); /* bidi takes no request */
    grpc_c_status_clear(&st);

    grpc_c_call *c = echo__test__echo__grpc__server_stream_start(ch, &req, NULL);
    assert_int_equal(grpc_c_call_write(c, &req.base), GRPC_C_ERR_STATE); /* server stream: no writes */
    grpc_c_call_destroy(c);
    c = echo__test__echo__grpc__client_stream_start(ch, NULL);
    assert_int_equal(grpc_c_call_read(c, &m), GRPC_C_ERR_STATE);           /* client stream: no reads */
    assert_int_equal(grpc_c_call_write(c, &req.base), GRPC_C_ERR_INVALID); /* wrong type */
    assert_ptr_equal(grpc_c_call_method(c), &echo__test__echo__grpc__client_stream_method);
    grpc_c_call_destroy(c);
    grpc_c_call_destroy(NULL);
    assert_string_equal(grpc_c_result_str(GRPC_C_TIMEOUT), "timed out (call still alive)");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unary_ok),
        cmocka_unit_test(test_unary_server_status),
        cmocka_unit_test(test_unary_deadline),
        cmocka_unit_test(test_unary_metadata),
        cmocka_unit_test(test_second_service),
        cmocka_unit_test(test_unary_threads),
        cmocka_unit_test(test_unavailable),
        cmocka_unit_test(test_start_timeout_on_silent_peer),
        cmocka_unit_test(test_server_stream),
        cmocka_unit_test(test_server_stream_error_status),
        cmocka_unit_test(test_read_timeout),
        cmocka_unit_test(test_cancel_long_stream),
        cmocka_unit_test(test_cancel_from_other_thread),
        cmocka_unit_test(test_finish_discards_unread),
        cmocka_unit_test(test_client_stream_sum),
        cmocka_unit_test(test_bidi_ping_pong),
        cmocka_unit_test(test_bidi_timeout_then_write),
        cmocka_unit_test(test_bidi_server_abort),
        cmocka_unit_test(test_destroy_running),
        cmocka_unit_test(test_misuse),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
