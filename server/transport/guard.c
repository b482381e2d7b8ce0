/*
 * Authentication, access and limits for the transport (guard.h).
 */
#include "guard.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/grpc.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>

#include "errors.h"
#include "log.h"

struct guard {
    auth_table *auth; /* NULL: no auth section */
    limits *lim;
};

guard *guard_new(const config_security *sec)
{
    guard *g = calloc(1, sizeof *g);
    if (g == NULL)
        return NULL;
    if ((g->lim = limits_new(&sec->limits)) == NULL)
        goto fail;
    if (sec->auth && (g->auth = auth_table_new(sec->tokens, sec->ntokens)) == NULL)
        goto fail;
    return g;
fail:
    guard_free(g);
    return NULL;
}

void guard_free(guard *g)
{
    if (g == NULL)
        return;
    auth_table_free(g->auth);
    limits_free(g->lim);
    free(g);
}

int guard_auth_enabled(const guard *g)
{
    return g->auth != NULL;
}

static const auth_token *authenticate(const guard *g, const grpc_metadata_array *md)
{
    for (size_t i = 0; i < md->count; i++) {
        const grpc_slice *k = &md->metadata[i].key;
        if (GRPC_SLICE_LENGTH(*k) == 13 && memcmp(GRPC_SLICE_START_PTR(*k), "authorization", 13) == 0) {
            const grpc_slice *v = &md->metadata[i].value;
            return auth_authenticate(g->auth, (const char *)GRPC_SLICE_START_PTR(*v), GRPC_SLICE_LENGTH(*v));
        }
    }
    return NULL;
}

/* "ipv4:10.0.0.1:5123" -> "ipv4:10.0.0.1" (ipv6 "[..]:port" alike); unix
 * peers stay whole. */
static void peer_host(const char *peer, char *out, size_t n)
{
    snprintf(out, n, "%s", peer);
    if (strncmp(out, "ipv4:", 5) == 0 || strncmp(out, "ipv6:", 5) == 0) {
        char *colon = strrchr(out, ':');
        if (colon && colon > out + 4)
            *colon = '\0';
    }
}

int guard_call_begin(guard *g, grpc_call *call, const grpc_metadata_array *md, int health, guard_caller *who,
                     char *msg, size_t n)
{
    memset(who, 0, sizeof *who);
    if (g->auth && !health) {
        who->tok = authenticate(g, md);
        if (who->tok == NULL) {
            snprintf(msg, n, "missing or unknown bearer token (send metadata \"authorization: Bearer <token>\")");
            return BATON_E_UNAUTHENTICATED;
        }
    }
    char *peer = grpc_call_get_peer(call);
    char host[300];
    peer_host(peer ? peer : "unknown", host, sizeof host);
    /* A unix socket peer names no connection ("unix:" for every client):
     * only TCP connections get a per-connection count. */
    int tcp = peer && (strncmp(peer, "ipv4:", 5) == 0 || strncmp(peer, "ipv6:", 5) == 0);
    who->conn = tcp ? limits_conn(g->lim, peer) : NULL;
    who->tenant = limits_tenant(g->lim, who->tok ? auth_token_name(who->tok) : host);
    gpr_free(peer);
    if ((tcp && who->conn == NULL) || who->tenant == NULL) {
        guard_call_end(g, who);
        snprintf(msg, n, "out of memory");
        return BATON_E_LIMIT;
    }
    if (limits_take(g->lim, LIMITS_STREAM, who->tenant, who->conn, msg, n) != 0) {
        guard_call_end(g, who);
        return BATON_E_LIMIT;
    }
    who->stream = 1;
    return BATON_OK;
}

void guard_call_end(guard *g, guard_caller *who)
{
    guard_wait_end(g, who, &who->wait_key);
    if (who->watch)
        limits_give(g->lim, LIMITS_WATCH, who->tenant, NULL);
    if (who->stream)
        limits_give(g->lim, LIMITS_STREAM, who->tenant, who->conn);
    limits_unref(g->lim, who->tenant);
    limits_unref(g->lim, who->conn);
    memset(who, 0, sizeof *who);
}

int guard_name(const guard_caller *who, const char *what, const char *name, char *msg, size_t n)
{
    if (who->tok == NULL || auth_allows(who->tok, name))
        return BATON_OK;
    auth_denied(who->tok, what, name, msg, n);
    return BATON_E_DENIED;
}

int guard_admin(const guard_caller *who, const char *method, char *msg, size_t n)
{
    if (who->tok == NULL || auth_token_admin(who->tok))
        return BATON_OK;
    snprintf(msg, n, "%s is an operator call: token \"%s\" is not admin", method, auth_token_name(who->tok));
    return BATON_E_DENIED;
}

int guard_watch(guard *g, guard_caller *who, const char *key, const char *prefix, char *msg, size_t n)
{
    if (who->tok) {
        if (key) {
            if (!auth_allows(who->tok, key)) {
                auth_denied(who->tok, "watch key", key, msg, n);
                return BATON_E_DENIED;
            }
        } else {
            int w = auth_watch(who->tok, prefix);
            if (w == AUTH_WATCH_NONE) {
                auth_denied(who->tok, "watch prefix", prefix, msg, n);
                return BATON_E_DENIED;
            }
            who->filter = w == AUTH_WATCH_FILTER;
        }
    }
    if (limits_take(g->lim, LIMITS_WATCH, who->tenant, NULL, msg, n) != 0)
        return BATON_E_LIMIT;
    who->watch = 1;
    return BATON_OK;
}

size_t guard_watch_backlog(const guard *g)
{
    return limits_watch_backlog(g->lim);
}

int guard_watch_sees(const guard_caller *who, const char *key)
{
    return !who->filter || (key && auth_allows(who->tok, key));
}

int guard_acquire(guard *g, guard_caller *who, engine_acquire_req *req, char *owner_buf, size_t owner_len,
                  limits_entry **wait_key, char *msg, size_t n)
{
    const char *name = req->key ? req->key : req->pool;
    int rc = guard_name(who, req->key ? "key" : "pool", name, msg, n);
    if (rc != BATON_OK)
        return rc;
    if (who->tok) {
        snprintf(owner_buf, owner_len, "%s/%s", auth_token_name(who->tok), req->owner ? req->owner : "");
        req->owner = owner_buf;
    }
    if (limits_take(g->lim, LIMITS_WAITING, who->tenant, NULL, msg, n) != 0)
        return BATON_E_LIMIT;
    if ((*wait_key = limits_key_take(g->lim, name, msg, n)) == NULL) {
        limits_give(g->lim, LIMITS_WAITING, who->tenant, NULL);
        return BATON_E_LIMIT;
    }
    return BATON_OK;
}

void guard_wait_end(guard *g, guard_caller *who, limits_entry **wait_key)
{
    if (*wait_key == NULL)
        return;
    limits_key_give(g->lim, *wait_key);
    limits_give(g->lim, LIMITS_WAITING, who->tenant, NULL);
    *wait_key = NULL;
}
