/*
 * Decoders of the Redis store's script replies (reply.c): pure functions
 * from a redisReply tree to the results of store.h. They touch neither a
 * connection nor the store, so the tests build replies by hand
 * (tests/store/redis/test_store_reply.c, fuzz_reply.c).
 *
 * Every decoder accepts any tree, however malformed (wrong types, short
 * arrays, out-of-range integers, NULL elements or strings): it then returns
 * BATON_E_INTERNAL with a message naming the op, never reads out of bounds.
 * On success or BATON_E_NOT_HOLDER the result is filled in; its pointers
 * point into the reply, into the name passed in or into the decoded struct
 * itself (so decode into the struct you deliver from; do not copy it).
 */
#ifndef BATON_STORE_REDIS_REPLY_H
#define BATON_STORE_REDIS_REPLY_H

#include <stddef.h>

#include <hiredis/hiredis.h>

#include "store.h"

/* Element i of an array reply as an integer / a string; -1 if r is not an
 * array or element i is not one. */
int rstore_el_int(const redisReply *r, size_t i, long long *out);
int rstore_el_str(const redisReply *r, size_t i, const char **out);

/* The most devices one grant reports (locks.max_pool_devices' bound). */
#define RSTORE_MAX_GRANT_DEVICES 4096

/* acquire.lua: {1, device, fencing, ttl[, {device, fencing} of every device
 * of a pool grant]} | {0, position, queue_len,
 * holder_owner, holder_fencing, retry_ms, head_token} | {2, devices}
 * (a pool whose waiters use another device count: BATON_E_INVALID).
 * name: the key or pool name of the request; pool: 1 for a pool. */
typedef struct rstore_acquire_dec {
    int err;         /* BATON_OK (res valid), BATON_E_INVALID, BATON_E_INTERNAL */
    const char *msg; /* NULL on BATON_OK */
    int64_t devices; /* BATON_E_INVALID: the device count the pool's waiters use */
    store_acquire_res res;
    char buf[BATON_KEY_MAX + 160];          /* the device key "pool/i" or the message */
    int32_t devs[RSTORE_MAX_GRANT_DEVICES]; /* res.devices of a pool grant */
    uint64_t fencs[RSTORE_MAX_GRANT_DEVICES];
} rstore_acquire_dec;
int rstore_decode_acquire(const redisReply *r, const char *name, int pool, rstore_acquire_dec *out);

/* renew.lua {1, ttl} | {0, holder_owner, holder_fencing};
 * release.lua / force_release.lua {1|0, holder_owner, holder_fencing}, and a
 * release with a handoff granted {1, owner, fencing, next_fencing, next_ttl}.
 * renew: 1 for renew.lua; handoff_key: the key when the release carried a
 * `next` request (res.next is then set), else NULL. */
typedef struct rstore_hold_dec {
    int err;         /* BATON_OK, BATON_E_NOT_HOLDER (res valid) or BATON_E_INTERNAL */
    const char *msg; /* NULL on BATON_OK */
    store_hold_res res;
    store_acquire_res next; /* res.next points here for a handoff */
    char buf[BATON_OWNER_MAX + 96];
} rstore_hold_dec;
int rstore_decode_hold(const redisReply *r, int renew, const char *handoff_key, rstore_hold_dec *out);

/* describe.lua: {held, owner, fencing, ttl, waiters}. */
typedef struct rstore_describe_dec {
    int err;         /* BATON_OK or BATON_E_INTERNAL */
    const char *msg; /* NULL on BATON_OK */
    store_describe_res res;
} rstore_describe_dec;
int rstore_decode_describe(const redisReply *r, rstore_describe_dec *out);

/* list.lua: {cursor, key, owner, fencing, ttl, held_for, waiters, ...}.
 * Fills locks[0..cap) (pointers into r) and *n, *cursor. Returns BATON_OK,
 * or BATON_E_INTERNAL for a malformed reply or more than cap locks. */
int rstore_decode_list(const redisReply *r, store_lock_info *locks, size_t cap, size_t *n,
                       const char **cursor);

/* refresh.lua: the array of tokens that had no queue entry. Elements that
 * are not strings are skipped. At most `cap` tokens (a batch never sends
 * more): more is BATON_E_INTERNAL. Returns BATON_OK with *n tokens in
 * tokens[], or BATON_E_INTERNAL (*n = 0) when r is not an array. */
int rstore_decode_missing(const redisReply *r, const char **tokens, size_t cap, size_t *n);

/* The run_id line of an INFO reply's text (len bytes) into out. Returns 0,
 * or -1 when there is none or it does not fit. */
int rstore_parse_run_id(const char *info, size_t len, char *out, size_t outlen);
/* A decimal unsigned 64-bit integer of exactly len bytes. Returns 0 or -1. */
int rstore_parse_u64(const char *s, size_t len, unsigned long long *out);

#endif
