/* Store tests' support: running the event loop until a condition holds (or
 * for a while), and a plain (blocking) hiredis connection to the test Redis
 * named like BATON_TEST_REDIS ("unix:/path" or "host:port"), to look at or
 * change what the store wrote. Include after cmocka.h; a test's fixture has
 * its event_base in `base`. */
#ifndef BATON_TESTS_STORE_REDIS_SYNC_H
#define BATON_TESTS_STORE_REDIS_SYNC_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <stdint.h>
#include <time.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#define WAIT_MS 5000 /* generous: only catches hangs */

static inline int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Runs the loop until `cond` holds or WAIT_MS passes; fails on the latter. */
#define RUN_UNTIL(f, cond)                                                                                   \
    do {                                                                                                     \
        int64_t deadline_ = now_ms() + WAIT_MS;                                                              \
        while (!(cond) && now_ms() < deadline_)                                                              \
            event_base_loop((f)->base, EVLOOP_ONCE);                                                         \
        if (!(cond))                                                                                         \
            fail_msg("timed out waiting for %s", #cond);                                                     \
    } while (0)

/* Runs the loop for about ms milliseconds (to see that nothing more comes). */
static inline void loop_for(struct event_base *base, int64_t ms)
{
    int64_t deadline = now_ms() + ms;
    while (now_ms() < deadline)
        event_base_loop(base, EVLOOP_ONCE);
}
#define run_for(f, ms) loop_for((f)->base, (ms))

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
