/* Unit tests for server/common/map.c: growth, removal, colliding hashes,
 * string and id keys, and the lease policy rule. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "clock.h"
#include "lease_policy.h"
#include "map.h"

typedef struct item {
    uint64_t id;
    map_node node;
} item;

static item *find(map *m, uint64_t id)
{
    uint64_t h = map_hash_u64(id);
    for (map_node *n = map_first(m, h); n; n = map_next(n, h)) {
        item *it = MAP_ENTRY(n, item, node);
        if (it->id == id)
            return it;
    }
    return NULL;
}

static void ids_grow_and_remove(void **state)
{
    enum { N = 5000 };
    item *items = calloc(N, sizeof *items);
    map m = {0};
    assert_null(find(&m, 1));
    for (int i = 0; i < N; i++) {
        items[i].id = (uint64_t)i * 7;
        assert_int_equal(map_insert(&m, &items[i].node, map_hash_u64(items[i].id)), 0);
    }
    assert_int_equal(m.len, N);
    assert_true(m.cap >= N);
    for (int i = 0; i < N; i++)
        assert_ptr_equal(find(&m, (uint64_t)i * 7), &items[i]);
    assert_null(find(&m, 3));
    for (int i = 0; i < N; i += 2)
        map_remove(&m, &items[i].node);
    assert_int_equal(m.len, N / 2);
    for (int i = 0; i < N; i++) {
        if (i % 2)
            assert_ptr_equal(find(&m, (uint64_t)i * 7), &items[i]);
        else
            assert_null(find(&m, (uint64_t)i * 7));
    }
    map_free(&m);
    free(items);
}

/* Two entries under one hash (an id reused while the first is finishing):
 * both are found by walking the chain, and removing one keeps the other. */
static void same_hash_chain(void **state)
{
    item a = {.id = 42}, b = {.id = 42}, c = {.id = 43};
    map m = {0};
    map_insert(&m, &a.node, map_hash_u64(42));
    map_insert(&m, &c.node, map_hash_u64(43));
    map_insert(&m, &b.node, map_hash_u64(42));
    int seen = 0;
    for (map_node *n = map_first(&m, map_hash_u64(42)); n; n = map_next(n, map_hash_u64(42))) {
        assert_int_equal(MAP_ENTRY(n, item, node)->id, 42);
        seen++;
    }
    assert_int_equal(seen, 2);
    map_remove(&m, &b.node);
    assert_ptr_equal(find(&m, 42), &a);
    map_remove(&m, &a.node);
    assert_null(find(&m, 42));
    assert_ptr_equal(find(&m, 43), &c);
    map_free(&m);
}

typedef struct named {
    map_node node;
    char name[16];
} named;

static void count_cb(map_node *n, void *ud)
{
    (*(int *)ud)++;
}

static void strings_and_each(void **state)
{
    named v[3] = {{.name = "gpu/0"}, {.name = "gpu/1"}, {.name = "video:9"}};
    map m = {0};
    for (int i = 0; i < 3; i++)
        map_insert(&m, &v[i].node, map_hash_str(v[i].name));
    uint64_t h = map_hash_str("gpu/1");
    named *hit = NULL;
    for (map_node *n = map_first(&m, h); n; n = map_next(n, h))
        if (strcmp(MAP_ENTRY(n, named, node)->name, "gpu/1") == 0)
            hit = MAP_ENTRY(n, named, node);
    assert_ptr_equal(hit, &v[1]);
    assert_int_not_equal(map_hash_str("gpu/0"), map_hash_str("gpu/1"));
    int count = 0;
    map_each(&m, count_cb, &count);
    assert_int_equal(count, 3);
    map_free(&m);
    count = 0;
    map_each(&m, count_cb, &count);
    assert_int_equal(count, 0);
}

static void lease_rule(void **state)
{
    assert_int_equal(lease_renew_step_ms(30000), 10000);
    assert_int_equal(lease_renew_step_ms(2), 1);
    assert_int_equal(lease_give_up_margin_ms(5000), 1000);
    assert_int_equal(lease_give_up_margin_ms(60000), 2000);
    assert_int_equal(lease_give_up_at_ms(100000, 5000), 99000);
    assert_int_equal(clock_add_ms(INT64_MAX - 5, 10), INT64_MAX);
    assert_int_equal(clock_add_ms(5, 10), 15);
    int64_t a = clock_mono_ms(), b = clock_mono_ms();
    assert_true(b >= a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(ids_grow_and_remove),
        cmocka_unit_test(same_hash_chain),
        cmocka_unit_test(strings_and_each),
        cmocka_unit_test(lease_rule),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
