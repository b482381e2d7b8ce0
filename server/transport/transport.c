/*
 * gRPC transport: baton.v1.LockService and grpc.health.v1.Health on the
 * engine. This file: the server, its request slots, the completion pump,
 * dispatch to the methods' tables, and shutdown. Calls are in call.c, the
 * methods in rpc_lock.c, rpc_session.c and rpc_health.c.
 *
 * One pump thread sits in grpc_completion_queue_next and hands every
 * (tag, success) to the loop thread through a mutex-protected array and an
 * eventfd. Everything else (call state, engine calls, grpc_call_start_batch)
 * happens on the loop thread, so no call state needs a lock.
 *
 * Tags are pointers with a kind in their low 3 bits (calls and request slots
 * are at least 8-byte aligned). A call object counts its references: one per
 * batch in flight, one while the engine may still call back, and one while
 * it is being dispatched. It is freed when the count reaches zero (call.c).
 */
#include "internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <event2/event.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>

#include "baton/v1/lock.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"
#include "log.h"
#include "pb_codec.h"

/* Any unregistered path: gRPC core would leave it hanging until its deadline. */
static void unknown_start(tcall *c, ProtobufCMessage *unused)
{
    call_send_status(c, GRPC_STATUS_UNIMPLEMENTED, "unknown method", NULL);
}

static const rpc_method unknown_rpc = {.start = unknown_start};

/* What this server serves; the generic slot last. */
static const rpc_method *const served[NMETHODS] = {
    &transport__acquire_rpc,      &transport__renew_rpc,
    &transport__release_rpc,      &transport__watch_rpc,
    &transport__describe_rpc,     &transport__force_release_rpc,
    &transport__health_check_rpc, &transport__health_watch_rpc,
    &transport__session_rpc,      &transport__list_rpc,
    &unknown_rpc,
};

/* Fills t->methods from served[]. Returns 0, or -1 with the missing method
 * named in err. */
static int methods_resolve(baton_transport *t, char *err, size_t errlen)
{
    for (int m = 0; m < NMETHODS; m++) {
        served_method *sm = &t->methods[m];
        const rpc_method *rpc = served[m];
        sm->rpc = rpc;
        if (rpc->service == NULL)
            continue; /* the generic slot */
        const ProtobufCMethodDescriptor *md =
            protobuf_c_service_descriptor_get_method_by_name(rpc->service, rpc->name);
        if (md == NULL) {
            snprintf(err, errlen, "the proto of %s has no method %s", rpc->service->name, rpc->name);
            return -1;
        }
        snprintf(sm->path, sizeof sm->path, "/%s/%s", rpc->service->name, md->name);
        sm->req = md->input;
        sm->req_name = md->input->short_name;
    }
    return 0;
}

/* ---------------------------------------------------------------- requests */

static void post_request(baton_transport *t, req_slot *s)
{
    grpc_call_error e;
    grpc_metadata_array_init(&s->md);
    if (s->method->req == NULL) {
        grpc_call_details_init(&s->details);
        e = grpc_server_request_call(t->server, &s->call, &s->details, &s->md, t->cq, t->cq,
                                     TAG(s, TAG_REQUEST));
    } else {
        /* A client-streaming method has no initial payload (and must not be asked for one). */
        e = grpc_server_request_registered_call(t->server, s->method->registered, &s->call, &s->deadline,
                                                &s->md, s->method->rpc->client_streams ? NULL : &s->payload,
                                                t->cq, t->cq, TAG(s, TAG_REQUEST));
    }
    if (e != GRPC_CALL_OK) {
        LOG_ERROR("transport: cannot request calls (%s): error %d",
                  s->method->req ? s->method->path : "unregistered methods", (int)e);
        grpc_metadata_array_destroy(&s->md);
        if (s->method->req == NULL)
            grpc_call_details_destroy(&s->details);
        return;
    }
    t->nposted++;
}

/* `refused`: the guard's verdict (0, or an error answered with `why`). */
static void dispatch_call(tcall *c, grpc_byte_buffer *payload, int refused, const char *why)
{
    grpc_op close_on_server;
    memset(&close_on_server, 0, sizeof close_on_server);
    close_on_server.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    close_on_server.data.recv_close_on_server.cancelled = &c->cancelled;
    if (call_batch(c, &close_on_server, 1, TAG_CLOSE) != 0) {
        c->phase = CALL_GONE;
        grpc_call_cancel(c->call, NULL);
        return;
    }
    if (refused) {
        call_finish(c, refused, why);
        return;
    }
    const served_method *sm = c->method;
    if (sm->rpc->client_streams || sm->req == NULL) {
        sm->rpc->start(c, NULL);
        return;
    }
    char err[ERRBUF];
    ProtobufCMessage *m = pb_decode(payload, sm->req, sm->req_name, err, sizeof err);
    if (m == NULL) {
        call_finish(c, BATON_E_INVALID, err);
        return;
    }
    sm->rpc->start(c, m);
    protobuf_c_message_free_unpacked(m, NULL);
}

static void on_request(req_slot *s, int ok)
{
    baton_transport *t = s->t;
    grpc_call *call = s->call;
    grpc_byte_buffer *payload = s->payload;
    s->call = NULL;
    s->payload = NULL;
    tcall *c = ok && call ? call_new(t, call, s->method) : NULL;
    char why[ERRBUF];
    int refused = 0;
    if (c) /* before the metadata (the bearer token) goes */
        refused = guard_call_begin(t->guard, call, &s->md, s->method->rpc->no_token, &c->who, why, sizeof why);
    grpc_metadata_array_destroy(&s->md);
    if (s->method->req == NULL)
        grpc_call_details_destroy(&s->details);
    t->nposted--;
    if (!transport__shutting(t))
        post_request(t, s); /* keep REQ_SLOTS requests posted per method */

    if (c) {
        dispatch_call(c, payload, refused, why);
        call_unref(c); /* the dispatch reference */
    } else if (ok && call) {
        grpc_call_cancel_with_status(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory", NULL);
        grpc_call_unref(call);
    } else if (call) {
        grpc_call_unref(call);
    }
    if (payload)
        grpc_byte_buffer_destroy(payload);
    transport__maybe_finish_shutdown(t);
}

/* ---------------------------------------------------------------- pump */

/* Pump thread: the only thread that waits on the completion queue. */
static void *pump_main(void *arg)
{
    baton_transport *t = arg;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(t->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_TIMEOUT)
            continue;
        pthread_mutex_lock(&t->mu);
        int was_empty = t->inbox_len == 0 && !t->pump_exited;
        if (ev.type == GRPC_QUEUE_SHUTDOWN) {
            t->pump_exited = 1;
        } else {
            if (t->inbox_len == t->inbox_cap) {
                size_t cap = t->inbox_cap ? t->inbox_cap * 2 : 64;
                completion *n = realloc(t->inbox, cap * sizeof *n);
                if (n == NULL) {
                    /* Dropping a tag would leak a call forever; nothing sane is left. */
                    LOG_ERROR("transport: out of memory in the completion pump");
                    abort();
                }
                t->inbox = n;
                t->inbox_cap = cap;
            }
            t->inbox[t->inbox_len].tag = ev.tag;
            t->inbox[t->inbox_len].ok = ev.success;
            t->inbox_len++;
        }
        int exited = t->pump_exited;
        pthread_mutex_unlock(&t->mu);
        if (was_empty) {
            uint64_t one = 1;
            ssize_t w = write(t->efd, &one, sizeof one);
            (void)w; /* EAGAIN only when the counter is huge: the loop is awake anyway */
        }
        if (exited)
            return NULL;
    }
}

static void final_teardown(baton_transport *t)
{
    pthread_join(t->pump, NULL);
    t->pump_started = 0;
    grpc_server_destroy(t->server);
    t->server = NULL;
    grpc_completion_queue_destroy(t->cq);
    t->cq = NULL;
    t->shut = SHUT_DONE;
    LOG_DEBUG("transport: stopped");
    if (t->done)
        t->done(t->done_ud);
}

static void dispatch_tag(baton_transport *t, void *tag, int ok)
{
    void *p = TAG_PTR(tag);
    switch (TAG_KIND(tag)) {
    case TAG_REQUEST: on_request(p, ok); break;
    case TAG_CLOSE: call_on_close(p, ok); break;
    case TAG_SEND: call_on_send_done(p, ok); break;
    case TAG_STATUS: call_on_status_done(p, ok); break;
    case TAG_MD: call_unref(p); break;
    case TAG_RECV: ((tcall *)p)->method->rpc->received(p, ok); break;
    case TAG_SHUTDOWN:
        t->server_notified = 1;
        transport__maybe_finish_shutdown(t);
        break;
    default: LOG_ERROR("transport: unknown tag %p", tag); break;
    }
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    baton_transport *t = arg;
    uint64_t v;
    ssize_t r = read(t->efd, &v, sizeof v);
    (void)r;
    pthread_mutex_lock(&t->mu);
    /* Swap buffers so the pump never waits for the loop's work. */
    completion *batch = t->inbox;
    size_t n = t->inbox_len;
    size_t cap = t->inbox_cap;
    t->inbox = t->work;
    t->inbox_cap = t->work_cap;
    t->inbox_len = 0;
    int exited = t->pump_exited;
    pthread_mutex_unlock(&t->mu);
    t->work = batch;
    t->work_cap = cap;
    for (size_t i = 0; i < n; i++)
        dispatch_tag(t, batch[i].tag, batch[i].ok);
    if (exited && t->shut != SHUT_DONE)
        final_teardown(t);
}

/* ---------------------------------------------------------------- shutdown */

void transport__maybe_finish_shutdown(baton_transport *t)
{
    if (t->shut < SHUT_CALLS || t->shut >= SHUT_QUEUE || t->ncalls != 0)
        return;
    if (t->shut == SHUT_CALLS) {
        /* Every call is over, but the last statuses and messages may still
         * sit in gRPC's write buffers: tearing the server down now can close
         * a connection before they leave, and the client then sees only
         * "Socket closed". Give them SHUTDOWN_FLUSH_MS. */
        t->shut = SHUT_FLUSH;
        struct timeval tv = {0, SHUTDOWN_FLUSH_MS * 1000};
        evtimer_add(t->grace_ev, &tv); /* (re-arms the pending grace timer) */
        return;
    }
    if (t->shut == SHUT_FLUSH || !t->server_notified || t->nposted != 0)
        return;
    t->shut = SHUT_QUEUE;
    if (t->grace_ev)
        evtimer_del(t->grace_ev);
    grpc_completion_queue_shutdown(t->cq); /* the pump drains it and exits */
}

static void on_grace(evutil_socket_t fd, short what, void *arg)
{
    baton_transport *t = arg;
    if (t->shut >= SHUT_QUEUE)
        return;
    if (t->shut == SHUT_FLUSH && t->ncalls == 0) {
        t->shut = SHUT_SERVER;
        /* Only connections can keep gRPC's shutdown waiting now, and a
         * client that is not polling (an idle libbaton) never answers the
         * GOAWAY: drop them instead of waiting out the grace. */
        if (!t->server_notified)
            grpc_server_cancel_all_calls(t->server);
        transport__maybe_finish_shutdown(t);
        return;
    }
    if (t->ncalls > 0)
        LOG_WARN("transport: %zu call(s) still open after shutdown grace; cancelling", t->ncalls);
    grpc_server_cancel_all_calls(t->server);
}

static void on_engine_done(void *ud)
{
    baton_transport *t = ud;
    if (t->shut >= SHUT_CALLS)
        return;
    t->shut = SHUT_CALLS;
    struct timeval tv = {SHUTDOWN_GRACE_MS / 1000, (SHUTDOWN_GRACE_MS % 1000) * 1000};
    evtimer_add(t->grace_ev, &tv);
    /* The engine has ended every waiter and watch it knew about, except LEASE
     * grants still on their way to the client: those end when their send
     * completes (engine_acquire_end(w, 0 or 1)), not here. Whatever else is
     * still open ends UNAVAILABLE. */
    for (tcall *c = t->calls; c;) {
        c->refs++;
        if (c->method->rpc->shutdown)
            c->method->rpc->shutdown(c);
        else
            call_end_at_shutdown(c);
        tcall *next = c->next;
        call_unref(c);
        c = next;
    }
    transport__maybe_finish_shutdown(t);
}

void transport_shutdown(baton_transport *t, void (*done)(void *ud), void *ud)
{
    if (t->shut != SHUT_NONE)
        return;
    t->shut = SHUT_ENGINE;
    t->done = done;
    t->done_ud = ud;
    LOG_INFO("transport: shutting down (%zu open calls)", t->ncalls);
    grpc_server_shutdown_and_notify(t->server, t->cq, TAG(t, TAG_SHUTDOWN));
    engine_shutdown(t->engine, on_engine_done, t);
}

/* ---------------------------------------------------------------- setup */

int transport_port(const baton_transport *t)
{
    return t->port;
}

size_t transport_live_calls(const baton_transport *t)
{
    return t->ncalls;
}

int transport_reload_tls(baton_transport *t, char *err, size_t errlen)
{
    if (t->tls == NULL) {
        snprintf(err, errlen, "TLS is not configured");
        return -1;
    }
    return tls_server_reload(t->tls, err, errlen);
}

static int clamp_int(int64_t v)
{
    return v > INT32_MAX ? INT32_MAX : (int)v;
}

/* Frees what transport_new built; the server must not have been started
 * (and so has no listener, or grpc_server_destroy would assert). */
static void destroy_unstarted(baton_transport *t)
{
    if (t->server)
        grpc_server_destroy(t->server);
    if (t->cq) {
        grpc_completion_queue_shutdown(t->cq);
        if (t->pump_started) {
            pthread_join(t->pump, NULL);
        } else {
            while (grpc_completion_queue_next(t->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
                   GRPC_QUEUE_SHUTDOWN) {
            }
        }
        grpc_completion_queue_destroy(t->cq);
    }
    t->server = NULL;
    t->cq = NULL;
    t->pump_started = 0;
    transport_free(t);
}

baton_transport *transport_new(struct event_base *base, baton_engine *engine, const transport_opts *opts,
                               char *err, size_t errlen)
{
    baton_transport *t = calloc(1, sizeof *t);
    if (t == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    t->base = base;
    t->engine = engine;
    t->limits = opts->limits;
    t->efd = -1;
    pthread_mutex_init(&t->mu, NULL);
    if (methods_resolve(t, err, errlen) != 0)
        goto fail;
    config_security nosec = {.limits = {INT32_MAX, INT32_MAX, INT32_MAX, INT32_MAX, INT32_MAX, INT32_MAX,
                                        INT32_MAX, INT32_MAX, INT32_MAX}};
    const config_security *sec = opts->sec ? opts->sec : &nosec;
    if ((t->guard = guard_new(sec)) == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (sec->tls.cert_file && sec->tls.cert_file[0] && (t->tls = tls_server_new(&sec->tls, err, errlen)) == NULL)
        goto fail;
    t->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (t->efd < 0) {
        snprintf(err, errlen, "eventfd: %s", strerror(errno));
        goto fail;
    }
    t->wake_ev = event_new(base, t->efd, EV_READ | EV_PERSIST, on_wake, t);
    t->grace_ev = evtimer_new(base, on_grace, t);
    if (t->wake_ev == NULL || t->grace_ev == NULL || event_add(t->wake_ev, NULL) != 0) {
        snprintf(err, errlen, "cannot create loop events");
        goto fail;
    }

    grpc_arg args[11];
    size_t n = 0;
#define INT_ARG(k, v)                                                                                        \
    do {                                                                                                     \
        args[n].type = GRPC_ARG_INTEGER;                                                                     \
        args[n].key = (char *)(k);                                                                           \
        args[n].value.integer = (v);                                                                         \
        n++;                                                                                                 \
    } while (0)
    if (opts->max_concurrent_streams > 0)
        INT_ARG(GRPC_ARG_MAX_CONCURRENT_STREAMS, opts->max_concurrent_streams);
    if (opts->max_message_bytes > 0) {
        INT_ARG(GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, opts->max_message_bytes);
        INT_ARG(GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, opts->max_message_bytes);
    }
    if (opts->keepalive_time_ms > 0)
        INT_ARG(GRPC_ARG_KEEPALIVE_TIME_MS, clamp_int(opts->keepalive_time_ms));
    if (opts->keepalive_timeout_ms > 0)
        INT_ARG(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, clamp_int(opts->keepalive_timeout_ms));
    /* Keep pinging a connection whose only stream waits silently for a lock
     * (the default stops after 2 pings without data), and accept client
     * keepalive pings, even without calls, down to one per second
     * (libbaton's minimum keepalive_ms). gRPC clients send each keepalive
     * ping a keepalive time after the previous ping's ack, so a jittery
     * network only stretches the gaps seen here: no strikes. */
    INT_ARG(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
    INT_ARG(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    INT_ARG(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 1000);
    /* A second batond on the same address must fail, not share the port. */
    INT_ARG(GRPC_ARG_ALLOW_REUSEPORT, 0);
#undef INT_ARG
    grpc_channel_args cargs = {n, args};

    t->cq = grpc_completion_queue_create_for_next(NULL);
    if (pthread_create(&t->pump, NULL, pump_main, t) != 0) {
        snprintf(err, errlen, "cannot start the completion queue thread");
        goto fail_grpc;
    }
    t->pump_started = 1;
    t->server = grpc_server_create(&cargs, NULL);
    grpc_server_register_completion_queue(t->server, t->cq, NULL);
    for (int m = 0; m < NMETHODS; m++) {
        served_method *sm = &t->methods[m];
        if (sm->req) {
            sm->registered = grpc_server_register_method(
                t->server, sm->path, NULL,
                sm->rpc->client_streams ? GRPC_SRM_PAYLOAD_NONE : GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER,
                0);
            if (sm->registered == NULL) {
                snprintf(err, errlen, "cannot register %s", sm->path);
                goto fail_grpc;
            }
        }
        for (int i = 0; i < REQ_SLOTS; i++) {
            req_slot *s = &t->slots[m][i];
            s->t = t;
            s->method = sm;
        }
    }
    grpc_server_credentials *creds =
        t->tls ? tls_server_credentials(t->tls) : grpc_insecure_server_credentials_create();
    if (creds == NULL) {
        snprintf(err, errlen, "tls: cannot create the server credentials");
        goto fail_grpc;
    }
    t->port = grpc_server_add_http2_port(t->server, opts->listen, creds);
    grpc_server_credentials_release(creds);
    if (t->port == 0) {
        snprintf(err, errlen, "cannot listen on %s", opts->listen);
        goto fail_grpc;
    }
    grpc_server_start(t->server);
    for (int m = 0; m < NMETHODS; m++)
        for (int i = 0; i < REQ_SLOTS; i++)
            post_request(t, &t->slots[m][i]);
    engine_set_serving_cb(engine, transport__on_serving, t);
    return t;

fail_grpc:
    destroy_unstarted(t);
    return NULL;
fail:
    transport_free(t);
    return NULL;
}

void transport_free(baton_transport *t)
{
    if (t == NULL)
        return;
    if (t->engine)
        engine_set_serving_cb(t->engine, NULL, NULL);
    if (t->wake_ev)
        event_free(t->wake_ev);
    if (t->grace_ev)
        event_free(t->grace_ev);
    if (t->efd >= 0)
        close(t->efd);
    pthread_mutex_destroy(&t->mu);
    guard_free(t->guard);
    tls_server_free(t->tls);
    free(t->inbox);
    free(t->work);
    free(t);
}
