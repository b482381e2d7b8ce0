#ifndef BATON_CALL_LIMITS_H
#define BATON_CALL_LIMITS_H

/*
 * Counters behind the `limits:` section (config_security.h): open streams,
 * waiting acquires and Watch streams, in all and per tenant, streams per
 * connection and waiters per key. Pure bookkeeping, one thread (the loop).
 *
 * A tenant is whoever a share is counted for: a token's name with auth, the
 * peer's address without its port without auth. A connection is the peer
 * address with its port. Both are entries with a reference count, created
 * on first use and freed when the last reference goes.
 *
 * limits_take counts one more `kind` or refuses it, writing a message that
 * names the limit ("limits.max_watches (5000) reached"); every successful
 * take is matched by exactly one limits_give.
 */

#include <stddef.h>

#include "config_security.h"

typedef struct limits limits;
typedef struct limits_entry limits_entry; /* a tenant, a connection or a key */

enum limits_kind { LIMITS_STREAM, LIMITS_WAITING, LIMITS_WATCH, LIMITS_KINDS };

limits *limits_new(const config_limits *cfg);
void limits_free(limits *l);

/* A reference to the tenant / connection named `name` (NULL on OOM). */
limits_entry *limits_tenant(limits *l, const char *name);
limits_entry *limits_conn(limits *l, const char *name);
void limits_unref(limits *l, limits_entry *e);

/* One more `kind` for tenant (and, for LIMITS_STREAM, conn; either may be
 * NULL). 0, or -1 with the limit named in msg. */
int limits_take(limits *l, int kind, limits_entry *tenant, limits_entry *conn, char *msg, size_t n);
void limits_give(limits *l, int kind, limits_entry *tenant, limits_entry *conn);

/* One more waiter on key (a key or a pool name): a reference to the key's
 * counter, or NULL with the limit (or "out of memory") named in msg. */
limits_entry *limits_key_take(limits *l, const char *key, char *msg, size_t n);
void limits_key_give(limits *l, limits_entry *key);

/* How many events one Watch may have queued for its reader now: an equal
 * share of max_watch_backlog among the open watches, at least
 * LIMITS_WATCH_BACKLOG_MIN and at most LIMITS_WATCH_BACKLOG_MAX. */
#define LIMITS_WATCH_BACKLOG_MIN 16
#define LIMITS_WATCH_BACKLOG_MAX 4096
size_t limits_watch_backlog(const limits *l);

/* Current totals (tests, logs). */
size_t limits_count(const limits *l, int kind);
size_t limits_entries(const limits *l);

#endif
