#ifndef BATON_CONFIG_SECURITY_H
#define BATON_CONFIG_SECURITY_H

/*
 * The security sections of batond's configuration: `tls:`, `auth:` and
 * `limits:` (deploy/batond.yaml documents every key with its default).
 *
 *   tls:
 *     cert_file: ""               # PEM certificate chain; "" = plain text (no TLS)
 *     key_file: ""                # PEM private key of cert_file
 *     client_ca_file: ""          # PEM CA bundle for client certificates ("" = none asked)
 *     require_client_cert: false  # true: refuse a client without a certificate signed by it
 *   auth:                         # absent: no authentication (every caller may do anything)
 *     tokens:
 *       - name: team-a            # [A-Za-z0-9_.-], 1..64 bytes; owners are shown as "team-a/<owner>"
 *         sha256: "9f86d0..."     # hex SHA-256 of the bearer token (64 hex digits)
 *         prefixes: ["team-a/"]   # keys, pools and watch prefixes it may use; "" = all
 *         admin: false            # may call ForceRelease
 *   limits:
 *     max_streams: 20000 ...      # see config_limits
 *
 * Loaded by config.c (config_security.c is part of it), checked with the rest
 * of the file and reported in the same "file:line: key: problem" form.
 */

#include <stddef.h>
#include <stdint.h>

#define CONFIG_TOKEN_NAME_MAX 64

typedef struct config_tls {
    char *cert_file; /* "" = no TLS */
    char *key_file;
    char *client_ca_file;
    int require_client_cert;
} config_tls;

typedef struct config_token {
    char *name;
    char *sha256;     /* 64 lowercase hex digits */
    char **prefixes;  /* nprefixes strings; "" matches every name */
    size_t nprefixes;
    int admin;
} config_token;

/* Every limit is answered RESOURCE_EXHAUSTED naming its key. A tenant is a
 * token (with auth) or a peer address without its port (without auth). */
typedef struct config_limits {
    int32_t max_streams;                /* open calls of every kind, in all */
    int32_t max_streams_per_connection; /* ...on one HTTP/2 connection */
    int32_t max_streams_per_tenant;     /* ...of one tenant */
    int32_t max_waiting;                /* acquires waiting for their grant, in all (RPCs and Session ops) */
    int32_t max_waiting_per_tenant;
    int32_t max_waiters_per_key;        /* acquires waiting on one key or pool */
    int32_t max_watches;                /* Watch streams, in all */
    int32_t max_watches_per_tenant;
    int32_t max_watch_backlog;          /* events queued for slow Watch readers, in all (split among watches) */
} config_limits;

typedef struct config_security {
    config_tls tls;
    int auth;              /* an `auth` section was given: every call but Health needs a token */
    config_token *tokens;
    size_t ntokens;
    config_limits limits;
    uint32_t from_file;    /* one bit per scalar setting (config_to_yaml) */
    uint32_t from_flags;
} config_security;

#endif
