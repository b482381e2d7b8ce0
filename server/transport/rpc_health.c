/* grpc.health.v1.Health on the engine's serving state. */
#include "internal.h"

#include <string.h>

#include "log.h"

/* ---------------------------------------------------------------- Health */

/*
 * grpc.health.v1.Health: the whole server ("") and baton.v1.LockService are
 * SERVING exactly while the engine can grant locks (engine_serving: Redis up
 * and not shutting down). Check on another name: NOT_FOUND. Watch sends the
 * current status at once and then each change; on another name it sends
 * SERVICE_UNKNOWN once and stays open. At shutdown a Watch first gets
 * NOT_SERVING (the engine reports it as shutdown begins) and then ends
 * UNAVAILABLE like every other stream.
 */

static int health_known_service(const char *name)
{
    return name == NULL || name[0] == '\0' || strcmp(name, "baton.v1.LockService") == 0;
}

static uint8_t health_status(const baton_transport *t)
{
    return engine_serving(t->engine) ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
                                     : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
}

/*
 * Queues `status` on a health Watch unless it is the one the client will
 * already see last. At most one message waits in the outbox (a newer status
 * replaces it, see call_push's `queued`), so a stalled client costs nothing
 * however often Redis flaps, and the client never sees the same status twice
 * in a row.
 */
static void health_push(tcall *c, uint8_t status)
{
    if (!call_can_send(c) || status == c->health_last)
        return;
    if (c->nout == 0) {
        c->health_wire = c->health_last; /* everything older has left the outbox */
    } else if (status == c->health_wire) {
        call_outbox_clear(c); /* back to what the client already has: drop the waiting one */
        c->health_last = status;
        return;
    }
    Grpc__Health__V1__HealthCheckResponse r = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    r.status = (Grpc__Health__V1__HealthCheckResponse__ServingStatus)status;
    c->health_last = status;
    call_push(c, &r.base, 1);
}

/* engine_set_serving_cb: the serving status changed; tell every Watch. */
void transport__on_serving(void *ud, int serving)
{
    baton_transport *t = ud;
    LOG_INFO("transport: health %s", serving ? "SERVING" : "NOT_SERVING");
    uint8_t status = health_status(t);
    for (tcall *c = t->calls; c; c = c->next)
        if (c->method->rpc == &transport__health_watch_rpc && c->health_known)
            health_push(c, status);
}

static void health_check_start(tcall *c, ProtobufCMessage *m)
{
    Grpc__Health__V1__HealthCheckRequest *r = (Grpc__Health__V1__HealthCheckRequest *)m;
    if (!health_known_service(r->service)) {
        call_send_status(c, GRPC_STATUS_NOT_FOUND, "unknown service", NULL);
        return;
    }
    Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    resp.status = (Grpc__Health__V1__HealthCheckResponse__ServingStatus)health_status(c->t);
    call_reply(c, &resp.base);
}

static void health_watch_start(tcall *c, ProtobufCMessage *m)
{
    baton_transport *t = c->t;
    Grpc__Health__V1__HealthCheckRequest *r = (Grpc__Health__V1__HealthCheckRequest *)m;
    int known = health_known_service(r->service);
    c->health_known = known ? 1 : 0;
    health_push(c, known ? health_status(t)
                         : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN);
    /* Shutdown may already have ended the other streams (on_engine_done). */
    if (transport__shutting(t))
        call_finish(c, BATON_E_UNAVAILABLE, "server shutting down");
}

/* Health needs no bearer token (no_token): load balancers and probes ask it. */
const rpc_method transport__health_check_rpc = {&grpc__health__v1__health__descriptor, "Check",
                                                .no_token = 1, .start = health_check_start};
const rpc_method transport__health_watch_rpc = {&grpc__health__v1__health__descriptor, "Watch",
                                                .no_token = 1, .start = health_watch_start};
