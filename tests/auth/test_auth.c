/* Unit tests for server/auth/auth.c: bearer parsing, digest match, prefix
 * rules for keys, pools and watch prefixes, and the denial message. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "auth.h"

static char *prefixes_a[] = {"team-a/", "shared/"};
static char *prefixes_all[] = {""};

static auth_table *table(void)
{
    static char sha_a[65], sha_ops[65];
    assert_int_equal(auth_sha256_hex("secret-a", 8, sha_a), 0);
    assert_int_equal(auth_sha256_hex("secret-ops", 10, sha_ops), 0);
    config_token t[2] = {
        {.name = "team-a", .sha256 = sha_a, .prefixes = prefixes_a, .nprefixes = 2, .admin = 0},
        {.name = "ops", .sha256 = sha_ops, .prefixes = prefixes_all, .nprefixes = 1, .admin = 1},
    };
    auth_table *tab = auth_table_new(t, 2);
    assert_non_null(tab);
    return tab;
}

static const auth_token *authn(const auth_table *t, const char *v)
{
    return auth_authenticate(t, v, strlen(v));
}

static void test_sha256_hex(void **state)
{
    (void)state;
    char hex[65];
    assert_int_equal(auth_sha256_hex("abc", 3, hex), 0);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

static void test_bearer(void **state)
{
    (void)state;
    auth_table *t = table();
    const auth_token *a = authn(t, "Bearer secret-a");
    assert_non_null(a);
    assert_string_equal(auth_token_name(a), "team-a");
    assert_int_equal(auth_token_admin(a), 0);
    assert_ptr_equal(authn(t, "bearer secret-a"), a); /* the scheme in any case */
    const auth_token *o = authn(t, "Bearer secret-ops");
    assert_non_null(o);
    assert_int_equal(auth_token_admin(o), 1);
    assert_null(authn(t, "Bearer secret-b"));
    assert_null(authn(t, "Bearer secret-a "));   /* exact token only */
    assert_null(authn(t, "Bearer "));            /* empty */
    assert_null(authn(t, "Basic secret-a"));     /* another scheme */
    assert_null(authn(t, "secret-a"));           /* no scheme */
    assert_null(authn(t, ""));
    assert_null(auth_authenticate(t, NULL, 0));
    /* Not NUL-terminated: only len bytes count. */
    assert_ptr_equal(auth_authenticate(t, "Bearer secret-aXYZ", 15), a);
    auth_table_free(t);
}

static void test_bad_digest_refused(void **state)
{
    (void)state;
    config_token t = {.name = "x", .sha256 = "zz", .prefixes = prefixes_all, .nprefixes = 1};
    assert_null(auth_table_new(&t, 1));
}

static void test_prefixes(void **state)
{
    (void)state;
    auth_table *t = table();
    const auth_token *a = authn(t, "Bearer secret-a"), *o = authn(t, "Bearer secret-ops");
    assert_true(auth_allows(a, "team-a/x"));
    assert_true(auth_allows(a, "shared/gpu/1"));
    assert_false(auth_allows(a, "team-b/x"));
    assert_false(auth_allows(a, "team-a"));  /* the prefix includes its slash */
    assert_true(auth_allows(o, "anything"));
    assert_int_equal(auth_watch(a, "team-a/"), AUTH_WATCH_ALL);
    assert_int_equal(auth_watch(a, "team-a/sub"), AUTH_WATCH_ALL);
    assert_int_equal(auth_watch(a, "team"), AUTH_WATCH_FILTER);
    assert_int_equal(auth_watch(a, "s"), AUTH_WATCH_FILTER);
    assert_int_equal(auth_watch(a, "team-b/"), AUTH_WATCH_NONE);
    assert_int_equal(auth_watch(o, "x"), AUTH_WATCH_ALL);
    char msg[256];
    auth_denied(a, "key", "team-b/x", msg, sizeof msg);
    assert_string_equal(msg, "key \"team-b/x\" is outside the prefixes of token \"team-a\" (allowed: \"team-a/\", "
                             "\"shared/\")");
    char small[20];
    auth_denied(a, "key", "team-b/x", small, sizeof small);
    assert_int_equal(strlen(small), sizeof small - 1);
    auth_table_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sha256_hex),
        cmocka_unit_test(test_bearer),
        cmocka_unit_test(test_bad_digest_refused),
        cmocka_unit_test(test_prefixes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
