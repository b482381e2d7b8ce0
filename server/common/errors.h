#ifndef BATON_ERRORS_H
#define BATON_ERRORS_H

/*
 * Internal error codes shared by every server module. Functions return 0 or
 * one of these negative values; the transport maps them to gRPC status codes
 * in exactly one place (transport.c: status_of()).
 */
enum baton_err {
    BATON_OK = 0,
    BATON_E_INVALID = -1,     /* INVALID_ARGUMENT: a request field is malformed or out of bounds */
    BATON_E_NOT_HOLDER = -2,  /* FAILED_PRECONDITION: the token does not hold the key (Renew/Release) */
    BATON_E_BUSY = -3,        /* ABORTED: not acquired within wait_ms; message names the holder */
    BATON_E_UNAVAILABLE = -4, /* UNAVAILABLE: Redis unreachable, or the server is shutting down */
    BATON_E_LOST = -5,        /* ABORTED: a stream-held lock was lost (expired or removed in Redis) */
    BATON_E_INTERNAL = -6,    /* INTERNAL: unexpected Redis reply, script error */
    BATON_E_NOMEM = -7,       /* RESOURCE_EXHAUSTED: out of memory or a per-server limit */
    BATON_E_NOT_FOUND = -8,   /* NOT_FOUND */
    BATON_E_CANCELLED = -9,   /* CANCELLED: the client cancelled the operation */
    BATON_E_UNAUTHENTICATED = -10, /* UNAUTHENTICATED: no or unknown bearer token */
    BATON_E_DENIED = -11,          /* PERMISSION_DENIED: outside the token's prefixes, or not admin */
    BATON_E_LIMIT = -12,           /* RESOURCE_EXHAUSTED: a `limits:` setting; the message names it */
    BATON_E_REDIRECT = -13,        /* store-internal: a Redis Cluster routing error (MOVED, ASK, ...);
                                    * the cluster store retries, it never reaches the engine */
};

/* Static, human-readable name of an error code ("BATON_E_BUSY"). */
static inline const char *baton_err_name(int err)
{
    switch (err) {
    case BATON_OK: return "OK";
    case BATON_E_INVALID: return "INVALID";
    case BATON_E_NOT_HOLDER: return "NOT_HOLDER";
    case BATON_E_BUSY: return "BUSY";
    case BATON_E_UNAVAILABLE: return "UNAVAILABLE";
    case BATON_E_LOST: return "LOST";
    case BATON_E_INTERNAL: return "INTERNAL";
    case BATON_E_NOMEM: return "NOMEM";
    case BATON_E_NOT_FOUND: return "NOT_FOUND";
    case BATON_E_CANCELLED: return "CANCELLED";
    case BATON_E_UNAUTHENTICATED: return "UNAUTHENTICATED";
    case BATON_E_DENIED: return "DENIED";
    case BATON_E_LIMIT: return "LIMIT";
    case BATON_E_REDIRECT: return "REDIRECT";
    default: return "UNKNOWN";
    }
}

/* Limits that validation enforces and that fixed-size buffers rely on. */
#define BATON_KEY_MAX 256   /* bytes of a key, a pool name or a watch prefix */
#define BATON_OWNER_MAX 256 /* bytes of an owner string (valid UTF-8) */
#define BATON_TOKEN_LEN 32  /* tokens are 32 lowercase hex characters (128 random bits) */

#endif
