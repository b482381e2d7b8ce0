/* batond, two ways (--baton-client):
 *   libbaton (default): what an application does: baton_acquire (wait_ms < 0,
 *     lease or stream mode), baton_release + baton_lock_free. One baton_client
 *     (gRPC channel) per bench client. Lease acquires and all releases go
 *     over libbaton's pooled Session streams; libbaton-rpc turns those off
 *     (disable_sessions: one RPC per operation), for A/B runs.
 *   stubs: the typed stubs our plugin generates from proto/baton/v1/lock.proto,
 *     without libbaton's per-lock threads:
 *       acquire: Acquire stream, read events until Granted;
 *       release: Release{key, token}, then collect the Acquire stream's status
 *         (lease mode: it ended right after the grant; stream mode: the server
 *         ends it with OK once the hold is released by token). */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "baton/v1/lock.grpc-c.h"
#include "baton/baton.h"
#include "bench.h"

int bench_baton_use_stubs;
int bench_baton_no_sessions;

typedef struct stub_client {
    baton_client *lb; /* libbaton mode */
    grpc_channel *ch; /* stubs mode */
    int64_t ttl_ms;
    Baton__V1__HoldMode mode;
    char owner[64];
} stub_client;

static atomic_uint g_owner_ids;

static void bc_free(void *p)
{
    stub_client *c = p;
    if (!c)
        return;
    if (c->lb)
        baton_client_free(c->lb);
    grpc_c_channel_destroy(c->ch);
    free(c);
}

static void *bc_new_mode(const bench_env *env, int64_t ttl_ms, Baton__V1__HoldMode mode, char *err,
                         size_t errlen)
{
    stub_client *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    c->ttl_ms = ttl_ms;
    c->mode = mode;
    snprintf(c->owner, sizeof c->owner, "bench-%d-%u", (int)getpid(), atomic_fetch_add(&g_owner_ids, 1));
    if (bench_baton_use_stubs) {
        c->ch = grpc_c_channel_create_insecure(env->baton_target, NULL);
    } else {
        baton_client_options o = {.owner = c->owner, .disable_sessions = bench_baton_no_sessions};
        int rc = baton_client_new(env->baton_target, &o, &c->lb);
        if (rc < 0) {
            snprintf(err, errlen, "baton_client_new: %s: %s", baton_error_name(rc), baton_last_error());
            free(c);
            return NULL;
        }
    }
    if (bench_baton_use_stubs && !c->ch) {
        snprintf(err, errlen, "out of memory");
        free(c);
        return NULL;
    }
    return c;
}

static void *bc_new_lease(const bench_env *env, int64_t ttl_ms, char *err, size_t errlen)
{
    return bc_new_mode(env, ttl_ms, BATON__V1__HOLD_MODE__HOLD_MODE_LEASE, err, errlen);
}

static void *bc_new_stream(const bench_env *env, int64_t ttl_ms, char *err, size_t errlen)
{
    return bc_new_mode(env, ttl_ms, BATON__V1__HOLD_MODE__HOLD_MODE_STREAM, err, errlen);
}

/* Ends an Acquire call: its status, or -1 with err. Destroys the handle. */
static int end_call(grpc_c_call *call, const char *what, char *err, size_t errlen)
{
    grpc_c_status st = GRPC_C_STATUS_INIT;
    int code = baton__v1__lock_service__grpc__acquire_finish(call, &st);
    if (code != 0 && err)
        snprintf(err, errlen, "baton %s: %s %s", what, grpc_c_code_name(code), st.message ? st.message : "");
    grpc_c_status_clear(&st);
    baton__v1__lock_service__grpc__acquire_destroy(call);
    return code ? -1 : 0;
}

static int lb_acquire(stub_client *c, bench_hold *h, char *err, size_t errlen)
{
    baton_acquire_options o = {.ttl_ms = c->ttl_ms,
                               .wait_ms = -1,
                               .mode = c->mode == BATON__V1__HOLD_MODE__HOLD_MODE_STREAM ? BATON_MODE_STREAM
                                                                                         : BATON_MODE_LEASE};
    baton_lock *l = NULL;
    int rc = baton_acquire(c->lb, h->key, &o, &l);
    if (rc < 0) {
        snprintf(err, errlen, "baton_acquire: %s: %s", baton_error_name(rc), baton_last_error());
        return -1;
    }
    h->call = l;
    return 0;
}

static int lb_release(bench_hold *h, char *err, size_t errlen)
{
    baton_lock *l = h->call;
    int rc = baton_release(l);
    if (rc < 0)
        snprintf(err, errlen, "baton_release: %s: %s", baton_error_name(rc), baton_last_error());
    baton_lock_free(l);
    h->call = NULL;
    return rc < 0 ? -1 : 0;
}

static int bc_acquire(void *p, const char *key, bench_hold *h, char *err, size_t errlen)
{
    stub_client *c = p;
    snprintf(h->key, sizeof h->key, "bench:%s", key);
    if (c->lb)
        return lb_acquire(c, h, err, errlen);
    Baton__V1__AcquireRequest req = BATON__V1__ACQUIRE_REQUEST__INIT;
    req.key = h->key;
    req.owner = c->owner;
    req.ttl_ms = c->ttl_ms;
    req.wait_ms = -1;
    req.mode = c->mode;
    grpc_c_call_options o = {.wait_for_ready = 1};
    grpc_c_call *call = baton__v1__lock_service__grpc__acquire_start(c->ch, &req, &o);
    if (!call) {
        snprintf(err, errlen, "baton Acquire: cannot start");
        return -1;
    }
    for (;;) {
        Baton__V1__AcquireEvent *ev = NULL;
        int r = baton__v1__lock_service__grpc__acquire_read(call, &ev);
        if (r != GRPC_C_OK) {
            if (end_call(call, "Acquire", err, errlen) == 0)
                snprintf(err, errlen, "baton Acquire: stream ended without a grant");
            return -1;
        }
        if (ev->event_case == BATON__V1__ACQUIRE_EVENT__EVENT_GRANTED) {
            const char *tok = ev->granted->token;
            h->token_len = strlen(tok);
            snprintf(h->token, sizeof h->token, "%s", tok);
            baton__v1__acquire_event__free_unpacked(ev, NULL);
            h->call = call;
            return 0;
        }
        baton__v1__acquire_event__free_unpacked(ev, NULL);
    }
}

static int bc_release(void *p, bench_hold *h, char *err, size_t errlen)
{
    stub_client *c = p;
    int rv = 0;
    if (c->lb)
        return lb_release(h, err, errlen);
    /* Lease mode: the Acquire stream already ended after the grant. */
    if (c->mode == BATON__V1__HOLD_MODE__HOLD_MODE_LEASE && h->call) {
        rv = end_call(h->call, "Acquire (lease)", err, errlen);
        h->call = NULL;
    }
    Baton__V1__ReleaseRequest req = BATON__V1__RELEASE_REQUEST__INIT;
    req.key = h->key;
    req.token = h->token;
    Baton__V1__ReleaseResponse *resp = NULL;
    grpc_c_status st = GRPC_C_STATUS_INIT;
    int code = baton__v1__lock_service__grpc__release(c->ch, &req, &resp, &st, NULL);
    if (code != 0 || !resp->released) {
        if (rv == 0)
            snprintf(err, errlen, "baton Release: %s %s", grpc_c_code_name(code),
                     code ? (st.message ? st.message : "") : "released=false");
        rv = -1;
    }
    if (resp)
        baton__v1__release_response__free_unpacked(resp, NULL);
    grpc_c_status_clear(&st);
    if (h->call) {
        if (end_call(h->call, "Acquire (stream) after Release", rv ? NULL : err, errlen) < 0)
            rv = -1;
        h->call = NULL;
    }
    return rv;
}

const bench_backend bench_backend_baton_lease = {
    .name = "baton-lease",
    .family = "baton",
    .client_new = bc_new_lease,
    .acquire = bc_acquire,
    .release = bc_release,
    .client_free = bc_free,
};

const bench_backend bench_backend_baton_stream = {
    .name = "baton-stream",
    .family = "baton",
    .client_new = bc_new_stream,
    .acquire = bc_acquire,
    .release = bc_release,
    .client_free = bc_free,
};
