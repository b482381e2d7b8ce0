/* Store tests: a plain (blocking) hiredis connection to the test Redis named
 * like BATON_TEST_REDIS ("unix:/path" or "host:port"), to look at or change
 * what the store wrote. Include after cmocka.h. */
#ifndef BATON_TESTS_STORE_REDIS_SYNC_H
#define BATON_TESTS_STORE_REDIS_SYNC_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

static inline redisContext *sync_connect(const char *addr)
{
    redisContext *c;
    if (strncmp(addr, "unix:", 5) == 0) {
        c = redisConnectUnix(addr + 5);
    } else {
        char host[256];
        const char *colon = strrchr(addr, ':');
        assert_non_null(colon);
        snprintf(host, sizeof(host), "%.*s", (int)(colon - addr), addr);
        c = redisConnect(host, atoi(colon + 1));
    }
    assert_non_null(c);
    if (c->err)
        fail_msg("cannot connect to %s: %s", addr, c->errstr);
    return c;
}

#endif
