/* Unit tests for the pure half of server/common/pb_codec.c: pb_decode_bytes
 * and pb_find_nul_string, from hand-made byte strings (protobuf-c cannot
 * pack a string holding a NUL byte, which is the point of the check). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "baton/v1/lock.pb-c.h"
#include "pb_codec.h"

#define ACQ (&baton__v1__acquire_request__descriptor)
#define SESSION (&baton__v1__session_request__descriptor)

/* A byte string under construction. */
typedef struct buf {
    uint8_t b[256];
    size_t n;
} buf;

static void put_varint(buf *w, uint64_t v)
{
    do {
        uint8_t byte = v & 0x7f;
        v >>= 7;
        w->b[w->n++] = (uint8_t)(byte | (v ? 0x80 : 0));
    } while (v);
}

/* The field number of `name` in d, from the descriptor (not hard-coded). */
static unsigned field(const ProtobufCMessageDescriptor *d, const char *name)
{
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(d, name);
    assert_non_null(f);
    return f->id;
}

static void put_bytes(buf *w, unsigned id, const void *p, size_t len)
{
    put_varint(w, (uint64_t)id << 3 | 2);
    put_varint(w, len);
    memcpy(w->b + w->n, p, len);
    w->n += len;
}

static void put_u64(buf *w, unsigned id, uint64_t v)
{
    put_varint(w, (uint64_t)id << 3 | 0);
    put_varint(w, v);
}

/* An AcquireRequest{pool{name = pool_name[0..len)}} into w. */
static void put_acquire_pool(buf *w, const char *pool_name, size_t len)
{
    buf pool = {{0}, 0};
    put_bytes(&pool, field(&baton__v1__pool__descriptor, "name"), pool_name, len);
    put_u64(&pool, field(&baton__v1__pool__descriptor, "devices"), 4);
    put_bytes(w, field(ACQ, "pool"), pool.b, pool.n);
}

static void test_valid_message_decodes(void **state)
{
    buf w = {{0}, 0};
    put_bytes(&w, field(ACQ, "key"), "video:1", 7);
    put_bytes(&w, field(ACQ, "owner"), "w", 1);
    char err[128] = "";
    ProtobufCMessage *m = pb_decode_bytes(ACQ, w.b, w.n, "AcquireRequest", err, sizeof err);
    assert_non_null(m);
    assert_string_equal(((Baton__V1__AcquireRequest *)m)->key, "video:1");
    protobuf_c_message_free_unpacked(m, NULL);
    char path[64];
    assert_int_equal(pb_find_nul_string(ACQ, w.b, w.n, path, sizeof path), 0);
}

static void test_empty_message_decodes(void **state)
{
    char err[128] = "";
    ProtobufCMessage *m = pb_decode_bytes(ACQ, (const uint8_t *)"", 0, "AcquireRequest", err, sizeof err);
    assert_non_null(m);
    protobuf_c_message_free_unpacked(m, NULL);
}

/* protobuf-c would hand over "k" for "k\0x": the check names the field. */
static void test_nul_in_top_level_string(void **state)
{
    buf w = {{0}, 0};
    put_bytes(&w, field(ACQ, "key"), "k\0x", 3);
    char err[128] = "";
    assert_null(pb_decode_bytes(ACQ, w.b, w.n, "AcquireRequest", err, sizeof err));
    assert_string_equal(err, "key: must not contain a NUL byte");
    char path[64];
    assert_int_equal(pb_find_nul_string(ACQ, w.b, w.n, path, sizeof path), 1);
    assert_string_equal(path, "key");
}

static void test_nul_in_nested_string_names_the_path(void **state)
{
    buf w = {{0}, 0};
    put_acquire_pool(&w, "gpu\0", 4);
    char err[128] = "";
    assert_null(pb_decode_bytes(ACQ, w.b, w.n, "AcquireRequest", err, sizeof err));
    assert_string_equal(err, "pool.name: must not contain a NUL byte");
}

static void test_nul_two_levels_down(void **state)
{
    buf acq = {{0}, 0};
    put_acquire_pool(&acq, "\0gpu", 4);
    buf w = {{0}, 0};
    put_u64(&w, field(SESSION, "id"), 7);
    put_bytes(&w, field(SESSION, "acquire"), acq.b, acq.n);
    char path[64];
    assert_int_equal(pb_find_nul_string(SESSION, w.b, w.n, path, sizeof path), 1);
    assert_string_equal(path, "acquire.pool.name");
    char err[128] = "";
    assert_null(pb_decode_bytes(SESSION, w.b, w.n, "SessionRequest", err, sizeof err));
    assert_string_equal(err, "acquire.pool.name: must not contain a NUL byte");
}

/* Zero bytes outside strings (a varint 0, a fixed field) are ordinary. */
static void test_nul_outside_strings_is_fine(void **state)
{
    buf w = {{0}, 0};
    put_u64(&w, field(ACQ, "ttl_ms"), 0);
    put_u64(&w, field(ACQ, "wait_ms"), 0);
    put_bytes(&w, field(ACQ, "key"), "k", 1);
    assert_non_null(memchr(w.b, 0, w.n));
    char err[128] = "";
    ProtobufCMessage *m = pb_decode_bytes(ACQ, w.b, w.n, "AcquireRequest", err, sizeof err);
    assert_non_null(m);
    protobuf_c_message_free_unpacked(m, NULL);
}

/* An unknown length-delimited field is not a string of ours. */
static void test_nul_in_unknown_field_is_ignored(void **state)
{
    buf w = {{0}, 0};
    put_bytes(&w, field(ACQ, "key"), "k", 1);
    put_bytes(&w, 1000, "a\0b", 3);
    char path[64];
    assert_int_equal(pb_find_nul_string(ACQ, w.b, w.n, path, sizeof path), 0);
}

static void test_truncated_varint(void **state)
{
    /* The key of field 3 (ttl_ms, a varint), then a value whose continuation bit
     * promises a byte that never comes. */
    const uint8_t bytes[] = {0x18, 0x80};
    char err[128] = "";
    assert_null(pb_decode_bytes(ACQ, bytes, sizeof bytes, "AcquireRequest", err, sizeof err));
    assert_string_equal(err, "cannot decode AcquireRequest");
    char path[64];
    assert_int_equal(pb_find_nul_string(ACQ, bytes, sizeof bytes, path, sizeof path), 0);
    /* A truncated tag alone. */
    const uint8_t tag[] = {0x80};
    assert_int_equal(pb_find_nul_string(ACQ, tag, sizeof tag, path, sizeof path), 0);
}

/* More than 10 continuation bytes: no varint, and no overflow. */
static void test_overlong_varint(void **state)
{
    uint8_t bytes[16];
    memset(bytes, 0xff, sizeof bytes);
    bytes[0] = 0x0a; /* field 1, length-delimited; the length never ends */
    char path[64];
    assert_int_equal(pb_find_nul_string(ACQ, bytes, sizeof bytes, path, sizeof path), 0);
    char err[128] = "";
    assert_null(pb_decode_bytes(ACQ, bytes, sizeof bytes, "AcquireRequest", err, sizeof err));
}

static void test_oversize_length(void **state)
{
    /* key says 5 bytes, one follows; then a NUL where the string would be. */
    const uint8_t bytes[] = {0x0a, 0x05, 'a', 0x00};
    char err[128] = "";
    assert_null(pb_decode_bytes(ACQ, bytes, sizeof bytes, "AcquireRequest", err, sizeof err));
    assert_string_equal(err, "cannot decode AcquireRequest");
    char path[64];
    assert_int_equal(pb_find_nul_string(ACQ, bytes, sizeof bytes, path, sizeof path), 0);
    /* A length near 2^64 must not wrap the bounds check. */
    buf w = {{0}, 0};
    put_varint(&w, 1u << 3 | 2);
    put_varint(&w, UINT64_MAX - 1);
    w.b[w.n++] = 0;
    assert_int_equal(pb_find_nul_string(ACQ, w.b, w.n, path, sizeof path), 0);
}

/* A fixed64 / fixed32 that runs past the end stops the walk. */
static void test_truncated_fixed(void **state)
{
    const uint8_t bytes[] = {(7u << 3) | 1, 0, 0};
    char path[64];
    assert_int_equal(pb_find_nul_string(ACQ, bytes, sizeof bytes, path, sizeof path), 0);
}

static void test_path_is_truncated_to_its_buffer(void **state)
{
    buf acq = {{0}, 0};
    put_acquire_pool(&acq, "\0", 1);
    buf w = {{0}, 0};
    put_bytes(&w, field(SESSION, "acquire"), acq.b, acq.n);
    char path[8];
    assert_int_equal(pb_find_nul_string(SESSION, w.b, w.n, path, sizeof path), 1);
    assert_string_equal(path, "acquire");
    char err[16];
    assert_null(pb_decode_bytes(SESSION, w.b, w.n, "SessionRequest", err, sizeof err));
    assert_int_equal(strlen(err), sizeof err - 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_message_decodes),
        cmocka_unit_test(test_empty_message_decodes),
        cmocka_unit_test(test_nul_in_top_level_string),
        cmocka_unit_test(test_nul_in_nested_string_names_the_path),
        cmocka_unit_test(test_nul_two_levels_down),
        cmocka_unit_test(test_nul_outside_strings_is_fine),
        cmocka_unit_test(test_nul_in_unknown_field_is_ignored),
        cmocka_unit_test(test_truncated_varint),
        cmocka_unit_test(test_overlong_varint),
        cmocka_unit_test(test_oversize_length),
        cmocka_unit_test(test_truncated_fixed),
        cmocka_unit_test(test_path_is_truncated_to_its_buffer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
