/* Unit tests for server/transport/validate.c: accept/reject tables for every rule. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "validate.h"

static char err[512];

static const char *const pool_names[] = {"node7", "small"};
static const int32_t pool_devices[] = {8, 2};
static const int64_t pool_capacity[] = {80, 1};

static const validate_limits LIM = {
    .default_ttl_ms = 600000,
    .min_ttl_ms = 100,
    .max_ttl_ms = 3600000,
    .max_wait_ms = 300000,
    .max_pool_devices = 64,
    .pool_names = pool_names,
    .pool_devices = pool_devices,
    .pool_capacity = pool_capacity,
    .npools = 2,
};

#define TOKEN "0123456789abcdef0123456789abcdef"

/* Asserts rc is INVALID and err contains `want`. */
#define assert_invalid(rc, want)                                                                             \
    do {                                                                                                     \
        assert_int_equal((rc), BATON_E_INVALID);                                                             \
        if (strstr(err, (want)) == NULL)                                                                     \
            fail_msg("error '%s' does not contain '%s'", err, (want));                                       \
    } while (0)

static void fill(char *buf, size_t n, char ch)
{
    memset(buf, ch, n);
    buf[n] = '\0';
}

/* ---- keys ---- */

static void test_key_valid(void **state)
{
    static const char *ok[] = {"video:123", "gpu_lock:0", "node7/gpu/3", "a@b+c=d", "a",
                               "A-Z.0_9",   "x=y",        "::",          "/"};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        err[0] = '\0';
        if (validate_key("key", ok[i], err, sizeof(err)) != 0)
            fail_msg("'%s' rejected: %s", ok[i], err);
    }
    char k[BATON_KEY_MAX + 1];
    fill(k, BATON_KEY_MAX, 'k');
    assert_int_equal(validate_key("key", k, err, sizeof(err)), 0);
}

static void test_key_empty(void **state)
{
    assert_invalid(validate_key("key", "", err, sizeof(err)), "key: must not be empty");
    assert_invalid(validate_key("key", NULL, err, sizeof(err)), "key: must not be empty");
}

static void test_key_too_long(void **state)
{
    char k[BATON_KEY_MAX + 2];
    fill(k, BATON_KEY_MAX + 1, 'k');
    assert_invalid(validate_key("key", k, err, sizeof(err)),
                   "key: must be 1..256 bytes of [A-Za-z0-9_-.:/@+=], got 257 bytes");
}

static void test_key_bad_bytes(void **state)
{
    static const struct {
        const char *key;
        const char *want;
    } bad[] = {
        {"video 1", "got byte 0x20 at offset 5"},
        {"a{b}", "got byte 0x7b at offset 1"},
        {"*", "got byte 0x2a at offset 0"},
        {"caf\xc3\xa9", "got byte 0xc3 at offset 3"},
        {"a\tb", "got byte 0x09 at offset 1"},
        {"a\nb", "got byte 0x0a at offset 1"},
        {"a,b", "got byte 0x2c"},
        {"a\"b", "got byte 0x22"},
        {"a\\b", "got byte 0x5c"},
        {"a#b", "got byte 0x23"},
        {"a?b", "got byte 0x3f"},
        {"a[b", "got byte 0x5b"},
        {"a%b", "got byte 0x25"},
        {"a\x7f", "got byte 0x7f at offset 1"},
        {"\xff", "got byte 0xff at offset 0"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        assert_invalid(validate_key("key", bad[i].key, err, sizeof(err)), bad[i].want);
        assert_non_null(strstr(err, "key: must be 1..256 bytes of [A-Za-z0-9_-.:/@+=]"));
    }
}

static void test_key_field_name_used(void **state)
{
    assert_invalid(validate_key("prefix", "a b", err, sizeof(err)), "prefix: must be");
}

static void test_err_truncated_and_terminated(void **state)
{
    char small[8];
    memset(small, 'x', sizeof(small));
    assert_int_equal(validate_key("key", "a b", small, sizeof(small)), BATON_E_INVALID);
    assert_int_equal(strlen(small), sizeof(small) - 1);
    assert_string_equal(small, "key: mu");
    /* No buffer at all is fine too. */
    assert_int_equal(validate_key("key", "", NULL, 0), BATON_E_INVALID);
}

/* ---- tokens ---- */

static void test_token(void **state)
{
    assert_int_equal(validate_token("token", TOKEN, err, sizeof(err)), 0);
    assert_invalid(validate_token("token", "", err, sizeof(err)), "token: must not be empty");
    assert_invalid(validate_token("token", NULL, err, sizeof(err)), "token: must not be empty");
    assert_invalid(validate_token("token", "0123456789abcdef0123456789ABCDEF", err, sizeof(err)),
                   "token: must be 32 lowercase hex characters, got byte 0x41 at offset 26");
    assert_invalid(validate_token("token", "0123456789abcdef0123456789abcde", err, sizeof(err)),
                   "got 31 bytes");
    assert_invalid(validate_token("token", TOKEN "0", err, sizeof(err)), "got 33 bytes");
    assert_invalid(validate_token("token", "0123456789abcdeg0123456789abcdef", err, sizeof(err)),
                   "got byte 0x67 at offset 15");
    assert_invalid(validate_token("token", "xyz", err, sizeof(err)), "got byte 0x78 at offset 0");
}

/* ---- owners ---- */

static void test_owner_valid(void **state)
{
    static const char *ok[] = {
        "",
        "worker-3/task-42",
        "with\ttab",
        "caf\xc3\xa9",      /* U+00E9 */
        "\xe2\x82\xac",     /* U+20AC */
        "\xef\xbf\xbf",     /* U+FFFF */
        "\xf0\x9f\x98\x80", /* U+1F600 */
        "\xf4\x8f\xbf\xbf", /* U+10FFFF, the last code point */
        "\xc2\xa0",         /* U+00A0, first after the C1 controls */
        "\xed\x9f\xbf",     /* U+D7FF, just below the surrogates */
        "\xee\x80\x80",     /* U+E000, just above them */
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        err[0] = '\0';
        if (validate_owner("owner", ok[i], err, sizeof(err)) != 0)
            fail_msg("owner %zu rejected: %s", i, err);
    }
    assert_int_equal(validate_owner("owner", NULL, err, sizeof(err)), 0);
    char o[BATON_OWNER_MAX + 1];
    fill(o, BATON_OWNER_MAX, 'o');
    assert_int_equal(validate_owner("owner", o, err, sizeof(err)), 0);
}

static void test_owner_invalid_utf8(void **state)
{
    static const struct {
        const char *owner;
        const char *want;
    } bad[] = {
        {"\x80", "must be valid UTF-8, got byte 0x80 at offset 0"},   /* lone continuation */
        {"ab\xc3", "must be valid UTF-8, got byte 0xc3 at offset 2"}, /* truncated */
        {"\xc3(", "got byte 0xc3 at offset 0"},                       /* bad continuation */
        {"\xc0\xaf", "got byte 0xc0 at offset 0"},                    /* overlong '/' */
        {"\xc1\xbf", "got byte 0xc1"},                                /* overlong */
        {"\xe0\x80\xaf", "got byte 0xe0"},                            /* overlong 3-byte */
        {"\xe0\x9f\xbf", "got byte 0xe0"},                            /* overlong U+07FF */
        {"\xf0\x80\x80\xaf", "got byte 0xf0"},                        /* overlong 4-byte */
        {"\xf0\x8f\xbf\xbf", "got byte 0xf0"},                        /* overlong U+FFFF */
        {"\xed\xa0\x80", "got byte 0xed"},                            /* U+D800 */
        {"\xed\xbf\xbf", "got byte 0xed"},                            /* U+DFFF */
        {"\xf4\x90\x80\x80", "got byte 0xf4"},                        /* U+110000 */
        {"\xf5\x80\x80\x80", "got byte 0xf5"},
        {"\xf8\x88\x80\x80\x80", "got byte 0xf8"}, /* 5-byte form */
        {"\xfe", "got byte 0xfe"},
        {"\xff", "got byte 0xff"},
        {"ok\xe2\x82", "got byte 0xe2 at offset 2"}, /* truncated at end */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        assert_invalid(validate_owner("owner", bad[i].owner, err, sizeof(err)), bad[i].want);
        assert_non_null(strstr(err, "owner: "));
    }
}

static void test_owner_control_chars(void **state)
{
    assert_invalid(validate_owner("owner", "a\nb", err, sizeof(err)),
                   "owner: must not contain control characters (except tab), got U+000A at offset 1");
    assert_invalid(validate_owner("owner", "\x01", err, sizeof(err)), "got U+0001 at offset 0");
    assert_invalid(validate_owner("owner", "\x1b[31m", err, sizeof(err)), "got U+001B");
    assert_invalid(validate_owner("owner", "del\x7f", err, sizeof(err)), "got U+007F at offset 3");
    assert_invalid(validate_owner("owner", "c1\xc2\x85", err, sizeof(err)), "got U+0085 at offset 2");
    assert_invalid(validate_owner("owner", "\xc2\x9f", err, sizeof(err)), "got U+009F");
    assert_invalid(validate_owner("owner", "\r", err, sizeof(err)), "got U+000D");
}

static void test_owner_too_long(void **state)
{
    char o[BATON_OWNER_MAX + 2];
    fill(o, BATON_OWNER_MAX + 1, 'o');
    assert_invalid(validate_owner("owner", o, err, sizeof(err)),
                   "owner: must be at most 256 bytes, got 257 bytes");
    /* 128 two-byte characters = 256 bytes: fine; one more byte is not. */
    char u[BATON_OWNER_MAX + 2];
    for (int i = 0; i < BATON_OWNER_MAX; i += 2)
        u[i] = (char)0xc3, u[i + 1] = (char)0xa9;
    u[BATON_OWNER_MAX] = '\0';
    assert_int_equal(validate_owner("owner", u, err, sizeof(err)), 0);
    u[BATON_OWNER_MAX] = 'x';
    u[BATON_OWNER_MAX + 1] = '\0';
    assert_invalid(validate_owner("owner", u, err, sizeof(err)), "got 257 bytes");
}

/* ---- ttl ---- */

static void test_ttl(void **state)
{
    int64_t out = -1;
    assert_int_equal(validate_ttl(&LIM, 0, &out, err, sizeof(err)), 0);
    assert_int_equal(out, 600000);
    assert_int_equal(validate_ttl(&LIM, 100, &out, err, sizeof(err)), 0);
    assert_int_equal(out, 100);
    assert_int_equal(validate_ttl(&LIM, 3600000, &out, err, sizeof(err)), 0);
    assert_int_equal(out, 3600000);
    assert_int_equal(validate_ttl(&LIM, 5000, &out, err, sizeof(err)), 0);
    assert_int_equal(out, 5000);

    out = 7;
    assert_invalid(validate_ttl(&LIM, 99, &out, err, sizeof(err)),
                   "ttl_ms: must be 0 (the default, 600000) or between 100 and 3600000, got 99");
    assert_int_equal(out, 7);
    assert_invalid(validate_ttl(&LIM, 3600001, &out, err, sizeof(err)), "got 3600001");
    assert_invalid(validate_ttl(&LIM, -1, &out, err, sizeof(err)), "ttl_ms: must be 0");
    assert_invalid(validate_ttl(&LIM, INT64_MIN, &out, err, sizeof(err)), "ttl_ms:");
    assert_invalid(validate_ttl(&LIM, INT64_MAX, &out, err, sizeof(err)), "ttl_ms:");
}

/* ---- acquire ---- */

static Baton__V1__AcquireRequest acq_key(const char *key)
{
    Baton__V1__AcquireRequest r = BATON__V1__ACQUIRE_REQUEST__INIT;
    r.key = (char *)key;
    return r;
}

static void test_acquire_key_defaults(void **state)
{
    Baton__V1__AcquireRequest r = acq_key("video:123");
    engine_acquire_req out;
    assert_int_equal(validate_acquire(&LIM, &r, &out, err, sizeof(err)), 0);
    assert_string_equal(out.key, "video:123");
    assert_ptr_equal(out.key, r.key);
    assert_null(out.pool);
    assert_int_equal(out.devices, 0);
    assert_string_equal(out.owner, "");
    assert_int_equal(out.ttl_ms, 600000);
    assert_int_equal(out.wait_ms, 0);
    assert_int_equal(out.mode, ENGINE_MODE_LEASE);
}

static void test_acquire_key_full(void **state)
{
    Baton__V1__AcquireRequest r = acq_key("gpu_lock:0");
    r.owner = "worker-3/task-42";
    r.ttl_ms = 1500;
    r.wait_ms = 2000;
    r.mode = BATON__V1__HOLD_MODE__HOLD_MODE_STREAM;
    engine_acquire_req out;
    assert_int_equal(validate_acquire(&LIM, &r, &out, err, sizeof(err)), 0);
    assert_string_equal(out.owner, "worker-3/task-42");
    assert_int_equal(out.ttl_ms, 1500);
    assert_int_equal(out.wait_ms, 2000);
    assert_int_equal(out.mode, ENGINE_MODE_STREAM);
}

static void test_acquire_wait(void **state)
{
    Baton__V1__AcquireRequest r = acq_key("k");
    engine_acquire_req out;
    r.wait_ms = -1;
    assert_int_equal(validate_acquire(&LIM, &r, &out, err, sizeof(err)), 0);
    assert_int_equal(out.wait_ms, 300000);
    r.wait_ms = INT64_MIN;
    assert_int_equal(validate_acquire(&LIM, &r, &out, err, sizeof(err)), 0);
    assert_int_equal(out.wait_ms, 300000);
    r.wait_ms = 0;
    assert_int_equal(validate_acquire(&LIM, &r, &out, err, sizeof(err)), 0);
    assert_int_equal(out.wait_ms, 0);
    r.wait_ms = 300000;
    assert_int_equal(validate_acquire(&LIM, &r, &out, err, sizeof(err)), 0);
    assert_int_equal(out.wait_ms, 300000);
    r.wait_ms = 300001;
    assert_invalid(validate_acquire(&LIM, &r, &out, err, sizeof(err)),
                   "wait_ms: must be at most 300000 (0 = try once, negative = 300000), got 300001");
    r.wait_ms = INT64_MAX;
    assert_invalid(validate_acquire(&LIM, &r, &out, err, sizeof(err)), "wait_ms:");
}

static void test_acquire_ttl_bounds(void **state)
{
    Baton__V1__AcquireRequest r = acq_key("k");
    engine_acquire_req out;
    r.ttl_ms = -5;
    assert_invalid(validate_acquire(&LIM, &r, &out, err, sizeof(err)), "ttl_ms: must be 0");
    r.ttl_ms = 50;
    assert_invalid(validate_acquire(&LIM, &r, &out, err, sizeof(err)), "between 100 and 3600000");
    r.ttl_ms = 100;
    assert_int_equal(validate_acquire(&LIM, &r, &out, err, sizeof(err)), 0);
    assert_int_equal(out.ttl_ms, 100);
}

static void test_acquire_mode(void **state)
{
    Baton__V1__AcquireRequest r = acq_key("k");
    engine_acquire_req out;
    r.mode = (Baton__V1__HoldMode)2;
    assert_invalid(validate_acquire(&LIM, &r, &out, err, sizeof(err)),
                   "mode: must be HOLD_MODE_LEASE (0) or HOLD_MODE_STREAM (1), got 2");
    r.mode = (Baton__V1__HoldMode)-1;
    assert_invalid(validate_acquire(&LIM, &r, &out, err, sizeof(err)), "got -1");
}

static void test_acquire_key_xor_pool(void **state)
{
    engine_acquire_req out;
    Baton__V1__AcquireRequest r = BATON__V1__ACQUIRE_REQUEST__INIT;
    assert_invalid(validate_acquire(&LIM, &r, &out, err, sizeof(err)),
                   "exactly one of key and pool must be set");

    Baton__V1__Pool p = BATON__V1__POOL__INIT;
    p.name = "node7";
    p.devices = 8;
    r.key = "k";
    r.pool = &p;
    assert_invalid(validate_acquire(&LIM, &r, &out, err, sizeof(err)),
                   "exactly one of key and pool must be set");

    /* A pool message with an empty name counts as unset. */
    Baton__V1__Pool empty = BATON__V1__POOL__INIT;
    r.pool = &empty;
    assert_int_equal(validate_acquire(&LIM, &r, &out, err, sizeof(err)), 0);
    assert_string_equal(out.key, "k");
    r.key = "";
    assert_invalid(validate_acquire(&LIM, &r, &out, err, sizeof(err)),
                   "exactly one of key and pool must be set");
    r.key = NULL;
    r.pool = NULL;
    assert_invalid(validate_acquire(&LIM, &r, &out, err, sizeof(err)),
                   "exactly one of key and pool must be set");

    /* devices without a name: a pool with its name missing, not a key acquire. */
    Baton__V1__Pool nameless = BATON__V1__POOL__INIT;
    nameless.devices = 2;
    r.key = "k";
    r.pool = &nameless;
    assert_invalid(validate_acquire(&LIM, &r, &out, err, sizeof(err)),
                   "exactly one of key and pool must be set");
    r.key = NULL;
    assert_invalid(validate_acquire(&LIM, &r, &out, err, sizeof(err)), "pool.name");
}

static void test_acquire_bad_key_and_owner(void **state)
{
    engine_acquire_req out;
    Baton__V1__AcquireRequest r = acq_key("has space");
    assert_invalid(validate_acquire(&LIM, &r, &out, err, sizeof(err)), "key: must be 1..256 bytes");
    r = acq_key("ok");
    r.owner = "bad\x01owner";
    assert_invalid(validate_acquire(&LIM, &r, &out, err, sizeof(err)), "owner: must not contain");
    r.owner = "\xed\xa0\x80";
    assert_invalid(validate_acquire(&LIM, &r, &out, err, sizeof(err)), "owner: must be valid UTF-8");
}

static Baton__V1__AcquireRequest acq_pool(Baton__V1__Pool *p, const char *name, int32_t devices)
{
    Baton__V1__Pool init = BATON__V1__POOL__INIT;
    *p = init;
    p->name = (char *)name;
    p->devices = devices;
    Baton__V1__AcquireRequest r = BATON__V1__ACQUIRE_REQUEST__INIT;
    r.pool = p;
    return r;
}

static void test_acquire_pool_ok(void **state)
{
    Baton__V1__Pool p;
    engine_acquire_req out;
    Baton__V1__AcquireRequest r = acq_pool(&p, "node7", 8);
    r.owner = "job";
    assert_int_equal(validate_acquire(&LIM, &r, &out, err, sizeof(err)), 0);
    assert_null(out.key);
    assert_string_equal(out.pool, "node7");
    assert_int_equal(out.devices, 8);
    assert_string_equal(out.owner, "job");

    /* Unconfigured pools may use any count within the limit. */
    r = acq_pool(&p, "adhoc", 1);
    assert_int_equal(validate_acquire(&LIM, &r, &out, err, sizeof(err)), 0);
    r = acq_pool(&p, "adhoc", 64);
    assert_int_equal(validate_acquire(&LIM, &r, &out, err, sizeof(err)), 0);
}

static void test_acquire_pool_devices(void **state)
{
    Baton__V1__Pool p;
    engine_acquire_req out;
    Baton__V1__AcquireRequest r = acq_pool(&p, "adhoc", 0);
    assert_invalid(validate_acquire(&LIM, &r, &out, err, sizeof(err)),
                   "pool.devices: must be between 1 and 64, got 0");
    r = acq_pool(&p, "adhoc", -3);
    assert_invalid(validate_acquire(&LIM, &r, &out, err, sizeof(err)), "got -3");
    r = acq_pool(&p, "adhoc", 65);
    assert_invalid(validate_acquire(&LIM, &r, &out, err, sizeof(err)), "got 65");
    r = acq_pool(&p, "node7", 4);
    assert_invalid(validate_acquire(&LIM, &r, &out, err, sizeof(err)),
                   "pool.devices: pool 'node7' is configured with 8 devices");
    r = acq_pool(&p, "small", 8);
    assert_invalid(validate_acquire(&LIM, &r, &out, err, sizeof(err)),
                   "pool 'small' is configured with 2 devices");
    r = acq_pool(&p, "small", 2);
    assert_int_equal(validate_acquire(&LIM, &r, &out, err, sizeof(err)), 0);
}

static void test_acquire_pool_name(void **state)
{
    Baton__V1__Pool p;
    engine_acquire_req out;
    Baton__V1__AcquireRequest r = acq_pool(&p, "no{de}", 2);
    assert_invalid(validate_acquire(&LIM, &r, &out, err, sizeof(err)),
                   "pool.name: must be 1..256 bytes of [A-Za-z0-9_-.:/@+=], got byte 0x7b at offset 2");

    /* 8 devices: "name/7" needs 2 more bytes, so 254 is the longest name. */
    char name[BATON_KEY_MAX + 1];
    fill(name, 254, 'n');
    r = acq_pool(&p, name, 8);
    assert_int_equal(validate_acquire(&LIM, &r, &out, err, sizeof(err)), 0);
    fill(name, 255, 'n');
    r = acq_pool(&p, name, 8);
    assert_invalid(validate_acquire(&LIM, &r, &out, err, sizeof(err)),
                   "pool.name: must be at most 254 bytes so that device keys");
    /* 11 devices: "name/10" needs 3. */
    fill(name, 253, 'n');
    r = acq_pool(&p, name, 11);
    assert_int_equal(validate_acquire(&LIM, &r, &out, err, sizeof(err)), 0);
    fill(name, 254, 'n');
    r = acq_pool(&p, name, 11);
    assert_invalid(validate_acquire(&LIM, &r, &out, err, sizeof(err)), "at most 253 bytes");
    /* 10 devices: the largest index is 9, still 2 bytes. */
    r = acq_pool(&p, name, 10);
    assert_int_equal(validate_acquire(&LIM, &r, &out, err, sizeof(err)), 0);
}

static void test_acquire_pool_count(void **state)
{
    Baton__V1__Pool p;
    engine_acquire_req out;
    Baton__V1__AcquireRequest r = acq_pool(&p, "node7", 8);
    assert_int_equal(validate_acquire(&LIM, &r, &out, err, sizeof(err)), 0);
    assert_int_equal(out.count, 1); /* unset: one device */
    p.count = 1;
    assert_int_equal(validate_acquire(&LIM, &r, &out, err, sizeof(err)), 0);
    assert_int_equal(out.count, 1);
    p.count = 8;
    assert_int_equal(validate_acquire(&LIM, &r, &out, err, sizeof(err)), 0);
    assert_int_equal(out.count, 8);
    p.count = 9;
    assert_invalid(validate_acquire(&LIM, &r, &out, err, sizeof(err)),
                   "pool.count: must be between 0 and pool.devices (8) (0 or 1 = one device), got 9");
    p.count = -1;
    assert_invalid(validate_acquire(&LIM, &r, &out, err, sizeof(err)), "pool.count: must be between 0");
    /* Ad-hoc pools take a count too, up to their devices. */
    r = acq_pool(&p, "adhoc", 3);
    p.count = 3;
    assert_int_equal(validate_acquire(&LIM, &r, &out, err, sizeof(err)), 0);
    assert_int_equal(out.count, 3);
    p.count = 4;
    assert_invalid(validate_acquire(&LIM, &r, &out, err, sizeof(err)), "pool.devices (3)");
}

static void test_acquire_pool_weight(void **state)
{
    Baton__V1__Pool p;
    engine_acquire_req out;
    Baton__V1__AcquireRequest r = acq_pool(&p, "node7", 8);
    p.weight = 24;
    p.count = 2;
    assert_int_equal(validate_acquire(&LIM, &r, &out, err, sizeof(err)), 0);
    assert_int_equal(out.weight, 24);
    assert_int_equal(out.capacity, 80);
    assert_int_equal(out.count, 2);
    p.weight = 80; /* the whole device */
    assert_int_equal(validate_acquire(&LIM, &r, &out, err, sizeof(err)), 0);
    assert_int_equal(out.weight, 0);
    p.weight = 81;
    assert_invalid(validate_acquire(&LIM, &r, &out, err, sizeof(err)),
                   "pool.weight: must be at most the capacity of pool 'node7' (80), got 81");
    p.weight = -1;
    assert_invalid(validate_acquire(&LIM, &r, &out, err, sizeof(err)),
                   "pool.weight: must be 0 (the whole device) or positive, got -1");
    /* capacity 1: weight 1 is the whole device, 2 is too much. */
    r = acq_pool(&p, "small", 2);
    p.weight = 1;
    assert_int_equal(validate_acquire(&LIM, &r, &out, err, sizeof(err)), 0);
    assert_int_equal(out.weight, 0);
    p.weight = 2;
    assert_invalid(validate_acquire(&LIM, &r, &out, err, sizeof(err)), "capacity of pool 'small' (1), got 2");
    /* Ad-hoc pools: count works, a weight needs a configured capacity. */
    r = acq_pool(&p, "adhoc", 4);
    p.count = 2;
    assert_int_equal(validate_acquire(&LIM, &r, &out, err, sizeof(err)), 0);
    p.weight = 1;
    assert_invalid(
        validate_acquire(&LIM, &r, &out, err, sizeof(err)),
        "pool.weight: pool 'adhoc' is not configured in batond; a weight needs the pool's capacity");
}

/* ---- renew / release / watch / describe / force release ---- */

static void test_renew(void **state)
{
    Baton__V1__RenewRequest r = BATON__V1__RENEW_REQUEST__INIT;
    int64_t ttl = -1;
    r.key = "video:123";
    r.token = TOKEN;
    assert_int_equal(validate_renew(&LIM, &r, &ttl, err, sizeof(err)), 0);
    assert_int_equal(ttl, 600000);
    r.ttl_ms = 250;
    assert_int_equal(validate_renew(&LIM, &r, &ttl, err, sizeof(err)), 0);
    assert_int_equal(ttl, 250);
    r.ttl_ms = 99;
    assert_invalid(validate_renew(&LIM, &r, &ttl, err, sizeof(err)), "ttl_ms:");
    r.ttl_ms = 0;
    r.token = "nope";
    assert_invalid(validate_renew(&LIM, &r, &ttl, err, sizeof(err)), "token:");
    r.token = TOKEN;
    r.key = "";
    assert_invalid(validate_renew(&LIM, &r, &ttl, err, sizeof(err)), "key: must not be empty");
}

static void test_release(void **state)
{
    Baton__V1__ReleaseRequest r = BATON__V1__RELEASE_REQUEST__INIT;
    r.key = "node7/gpu/3";
    r.token = TOKEN;
    assert_int_equal(validate_release(&r, err, sizeof(err)), 0);
    r.token = "";
    assert_invalid(validate_release(&r, err, sizeof(err)), "token: must not be empty");
    r.token = TOKEN;
    r.key = "a b";
    assert_invalid(validate_release(&r, err, sizeof(err)), "key: must be");
}

static void test_watch(void **state)
{
    Baton__V1__WatchRequest r = BATON__V1__WATCH_REQUEST__INIT;
    assert_invalid(validate_watch(&r, err, sizeof(err)), "exactly one of key and prefix must be set");
    r.key = "video:1";
    assert_int_equal(validate_watch(&r, err, sizeof(err)), 0);
    r.prefix = "video:";
    assert_invalid(validate_watch(&r, err, sizeof(err)), "exactly one of key and prefix must be set");
    r.key = "";
    assert_int_equal(validate_watch(&r, err, sizeof(err)), 0);
    r.prefix = "video *";
    assert_invalid(validate_watch(&r, err, sizeof(err)), "prefix: must be 1..256 bytes");
    r.prefix = NULL;
    r.key = "a*";
    assert_invalid(validate_watch(&r, err, sizeof(err)), "key: must be 1..256 bytes");
}

static void test_describe(void **state)
{
    Baton__V1__DescribeRequest r = BATON__V1__DESCRIBE_REQUEST__INIT;
    assert_invalid(validate_describe(&r, err, sizeof(err)), "key: must not be empty");
    r.key = "gpu_lock:0";
    assert_int_equal(validate_describe(&r, err, sizeof(err)), 0);
}

static void test_list(void **state)
{
    Baton__V1__ListRequest r = BATON__V1__LIST_REQUEST__INIT;
    int32_t limit;
    char cursor[24];
    assert_int_equal(validate_list(&r, &limit, cursor, sizeof cursor, err, sizeof(err)), 0);
    assert_int_equal(limit, 100);
    assert_string_equal(cursor, "0");
    r.prefix = "gpu_lock:";
    r.limit = 1000;
    r.page_token = "18446744073709551615";
    assert_int_equal(validate_list(&r, &limit, cursor, sizeof cursor, err, sizeof(err)), 0);
    assert_int_equal(limit, 1000);
    assert_string_equal(cursor, "18446744073709551615");
    r.limit = 1001;
    assert_invalid(validate_list(&r, &limit, cursor, sizeof cursor, err, sizeof(err)),
                   "limit: must be between 0 (default 100) and 1000, got 1001");
    r.limit = -1;
    assert_invalid(validate_list(&r, &limit, cursor, sizeof cursor, err, sizeof(err)), "got -1");
    r.limit = 5;
    const char *bad[] = {"x", "-1", "00", "1 ", "123456789012345678901"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        r.page_token = (char *)bad[i];
        assert_invalid(validate_list(&r, &limit, cursor, sizeof cursor, err, sizeof(err)),
                       "page_token: not a next_page_token of List");
    }
    r.page_token = "";
    r.prefix = "a b";
    assert_invalid(validate_list(&r, &limit, cursor, sizeof cursor, err, sizeof(err)), "prefix: ");
}

static void test_force_release(void **state)
{
    Baton__V1__ForceReleaseRequest r = BATON__V1__FORCE_RELEASE_REQUEST__INIT;
    r.key = "gpu_lock:0";
    assert_invalid(validate_force_release(&r, err, sizeof(err)), "fencing: must be > 0");
    r.fencing = 1;
    assert_int_equal(validate_force_release(&r, err, sizeof(err)), 0);
    r.fencing = UINT64_MAX;
    assert_int_equal(validate_force_release(&r, err, sizeof(err)), 0);
    r.key = "{x}";
    assert_invalid(validate_force_release(&r, err, sizeof(err)), "key: must be");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_valid),
        cmocka_unit_test(test_key_empty),
        cmocka_unit_test(test_key_too_long),
        cmocka_unit_test(test_key_bad_bytes),
        cmocka_unit_test(test_key_field_name_used),
        cmocka_unit_test(test_err_truncated_and_terminated),
        cmocka_unit_test(test_token),
        cmocka_unit_test(test_owner_valid),
        cmocka_unit_test(test_owner_invalid_utf8),
        cmocka_unit_test(test_owner_control_chars),
        cmocka_unit_test(test_owner_too_long),
        cmocka_unit_test(test_ttl),
        cmocka_unit_test(test_acquire_key_defaults),
        cmocka_unit_test(test_acquire_key_full),
        cmocka_unit_test(test_acquire_wait),
        cmocka_unit_test(test_acquire_ttl_bounds),
        cmocka_unit_test(test_acquire_mode),
        cmocka_unit_test(test_acquire_key_xor_pool),
        cmocka_unit_test(test_acquire_bad_key_and_owner),
        cmocka_unit_test(test_acquire_pool_ok),
        cmocka_unit_test(test_acquire_pool_devices),
        cmocka_unit_test(test_acquire_pool_name),
        cmocka_unit_test(test_acquire_pool_count),
        cmocka_unit_test(test_acquire_pool_weight),
        cmocka_unit_test(test_renew),
        cmocka_unit_test(test_release),
        cmocka_unit_test(test_watch),
        cmocka_unit_test(test_describe),
        cmocka_unit_test(test_list),
        cmocka_unit_test(test_force_release),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
