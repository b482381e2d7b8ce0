#ifndef BATON_VALIDATE_H
#define BATON_VALIDATE_H

/*
 * Request validation: pure functions from decoded protobuf-c messages (or
 * plain strings) to engine requests. Nothing reaches the engine or Redis
 * without passing through here.
 *
 * Keys, pool names and watch prefixes: 1..BATON_KEY_MAX bytes of
 *   A-Z a-z 0-9 and  _ - . : / @ + =
 * (so "video:123", "gpu_lock:0", "node7/gpu/3" are keys). A pool name follows
 * the key rules and must be short enough that "name/<index>" fits BATON_KEY_MAX
 * for every device. Owners: valid UTF-8 without NUL or
 * control characters other than tab, at most BATON_OWNER_MAX bytes.
 * Tokens: exactly BATON_TOKEN_LEN lowercase hex characters.
 *
 * Each function returns 0, or BATON_E_INVALID with a message naming the field
 * written to err (always NUL-terminated, truncated to errlen).
 */

#include <stddef.h>
#include <stdint.h>

#include "baton/v1/lock.pb-c.h"
#include "acquire_req.h"
#include "errors.h"

typedef struct validate_limits {
    int64_t default_ttl_ms; /* ttl_ms = 0 means this */
    int64_t min_ttl_ms;
    int64_t max_ttl_ms;
    int64_t max_wait_ms; /* wait_ms < 0 means this; above it is invalid */
    int32_t max_pool_devices;
    /* Configured pools: a request naming one must use its device count. */
    const char *const *pool_names;
    const int32_t *pool_devices;
    /* Per configured pool: its device names (pool_devices[i] of them), or
     * NULL for a pool without names; NULL when no pool has any. */
    const char *const *const *pool_device_names;
    /* Per configured pool: each device's capacity (pool.weight's bound);
     * NULL = every pool's is 1. */
    const int64_t *pool_capacity;
    size_t npools;
} validate_limits;

int validate_key(const char *field, const char *key, char *err, size_t errlen);
int validate_token(const char *field, const char *token, char *err, size_t errlen);
int validate_owner(const char *field, const char *owner, char *err, size_t errlen);
/* ttl_ms: 0 -> default; else must lie in [min, max]. Writes the resolved TTL. */
int validate_ttl(const validate_limits *lim, int64_t ttl_ms, int64_t *out, char *err, size_t errlen);

/* The configured device names of pool P (all pool_devices of them, indexed
 * by device) given one of its device keys "P/i"; NULL when P is not a
 * configured pool or has no names. */
const char *const *validate_pool_device_names(const validate_limits *lim, const char *device_key);

/* Fills `out` with pointers into `req` (valid while req lives). */
int validate_acquire(const validate_limits *lim, const Baton__V1__AcquireRequest *req,
                     engine_acquire_req *out, char *err, size_t errlen);
/* Resolved TTL in *ttl_out. */
int validate_renew(const validate_limits *lim, const Baton__V1__RenewRequest *req, int64_t *ttl_out,
                   char *err, size_t errlen);
int validate_release(const Baton__V1__ReleaseRequest *req, char *err, size_t errlen);
/* Exactly one of key / prefix; both validated with the key rules. */
int validate_watch(const Baton__V1__WatchRequest *req, char *err, size_t errlen);
int validate_describe(const Baton__V1__DescribeRequest *req, char *err, size_t errlen);
/* fencing must be > 0. */
int validate_force_release(const Baton__V1__ForceReleaseRequest *req, char *err, size_t errlen);
/* List: prefix "" or a key prefix; limit 0 (= LIST_DEFAULT_LIMIT) ..
 * LIST_MAX_LIMIT; page_token "" or the decimal cursor of a previous page.
 * Writes the resolved limit and the store cursor ("0" for "") to *limit_out
 * and cursor (at least 21 bytes). */
#define LIST_DEFAULT_LIMIT 100
#define LIST_MAX_LIMIT 1000
int validate_list(const Baton__V1__ListRequest *req, int32_t *limit_out, char *cursor, size_t cursorlen,
                  char *err, size_t errlen);

#endif
