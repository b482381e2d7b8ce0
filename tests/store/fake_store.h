#ifndef BATON_TESTS_FAKE_STORE_H
#define BATON_TESTS_FAKE_STORE_H

/*
 * An in-memory store with the semantics store.h describes (locks with a real
 * monotonic-clock TTL, hold records, fencing counters, FIFO queues of keys
 * and pools, pool device selection, events). The Lua scripts are the truth:
 * tests/store/contract.c holds the fake and the Redis store to the same cases. Every op runs at once (like a
 * Lua script) but its callback, and every event, is delivered later from the
 * event loop, never from inside the op call. Replies and events travel in
 * two ordered streams (like the command and pub/sub connections); with
 * fake_store_set_shuffle the two interleave randomly.
 *
 * Free with s->ops->free(s): replies still due are then delivered at once
 * with BATON_E_UNAVAILABLE (as hiredis does when a context is freed), events
 * are dropped. Free the engine first.
 */

#include <stddef.h>
#include <stdint.h>

#include "store.h"

struct event_base;

typedef enum fake_op {
    FAKE_ACQUIRE,
    FAKE_DEQUEUE,
    FAKE_RENEW,
    FAKE_RELEASE,
    FAKE_FORCE_RELEASE,
    FAKE_DESCRIBE,
    FAKE_REFRESH,
    FAKE_REAP,
    FAKE_REASSERT,
    FAKE_HANDOFF, /* not an op: grants made by a release to its `next` */
    FAKE_LIST,
    FAKE_NOPS,
} fake_op;

/* Starts "up": on_state(1) is delivered from the loop. */
baton_store *fake_store_new(struct event_base *base);

/* down = 1: ops return BATON_E_UNAVAILABLE, replies still due complete with
 * BATON_E_UNAVAILABLE (the op itself did run: outcome unknown), events due
 * are dropped, then on_state(0). down = 0: on_state(1). */
void fake_store_set_down(baton_store *s, int down);
/* Like Redis losing its data: locks, holds and queues vanish (fence
 * counters are kept, as the real store re-seeds them from TIME). */
void fake_store_lose_data(baton_store *s);
/* A failover to a Redis not written to before: down, then (lose_data: every
 * lock and queue gone, as fake_store_lose_data) hooks.on_new_primary and up. */
void fake_store_new_primary(baton_store *s, int lose_data);
/* Moves the entry at 1-based position `pos` of the queue of key (pool ==
 * NULL) or of pool to the tail, as Redis does when the entry is purged as
 * dead (its batond stalled past the liveness window) and its waiter's next
 * attempt adds it again: the local order of that batond no longer matches. */
void fake_store_requeue_tail(baton_store *s, const char *key, const char *pool, size_t pos);
/* Removes the entry at 1-based position `pos` of the queue of key (pool ==
 * NULL) or of pool, silently (as a purge by another batond would); the next
 * refresh reports it missing. */
void fake_store_drop_entry(baton_store *s, const char *key, const char *pool, size_t pos);
/* key's TTL runs out now; EXPIRED is published (as a keyspace notification
 * followed by a reap would). */
void fake_store_expire(baton_store *s, const char *key);
/* The next call of `op` runs but its reply carries `err`. */
void fake_store_fail_next(baton_store *s, fake_op op, int err);
/* Random interleaving of the reply and event streams. */
void fake_store_set_shuffle(baton_store *s, unsigned seed);
/* paused = 1: nothing is delivered until paused = 0. */
void fake_store_pause(baton_store *s, int paused);
/* Delivers one due item now (even when paused), events before replies.
 * Returns 0 if nothing was due. */
int fake_store_step(baton_store *s);

uint64_t fake_store_calls(const baton_store *s, fake_op op);
/* 1 and the holder's fencing / token (tokenlen >= 33) if key is held now. */
int fake_store_holder(const baton_store *s, const char *key, uint64_t *fencing, char *token, size_t tokenlen);
/* Entries in the queue of key (pool == NULL) or of pool. */
int64_t fake_store_queue_len(const baton_store *s, const char *key, const char *pool);
/* Grants made while the key was held, or with a fencing not above the last. */
uint64_t fake_store_violations(const baton_store *s);
/* Replies and events not yet delivered. */
size_t fake_store_pending(const baton_store *s);
/* key's fencing counter (0 = never granted). */
uint64_t fake_store_fence(const baton_store *s, const char *key);
/* Publishes an arbitrary event (for tests of event handling). */
void fake_store_publish(baton_store *s, store_event_type type, const char *key, const char *owner,
                        uint64_t fencing);

#endif
