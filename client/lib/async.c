/* async.c - asynchronous acquire: one worker thread per pending acquire. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

struct baton_async {
    baton_client *client;
    char *key;
    char *pool;
    int devices;
    char *owner;
    baton_acquire_options opts; /* opts.owner points at owner */
    baton_acquire_cb cb;
    void *ud;
    baton__canceller cx;
    pthread_t thread;
};

static void *async_thread(void *arg)
{
    baton_async *a = arg;
    baton_lock *l = NULL;
    int err = baton__acquire(a->client, a->key, a->pool, a->devices, &a->opts, &a->cx, &l);
    pthread_mutex_lock(&a->cx.mu);
    int cancelled = a->cx.cancelled;
    pthread_mutex_unlock(&a->cx.mu);
    if (cancelled) {
        /* A lock granted at the moment of the cancel is released: nobody
         * wants it any more (baton_lock_free(NULL) does nothing). */
        baton_lock_free(l);
        l = NULL;
        err = baton__fail(BATON_ERR_CANCELLED, "acquire cancelled");
    }
    a->cb(err, l, err ? baton_last_error() : "", a->ud);
    return NULL;
}

static void async_destroy(baton_async *a)
{
    pthread_mutex_destroy(&a->cx.mu);
    free(a->key);
    free(a->pool);
    free(a->owner);
    free(a);
}

int baton_acquire_async(baton_client *c, const char *key, const char *pool, int devices,
                        const baton_acquire_options *opts, baton_acquire_cb cb, void *ud, baton_async **out)
{
    if (out)
        *out = NULL;
    if (c == NULL || cb == NULL || out == NULL || (key == NULL) == (pool == NULL))
        return baton__fail(
            BATON_ERR_INVALID,
            "baton_acquire_async: client, cb, out and exactly one of key and pool are required");
    baton_async *a = calloc(1, sizeof *a);
    if (a == NULL)
        return baton__fail(BATON_ERR_NOMEM, "out of memory");
    pthread_mutex_init(&a->cx.mu, NULL);
    a->client = c;
    a->devices = devices;
    a->cb = cb;
    a->ud = ud;
    if (opts)
        a->opts = *opts;
    if ((key && (a->key = strdup(key)) == NULL) || (pool && (a->pool = strdup(pool)) == NULL) ||
        (opts && opts->owner && (a->owner = strdup(opts->owner)) == NULL))
        goto nomem;
    a->opts.owner = a->owner;
    if (pthread_create(&a->thread, NULL, async_thread, a) != 0)
        goto nomem;
    *out = a;
    return 0;
nomem:
    async_destroy(a);
    return baton__fail(BATON_ERR_NOMEM, "baton_acquire_async: out of memory or threads");
}

void baton_async_cancel(baton_async *a)
{
    if (a == NULL)
        return;
    pthread_mutex_lock(&a->cx.mu);
    a->cx.cancelled = 1;
    if (a->cx.call)
        grpc_c_call_cancel(a->cx.call);
    pthread_mutex_unlock(&a->cx.mu);
}

void baton_async_free(baton_async *a)
{
    if (a == NULL)
        return;
    baton_async_cancel(a);
    pthread_join(a->thread, NULL);
    async_destroy(a);
}
