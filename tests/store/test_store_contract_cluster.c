/* The store contract (contract.c) against the Redis store on a Redis Cluster
 * (cluster.c: routing by slot, sharded pub/sub, a floor per node), named by
 * BATON_TEST_REDIS_CLUSTER (cluster://H:P,...; deploy/test.sh starts three
 * primaries, with BATON_TEST_REDIS_CLUSTER_PASSWORD); every case is skipped
 * when it is unset. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "contract.h"

static baton_store *open_cluster(struct event_base *base)
{
    static int n;
    const char *addr = getenv("BATON_TEST_REDIS_CLUSTER");
    if (!addr || !addr[0])
        return NULL;
    char prefix[64];
    snprintf(prefix, sizeof prefix, "cc%ld.%d:", (long)getpid(), ++n);
    store_redis_opts o = {.address = addr,
                          .key_prefix = prefix,
                          .password = getenv("BATON_TEST_REDIS_CLUSTER_PASSWORD"),
                          .command_timeout_ms = 5000,
                          .reconnect_ms = 50,
                          .keyspace_events = 0};
    return store_redis_new(base, &o);
}

int main(void)
{
    const contract_backend b = {.name = "contract/cluster", .open = open_cluster};
    return contract_run(&b);
}
