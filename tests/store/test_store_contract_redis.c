/* The store contract (contract.c) against the Redis store and its Lua
 * scripts, on the private redis-server named by BATON_TEST_REDIS; every
 * case is skipped when it is unset. Each case gets its own key prefix. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "contract.h"

static baton_store *open_redis(struct event_base *base)
{
    static int n;
    const char *addr = getenv("BATON_TEST_REDIS");
    if (!addr || !addr[0])
        return NULL;
    char prefix[64];
    snprintf(prefix, sizeof prefix, "c%ld.%d:", (long)getpid(), ++n);
    store_redis_opts o = {.address = addr,
                          .key_prefix = prefix,
                          .command_timeout_ms = 5000,
                          .reconnect_ms = 50,
                          .keyspace_events = 0};
    return store_redis_new(base, &o);
}

int main(void)
{
    const contract_backend b = {.name = "contract/redis", .open = open_redis};
    return contract_run(&b);
}
