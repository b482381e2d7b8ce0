/* Unit tests of the events channel encoding (server/store/store_event.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "store.h"

/* Parses a copy of `text` (exactly strlen bytes, no terminator after it). */
static int parse_text(const char *text, char *buf, size_t bufsize, store_event *ev)
{
    size_t n = strlen(text);
    assert_true(n <= bufsize);
    memset(buf, 'Z', bufsize);
    memcpy(buf, text, n);
    return store_event_parse(buf, n, ev);
}

static void test_parse_full(void **state)
{
    (void)state;
    char buf[128];
    store_event ev;
    assert_int_equal(parse_text("ACQUIRED 42 1700000000123 gpu:0 alice on host7", buf, sizeof(buf), &ev), 0);
    assert_int_equal(ev.type, STORE_EV_ACQUIRED);
    assert_true(ev.fencing == 42);
    assert_true(ev.at_unix_ms == 1700000000123LL);
    assert_string_equal(ev.key, "gpu:0");
    assert_string_equal(ev.owner, "alice on host7");
}

static void test_parse_every_type(void **state)
{
    (void)state;
    static const char *names[] = {"ACQUIRED", "RELEASED", "EXPIRED", "FORCE_RELEASED", "WAKE", "WAKE_POOL"};
    for (int t = STORE_EV_ACQUIRED; t <= STORE_EV_WAKE_POOL; t++) {
        char text[64], buf[64];
        store_event ev;
        assert_string_equal(store_event_type_name((store_event_type)t), names[t - 1]);
        snprintf(text, sizeof(text), "%s 1 2 k o", names[t - 1]);
        assert_int_equal(parse_text(text, buf, sizeof(buf), &ev), 0);
        assert_int_equal(ev.type, t);
    }
    assert_null(store_event_type_name((store_event_type)0));
    assert_null(store_event_type_name((store_event_type)99));
}

static void test_parse_empty_owner(void **state)
{
    (void)state;
    char buf[64];
    store_event ev;
    /* With the trailing separator (what the scripts send) ... */
    assert_int_equal(parse_text("WAKE 0 5 video:1 ", buf, sizeof(buf), &ev), 0);
    assert_string_equal(ev.key, "video:1");
    assert_string_equal(ev.owner, "");
    assert_true(ev.fencing == 0);
    /* ... and without it. */
    assert_int_equal(parse_text("WAKE_POOL 0 5 gpus", buf, sizeof(buf), &ev), 0);
    assert_int_equal(ev.type, STORE_EV_WAKE_POOL);
    assert_string_equal(ev.key, "gpus");
    assert_string_equal(ev.owner, "");
}

static void test_parse_owner_edge_spaces(void **state)
{
    (void)state;
    char buf[64];
    store_event ev;
    assert_int_equal(parse_text("RELEASED 7 8 k  two  spaces ", buf, sizeof(buf), &ev), 0);
    assert_string_equal(ev.key, "k");
    assert_string_equal(ev.owner, " two  spaces ");
}

static void test_parse_big_numbers(void **state)
{
    (void)state;
    char buf[96];
    store_event ev;
    assert_int_equal(
        parse_text("EXPIRED 18446744073709551615 9223372036854775807 k o", buf, sizeof(buf), &ev), 0);
    assert_true(ev.fencing == UINT64_MAX);
    assert_true(ev.at_unix_ms == INT64_MAX);
    assert_int_equal(parse_text("EXPIRED 18446744073709551616 1 k o", buf, sizeof(buf), &ev),
                     BATON_E_INVALID);
    assert_int_equal(parse_text("EXPIRED 1 9223372036854775808 k o", buf, sizeof(buf), &ev), BATON_E_INVALID);
}

static void test_parse_malformed(void **state)
{
    (void)state;
    static const char *bad[] = {
        "",                    /* empty */
        "ACQUIRED",            /* only the type */
        "ACQUIRED ",           /* missing fencing */
        "ACQUIRED 1",          /* missing time */
        "ACQUIRED 1 2",        /* missing key */
        "ACQUIRED 1 2 ",       /* empty key */
        "ACQUIRED 1 2  owner", /* empty key, owner */
        "ACQUIRED  1 2 k o",   /* double space: empty fencing */
        "ACQUIRED x 2 k o",    /* bad fencing */
        "ACQUIRED -1 2 k o",   /* negative fencing */
        "ACQUIRED 1 2x k o",   /* bad time */
        "ACQUIRED 1 -2 k o",   /* negative time */
        "ACQUIRED 1  k o",     /* empty time */
        "acquired 1 2 k o",    /* type is case-sensitive */
        "GRANTED 1 2 k o",     /* unknown type */
        "WAKE_POOLX 1 2 k o",  /* unknown type (prefix of a known one) */
        " ACQUIRED 1 2 k o",   /* leading space */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char buf[64];
        store_event ev;
        if (parse_text(bad[i], buf, sizeof(buf), &ev) != BATON_E_INVALID)
            fail_msg("accepted malformed payload \"%s\"", bad[i]);
    }
    char nul[] = "ACQUIRED 1 2 k o\0x";
    store_event ev;
    assert_int_equal(store_event_parse(nul, sizeof(nul) - 1, &ev), BATON_E_INVALID);
    assert_int_equal(store_event_parse(NULL, 3, &ev), BATON_E_INVALID);
}

/* The parser never writes past buf[len-1]. */
static void test_parse_stays_in_bounds(void **state)
{
    (void)state;
    char buf[32];
    store_event ev;
    const char *text = "WAKE 0 0 k";
    memset(buf, 'Z', sizeof(buf));
    memcpy(buf, text, strlen(text));
    assert_int_equal(store_event_parse(buf, strlen(text), &ev), 0);
    assert_string_equal(ev.key, "k");
    assert_string_equal(ev.owner, "");
    for (size_t i = strlen(text); i < sizeof(buf); i++)
        assert_int_equal(buf[i], 'Z');
}

static void test_format_roundtrip(void **state)
{
    (void)state;
    store_event ev = {.type = STORE_EV_FORCE_RELEASED,
                      .key = "node7/gpu/3",
                      .owner = "bob ci job",
                      .fencing = 1700000000000001ULL,
                      .at_unix_ms = 1700000000000LL};
    char out[128];
    int n = store_event_format(&ev, out, sizeof(out));
    assert_string_equal(out, "FORCE_RELEASED 1700000000000001 1700000000000 node7/gpu/3 bob ci job");
    assert_int_equal(n, (int)strlen(out));
    store_event back;
    assert_int_equal(store_event_parse(out, (size_t)n, &back), 0);
    assert_int_equal(back.type, STORE_EV_FORCE_RELEASED);
    assert_true(back.fencing == 1700000000000001ULL);
    assert_true(back.at_unix_ms == 1700000000000LL);
    assert_string_equal(back.key, "node7/gpu/3");
    assert_string_equal(back.owner, "bob ci job");
}

static void test_format_errors(void **state)
{
    (void)state;
    char out[16];
    store_event ev = {.type = STORE_EV_WAKE, .key = "k", .owner = NULL, .fencing = 0, .at_unix_ms = 1};
    assert_int_equal(store_event_format(&ev, out, sizeof(out)), (int)strlen("WAKE 0 1 k "));
    assert_string_equal(out, "WAKE 0 1 k ");
    ev.owner = "a long owner that does not fit";
    assert_int_equal(store_event_format(&ev, out, sizeof(out)), -1);
    ev.owner = "";
    ev.type = (store_event_type)0;
    assert_int_equal(store_event_format(&ev, out, sizeof(out)), -1);
    ev.type = STORE_EV_WAKE;
    ev.key = "";
    assert_int_equal(store_event_format(&ev, out, sizeof(out)), -1);
    ev.key = "a b";
    assert_int_equal(store_event_format(&ev, out, sizeof(out)), -1);
    ev.key = NULL;
    assert_int_equal(store_event_format(&ev, out, sizeof(out)), -1);
    /* Exactly fitting, and one byte short. */
    ev.key = "k";
    ev.owner = "";
    assert_int_equal(store_event_format(&ev, out, strlen("WAKE 0 1 k ") + 1), 11);
    assert_int_equal(store_event_format(&ev, out, strlen("WAKE 0 1 k ")), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_full),
        cmocka_unit_test(test_parse_every_type),
        cmocka_unit_test(test_parse_empty_owner),
        cmocka_unit_test(test_parse_owner_edge_spaces),
        cmocka_unit_test(test_parse_big_numbers),
        cmocka_unit_test(test_parse_malformed),
        cmocka_unit_test(test_parse_stays_in_bounds),
        cmocka_unit_test(test_format_roundtrip),
        cmocka_unit_test(test_format_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
