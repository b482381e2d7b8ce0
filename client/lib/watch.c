/* watch.c - Watch streams: one reader thread per watch, events in order. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

struct baton_watcher {
    grpc_c_call *call;
    baton_watch_cb cb;
    void *ud;
    pthread_mutex_t mu;
    int cancelled;
    pthread_t thread;
};

const char *baton_event_type_name(baton_event_type t)
{
    switch (t) {
    case BATON_EVENT_ACQUIRED: return "ACQUIRED";
    case BATON_EVENT_RELEASED: return "RELEASED";
    case BATON_EVENT_EXPIRED: return "EXPIRED";
    case BATON_EVENT_FORCE_RELEASED: return "FORCE_RELEASED";
    case BATON_EVENT_LONG_HELD: return "LONG_HELD";
    default: return "UNSPECIFIED";
    }
}

static void *watch_thread(void *arg)
{
    baton_watcher *w = arg;
    Baton__V1__LockEvent *m = NULL;
    while (baton__v1__lock_service__grpc__watch_read(w->call, &m) == GRPC_C_OK) {
        baton_event ev = {
            .type = (baton_event_type)m->type,
            .key = m->key ? m->key : "",
            .owner = m->owner ? m->owner : "",
            .fencing = m->fencing,
            .at_unix_ms = m->at_unix_ms,
        };
        w->cb(&ev, 0, "", w->ud);
        baton__v1__lock_event__free_unpacked(m, NULL);
        m = NULL;
    }
    grpc_c_status st = GRPC_C_STATUS_INIT;
    grpc_c_call_finish(w->call, NULL, &st);
    pthread_mutex_lock(&w->mu);
    int cancelled = w->cancelled;
    pthread_mutex_unlock(&w->mu);
    int err;
    if (cancelled)
        err = baton__fail(BATON_ERR_CANCELLED, "watch cancelled");
    else if (st.code == GRPC_C_CODE_OK)
        err = baton__fail(BATON_ERR_UNAVAILABLE, "watch: the server ended the stream");
    else
        err = baton__fail_status(&st, BATON__PHASE_CALL, "watch");
    w->cb(NULL, err, baton_last_error(), w->ud);
    grpc_c_status_clear(&st);
    return NULL;
}

int baton_watch(baton_client *c, const char *key, const char *prefix, baton_watch_cb cb, void *ud,
                baton_watcher **out)
{
    if (out)
        *out = NULL;
    if (c == NULL || cb == NULL || out == NULL || (key == NULL) == (prefix == NULL))
        return baton__fail(BATON_ERR_INVALID,
                           "baton_watch: client, cb, out and exactly one of key and prefix are required");
    baton_watcher *w = calloc(1, sizeof *w);
    if (w == NULL)
        return baton__fail(BATON_ERR_NOMEM, "out of memory");
    pthread_mutex_init(&w->mu, NULL);
    w->cb = cb;
    w->ud = ud;
    Baton__V1__WatchRequest req = BATON__V1__WATCH_REQUEST__INIT;
    req.key = (char *)(key ? key : "");
    req.prefix = (char *)(prefix ? prefix : "");
    grpc_c_call_options so = baton__stream_opts(c);
    w->call = baton__v1__lock_service__grpc__watch_start(c->channel, &req, &so);
    if (w->call == NULL)
        goto fail;
    if (pthread_create(&w->thread, NULL, watch_thread, w) != 0)
        goto fail;
    *out = w;
    return 0;
fail:
    grpc_c_call_destroy(w->call);
    pthread_mutex_destroy(&w->mu);
    free(w);
    return baton__fail(BATON_ERR_NOMEM, "baton_watch: out of memory or threads");
}

void baton_watch_cancel(baton_watcher *w)
{
    if (w == NULL)
        return;
    pthread_mutex_lock(&w->mu);
    w->cancelled = 1;
    pthread_mutex_unlock(&w->mu);
    grpc_c_call_cancel(w->call);
}

void baton_watch_free(baton_watcher *w)
{
    if (w == NULL)
        return;
    baton_watch_cancel(w);
    pthread_join(w->thread, NULL);
    grpc_c_call_destroy(w->call);
    pthread_mutex_destroy(&w->mu);
    free(w);
}
