/*
 * lock.c - acquiring, holding, renewing and releasing locks.
 *
 * A lease-mode lock with auto_renew owns a renewal thread. A stream-mode
 * lock is held by the client's hold session (holds.c), which reports when
 * the server ends it; where sessions are not used it owns an Acquire stream
 * and a thread that sits on it. All report a loss through
 * mark_lost(): state LOST first, then the on_lost callback, exactly once.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "lease_policy.h"

/* Shortest pause between two renewal attempts after a failure. */
#define RENEW_RETRY_MIN_MS 20

struct baton_lock {
    baton_client *client;
    char *key;
    char *token;
    char *owner;
    uint64_t fencing;
    int device;
    /* a pool grant: every device (Pool.count), its fencing and configured
     * name (NULL when the pool has none); ndev 0 for a key */
    int ndev;
    int *devs;
    uint64_t *fencs;
    char **names;
    baton_mode mode;
    int64_t requested_ttl_ms; /* what renewals ask for (0 = server default) */
    baton_lost_cb on_lost;
    void *lost_ud;

    pthread_mutex_t mu; /* guards everything below */
    pthread_cond_t cv;  /* signalled when stop is set (monotonic clock) */
    baton_lock_state state;
    int64_t ttl_ms;
    int64_t expires_ms; /* lease mode, monotonic: when the lease runs out at the latest */
    int stop;           /* stream mode also: the stream is being ended on purpose */
    int has_thread;
    pthread_t thread;
    grpc_c_call *call; /* stream mode: the Acquire stream, read by thread only */
    baton__hold *hold; /* stream mode: or the hold on the client's hold session */
};

static void lock_destroy(baton_lock *l)
{
    if (l == NULL)
        return;
    pthread_cond_destroy(&l->cv);
    pthread_mutex_destroy(&l->mu);
    free(l->key);
    free(l->token);
    free(l->owner);
    for (int i = 0; l->names && i < l->ndev; i++)
        free(l->names[i]);
    free(l->names);
    free(l->devs);
    free(l->fencs);
    free(l);
}

static baton_lock *lock_new(baton_client *c, const Baton__V1__Granted *g, const char *owner,
                            const baton_acquire_options *o)
{
    baton_lock *l = calloc(1, sizeof *l);
    if (l == NULL)
        return NULL;
    baton__cond_init_monotonic(&l->cv);
    pthread_mutex_init(&l->mu, NULL);
    l->client = c;
    l->key = strdup(g->key ? g->key : "");
    l->token = strdup(g->token ? g->token : "");
    l->owner = strdup(owner);
    if (l->key == NULL || l->token == NULL || l->owner == NULL) {
        lock_destroy(l);
        return NULL;
    }
    l->fencing = g->fencing;
    l->device = g->device;
    /* keep_grant's copies of the device lists move into the lock. */
    Baton__V1__Granted *mg = (Baton__V1__Granted *)g;
    l->ndev = (int)g->n_devices;
    l->devs = g->devices;
    l->fencs = g->fencings;
    l->names = g->device_names;
    mg->devices = NULL;
    mg->fencings = NULL;
    mg->device_names = NULL;
    mg->n_devices = mg->n_fencings = mg->n_device_names = 0;
    l->mode = o->mode;
    l->requested_ttl_ms = o->ttl_ms;
    l->on_lost = o->on_lost;
    l->lost_ud = o->lost_ud;
    l->state = BATON_LOCK_HELD;
    l->ttl_ms = g->ttl_ms;
    l->expires_ms = clock_mono_ms() + g->ttl_ms;
    return l;
}

/* HELD -> LOST, then the callback (outside the mutex). Call without mu. */
static void mark_lost(baton_lock *l, int err, const char *msg)
{
    pthread_mutex_lock(&l->mu);
    int was_held = l->state == BATON_LOCK_HELD;
    if (was_held)
        l->state = BATON_LOCK_LOST;
    pthread_mutex_unlock(&l->mu);
    if (was_held && l->on_lost)
        l->on_lost(l, err, msg, l->lost_ud);
}

static void set_state_if_held(baton_lock *l, baton_lock_state s)
{
    pthread_mutex_lock(&l->mu);
    if (l->state == BATON_LOCK_HELD)
        l->state = s;
    pthread_mutex_unlock(&l->mu);
}

/* Waits on cv until the monotonic time `at_ms` or until stop. Holds mu. */
static void wait_until(baton_lock *l, int64_t at_ms)
{
    while (!l->stop && clock_mono_ms() < at_ms) {
        struct timespec ts = baton__abstime(at_ms);
        pthread_cond_timedwait(&l->cv, &l->mu, &ts);
    }
}

/* When the renewal gives up on a lease it could not extend: a margin before
 * it runs out, by the rule batond uses for stream holds (lease_policy.h). */
static int64_t give_up_at(const baton_lock *l)
{
    return lease_give_up_at_ms(l->expires_ms, l->ttl_ms);
}

/*
 * Lease renewal: renew every lease_renew_step_ms (a third of the TTL). A
 * failed attempt is retried until give_up_at; then the lock is reported
 * LOST, because soon after that another client may hold it.
 * FAILED_PRECONDITION (the token no longer holds the key) is a loss at
 * once.
 */
static void *renew_thread(void *arg)
{
    baton_lock *l = arg;
    pthread_mutex_lock(&l->mu);
    int64_t next = clock_mono_ms() + lease_renew_step_ms(l->ttl_ms);
    for (;;) {
        wait_until(l, next);
        if (l->stop || l->state != BATON_LOCK_HELD)
            break;
        int64_t now = clock_mono_ms();
        int64_t left = give_up_at(l) - now;
        if (left <= 0) {
            int64_t runs_out = l->expires_ms - now;
            pthread_mutex_unlock(&l->mu);
            /* Say why the renewals failed: this thread's last error is the
             * last attempt's (thread-local, "" if none was made). */
            char msg[1024];
            const char *why = baton_last_error();
            snprintf(msg, sizeof msg, "lease could not be renewed and runs out in %lld ms%s%s%s",
                     (long long)(runs_out > 0 ? runs_out : 0), why[0] ? " (last attempt: " : "", why,
                     why[0] ? ")" : "");
            mark_lost(l, BATON_ERR_LOST, msg);
            return NULL;
        }
        pthread_mutex_unlock(&l->mu);

        /* The attempt must end before the give-up point, or a late success
         * would report a lock that may already belong to someone else. */
        Baton__V1__RenewRequest req = BATON__V1__RENEW_REQUEST__INIT;
        Baton__V1__RenewResponse *resp = NULL;
        grpc_c_status st = GRPC_C_STATUS_INIT;
        grpc_c_call_options o = baton__unary_opts(l->client);
        if (o.timeout_ms > left)
            o.timeout_ms = left;
        req.key = l->key;
        req.token = l->token;
        req.ttl_ms = l->requested_ttl_ms;
        int code = baton__v1__lock_service__grpc__renew(l->client->channel, &req, &resp, &st, &o);
        int err = code == GRPC_C_CODE_OK ? 0 : baton__fail_status(&st, BATON__PHASE_CALL, "renew");
        baton__conn_note(l->client, st.code);

        if (err == BATON_ERR_NOT_HELD) {
            char msg[512];
            snprintf(msg, sizeof msg, "%s", baton_last_error());
            grpc_c_status_clear(&st);
            mark_lost(l, BATON_ERR_LOST, msg);
            return NULL;
        }
        pthread_mutex_lock(&l->mu);
        if (err == 0) {
            l->ttl_ms = resp->ttl_ms;
            l->expires_ms = now + resp->ttl_ms; /* measured from before the request */
            next = now + lease_renew_step_ms(resp->ttl_ms);
        } else {
            int64_t pause = l->ttl_ms / 10;
            int64_t last = give_up_at(l);
            next = clock_mono_ms() + (pause < RENEW_RETRY_MIN_MS ? RENEW_RETRY_MIN_MS : pause);
            if (next > last)
                next = last;
        }
        if (resp)
            baton__v1__renew_response__free_unpacked(resp, NULL);
        grpc_c_status_clear(&st);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

/*
 * Stream mode: the server ends the hold with OK after a Release by token,
 * with ABORTED when the hold was lost; CANCELLED after our own cancel.
 */
static void stream_ended(void *ud, const grpc_c_status *st) /* a baton__hold_end_cb */
{
    baton_lock *l = ud;
    pthread_mutex_lock(&l->mu);
    int on_purpose = l->stop;
    pthread_mutex_unlock(&l->mu);
    if (on_purpose || st->code == GRPC_C_CODE_OK) {
        set_state_if_held(l, BATON_LOCK_RELEASED);
    } else {
        int err = baton__fail_status(st, BATON__PHASE_HELD, "lock stream ended");
        char msg[512];
        snprintf(msg, sizeof msg, "%s", baton_last_error());
        mark_lost(l, err, msg);
    }
}

static void *stream_thread(void *arg)
{
    baton_lock *l = arg;
    ProtobufCMessage *m = NULL;
    while (grpc_c_call_read(l->call, &m) == GRPC_C_OK) {
        protobuf_c_message_free_unpacked(m, NULL); /* nothing more is expected */
        m = NULL;
    }
    grpc_c_status st = GRPC_C_STATUS_INIT;
    grpc_c_call_finish(l->call, NULL, &st);
    stream_ended(l, &st);
    grpc_c_status_clear(&st);
    return NULL;
}

/* Stops and joins the lock's thread (if any); ends the stream or the hold in
 * stream mode (cancel_hold 0: a Release by token already ended the hold). */
static void stop_thread(baton_lock *l, int cancel_hold)
{
    pthread_mutex_lock(&l->mu);
    l->stop = 1;
    int has = l->has_thread;
    l->has_thread = 0;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
    if (l->call)
        grpc_c_call_cancel(l->call);
    if (has)
        pthread_join(l->thread, NULL);
    if (l->call) {
        grpc_c_call_destroy(l->call);
        l->call = NULL;
    }
    if (l->hold) {
        baton__hold_free(l->hold, cancel_hold);
        l->hold = NULL;
    }
}

/* Points cx (may be NULL) at the call now being waited on (NULL: none); a
 * cancel that came first cancels it at once. */
static void cx_set(baton__canceller *cx, grpc_c_call *call)
{
    if (cx == NULL)
        return;
    pthread_mutex_lock(&cx->mu);
    cx->call = call;
    if (call && cx->cancelled)
        grpc_c_call_cancel(call);
    pthread_mutex_unlock(&cx->mu);
}

/* Frees keep_grant's copies of a grant's device lists (lock_new takes them). */
static void grant_lists_free(Baton__V1__Granted *g)
{
    for (size_t i = 0; g->device_names && i < g->n_device_names; i++)
        free(g->device_names[i]);
    free(g->device_names);
    free(g->devices);
    free(g->fencings);
    g->device_names = NULL;
    g->devices = NULL;
    g->fencings = NULL;
    g->n_devices = g->n_fencings = g->n_device_names = 0;
}

/* Copies a grant's device lists into out: devices and fencings (one per
 * device; a server without lists, or a pool grant of one device from an
 * older server, gives `device` alone) and names (NULL unless one per
 * device). Keys are not kept (pool/i). 0 or -1. */
static int keep_grant_lists(const Baton__V1__Granted *g, Baton__V1__Granted *out)
{
    out->devices = NULL;
    out->fencings = NULL;
    out->device_names = NULL;
    out->keys = NULL;
    out->n_keys = 0;
    size_t n = g->n_devices ? g->n_devices : (g->device >= 0 ? 1 : 0);
    out->n_devices = out->n_fencings = n;
    out->n_device_names = 0;
    if (n == 0)
        return 0;
    out->devices = malloc(n * sizeof *out->devices);
    out->fencings = malloc(n * sizeof *out->fencings);
    if (out->devices == NULL || out->fencings == NULL)
        return -1;
    for (size_t i = 0; i < n; i++) {
        out->devices[i] = g->n_devices ? g->devices[i] : g->device;
        out->fencings[i] = i < g->n_fencings ? g->fencings[i] : g->fencing;
    }
    if (g->n_device_names == n) {
        if ((out->device_names = calloc(n, sizeof *out->device_names)) == NULL)
            return -1;
        out->n_device_names = n;
        for (size_t i = 0; i < n; i++)
            if ((out->device_names[i] = strdup(g->device_names[i] ? g->device_names[i] : "")) == NULL)
                return -1;
    }
    return 0;
}

/* Keeps the grant's strings and device lists (the message holding them is
 * freed next); free them with gkey, gtoken and grant_lists_free(out). */
static int keep_grant(const Baton__V1__Granted *g, Baton__V1__Granted *out, char **gkey, char **gtoken)
{
    *out = *g;
    *gkey = strdup(g->key ? g->key : "");
    *gtoken = strdup(g->token ? g->token : "");
    out->key = *gkey;
    out->token = *gtoken;
    int lists = keep_grant_lists(g, out);
    return *gkey && *gtoken && lists == 0 ? 0 : -1;
}

/*
 * The Acquire RPC, read until Granted or its end. Returns 0 with the grant
 * (strings in *gkey, *gtoken, freed by the caller) and, in STREAM mode, the
 * open stream in *callp; a LEASE call is over by then. Or an error. The
 * call has no gRPC deadline (a stream-mode call must outlive any); its start
 * gives up after the call timeout, and a bounded wait is still bounded
 * locally (wait + call timeout) against a hung server.
 */
static int acquire_rpc(baton_client *c, const Baton__V1__AcquireRequest *req, const baton_acquire_options *opts,
                       baton__canceller *cx, Baton__V1__Granted *grant, char **gkey, char **gtoken,
                       grpc_c_call **callp)
{
    int64_t limit =
        opts->wait_ms >= 0 ? clock_add_ms(clock_mono_ms(), clock_add_ms(opts->wait_ms, c->call_timeout_ms)) : -1;
    grpc_c_call_options so = baton__stream_opts(c);
    grpc_c_call *call = baton__v1__lock_service__grpc__acquire_start(c->channel, req, &so);
    if (call == NULL)
        return baton__fail(BATON_ERR_NOMEM, "acquire: cannot start the call");
    cx_set(cx, call);

    int granted = 0, timed_out = 0, err = 0;
    for (;;) {
        Baton__V1__AcquireEvent *ev = NULL;
        int64_t wait = limit < 0 || timed_out ? 3600000 : limit - clock_mono_ms();
        int rc = baton__v1__lock_service__grpc__acquire_read_timeout(call, &ev, wait < 0 ? 0 : wait);
        if (rc == GRPC_C_TIMEOUT) {
            if (limit >= 0 && clock_mono_ms() >= limit && !timed_out) {
                timed_out = 1;
                grpc_c_call_cancel(call);
            }
            continue;
        }
        if (rc != GRPC_C_OK)
            break;
        if (ev->event_case == BATON__V1__ACQUIRE_EVENT__EVENT_GRANTED && ev->granted) {
            granted = 1;
            if (keep_grant(ev->granted, grant, gkey, gtoken) != 0)
                err = baton__fail(BATON_ERR_NOMEM, "acquire: out of memory after the grant");
        } else if (ev->event_case == BATON__V1__ACQUIRE_EVENT__EVENT_QUEUED && ev->queued && opts->on_queued) {
            opts->on_queued(ev->queued->position, opts->queued_ud);
        }
        baton__v1__acquire_event__free_unpacked(ev, NULL);
        if (granted)
            break;
    }
    cx_set(cx, NULL);

    if (!granted) {
        grpc_c_status st = GRPC_C_STATUS_INIT;
        grpc_c_call_finish(call, NULL, &st);
        if (timed_out)
            err = baton__fail(BATON_ERR_TIMEOUT, "acquire: no answer from the server within wait + %lld ms",
                              (long long)c->call_timeout_ms);
        else if (st.code == GRPC_C_CODE_OK)
            err = baton__fail(BATON_ERR_INTERNAL, "acquire: stream ended without a grant");
        else
            err = baton__fail_status(&st, BATON__PHASE_ACQUIRE, "acquire");
        baton__conn_note(c, st.code);
        grpc_c_status_clear(&st);
        grpc_c_call_destroy(call);
        return err;
    }
    if (err != 0) {
        /* Cancelling before the stream closed releases the grant (LEASE too). */
        grpc_c_call_cancel(call);
        grpc_c_call_destroy(call);
        free(*gkey);
        free(*gtoken);
        *gkey = *gtoken = NULL;
        grant_lists_free(grant);
        return err;
    }
    if (opts->mode == BATON_MODE_LEASE) {
        /* The server ends the stream (OK) right after the grant. */
        grpc_c_call_finish(call, NULL, NULL);
        grpc_c_call_destroy(call);
        call = NULL;
    }
    *callp = call;
    return 0;
}

static void session_queued(int64_t position, void *ud)
{
    const baton_acquire_options *o = ud;
    o->on_queued(position, o->queued_ud);
}

/* A LEASE acquire over a pooled session, or a STREAM one held by the
 * client's hold session (the hold in *holdp); as acquire_rpc, or
 * BATON__SESSIONS_OFF. */
static int acquire_session(baton_client *c, Baton__V1__AcquireRequest *req, const baton_acquire_options *opts,
                           Baton__V1__Granted *grant, char **gkey, char **gtoken, baton__hold **holdp)
{
    Baton__V1__SessionRequest sr = BATON__V1__SESSION_REQUEST__INIT;
    sr.op_case = BATON__V1__SESSION_REQUEST__OP_ACQUIRE;
    sr.acquire = req;
    Baton__V1__SessionResponse *r = NULL;
    int64_t timeout = opts->wait_ms >= 0 ? clock_add_ms(opts->wait_ms, c->call_timeout_ms) : -1;
    void (*queued)(int64_t, void *) = opts->on_queued ? session_queued : NULL;
    int err = opts->mode == BATON_MODE_STREAM
                  ? baton__hold_acquire(c, &sr, timeout, queued, (void *)opts, &r, holdp)
                  : baton__session_call(c, &sr, timeout, queued, (void *)opts, BATON__PHASE_ACQUIRE, "acquire", &r);
    if (err != 0)
        return err;
    if (r->result_case != BATON__V1__SESSION_RESPONSE__RESULT_GRANTED) {
        err = baton__fail(BATON_ERR_INTERNAL, "acquire: unexpected answer on the session");
    } else if (keep_grant(r->granted, grant, gkey, gtoken) != 0) {
        err = baton__fail(BATON_ERR_NOMEM, "acquire: out of memory after the grant");
        /* Do not keep a grant nobody can release (a hold is released below). */
        if (*holdp == NULL)
            baton_release_token(c, r->granted->key, r->granted->token);
        free(*gkey);
        free(*gtoken);
        *gkey = *gtoken = NULL;
        grant_lists_free(grant);
    }
    if (err != 0 && *holdp) {
        baton__hold_free(*holdp, 1);
        *holdp = NULL;
    }
    baton__v1__session_response__free_unpacked(r, NULL);
    return err;
}

int baton__acquire(baton_client *c, const char *key, const char *pool, int devices,
                   const baton_acquire_options *opts, baton__canceller *cx, baton_lock **out)
{
    baton_acquire_options none = {0};
    if (out)
        *out = NULL;
    if (c == NULL || out == NULL || (key == NULL) == (pool == NULL))
        return baton__fail(BATON_ERR_INVALID,
                           "acquire: client, out and exactly one of key and pool are required");
    if (pool && devices <= 0)
        return baton__fail(BATON_ERR_INVALID, "acquire: devices must be positive");
    if (opts == NULL)
        opts = &none;
    if (opts->mode != BATON_MODE_LEASE && opts->mode != BATON_MODE_STREAM)
        return baton__fail(BATON_ERR_INVALID, "acquire: unknown mode %d", (int)opts->mode);
    if (opts->ttl_ms < 0)
        return baton__fail(BATON_ERR_INVALID, "acquire: ttl_ms must not be negative");

    const char *owner = opts->owner && opts->owner[0] ? opts->owner : c->owner;
    Baton__V1__AcquireRequest req = BATON__V1__ACQUIRE_REQUEST__INIT;
    Baton__V1__Pool p = BATON__V1__POOL__INIT;
    req.key = (char *)(key ? key : "");
    req.owner = (char *)owner;
    req.ttl_ms = opts->ttl_ms;
    req.wait_ms = opts->wait_ms;
    req.mode = opts->mode == BATON_MODE_STREAM ? BATON__V1__HOLD_MODE__HOLD_MODE_STREAM
                                               : BATON__V1__HOLD_MODE__HOLD_MODE_LEASE;
    if (pool) {
        p.name = (char *)pool;
        p.devices = devices;
        p.count = opts->count;
        p.weight = opts->weight;
        req.pool = &p;
    } else if (opts->count > 1 || opts->weight != 0) {
        return baton__fail(BATON_ERR_INVALID, "acquire: count and weight apply to pools only");
    }

    Baton__V1__Granted grant = BATON__V1__GRANTED__INIT;
    char *gkey = NULL, *gtoken = NULL;
    grpc_c_call *call = NULL;
    baton__hold *hold = NULL;
    /* A cancellable acquire (baton_acquire_async) stays on the Acquire RPC:
     * a cancel there releases a grant the client never read, while a lease
     * granted on a session is kept once written (until its TTL). */
    int err = BATON__SESSIONS_OFF;
    if (cx == NULL)
        err = acquire_session(c, &req, opts, &grant, &gkey, &gtoken, &hold);
    if (err == BATON__SESSIONS_OFF)
        err = acquire_rpc(c, &req, opts, cx, &grant, &gkey, &gtoken, &call);
    if (err != 0)
        return err;

    baton_lock *l = lock_new(c, &grant, owner, opts);
    if (l == NULL) {
        err = baton__fail(BATON_ERR_NOMEM, "acquire: out of memory after the grant");
        /* Do not keep a grant nobody can release. */
        baton_release_token(c, gkey, gtoken);
        if (call) {
            grpc_c_call_cancel(call);
            grpc_c_call_destroy(call);
        }
        baton__hold_free(hold, 1);
        goto done;
    }
    if (hold) {
        l->hold = hold;
        grpc_c_status ended = GRPC_C_STATUS_INIT;
        if (baton__hold_attach(hold, stream_ended, l, &ended)) {
            stream_ended(l, &ended); /* it ended before its lock existed */
            grpc_c_status_clear(&ended);
        }
    } else if (opts->mode == BATON_MODE_STREAM) {
        l->call = call;
        if (pthread_create(&l->thread, NULL, stream_thread, l) != 0)
            goto thread_fail;
        l->has_thread = 1;
    } else if (opts->auto_renew) {
        if (pthread_create(&l->thread, NULL, renew_thread, l) != 0)
            goto thread_fail;
        l->has_thread = 1;
    }
    *out = l;
    goto done;

thread_fail:
    baton_release_token(c, l->key, l->token);
    stop_thread(l, 1);
    lock_destroy(l);
    err = baton__fail(BATON_ERR_NOMEM, "acquire: cannot start the lock's thread");
done:
    free(gkey);
    free(gtoken);
    grant_lists_free(&grant);
    return err;
}

int baton_acquire(baton_client *c, const char *key, const baton_acquire_options *opts, baton_lock **out)
{
    if (key == NULL)
        return baton__fail(BATON_ERR_INVALID, "acquire: key is required");
    return baton__acquire(c, key, NULL, 0, opts, NULL, out);
}

int baton_try_acquire(baton_client *c, const char *key, const baton_acquire_options *opts, baton_lock **out)
{
    baton_acquire_options o = {0};
    if (opts)
        o = *opts;
    o.wait_ms = 0;
    return baton_acquire(c, key, &o, out);
}

int baton_acquire_pool(baton_client *c, const char *pool, int devices, const baton_acquire_options *opts,
                       baton_lock **out)
{
    if (pool == NULL)
        return baton__fail(BATON_ERR_INVALID, "acquire: pool is required");
    return baton__acquire(c, NULL, pool, devices, opts, NULL, out);
}

int baton_release(baton_lock *l)
{
    if (l == NULL)
        return baton__fail(BATON_ERR_INVALID, "baton_release: lock is NULL");
    baton_lock_state s = baton_lock_state_get(l);
    if (s != BATON_LOCK_HELD) {
        stop_thread(l, 1);
        return s == BATON_LOCK_RELEASED ? 0 : baton__fail(BATON_ERR_LOST, "release: the lock was lost");
    }
    /* No "releasing" mark here: a Release by token ends the stream OK, which
     * the stream thread reads as RELEASED, while a loss that arrives meanwhile
     * must still be reported as LOST (with on_lost). */
    int err = baton_release_token(l->client, l->key, l->token);
    if (err == 0) {
        set_state_if_held(l, BATON_LOCK_RELEASED);
        stop_thread(l, 0);
    } else if (err == BATON_ERR_NOT_HELD) {
        set_state_if_held(l, BATON_LOCK_LOST);
        stop_thread(l, 0);
    } else if (l->mode == BATON_MODE_STREAM) {
        /* Cancelling the stream (or the hold) releases the lock at the server
         * even when the Release call failed; the error is still returned. */
        stop_thread(l, 1);
        set_state_if_held(l, BATON_LOCK_RELEASED);
    }
    return err;
}

int baton_renew(baton_lock *l, int64_t ttl_ms)
{
    if (l == NULL || ttl_ms < 0)
        return baton__fail(BATON_ERR_INVALID, "baton_renew: lock required, ttl_ms >= 0");
    if (baton_lock_state_get(l) != BATON_LOCK_HELD)
        return baton__fail(BATON_ERR_LOST, "renew: the lock is not held");
    int64_t now = clock_mono_ms(), granted = 0;
    int err = baton_renew_token(l->client, l->key, l->token, ttl_ms, &granted);
    if (err == 0) {
        pthread_mutex_lock(&l->mu);
        l->ttl_ms = granted;
        l->expires_ms = now + granted;
        l->requested_ttl_ms = ttl_ms;
        pthread_mutex_unlock(&l->mu);
    } else if (err == BATON_ERR_NOT_HELD) {
        set_state_if_held(l, BATON_LOCK_LOST);
    }
    return err;
}

void baton_lock_free(baton_lock *l)
{
    if (l == NULL)
        return;
    if (baton_lock_state_get(l) == BATON_LOCK_HELD)
        baton_release(l); /* best effort; stream mode is cancelled below anyway */
    stop_thread(l, 1);
    lock_destroy(l);
}

void baton_lock_detach(baton_lock *l)
{
    if (l == NULL)
        return;
    stop_thread(l, 1);
    lock_destroy(l);
}

const char *baton_lock_key(const baton_lock *l)
{
    return l->key;
}
const char *baton_lock_token(const baton_lock *l)
{
    return l->token;
}
const char *baton_lock_owner(const baton_lock *l)
{
    return l->owner;
}
uint64_t baton_lock_fencing(const baton_lock *l)
{
    return l->fencing;
}
int baton_lock_device(const baton_lock *l)
{
    return l->device;
}
baton_mode baton_lock_mode(const baton_lock *l)
{
    return l->mode;
}

int64_t baton_lock_ttl_ms(const baton_lock *l)
{
    baton_lock *m = (baton_lock *)l; /* the mutex is not part of the logical state */
    pthread_mutex_lock(&m->mu);
    int64_t t = m->ttl_ms;
    pthread_mutex_unlock(&m->mu);
    return t;
}

baton_lock_state baton_lock_state_get(const baton_lock *l)
{
    baton_lock *m = (baton_lock *)l;
    pthread_mutex_lock(&m->mu);
    baton_lock_state s = m->state;
    pthread_mutex_unlock(&m->mu);
    return s;
}

int baton_lock_device_count(const baton_lock *l)
{
    return l->ndev;
}

int baton_lock_device_at(const baton_lock *l, int i)
{
    return i >= 0 && i < l->ndev ? l->devs[i] : -1;
}

uint64_t baton_lock_device_fencing(const baton_lock *l, int i)
{
    return i >= 0 && i < l->ndev ? l->fencs[i] : 0;
}

const char *baton_lock_device_name(const baton_lock *l, int i)
{
    return i >= 0 && i < l->ndev && l->names ? l->names[i] : NULL;
}

/* Every granted device, comma-separated: its configured name when the pool
 * has names, else its index ("1,3"). */
int baton_lock_cuda_visible_devices(const baton_lock *l, char *buf, size_t len)
{
    if (l == NULL || buf == NULL || l->device < 0 || l->ndev == 0)
        return baton__fail(BATON_ERR_INVALID, "not a pool lock");
    size_t used = 0;
    for (int i = 0; i < l->ndev; i++) {
        int n = l->names ? snprintf(buf + used, len - used, "%s%s", i ? "," : "", l->names[i])
                         : snprintf(buf + used, len - used, "%s%d", i ? "," : "", l->devs[i]);
        if (n < 0 || (size_t)n >= len - used)
            return baton__fail(BATON_ERR_INVALID, "buffer too small");
        used += (size_t)n;
    }
    return 0;
}

const char *baton_lock_state_name(baton_lock_state s)
{
    switch (s) {
    case BATON_LOCK_HELD: return "HELD";
    case BATON_LOCK_LOST: return "LOST";
    case BATON_LOCK_RELEASED: return "RELEASED";
    default: return "?";
    }
}
