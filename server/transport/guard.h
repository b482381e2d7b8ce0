#ifndef BATON_GUARD_H
#define BATON_GUARD_H

/*
 * What the transport checks before a request reaches the engine:
 * authentication (auth.tokens, bearer token in `authorization` metadata),
 * access (each token's prefixes, admin for ForceRelease) and the `limits:`
 * counters. All on the loop thread; no Redis round trip for a refusal.
 *
 * Error codes: BATON_E_UNAUTHENTICATED (no or unknown token),
 * BATON_E_DENIED (PERMISSION_DENIED: outside the token's prefixes, or not
 * admin), BATON_E_LIMIT (RESOURCE_EXHAUSTED naming the limit); the message is
 * written to msg.
 *
 * Without an auth section every caller is allowed everything (tok stays
 * NULL) and the tenant of the limits is the peer address without its port.
 */

#include <stddef.h>

#include "auth.h"
#include "config_security.h"
#include "engine.h"
#include "call_limits.h"

#include <grpc/grpc.h> /* guard is the transport's own: gRPC types may show here */

typedef struct guard guard;

/* Per call: who called and what it has counted. Zero-initialised. */
typedef struct guard_caller {
    const auth_token *tok;         /* with auth: the caller's token (NULL for Health) */
    limits_entry *tenant, *conn;   /* references while the call lives */
    limits_entry *wait_key;        /* Acquire RPC: counted as waiting on this key */
    unsigned stream : 1;           /* counted as an open stream */
    unsigned watch : 1;            /* counted as a Watch */
    unsigned filter : 1;           /* Watch: send only the keys the token may use */
} guard_caller;

guard *guard_new(const config_security *sec);
void guard_free(guard *g);
int guard_auth_enabled(const guard *g);

/* A call arrived: authenticate (unless `health`) and count its stream. On
 * error the caller holds nothing; guard_call_end is still safe. */
int guard_call_begin(guard *g, grpc_call *call, const grpc_metadata_array *md, int health,
                     guard_caller *who, char *msg, size_t n);
/* The call is over: gives back everything it still counts. */
void guard_call_end(guard *g, guard_caller *who);

/* `what` ("key", "pool") `name` within the caller's prefixes? */
int guard_name(const guard_caller *who, const char *what, const char *name, char *msg, size_t n);
/* An operator call (`method`) needs an admin token. */
int guard_admin(const guard_caller *who, const char *method, char *msg, size_t n);

/* Watch of `key` or `prefix`: access, then counting (one per call). */
int guard_watch(guard *g, guard_caller *who, const char *key, const char *prefix, char *msg, size_t n);
/* Events a Watch may have queued for a slow reader now (call_limits.h). */
size_t guard_watch_backlog(const guard *g);
/* Whether a watch may see an event on `key`. */
int guard_watch_sees(const guard_caller *who, const char *key);

/*
 * An acquire (RPC or Session operation): access to its key or pool, the
 * owner shown to others rewritten to "<token>/<owner>" (in owner_buf, which
 * must hold CONFIG_TOKEN_NAME_MAX + 1 + BATON_OWNER_MAX + 1 bytes) and one
 * more waiting acquire counted: *wait_key is set and must be given back with
 * guard_wait_end (once granted or ended).
 */
int guard_acquire(guard *g, guard_caller *who, engine_acquire_req *req, char *owner_buf, size_t owner_len,
                  limits_entry **wait_key, char *msg, size_t n);
void guard_wait_end(guard *g, guard_caller *who, limits_entry **wait_key);

#endif
