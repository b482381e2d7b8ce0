#ifndef BATON_TESTS_STORE_CONTRACT_H
#define BATON_TESTS_STORE_CONTRACT_H

/*
 * The store contract: one set of cases written against store.h alone, run
 * against every implementation (test_store_contract_fake.c: the in-memory fake the
 * engine tests use; test_store_contract_redis.c: the Redis store and its Lua
 * scripts, which are the truth). A case that passes on one and fails on the
 * other is a drift to fix in the fake.
 *
 * Cases use real time (TTLs and liveness windows of ~100 ms), as both
 * implementations run on the monotonic clock.
 */

#include "store.h"

struct event_base;

typedef struct contract_backend {
    const char *name;
    /* A new store on base with no locks and no queues (a fresh namespace),
     * hooks unset; the suite sets them and waits for on_state(1). NULL when
     * the backend is not available: the case is then skipped. */
    baton_store *(*open)(struct event_base *base);
} contract_backend;

/* Runs every case against b; returns the number of failures (for main). */
int contract_run(const contract_backend *b);

#endif
