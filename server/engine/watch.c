/*
 * Watches: the event subscriptions of the Watch RPC.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

static void free_watch(engine_watch *w)
{
    free(w->key);
    free(w->prefix);
    free(w);
}

static void unlink_watch(engine_watch *w)
{
    baton_engine *e = w->e;
    if (w->prev)
        w->prev->next = w->next;
    else
        e->watches = w->next;
    if (w->next)
        w->next->prev = w->prev;
    w->prev = w->next = NULL;
}

static int matches(const engine_watch *w, const char *key)
{
    if (w->key)
        return strcmp(w->key, key) == 0;
    return strncmp(w->prefix, key, w->prefix_len) == 0;
}

void watch_deliver(baton_engine *e, const store_event *ev)
{
    e->delivering++;
    for (engine_watch *w = e->watches; w; w = w->next)
        if (!w->stopped && matches(w, ev->key))
            w->cb(w->ud, ev);
    if (--e->delivering == 0 && e->watch_stopped) {
        e->watch_stopped = 0;
        engine_watch *w = e->watches;
        while (w) {
            engine_watch *next = w->next;
            if (w->stopped) {
                unlink_watch(w);
                free_watch(w);
            }
            w = next;
        }
    }
}

engine_watch *engine_watch_start(baton_engine *e, const char *key, const char *prefix, engine_watch_cb cb,
                                 engine_watch_ended_cb ended, void *ud)
{
    if (e->shutting_down || (key == NULL) == (prefix == NULL))
        return NULL;
    engine_watch *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->e = e;
    w->key = dup_or_null(key);
    w->prefix = dup_or_null(prefix);
    if (!w->key && !w->prefix) {
        free(w);
        return NULL;
    }
    w->prefix_len = prefix ? strlen(prefix) : 0;
    w->cb = cb;
    w->ended = ended;
    w->ud = ud;
    w->next = e->watches;
    if (e->watches)
        e->watches->prev = w;
    e->watches = w;
    return w;
}

void engine_watch_stop(engine_watch *w)
{
    baton_engine *e = w->e;
    if (e->delivering) {
        /* Freed once the event being delivered is done with the list. */
        w->stopped = 1;
        e->watch_stopped = 1;
        return;
    }
    unlink_watch(w);
    free_watch(w);
}

/* Ends every watch through its `ended` callback (shutdown). */
void watch_end_all(baton_engine *e, int err, const char *msg)
{
    while (e->watches) {
        engine_watch *wt = e->watches;
        unlink_watch(wt);
        engine_watch_ended_cb ended = wt->ended;
        void *wud = wt->ud;
        free_watch(wt);
        if (ended)
            ended(wud, err, msg);
    }
}

/* Frees every watch without a callback (engine_free). */
void watch_free_all(baton_engine *e)
{
    while (e->watches) {
        engine_watch *wt = e->watches;
        unlink_watch(wt);
        free_watch(wt);
    }
}
