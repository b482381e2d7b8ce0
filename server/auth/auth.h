#ifndef BATON_AUTH_H
#define BATON_AUTH_H

/*
 * Bearer tokens and what each may touch. Pure: no gRPC, no I/O; the
 * transport hands in the `authorization` metadata value and the names a
 * request uses.
 *
 * The table keeps only the SHA-256 of each token (as configured in
 * auth.tokens[].sha256). A presented token is hashed once and compared with
 * every entry in constant time (no early exit, CRYPTO_memcmp), so neither
 * the position of a match nor the length of a common prefix shows in the
 * time an answer takes.
 *
 * Prefix rules: a key or pool name N is allowed when some prefix P of the
 * token is "" or N starts with P. A Watch of prefix W is
 *   AUTH_WATCH_ALL     when W itself is allowed (every key under W is),
 *   AUTH_WATCH_FILTER  when some P starts with W (only some keys under W are:
 *                      the watch gets only those, see auth_allows),
 *   AUTH_WATCH_NONE    otherwise (PERMISSION_DENIED).
 * A Watch of one key is allowed when the key is.
 */

#include <stddef.h>

#include "config_security.h"

typedef struct auth_table auth_table;
typedef struct auth_token auth_token;

enum { AUTH_WATCH_NONE = 0, AUTH_WATCH_ALL = 1, AUTH_WATCH_FILTER = 2 };

/* Builds the table from the configured tokens (copied). NULL on OOM or a
 * malformed sha256 (config.c has checked it). Free with auth_table_free. */
auth_table *auth_table_new(const config_token *tokens, size_t n);
void auth_table_free(auth_table *t);

/*
 * The token an `authorization` metadata value names ("Bearer <token>", the
 * scheme in any case), or NULL for a missing, malformed or unknown one.
 * `value` need not be NUL-terminated. Tokens live as long as the table.
 */
const auth_token *auth_authenticate(const auth_table *t, const char *value, size_t len);

const char *auth_token_name(const auth_token *tok);
int auth_token_admin(const auth_token *tok);

/* 1 if the key or pool name lies under one of the token's prefixes. */
int auth_allows(const auth_token *tok, const char *name);

/* AUTH_WATCH_ALL, AUTH_WATCH_FILTER or AUTH_WATCH_NONE for a watch prefix. */
int auth_watch(const auth_token *tok, const char *prefix);

/* "<what> "<name>" is outside the prefixes of token "<tok>" (allowed: "a/", "b/")"
 * into buf (truncated, NUL-terminated). Names only the caller's own rule. */
void auth_denied(const auth_token *tok, const char *what, const char *name, char *buf, size_t n);

/* The lowercase hex SHA-256 of data into out (65 bytes). 0, or -1 on error. */
int auth_sha256_hex(const void *data, size_t len, char out[65]);

#endif
