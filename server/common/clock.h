#ifndef BATON_CLOCK_H
#define BATON_CLOCK_H

/*
 * The one monotonic clock of batond and libbaton (header-only: both sides
 * include it). Milliseconds since an arbitrary start; never goes back.
 */

#include <stdint.h>
#include <time.h>

static inline int64_t clock_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* a + b for deadlines, saturating at INT64_MAX / INT64_MIN instead of
 * overflowing (a wait of INT64_MAX ms must not wrap). */
static inline int64_t clock_add_ms(int64_t a, int64_t b)
{
    if (b > 0 && a > INT64_MAX - b)
        return INT64_MAX;
    if (b < 0 && a < INT64_MIN - b)
        return INT64_MIN;
    return a + b;
}

#endif
