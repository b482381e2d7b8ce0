#ifndef BATON_LOCK_VIEW_H
#define BATON_LOCK_VIEW_H

/*
 * The lock view: which locks are held, by whom and since when, as this
 * batond sees them on the events channel (ACQUIRED, then RELEASED / EXPIRED
 * / FORCE_RELEASED), with Redis' own timestamps. It feeds
 * baton_locks_held, baton_hold_seconds, baton_handoff_seconds,
 * baton_pool_devices_held and the long-held alerts.
 *
 * Loop thread only; a process-wide singleton so that the engine reports to
 * it with one-line hooks. Off (every call returns at once) until
 * lock_view_enable. Holds that started before this batond did are not
 * known until they end (and are then ignored); after a Redis reconnect the
 * view starts over (events may have been missed). At most
 * LOCK_VIEW_MAX_HOLDS holds are tracked; beyond that new holds are not.
 */

#include <stddef.h>
#include <stdint.h>

#include "store.h"

#define LOCK_VIEW_MAX_HOLDS 1000000

void lock_view_enable(void);
int lock_view_enabled(void);
/* Forgets everything (a Redis reconnect); the view stays enabled. */
void lock_view_reset(void);
/* Frees everything and turns the view off. */
void lock_view_shutdown(void);

/* An event of the channel (other types are ignored). */
void lock_view_event(const store_event *ev);
/* A lock that local waiters wait for ended (engine); starts a handoff. */
void lock_view_key_freed(const char *key);
/* A local waiter that had queued was granted `key` (engine); ends a handoff. */
void lock_view_waiter_granted(const char *key);

size_t lock_view_held(void);

/* log_lock_events (log.h): a grant this batond made, logged at info with
 * key, owner, fencing, mode and wait_ms (engine). Ends are logged from the
 * events channel with hold_ms, by lock_view_event. */
void lock_view_log_grant(const char *key, const char *owner, uint64_t fencing, int stream_mode,
                         int64_t wait_us);

/* Long-held rules: a hold whose key starts with `prefix` and whose age
 * exceeds after_ms. */
typedef struct lock_view_rule {
    const char *prefix;
    int64_t after_ms;
} lock_view_rule;
typedef struct lock_view_hold {
    const char *key, *owner;
    uint64_t fencing;
    int64_t acquired_unix_ms, age_ms;
    const lock_view_rule *rule;
} lock_view_hold;
/*
 * Marks every hold that a rule (the first matching one) says is older than
 * allowed at now_unix_ms and that is not marked yet, calling `fired` once
 * for it (once per hold: a new grant of the key is a new hold). Returns the
 * number of marked holds still held (for baton_long_held_locks).
 */
size_t lock_view_sweep(const lock_view_rule *rules, size_t nrules, int64_t now_unix_ms,
                       void (*fired)(void *ud, const lock_view_hold *h), void *ud);

#endif
