/* async.c - asynchronous acquire: one worker thread per pending acquire. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

struct baton_async {
    baton_client *_client;
    char *_key;
    char *_pool;
    int _devices;
    char *_owner;
    baton_acquire_options _opts; /* _opts.owner points at _owner */
    baton_acquire_cb _cb;
    void *_ud;
    baton__canceller _cx;
    pthread_t _thread;
};

static void *async_thread(void *arg)
{
    baton_async *a = arg;
    baton_lock *l = NULL;
    int err = baton__acquire(a->_client, a->_key, a->_pool, a->_devices, &a->_opts, &a->_cx, &l);
    pthread_mutex_lock(&a->_cx.mu);
    int cancelled = a->_cx.cancelled;
    pthread_mutex_unlock(&a->_cx.mu);
    if (cancelled) {
        /* A lock granted at the moment of the cancel is released: nobody
         * wants it any more (baton_lock_free(NULL) does nothing). */
        baton_lock_free(l);
        l = NULL;
        err = baton__fail(BATON_ERR_CANCELLED, "acquire cancelled");
    }
    a->_cb(err, l, err ? baton_last_error() : "", a->_ud);
    return NULL;
}

static void async_destroy(baton_async *a)
{
    pthread_mutex_destroy(&a->_cx.mu);
    free(a->_key);
    free(a->_pool);
    free(a->_owner);
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
    pthread_mutex_init(&a->_cx.mu, NULL);
    a->_client = c;
    a->_devices = devices;
    a->_cb = cb;
    a->_ud = ud;
    if (opts)
        a->_opts = *opts;
    if ((key && (a->_key = strdup(key)) == NULL) || (pool && (a->_pool = strdup(pool)) == NULL) ||
        (opts && opts->owner && (a->_owner = strdup(opts->owner)) == NULL))
        goto nomem;
    a->_opts.owner = a->_owner;
    if (pthread_create(&a->_thread, NULL, async_thread, a) != 0)
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
    pthread_mutex_lock(&a->_cx.mu);
    a->_cx.cancelled = 1;
    if (a->_cx.call)
        grpc_c_call_cancel(a->_cx.call);
    pthread_mutex_unlock(&a->_cx.mu);
}

void baton_async_free(baton_async *a)
{
    if (a == NULL)
        return;
    baton_async_cancel(a);
    pthread_join(a->_thread, NULL);
    async_destroy(a);
}
