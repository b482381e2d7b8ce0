#ifndef BATON_LEASE_POLICY_H
#define BATON_LEASE_POLICY_H

/*
 * When a holder renews and when it gives up, shared by batond (stream holds)
 * and libbaton (leases), so the two sides cannot drift apart.
 *
 * Renew every third of the TTL, so that one failed attempt still leaves room
 * for another before the lease runs out.
 *
 * Why a give-up margin: once the lease runs out, Redis may give the key to
 * the next waiter at once, and the holder needs time to hear that it lost
 * the lock and stop. So a holder that could not extend its lease gives up a
 * fifth of the TTL before it runs out, at most 2 s (renewals run every third,
 * so at least one retry has failed by then).
 */

#include <stdint.h>

#define LEASE_GIVE_UP_MARGIN_MAX_MS 2000

static inline int64_t lease_renew_step_ms(int64_t ttl_ms)
{
    int64_t step = ttl_ms / 3;
    return step < 1 ? 1 : step;
}

static inline int64_t lease_give_up_margin_ms(int64_t ttl_ms)
{
    int64_t margin = ttl_ms / 5;
    return margin > LEASE_GIVE_UP_MARGIN_MAX_MS ? LEASE_GIVE_UP_MARGIN_MAX_MS : margin;
}

/* The moment a holder whose lease expires at expires_ms reports it lost. */
static inline int64_t lease_give_up_at_ms(int64_t expires_ms, int64_t ttl_ms)
{
    return expires_ms - lease_give_up_margin_ms(ttl_ms);
}

#endif
