/*
 * conn.c - bringing the channel back after batond restarts.
 *
 * gRPC reconnects a failed channel on its own, after a backoff, but only a
 * thread that polls the channel sees the new connection complete. Between
 * operations nobody polls a libbaton channel (fail-fast calls on a channel
 * that is down return at once), so the connection was noticed only by
 * gRPC's background poll, every 5 s, and the client kept failing with
 * UNAVAILABLE for 3.5-8 s after batond was back (measured).
 *
 * So whenever libbaton finds the channel not READY it starts one thread
 * that watches the channel's state, which makes it poll, until the channel
 * is READY again; then the thread ends. A connected client has no such
 * thread, and the poller threads of its calls stay as they were.
 */
#include "internal.h"

#include <grpc/grpc.h>

#define WATCH_SLICE_MS 200 /* longest wait before the thread looks at `stop` again */

static void *reconnect_main(void *arg)
{
    baton_client *c = arg;
    baton__conn *k = &c->conn;
    grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
    for (;;) {
        /* (1: a channel gone IDLE starts connecting.) */
        grpc_connectivity_state s = grpc_channel_check_connectivity_state(c->channel, 1);
        pthread_mutex_lock(&k->mu);
        if (s == GRPC_CHANNEL_READY || s == GRPC_CHANNEL_SHUTDOWN || k->stop) {
            k->running = 0;
            pthread_mutex_unlock(&k->mu);
            break;
        }
        pthread_mutex_unlock(&k->mu);
        gpr_timespec slice = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                          gpr_time_from_millis(WATCH_SLICE_MS, GPR_TIMESPAN));
        grpc_channel_watch_connectivity_state(c->channel, s, slice, cq, NULL);
        /* Returns on a state change or at the slice's end; polls meanwhile. */
        (void)grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    }
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type != GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(cq);
    return NULL;
}

void baton__conn_init(baton_client *c)
{
    pthread_mutex_init(&c->conn.mu, NULL);
}

int baton__channel_ready(baton_client *c)
{
    if (grpc_channel_check_connectivity_state(c->channel, 1) == GRPC_CHANNEL_READY)
        return 1;
    baton__conn *k = &c->conn;
    pthread_mutex_lock(&k->mu);
    if (!k->running && !k->stop) {
        if (k->started) /* the last one has left (or is leaving): reap it */
            pthread_join(k->thread, NULL);
        k->started = pthread_create(&k->thread, NULL, reconnect_main, c) == 0;
        k->running = k->started;
        /* (Without the thread, gRPC's own background poll still reconnects.) */
    }
    pthread_mutex_unlock(&k->mu);
    return 0;
}

void baton__conn_note(baton_client *c, int code)
{
    if (code == GRPC_C_CODE_UNAVAILABLE)
        (void)baton__channel_ready(c); /* READY at once if it was batond's Redis */
}

void baton__conn_free(baton_client *c)
{
    baton__conn *k = &c->conn;
    pthread_mutex_lock(&k->mu);
    k->stop = 1;
    int started = k->started;
    k->started = 0;
    pthread_mutex_unlock(&k->mu);
    if (started)
        pthread_join(k->thread, NULL);
    pthread_mutex_destroy(&k->mu);
}
