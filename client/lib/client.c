/*
 * client.c - the client (one gRPC channel) and the unary token-level calls.
 *
 * The top of libbaton's internal dependencies: it creates and frees the
 * parts owned by conn.c, session.c and holds.c, and none of them calls
 * back into this file.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

#define DEFAULT_CALL_TIMEOUT_MS 10000
#define DEFAULT_MAX_RECONNECT_BACKOFF_MS 1000
#define INITIAL_RECONNECT_BACKOFF_MS 100
#define DEFAULT_KEEPALIVE_MS 1500
#define MIN_KEEPALIVE_MS 1000 /* batond's GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS */

static int set(const char *s)
{
    return s != NULL && s[0] != '\0';
}

int baton_client_new(const char *target, const baton_client_options *opts, baton_client **out)
{
    baton_client_options none = {0};
    if (out == NULL || target == NULL || target[0] == '\0')
        return baton__fail(BATON_ERR_INVALID, "baton_client_new: target and out are required");
    *out = NULL;
    if (opts == NULL)
        opts = &none;
    if (opts->call_timeout_ms < 0)
        return baton__fail(BATON_ERR_INVALID, "call_timeout_ms must not be negative");
    if (opts->max_reconnect_backoff_ms < 0 || opts->max_reconnect_backoff_ms > INT32_MAX)
        return baton__fail(BATON_ERR_INVALID, "max_reconnect_backoff_ms must be between 0 and %d", INT32_MAX);
    if (opts->keepalive_ms != BATON_KEEPALIVE_OFF && opts->keepalive_ms != 0 &&
        (opts->keepalive_ms < MIN_KEEPALIVE_MS || opts->keepalive_ms > INT32_MAX))
        return baton__fail(BATON_ERR_INVALID, "keepalive_ms must be 0, BATON_KEEPALIVE_OFF or between %d and %d",
                           MIN_KEEPALIVE_MS, INT32_MAX);
    int64_t max_backoff =
        opts->max_reconnect_backoff_ms > 0 ? opts->max_reconnect_backoff_ms : DEFAULT_MAX_RECONNECT_BACKOFF_MS;

    baton_client *c = calloc(1, sizeof *c);
    if (c == NULL)
        return baton__fail(BATON_ERR_NOMEM, "out of memory");
    if (set(opts->owner)) {
        c->owner = baton__strdup(opts->owner);
    } else {
        /* Default owner "<hostname>/<pid>": enough to find the process. */
        char host[256] = "unknown";
        char buf[300];
        if (gethostname(host, sizeof host) != 0)
            strcpy(host, "unknown");
        host[sizeof host - 1] = '\0';
        snprintf(buf, sizeof buf, "%s/%ld", host, (long)getpid());
        c->owner = baton__strdup(buf);
    }
    if (c->owner == NULL)
        goto fail;
    c->call_timeout_ms = opts->call_timeout_ms > 0 ? opts->call_timeout_ms : DEFAULT_CALL_TIMEOUT_MS;
    /* gRPC waits 1 s after a failed connection, then 1.6 times longer after
     * each further failure, up to 2 minutes: after a 20 s outage a client
     * found batond again only 1-10 s after it was back. Start sooner and
     * never wait more than max_reconnect_backoff_ms between attempts. */
    grpc_c_channel_options copts = {0};
    copts.max_reconnect_backoff_ms = (int)max_backoff;
    copts.initial_reconnect_backoff_ms = max_backoff < INITIAL_RECONNECT_BACKOFF_MS ? (int)max_backoff
                                                                                      : INITIAL_RECONNECT_BACKOFF_MS;
    /* Without pings, a batond that hangs or a network that goes silent is
     * noticed only when TCP gives up, if ever, while batond may hand a
     * stream lock to someone else after its keepalive timeout (5 s). */
    if (opts->keepalive_ms != BATON_KEEPALIVE_OFF) {
        copts.keepalive_time_ms = opts->keepalive_ms > 0 ? opts->keepalive_ms : DEFAULT_KEEPALIVE_MS;
        copts.keepalive_timeout_ms = copts.keepalive_time_ms;
    }
    int rc = baton__security_init(c, opts);
    if (rc == 0)
        rc = baton__channel_open(c, target, opts, &copts);
    if (rc != 0) {
        baton__security_free(c);
        free(c->owner);
        free(c);
        return rc;
    }
    baton__conn_init(c);
    baton__sessions_init(c, opts->disable_sessions);
    baton__holds_init(c);
    *out = c;
    return 0;
fail:
    free(c->owner);
    free(c);
    return BATON_ERR_NOMEM;
}

void baton_client_free(baton_client *c)
{
    if (c == NULL)
        return;
    baton__holds_free(c);
    baton__sessions_free(c);
    baton__conn_free(c);
    grpc_c_channel_destroy(c->channel);
    baton__security_free(c);
    free(c->owner);
    free(c);
}

const char *baton_client_owner(const baton_client *c)
{
    return c ? c->owner : "";
}

/* Runs a Renew or Release over a session. Returns BATON__SESSIONS_OFF when
 * sessions are not used, else 0 with the response of the expected kind in
 * *resp (caller frees), or an error. */
static int hold_op_session(baton_client *c, Baton__V1__SessionRequest *sr, const char *what,
                           Baton__V1__SessionResponse__ResultCase want, Baton__V1__SessionResponse **resp)
{
    /* (protobuf-c sets the message of the oneof case it reports.) */
    int rc = baton__session_call(c, sr, c->call_timeout_ms, NULL, NULL, BATON__PHASE_CALL, what, resp);
    if (rc == 0 && (*resp)->result_case != want) {
        baton__v1__session_response__free_unpacked(*resp, NULL);
        *resp = NULL;
        rc = baton__fail(BATON_ERR_INTERNAL, "%s: unexpected answer on the session", what);
    }
    return rc;
}

int baton_renew_token(baton_client *c, const char *key, const char *token, int64_t ttl_ms,
                      int64_t *granted_ttl_ms)
{
    if (c == NULL || key == NULL || token == NULL || ttl_ms < 0)
        return baton__fail(BATON_ERR_INVALID, "baton_renew_token: client, key, token required; ttl_ms >= 0");
    Baton__V1__RenewRequest req = BATON__V1__RENEW_REQUEST__INIT;
    Baton__V1__RenewResponse *resp = NULL;
    grpc_c_status st = GRPC_C_STATUS_INIT;
    grpc_c_call_options o = baton__unary_opts(c);
    req.key = (char *)key;
    req.token = (char *)token;
    req.ttl_ms = ttl_ms;
    Baton__V1__SessionRequest sr = BATON__V1__SESSION_REQUEST__INIT;
    Baton__V1__SessionResponse *sresp = NULL;
    sr.op_case = BATON__V1__SESSION_REQUEST__OP_RENEW;
    sr.renew = &req;
    int rc = hold_op_session(c, &sr, "renew", BATON__V1__SESSION_RESPONSE__RESULT_RENEW, &sresp);
    if (rc != BATON__SESSIONS_OFF) {
        if (rc == 0 && granted_ttl_ms)
            *granted_ttl_ms = sresp->renew->ttl_ms;
        if (sresp)
            baton__v1__session_response__free_unpacked(sresp, NULL);
        return rc;
    }
    rc = 0;
    if (baton__v1__lock_service__grpc__renew(c->channel, &req, &resp, &st, &o) != GRPC_C_CODE_OK) {
        rc = baton__fail_status(&st, BATON__PHASE_CALL, "renew");
    } else if (granted_ttl_ms) {
        *granted_ttl_ms = resp->ttl_ms;
    }
    if (resp)
        baton__v1__renew_response__free_unpacked(resp, NULL);
    baton__conn_note(c, st.code);
    grpc_c_status_clear(&st);
    return rc;
}

int baton_release_token(baton_client *c, const char *key, const char *token)
{
    if (c == NULL || key == NULL || token == NULL)
        return baton__fail(BATON_ERR_INVALID, "baton_release_token: client, key and token are required");
    Baton__V1__ReleaseRequest req = BATON__V1__RELEASE_REQUEST__INIT;
    Baton__V1__ReleaseResponse *resp = NULL;
    grpc_c_status st = GRPC_C_STATUS_INIT;
    grpc_c_call_options o = baton__unary_opts(c);
    req.key = (char *)key;
    req.token = (char *)token;
    Baton__V1__SessionRequest sr = BATON__V1__SESSION_REQUEST__INIT;
    Baton__V1__SessionResponse *sresp = NULL;
    sr.op_case = BATON__V1__SESSION_REQUEST__OP_RELEASE;
    sr.release = &req;
    int rc = hold_op_session(c, &sr, "release", BATON__V1__SESSION_RESPONSE__RESULT_RELEASE, &sresp);
    if (rc != BATON__SESSIONS_OFF) {
        if (rc == 0 && !sresp->release->released)
            rc = baton__fail(BATON_ERR_NOT_HELD, "release: %s is not held by this token", key);
        if (sresp)
            baton__v1__session_response__free_unpacked(sresp, NULL);
        return rc;
    }
    rc = 0;
    if (baton__v1__lock_service__grpc__release(c->channel, &req, &resp, &st, &o) != GRPC_C_CODE_OK)
        rc = baton__fail_status(&st, BATON__PHASE_CALL, "release");
    else if (!resp->released)
        rc = baton__fail(BATON_ERR_NOT_HELD, "release: %s is not held by this token", key);
    if (resp)
        baton__v1__release_response__free_unpacked(resp, NULL);
    baton__conn_note(c, st.code);
    grpc_c_status_clear(&st);
    return rc;
}

int baton_force_release(baton_client *c, const char *key, uint64_t fencing)
{
    if (c == NULL || key == NULL)
        return baton__fail(BATON_ERR_INVALID, "baton_force_release: client and key are required");
    Baton__V1__ForceReleaseRequest req = BATON__V1__FORCE_RELEASE_REQUEST__INIT;
    Baton__V1__ReleaseResponse *resp = NULL;
    grpc_c_status st = GRPC_C_STATUS_INIT;
    grpc_c_call_options o = baton__unary_opts(c);
    req.key = (char *)key;
    req.fencing = fencing;
    int rc = 0;
    if (baton__v1__lock_service__grpc__force_release(c->channel, &req, &resp, &st, &o) != GRPC_C_CODE_OK)
        rc = baton__fail_status(&st, BATON__PHASE_CALL, "force-release");
    else if (!resp->released)
        rc = baton__fail(BATON_ERR_NOT_HELD, "force-release: %s is not held with fencing %llu", key,
                         (unsigned long long)fencing);
    if (resp)
        baton__v1__release_response__free_unpacked(resp, NULL);
    baton__conn_note(c, st.code);
    grpc_c_status_clear(&st);
    return rc;
}

int baton_describe(baton_client *c, const char *key, baton_description *out)
{
    if (c == NULL || key == NULL || out == NULL)
        return baton__fail(BATON_ERR_INVALID, "baton_describe: client, key and out are required");
    Baton__V1__DescribeRequest req = BATON__V1__DESCRIBE_REQUEST__INIT;
    Baton__V1__DescribeResponse *resp = NULL;
    grpc_c_status st = GRPC_C_STATUS_INIT;
    grpc_c_call_options o = baton__unary_opts(c);
    req.key = (char *)key;
    memset(out, 0, sizeof *out);
    int rc = 0;
    if (baton__v1__lock_service__grpc__describe(c->channel, &req, &resp, &st, &o) != GRPC_C_CODE_OK) {
        rc = baton__fail_status(&st, BATON__PHASE_CALL, "describe");
    } else {
        out->held = resp->held;
        snprintf(out->owner, sizeof out->owner, "%s", resp->owner ? resp->owner : "");
        out->fencing = resp->fencing;
        out->ttl_ms = resp->ttl_ms;
        out->waiters = resp->waiters;
    }
    if (resp)
        baton__v1__describe_response__free_unpacked(resp, NULL);
    baton__conn_note(c, st.code);
    grpc_c_status_clear(&st);
    return rc;
}
