#ifndef BATON_ACQUIRE_REQ_H
#define BATON_ACQUIRE_REQ_H

/*
 * A validated Acquire, as the transport's validation (validate.h) produces it
 * and the engine (engine.h) takes it. Its own header so that validation, which
 * is pure, does not depend on the engine or the store.
 */

#include <stdint.h>

typedef enum engine_mode {
    ENGINE_MODE_LEASE = 0,
    ENGINE_MODE_STREAM = 1,
} engine_mode;

/* A validated Acquire (see validate.h): ttl/wait already resolved. */
typedef struct engine_acquire_req {
    const char *key;   /* plain key, or NULL */
    const char *pool;  /* pool name, or NULL */
    int32_t devices;   /* pool only */
    int32_t count;     /* pool only: devices granted together (0 or 1 = one) */
    int64_t weight;    /* pool only: share of each device; 0 = the whole device */
    int64_t capacity;  /* pool only, with a weight: each device's capacity */
    const char *owner; /* valid UTF-8, may be "" */
    int64_t ttl_ms;    /* > 0 */
    int64_t wait_ms;   /* >= 0; 0 = try once */
    engine_mode mode;
} engine_acquire_req;

#endif
