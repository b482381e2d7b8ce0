/*
 * Generator-level tests of protoc-gen-grpc-c: the stubs generated for the
 * test protos have exactly the expected names and C signatures (checked by
 * the compiler through typed function pointers), the method tables carry
 * paths, kinds and descriptors, and bad input is reported through
 * CodeGeneratorResponse.error (protoc fails with the plugin's message).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "echo/test/echo.grpc-c.h"
#include "cpkg.grpc-c.h"
#include "flat.grpc-c.h"

/* Compile-time signature checks: a wrong generated prototype fails the build. */
static int (*const unary_fn)(grpc_channel *, const Echo__Test__EchoRequest *, Echo__Test__EchoReply **,
                             grpc_c_status *, const grpc_c_call_options *) = echo__test__echo__grpc__unary;
static grpc_c_call *(*const ss_start)(grpc_channel *, const Echo__Test__EchoRequest *,
                                      const grpc_c_call_options *) =
    echo__test__echo__grpc__server_stream_start;
static int (*const ss_read)(grpc_c_call *,
                            Echo__Test__EchoReply **) = echo__test__echo__grpc__server_stream_read;
static int (*const ss_read_to)(grpc_c_call *, Echo__Test__EchoReply **,
                               int64_t) = echo__test__echo__grpc__server_stream_read_timeout;
static int (*const ss_finish)(grpc_c_call *, grpc_c_status *) = echo__test__echo__grpc__server_stream_finish;
static grpc_c_call *(*const cs_start)(grpc_channel *, const grpc_c_call_options *) =
    echo__test__echo__grpc__client_stream_start;
static int (*const cs_write)(grpc_c_call *,
                             const Echo__Test__Outer__Inner *) = echo__test__echo__grpc__client_stream_write;
static int (*const cs_finish)(grpc_c_call *, Echo__Test__Outer__Inner **,
                              grpc_c_status *) = echo__test__echo__grpc__client_stream_finish;
static int (*const bidi_write)(grpc_c_call *,
                               const Echo__Test__EchoRequest *) = echo__test__echo__grpc__bidi_write;
static int (*const bidi_read)(grpc_c_call *, Echo__Test__EchoReply **) = echo__test__echo__grpc__bidi_read;
static int (*const bidi_close)(grpc_c_call *) = echo__test__echo__grpc__bidi_close_send;
static void (*const bidi_cancel)(grpc_c_call *) = echo__test__echo__grpc__bidi_cancel;
static void (*const bidi_destroy)(grpc_c_call *) = echo__test__echo__grpc__bidi_destroy;
static int (*const ping)(grpc_channel *, const Echo__Common__Note *, Echo__Common__Note **, grpc_c_status *,
                         const grpc_c_call_options *) = echo__test__admin__grpc__ping;
/* No package, lower-case names, nested response type, acronym method name. */
static int (*const flat_get)(grpc_channel *, const FlatMsg *, FlatMsg__SubPart **, grpc_c_status *,
                             const grpc_c_call_options *) = flat_service__grpc__get_it;
static int (*const flat_watch_read)(grpc_c_call *, FlatMsg **) = flat_service__grpc__httpwatch_read;
/* option (pb_c_file).c_package = "other_pkg" renames C symbols, not the path. */
static int (*const renamed_run)(grpc_channel *, const OtherPkg__Req *, Echo__Common__Note **, grpc_c_status *,
                                const grpc_c_call_options *) = other_pkg__renamed__grpc__run;

static void test_signatures_linked(void **state)
{
    (void)state;
    const void *fns[] = {(const void *)unary_fn,        (const void *)ss_start,   (const void *)ss_read,
                         (const void *)ss_read_to,      (const void *)ss_finish,  (const void *)cs_start,
                         (const void *)cs_write,        (const void *)cs_finish,  (const void *)bidi_write,
                         (const void *)bidi_read,       (const void *)bidi_close, (const void *)bidi_cancel,
                         (const void *)bidi_destroy,    (const void *)ping,       (const void *)flat_get,
                         (const void *)flat_watch_read, (const void *)renamed_run};
    for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++)
        assert_non_null(fns[i]);
}

static void test_method_table(void **state)
{
    (void)state;
    const grpc_c_service *s = &echo__test__echo__grpc_service;
    assert_string_equal(s->name, "echo.test.Echo");
    assert_int_equal(s->n_methods, 4);
    static const struct {
        const char *path, *name;
        grpc_c_kind kind;
        const ProtobufCMessageDescriptor *in, *out;
    } want[] = {
        {"/echo.test.Echo/Unary", "Unary", GRPC_C_KIND_UNARY, &echo__test__echo_request__descriptor,
         &echo__test__echo_reply__descriptor},
        {"/echo.test.Echo/ServerStream", "ServerStream", GRPC_C_KIND_SERVER_STREAMING,
         &echo__test__echo_request__descriptor, &echo__test__echo_reply__descriptor},
        {"/echo.test.Echo/ClientStream", "ClientStream", GRPC_C_KIND_CLIENT_STREAMING,
         &echo__test__outer__inner__descriptor, &echo__test__outer__inner__descriptor},
        {"/echo.test.Echo/Bidi", "Bidi", GRPC_C_KIND_BIDI_STREAMING, &echo__test__echo_request__descriptor,
         &echo__test__echo_reply__descriptor},
    };
    for (size_t i = 0; i < 4; i++) {
        assert_string_equal(s->methods[i].path, want[i].path);
        assert_string_equal(s->methods[i].name, want[i].name);
        assert_int_equal(s->methods[i].kind, want[i].kind);
        assert_ptr_equal(s->methods[i].input, want[i].in);
        assert_ptr_equal(s->methods[i].output, want[i].out);
    }
    assert_string_equal(ECHO__TEST__ECHO__GRPC__SERVER_STREAM_PATH, "/echo.test.Echo/ServerStream");
    assert_int_equal(ECHO__TEST__ECHO__GRPC__BIDI_INDEX, 3);
    assert_ptr_equal(&echo__test__echo__grpc__bidi_method, &s->methods[3]);
    assert_string_equal(flat_service__grpc_service.name, "flat_service");
    assert_string_equal(FLAT_SERVICE__GRPC__HTTPWATCH_PATH, "/flat_service/HTTPWatch");
    assert_int_equal(flat_service__grpc__httpwatch_method.kind, GRPC_C_KIND_BIDI_STREAMING);
    assert_ptr_equal(flat_service__grpc__get_it_method.output, &flat_msg__sub_part__descriptor);
    assert_string_equal(other_pkg__renamed__grpc__run_method.path, "/pkg.deep.Renamed/Run");
    assert_string_equal(other_pkg__renamed__grpc_service.name, "pkg.deep.Renamed");
    assert_ptr_equal(other_pkg__renamed__grpc__run_method.input, &other_pkg__req__descriptor);
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    static char data[1 << 20];
    size_t n = fread(data, 1, sizeof data - 1, f);
    fclose(f);
    data[n] = '\0';
    return data;
}

/* The header text declares every expected function (and nothing for the
 * wrong shape, e.g. no _write for a server stream). */
static void test_header_declarations(void **state)
{
    (void)state;
    const char *h = slurp(GEN_DIR "/echo/test/echo.grpc-c.h");
    assert_non_null(h);
    static const char *const present[] = {
        "int echo__test__echo__grpc__unary(grpc_channel *channel, const Echo__Test__EchoRequest *request, "
        "Echo__Test__EchoReply **response,",
        "grpc_c_call *echo__test__echo__grpc__server_stream_start(grpc_channel *channel, const "
        "Echo__Test__EchoRequest *request,",
        "int echo__test__echo__grpc__client_stream_write(grpc_c_call *call, const Echo__Test__Outer__Inner "
        "*msg);",
        "int echo__test__echo__grpc__client_stream_finish(grpc_c_call *call, Echo__Test__Outer__Inner "
        "**response, "
        "grpc_c_status *status);",
        "int echo__test__echo__grpc__bidi_read_timeout(grpc_c_call *call, Echo__Test__EchoReply **msg, "
        "int64_t "
        "timeout_ms);",
        "extern const grpc_c_method echo__test__admin__grpc_methods[1];",
        "#include \"echo/test/echo.pb-c.h\"",
        "#define ECHO__TEST__ECHO__GRPC__UNARY_PATH \"/echo.test.Echo/Unary\"",
    };
    for (size_t i = 0; i < sizeof present / sizeof present[0]; i++) {
        if (!strstr(h, present[i]))
            fail_msg("missing in header: %s", present[i]);
    }
    static const char *const absent[] = {"server_stream_write", "client_stream_read", "unary_start",
                                         "server_stream_close_send"};
    for (size_t i = 0; i < sizeof absent / sizeof absent[0]; i++) {
        if (strstr(h, absent[i]))
            fail_msg("unexpected in header: %s", absent[i]);
    }
    /* A file without services still gets (empty) stubs, so build rules are uniform. */
    assert_non_null(slurp(GEN_DIR "/echo/test/common.grpc-c.h"));
}

/* Runs protoc with the plugin; returns its exit status and stderr text. */
static int run_plugin(const char *proto, char *err, size_t errlen)
{
    char dir[] = "/tmp/grpc_c_gen_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char cmd[4096];
    snprintf(
        cmd, sizeof cmd,
        "'%s' --plugin=protoc-gen-grpc-c='%s' --grpc-c_out='%s' -I'%s' '%s' 2>&1; echo rc=$?; rm -rf '%s'",
        PROTOC, PLUGIN, dir, PROTO_DIR, proto, dir);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(err, 1, errlen - 1, p);
    err[n] = '\0';
    pclose(p);
    const char *rc = strstr(err, "rc=");
    return rc ? atoi(rc + 3) : -1;
}

static void test_clash_reported(void **state)
{
    (void)state;
    char out[4096];
    assert_int_not_equal(run_plugin("clash.proto", out, sizeof out), 0);
    if (!strstr(out, "clash__s__grpc__watch_start") || !strstr(out, "used twice"))
        fail_msg("unexpected plugin output: %s", out);
    assert_int_equal(run_plugin("flat.proto", out, sizeof out), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_signatures_linked),
        cmocka_unit_test(test_method_table),
        cmocka_unit_test(test_header_declarations),
        cmocka_unit_test(test_clash_reported),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
