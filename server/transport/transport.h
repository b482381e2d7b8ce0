#ifndef BATON_TRANSPORT_H
#define BATON_TRANSPORT_H

/*
 * The gRPC transport of batond: serves baton.v1.LockService (lock.proto) on
 * top of the engine, and the standard grpc.health.v1.Health (health.proto):
 * "" and "baton.v1.LockService" are SERVING while engine_serving() (Redis up,
 * not shutting down), NOT_SERVING otherwise; other names are unknown (Check:
 * NOT_FOUND; Watch: SERVICE_UNKNOWN, stream kept open). Health Watch streams
 * get every change and, at shutdown, NOT_SERVING and then UNAVAILABLE. The
 * transport owns the engine's serving callback (engine_set_serving_cb).
 *
 * Threads: one pump thread waits in the gRPC completion queue and forwards
 * every completion to the loop thread (an eventfd watched by `base`). All call
 * state, every engine call and every gRPC batch live on the loop thread; the
 * functions below must be called there too.
 *
 * Unknown methods are answered UNIMPLEMENTED by the transport (gRPC core
 * itself would leave them hanging until their deadline). A LEASE grant is
 * kept only when its stream closes uncancelled after Granted + OK; if the
 * client cancels first the lease is released (it may never have read the
 * token).
 *
 * gRPC types never appear here: callers need only libevent and the engine.
 * grpc_init() must have been called before transport_new and grpc_shutdown()
 * may be called only after transport_free.
 */

#include <stddef.h>
#include <stdint.h>

#include "config_security.h"
#include "engine.h"
#include "validate.h"

struct event_base;

typedef struct baton_transport baton_transport;

typedef struct transport_opts {
    const char *listen; /* "host:port"; port 0 binds an ephemeral port */
    /* Copied by value; the arrays it points to (pools) must outlive the transport. */
    validate_limits limits;
    int32_t max_concurrent_streams; /* per connection; <= 0: gRPC default */
    int32_t max_message_bytes;      /* receive and send limit; <= 0: gRPC default */
    int64_t keepalive_time_ms;      /* server pings an idle connection this often; <= 0: gRPC default */
    int64_t keepalive_timeout_ms;   /* ...and drops it when a ping is not acked in time */
    /* tls, auth and limits (guard.h, tls.h); read during transport_new only.
     * NULL: plain text, no auth, no limits. */
    const config_security *sec;
} transport_opts;

/*
 * Creates the server, binds opts->listen, starts serving and the pump thread.
 * Returns NULL and writes a message to err on failure ("cannot listen on
 * ADDR" when the address cannot be bound). Free with transport_free.
 */
baton_transport *transport_new(struct event_base *base, baton_engine *engine, const transport_opts *opts,
                               char *err, size_t errlen);

/* The TCP port actually bound (useful with port 0). */
int transport_port(const baton_transport *t);

/* Calls currently alive (for logs and tests). */
size_t transport_live_calls(const baton_transport *t);

/* Re-reads the TLS certificate, key and client CA (SIGHUP): new handshakes
 * use them, open connections stay. 0, or -1 with the reason in err (the old
 * files stay in use, or TLS is not configured). */
int transport_reload_tls(baton_transport *t, char *err, size_t errlen);

/*
 * Graceful shutdown: stop accepting calls, shut the engine down (waiting
 * streams end UNAVAILABLE, stream holds are released, watches end), cancel
 * what is left once the engine is done (after a short grace for statuses in
 * flight), drain the completion queue and join the pump thread. Then `done`
 * is called once, on the loop thread. Call at most once.
 */
void transport_shutdown(baton_transport *t, void (*done)(void *ud), void *ud);

/* Frees the transport. Only after transport_shutdown's `done` ran. */
void transport_free(baton_transport *t);

#endif
