/*
 * The Redis store's reply decoders (server/store/redis/reply.c) on
 * hand-built replies: every shape the scripts return, and malformed ones
 * (wrong types, short arrays, out-of-range integers, NULL slots), which must
 * give a clear error and never read out of bounds. No Redis needed.
 */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "reply.h"
#include "reply_build.h"

/* ------------------------------------------------------------- acquire */

static int acquire(redisReply *r, const char *name, int pool, rstore_acquire_dec *d)
{
    int err = rstore_decode_acquire(r, name, pool, d);
    assert_int_equal(err, d->err);
    if (err != BATON_OK)
        assert_non_null(d->msg);
    else
        assert_null(d->msg);
    return err;
}

/* Decodes r (then frees it) and expects BATON_E_INTERNAL. */
static void acquire_bad(redisReply *r, int pool)
{
    rstore_acquire_dec d;
    assert_int_equal(acquire(r, pool ? "gpu" : "k", pool, &d), BATON_E_INTERNAL);
    assert_string_equal(d.msg, "unexpected reply to acquire");
    assert_int_equal(d.res.granted, 0);
    reply_free(r);
}

static void test_acquire_granted_key(void **state)
{
    rstore_acquire_dec d;
    redisReply *r = R_ARR(4, R_INT(1), R_INT(-1), R_INT(7), R_INT(30000));
    assert_int_equal(acquire(r, "k", 0, &d), BATON_OK);
    assert_int_equal(d.res.granted, 1);
    assert_string_equal(d.res.key, "k");
    assert_int_equal(d.res.device, -1);
    assert_int_equal(d.res.fencing, 7);
    assert_int_equal(d.res.ttl_ms, 30000);
    reply_free(r);
}

static void test_acquire_granted_pool(void **state)
{
    rstore_acquire_dec d;
    redisReply *r = R_ARR(4, R_INT(1), R_INT(2), R_INT(9), R_INT(100));
    assert_int_equal(acquire(r, "gpu", 1, &d), BATON_OK);
    assert_int_equal(d.res.granted, 1);
    assert_string_equal(d.res.key, "gpu/2");
    assert_int_equal(d.res.device, 2);
    assert_int_equal(d.res.fencing, 9);
    reply_free(r);
    /* a fencing at the top of the range still fits a uint64 */
    r = R_ARR(4, R_INT(1), R_INT(INT32_MAX), R_INT(LLONG_MAX), R_INT(1));
    assert_int_equal(acquire(r, "gpu", 1, &d), BATON_OK);
    assert_int_equal(d.res.device, INT32_MAX);
    assert_true(d.res.fencing == (uint64_t)LLONG_MAX);
    reply_free(r);
}

/* A multi-device pool grant: {device, fencing} of every device after the
 * first four; malformed pairs are errors, a reply without pairs (an older
 * script) is one device with no list. */
static void test_acquire_granted_pool_devices(void **state)
{
    rstore_acquire_dec d;
    redisReply *r =
        R_ARR(8, R_INT(1), R_INT(1), R_INT(50), R_INT(100), R_INT(1), R_INT(50), R_INT(3), R_INT(70));
    assert_int_equal(acquire(r, "gpu", 1, &d), BATON_OK);
    assert_int_equal(d.res.ndevices, 2);
    assert_int_equal(d.res.devices[0], 1);
    assert_int_equal(d.res.devices[1], 3);
    assert_true(d.res.fencings[0] == 50 && d.res.fencings[1] == 70);
    assert_string_equal(d.res.key, "gpu/1");
    reply_free(r);
    r = R_ARR(4, R_INT(1), R_INT(2), R_INT(9), R_INT(100));
    assert_int_equal(acquire(r, "gpu", 1, &d), BATON_OK);
    assert_int_equal(d.res.ndevices, 0);
    assert_null(d.res.devices);
    reply_free(r);
    /* an odd element, a negative device, a negative fencing, a string */
    acquire_bad(R_ARR(5, R_INT(1), R_INT(1), R_INT(5), R_INT(100), R_INT(1)), 1);
    acquire_bad(R_ARR(6, R_INT(1), R_INT(1), R_INT(5), R_INT(100), R_INT(-1), R_INT(5)), 1);
    acquire_bad(R_ARR(6, R_INT(1), R_INT(1), R_INT(5), R_INT(100), R_INT(1), R_INT(-5)), 1);
    acquire_bad(R_ARR(6, R_INT(1), R_INT(1), R_INT(5), R_INT(100), R_STR("1"), R_INT(5)), 1);
}

static void test_acquire_queued(void **state)
{
    rstore_acquire_dec d;
    redisReply *r =
        R_ARR(7, R_INT(0), R_INT(3), R_INT(5), R_STR("alice"), R_INT(4), R_INT(250), R_STR("0123abcd"));
    assert_int_equal(acquire(r, "k", 0, &d), BATON_OK);
    assert_int_equal(d.res.granted, 0);
    assert_int_equal(d.res.device, -1);
    assert_int_equal(d.res.position, 3);
    assert_int_equal(d.res.queue_len, 5);
    assert_string_equal(d.res.holder_owner, "alice");
    assert_int_equal(d.res.holder_fencing, 4);
    assert_int_equal(d.res.retry_ms, 250);
    assert_string_equal(d.res.head_token, "0123abcd");
    reply_free(r);
    /* free, nobody ahead, no retry */
    r = R_ARR(7, R_INT(0), R_INT(0), R_INT(0), R_STR(""), R_INT(0), R_INT(-1), R_STR(""));
    assert_int_equal(acquire(r, "k", 0, &d), BATON_OK);
    assert_int_equal(d.res.retry_ms, -1);
    assert_string_equal(d.res.holder_owner, "");
    reply_free(r);
}

static void test_acquire_pool_count_mismatch(void **state)
{
    rstore_acquire_dec d;
    redisReply *r = R_ARR(2, R_INT(2), R_INT(4));
    assert_int_equal(acquire(r, "gpu", 1, &d), BATON_E_INVALID);
    assert_int_equal(d.devices, 4);
    assert_non_null(strstr(d.msg, "pool 'gpu' has waiters that use 4 devices"));
    reply_free(r);
    /* a name too long for the message buffer is cut, not overflowed */
    char name[BATON_KEY_MAX + 1];
    memset(name, 'n', BATON_KEY_MAX);
    name[BATON_KEY_MAX] = '\0';
    r = R_ARR(2, R_INT(2), R_INT(LLONG_MIN));
    assert_int_equal(acquire(r, name, 1, &d), BATON_E_INVALID);
    assert_true(strlen(d.msg) < sizeof d.buf);
    reply_free(r);
    acquire_bad(R_ARR(1, R_INT(2)), 1);
    acquire_bad(R_ARR(2, R_INT(2), R_STR("4")), 1);
}

static void test_acquire_not_an_array(void **state)
{
    rstore_acquire_dec d;
    assert_int_equal(acquire(NULL, "k", 0, &d), BATON_E_INTERNAL);
    acquire_bad(R_INT(1), 0);
    acquire_bad(R_STR("OK"), 0);
    acquire_bad(R_ERR("ERR boom"), 0);
    acquire_bad(R_NIL(), 0);
    acquire_bad(R_ARR(0), 0);
}

static void test_acquire_short_arrays(void **state)
{
    acquire_bad(R_ARR(1, R_INT(1)), 0);
    acquire_bad(R_ARR(3, R_INT(1), R_INT(-1), R_INT(7)), 0);
    acquire_bad(R_ARR(1, R_INT(0)), 0);
    acquire_bad(R_ARR(6, R_INT(0), R_INT(3), R_INT(5), R_STR("a"), R_INT(4), R_INT(250)), 0);
}

static void test_acquire_wrong_types(void **state)
{
    acquire_bad(R_ARR(4, R_STR("1"), R_INT(-1), R_INT(7), R_INT(1)), 0);
    acquire_bad(R_ARR(4, R_INT(1), R_STR("-1"), R_INT(7), R_INT(1)), 0);
    acquire_bad(R_ARR(4, R_INT(1), R_INT(-1), R_NIL(), R_INT(1)), 0);
    acquire_bad(R_ARR(4, R_INT(1), R_INT(-1), R_INT(7), R_ARR(0)), 0);
    acquire_bad(R_ARR(7, R_INT(0), R_STR("3"), R_INT(5), R_STR("a"), R_INT(4), R_INT(2), R_STR("")), 0);
    acquire_bad(R_ARR(7, R_INT(0), R_INT(3), R_INT(5), R_INT(1), R_INT(4), R_INT(2), R_STR("")), 0);
    acquire_bad(R_ARR(7, R_INT(0), R_INT(3), R_INT(5), R_STR("a"), R_STR("4"), R_INT(2), R_STR("")), 0);
    acquire_bad(R_ARR(7, R_INT(0), R_INT(3), R_INT(5), R_STR("a"), R_INT(4), R_INT(2), R_INT(0)), 0);
    acquire_bad(R_ARR(7, R_INT(0), R_INT(3), R_INT(5), R_STR("a"), R_INT(4), R_INT(2), R_NIL()), 0);
}

static void test_acquire_out_of_range(void **state)
{
    /* granted is 0, 1 or 2 */
    acquire_bad(R_ARR(4, R_INT(3), R_INT(-1), R_INT(7), R_INT(1)), 0);
    acquire_bad(R_ARR(4, R_INT(-1), R_INT(-1), R_INT(7), R_INT(1)), 0);
    acquire_bad(R_ARR(4, R_INT(LLONG_MAX), R_INT(-1), R_INT(7), R_INT(1)), 0);
    /* negative fencing tokens */
    acquire_bad(R_ARR(4, R_INT(1), R_INT(-1), R_INT(-7), R_INT(1)), 0);
    acquire_bad(R_ARR(4, R_INT(1), R_INT(-1), R_INT(LLONG_MIN), R_INT(1)), 0);
    acquire_bad(R_ARR(7, R_INT(0), R_INT(3), R_INT(5), R_STR("a"), R_INT(-4), R_INT(2), R_STR("")), 0);
    /* device index: -1 for a key, 0 .. INT32_MAX for a pool */
    acquire_bad(R_ARR(4, R_INT(1), R_INT(0), R_INT(7), R_INT(1)), 0);
    acquire_bad(R_ARR(4, R_INT(1), R_INT(-1), R_INT(7), R_INT(1)), 1);
    acquire_bad(R_ARR(4, R_INT(1), R_INT((long long)INT32_MAX + 1), R_INT(7), R_INT(1)), 1);
    acquire_bad(R_ARR(4, R_INT(1), R_INT(LLONG_MAX), R_INT(7), R_INT(1)), 1);
    acquire_bad(R_ARR(4, R_INT(1), R_INT(LLONG_MIN), R_INT(7), R_INT(1)), 1);
}

static void test_acquire_null_slots(void **state)
{
    acquire_bad(R_ARR(4, R_INT(1), NULL, R_INT(7), R_INT(1)), 0);
    acquire_bad(R_ARR(4, NULL, NULL, NULL, NULL), 0);
    /* a string node without its bytes */
    redisReply *owner = R_STR("x");
    free(owner->str);
    owner->str = NULL;
    acquire_bad(R_ARR(7, R_INT(0), R_INT(3), R_INT(5), owner, R_INT(4), R_INT(2), R_STR("")), 0);
    /* an array that claims elements it does not have */
    redisReply *r = R_ARR(0);
    r->elements = 4;
    rstore_acquire_dec d;
    assert_int_equal(acquire(r, "k", 0, &d), BATON_E_INTERNAL);
    r->elements = 0;
    reply_free(r);
}

/* ---------------------------------------------------------------- hold */

static int hold(redisReply *r, int renew, const char *handoff_key, rstore_hold_dec *d)
{
    int err = rstore_decode_hold(r, renew, handoff_key, d);
    assert_int_equal(err, d->err);
    if (err == BATON_OK)
        assert_null(d->msg);
    else
        assert_non_null(d->msg);
    return err;
}

static void hold_bad(redisReply *r, int renew, const char *handoff_key)
{
    rstore_hold_dec d;
    assert_int_equal(hold(r, renew, handoff_key, &d), BATON_E_INTERNAL);
    assert_string_equal(d.msg, "unexpected reply to a hold script");
    assert_null(d.res.next);
    reply_free(r);
}

static void test_hold_renew(void **state)
{
    rstore_hold_dec d;
    redisReply *r = R_ARR(2, R_INT(1), R_INT(5000));
    assert_int_equal(hold(r, 1, NULL, &d), BATON_OK);
    assert_int_equal(d.res.ttl_ms, 5000);
    assert_string_equal(d.res.holder_owner, "");
    assert_null(d.res.next);
    reply_free(r);
    r = R_ARR(3, R_INT(0), R_STR("bob"), R_INT(3));
    assert_int_equal(hold(r, 1, NULL, &d), BATON_E_NOT_HOLDER);
    assert_string_equal(d.res.holder_owner, "bob");
    assert_int_equal(d.res.holder_fencing, 3);
    assert_string_equal(d.msg, "not the holder: held by \"bob\" (fencing 3)");
    reply_free(r);
    r = R_ARR(3, R_INT(0), R_STR(""), R_INT(0));
    assert_int_equal(hold(r, 1, NULL, &d), BATON_E_NOT_HOLDER);
    assert_string_equal(d.msg, "not the holder: the key is not held");
    reply_free(r);
}

static void test_hold_release(void **state)
{
    rstore_hold_dec d;
    redisReply *r = R_ARR(3, R_INT(1), R_STR("me"), R_INT(4));
    assert_int_equal(hold(r, 0, NULL, &d), BATON_OK);
    assert_string_equal(d.res.holder_owner, "me");
    assert_int_equal(d.res.holder_fencing, 4);
    assert_null(d.res.next);
    reply_free(r);
    /* an owner as long as allowed still fits the message */
    char owner[BATON_OWNER_MAX + 1];
    memset(owner, 'o', BATON_OWNER_MAX);
    owner[BATON_OWNER_MAX] = '\0';
    r = R_ARR(3, R_INT(0), R_STR(owner), R_INT(LLONG_MAX));
    assert_int_equal(hold(r, 0, NULL, &d), BATON_E_NOT_HOLDER);
    assert_non_null(strstr(d.msg, "(fencing 9223372036854775807)"));
    reply_free(r);
}

static void test_hold_release_handoff(void **state)
{
    rstore_hold_dec d;
    redisReply *r = R_ARR(5, R_INT(1), R_STR("me"), R_INT(4), R_INT(5), R_INT(3000));
    assert_int_equal(hold(r, 0, "k", &d), BATON_OK);
    assert_non_null(d.res.next);
    assert_int_equal(d.res.next->granted, 1);
    assert_string_equal(d.res.next->key, "k");
    assert_int_equal(d.res.next->device, -1);
    assert_int_equal(d.res.next->fencing, 5);
    assert_int_equal(d.res.next->ttl_ms, 3000);
    reply_free(r);
    /* released, the next request not at the head: not granted */
    r = R_ARR(3, R_INT(1), R_STR("me"), R_INT(4));
    assert_int_equal(hold(r, 0, "k", &d), BATON_OK);
    assert_non_null(d.res.next);
    assert_int_equal(d.res.next->granted, 0);
    assert_int_equal(d.res.next->device, -1);
    assert_int_equal(d.res.next->retry_ms, -1);
    reply_free(r);
    /* not the holder: next is reported as not granted */
    r = R_ARR(3, R_INT(0), R_STR("bob"), R_INT(2));
    assert_int_equal(hold(r, 0, "k", &d), BATON_E_NOT_HOLDER);
    assert_non_null(d.res.next);
    assert_int_equal(d.res.next->granted, 0);
    reply_free(r);
    /* without a handoff the extra elements are ignored */
    r = R_ARR(5, R_INT(1), R_STR("me"), R_INT(4), R_INT(5), R_INT(3000));
    assert_int_equal(hold(r, 0, NULL, &d), BATON_OK);
    assert_null(d.res.next);
    reply_free(r);
}

static void test_hold_malformed(void **state)
{
    rstore_hold_dec d;
    assert_int_equal(hold(NULL, 0, NULL, &d), BATON_E_INTERNAL);
    hold_bad(R_INT(1), 0, NULL);
    hold_bad(R_STR("OK"), 1, NULL);
    hold_bad(R_ERR("ERR"), 0, "k");
    hold_bad(R_NIL(), 0, NULL);
    hold_bad(R_ARR(0), 0, NULL);
    hold_bad(R_ARR(1, R_INT(1)), 1, NULL);
    hold_bad(R_ARR(2, R_INT(1), R_STR("5000")), 1, NULL);
    hold_bad(R_ARR(1, R_INT(1)), 0, NULL);
    hold_bad(R_ARR(2, R_INT(1), R_STR("me")), 0, NULL);
    hold_bad(R_ARR(3, R_INT(1), R_INT(7), R_INT(4)), 0, NULL);
    hold_bad(R_ARR(3, R_INT(1), R_STR("me"), R_STR("4")), 0, NULL);
    hold_bad(R_ARR(3, R_INT(0), R_STR("me"), R_INT(-4)), 1, NULL);
    hold_bad(R_ARR(3, R_INT(2), R_STR("me"), R_INT(4)), 0, NULL);
    hold_bad(R_ARR(3, R_INT(-1), R_STR("me"), R_INT(4)), 0, NULL);
    hold_bad(R_ARR(3, R_STR("1"), R_STR("me"), R_INT(4)), 0, NULL);
    hold_bad(R_ARR(5, R_INT(1), R_STR("me"), R_INT(4), R_STR("5"), R_INT(3000)), 0, "k");
    hold_bad(R_ARR(5, R_INT(1), R_STR("me"), R_INT(4), R_INT(5), R_NIL()), 0, "k");
    hold_bad(R_ARR(5, R_INT(1), R_STR("me"), R_INT(4), R_INT(LLONG_MIN), R_INT(1)), 0, "k");
    hold_bad(R_ARR(5, R_INT(1), R_STR("me"), R_INT(4), NULL, NULL), 0, "k");
    hold_bad(R_ARR(3, NULL, R_STR("me"), R_INT(4)), 0, NULL);
}

/* ------------------------------------------------------------ describe */

static void describe_bad(redisReply *r)
{
    rstore_describe_dec d;
    assert_int_equal(rstore_decode_describe(r, &d), BATON_E_INTERNAL);
    assert_int_equal(d.err, BATON_E_INTERNAL);
    assert_string_equal(d.msg, "unexpected reply to describe");
    assert_int_equal(d.res.held, 0);
    reply_free(r);
}

static void test_describe(void **state)
{
    rstore_describe_dec d;
    redisReply *r = R_ARR(5, R_INT(1), R_STR("o"), R_INT(5), R_INT(1000), R_INT(2));
    assert_int_equal(rstore_decode_describe(r, &d), BATON_OK);
    assert_null(d.msg);
    assert_int_equal(d.res.held, 1);
    assert_string_equal(d.res.owner, "o");
    assert_int_equal(d.res.fencing, 5);
    assert_int_equal(d.res.ttl_ms, 1000);
    assert_int_equal(d.res.waiters, 2);
    reply_free(r);
    r = R_ARR(5, R_INT(0), R_STR(""), R_INT(0), R_INT(0), R_INT(3));
    assert_int_equal(rstore_decode_describe(r, &d), BATON_OK);
    assert_int_equal(d.res.held, 0);
    assert_int_equal(d.res.waiters, 3);
    reply_free(r);
}

static void test_describe_malformed(void **state)
{
    rstore_describe_dec d;
    assert_int_equal(rstore_decode_describe(NULL, &d), BATON_E_INTERNAL);
    describe_bad(R_INT(0));
    describe_bad(R_STR("x"));
    describe_bad(R_ERR("ERR"));
    describe_bad(R_NIL());
    describe_bad(R_ARR(0));
    describe_bad(R_ARR(4, R_INT(1), R_STR("o"), R_INT(5), R_INT(1000)));
    describe_bad(R_ARR(5, R_STR("1"), R_STR("o"), R_INT(5), R_INT(1000), R_INT(2)));
    describe_bad(R_ARR(5, R_INT(1), R_INT(0), R_INT(5), R_INT(1000), R_INT(2)));
    describe_bad(R_ARR(5, R_INT(1), R_STR("o"), R_STR("5"), R_INT(1000), R_INT(2)));
    describe_bad(R_ARR(5, R_INT(1), R_STR("o"), R_INT(5), R_NIL(), R_INT(2)));
    describe_bad(R_ARR(5, R_INT(1), R_STR("o"), R_INT(5), R_INT(1000), R_ARR(0)));
    describe_bad(R_ARR(5, R_INT(1), R_STR("o"), R_INT(LLONG_MIN), R_INT(1000), R_INT(2)));
    describe_bad(R_ARR(5, R_INT(1), R_STR("o"), R_INT(5), NULL, R_INT(2)));
}

/* ------------------------------------------------------------- missing */

static void test_missing(void **state)
{
    const char *tok[4];
    size_t n = 99;
    redisReply *r = R_ARR(2, R_STR("aa"), R_STR("bb"));
    assert_int_equal(rstore_decode_missing(r, tok, 4, &n), BATON_OK);
    assert_int_equal(n, 2);
    assert_string_equal(tok[0], "aa");
    assert_string_equal(tok[1], "bb");
    reply_free(r);
    r = R_ARR(0);
    assert_int_equal(rstore_decode_missing(r, tok, 4, &n), BATON_OK);
    assert_int_equal(n, 0);
    reply_free(r);
    /* elements that are not tokens are skipped */
    r = R_ARR(5, R_STR("aa"), R_INT(5), R_NIL(), NULL, R_STR("bb"));
    assert_int_equal(rstore_decode_missing(r, tok, 2, &n), BATON_OK);
    assert_int_equal(n, 2);
    assert_string_equal(tok[1], "bb");
    reply_free(r);
}

static void test_missing_malformed(void **state)
{
    const char *tok[2];
    size_t n = 99;
    assert_int_equal(rstore_decode_missing(NULL, tok, 2, &n), BATON_E_INTERNAL);
    assert_int_equal(n, 0);
    redisReply *bad[] = {R_INT(1), R_STR("aa"), R_ERR("ERR"), R_NIL()};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        n = 99;
        assert_int_equal(rstore_decode_missing(bad[i], tok, 2, &n), BATON_E_INTERNAL);
        assert_int_equal(n, 0);
        reply_free(bad[i]);
    }
    /* more tokens than the batch sent */
    redisReply *r = R_ARR(3, R_STR("aa"), R_STR("bb"), R_STR("cc"));
    assert_int_equal(rstore_decode_missing(r, tok, 2, &n), BATON_E_INTERNAL);
    assert_int_equal(n, 0);
    reply_free(r);
    /* an array that claims elements it does not have */
    r = R_ARR(0);
    r->elements = 3;
    assert_int_equal(rstore_decode_missing(r, tok, 2, &n), BATON_E_INTERNAL);
    r->elements = 0;
    reply_free(r);
}

/* ------------------------------------------------------------- helpers */

static void test_el_helpers(void **state)
{
    long long v = 5;
    const char *s = "unchanged";
    redisReply *r = R_ARR(3, R_INT(LLONG_MIN), R_STR("x"), NULL);
    assert_int_equal(rstore_el_int(r, 0, &v), 0);
    assert_true(v == LLONG_MIN);
    assert_int_equal(rstore_el_int(r, 1, &v), -1);
    assert_int_equal(rstore_el_int(r, 2, &v), -1);
    assert_int_equal(rstore_el_int(r, 3, &v), -1);
    assert_int_equal(rstore_el_int(r, SIZE_MAX, &v), -1);
    assert_int_equal(rstore_el_str(r, 1, &s), 0);
    assert_string_equal(s, "x");
    assert_int_equal(rstore_el_str(r, 0, &s), -1);
    assert_int_equal(rstore_el_str(r, 2, &s), -1);
    assert_int_equal(rstore_el_str(NULL, 0, &s), -1);
    reply_free(r);
    r = R_INT(1);
    assert_int_equal(rstore_el_int(r, 0, &v), -1);
    reply_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_acquire_granted_key),
        cmocka_unit_test(test_acquire_granted_pool),
        cmocka_unit_test(test_acquire_granted_pool_devices),
        cmocka_unit_test(test_acquire_queued),
        cmocka_unit_test(test_acquire_pool_count_mismatch),
        cmocka_unit_test(test_acquire_not_an_array),
        cmocka_unit_test(test_acquire_short_arrays),
        cmocka_unit_test(test_acquire_wrong_types),
        cmocka_unit_test(test_acquire_out_of_range),
        cmocka_unit_test(test_acquire_null_slots),
        cmocka_unit_test(test_hold_renew),
        cmocka_unit_test(test_hold_release),
        cmocka_unit_test(test_hold_release_handoff),
        cmocka_unit_test(test_hold_malformed),
        cmocka_unit_test(test_describe),
        cmocka_unit_test(test_describe_malformed),
        cmocka_unit_test(test_missing),
        cmocka_unit_test(test_missing_malformed),
        cmocka_unit_test(test_el_helpers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
