/* The Redis store's liveness refresh: batching and pacing (store.h, refresh). */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "log.h"

static int same_target(const store_target *a, const store_target *b)
{
    if (a->key && b->key)
        return strcmp(a->key, b->key) == 0;
    return a->pool && b->pool && strcmp(a->pool, b->pool) == 0;
}

/*
 * Why batched: one script per waiter made 10,000 waiting streams cost 5,000
 * scripts a second (and as many command builds on the loop) and stalled
 * handoffs behind each burst. Consecutive entries of one target share its
 * liveness zset, so they go in one script, up to RSTORE_REFRESH_BATCH tokens.
 * Why paced: Redis runs a connection's pipelined commands in order, so a
 * release sent during a burst of 50 batches waited for all of them. Batches
 * go out while at most RSTORE_REFRESH_BATCH tokens are in flight (always at least
 * one batch): a release waits behind ~0.2 ms of refresh at most, and many
 * small batches (many keys with a waiter or two) still go out together.
 * A round that is still sending when the next is due is left to finish and
 * the new one skipped: replacing it would drop the same tail every time and
 * let those waiters' entries expire.
 */

/* A round's entries, copied, in runs of one target; batches are built from
 * them only as they go out (building all 50 of 10,000 waiters at once held
 * the loop for ~4 ms). */
typedef struct refresh_run {
    char *name; /* key or pool name */
    int pool;
    size_t first, count; /* its tokens: tokens[first .. first + count) */
} refresh_run;

typedef struct refresh_round {
    int64_t liveness_ms;
    char (*tokens)[BATON_TOKEN_LEN + 1];
    refresh_run *runs;
    size_t nruns;
    size_t run, off; /* next batch: runs[run], from its token off */
} refresh_round;

static void round_free(refresh_round *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->nruns; i++)
        free(r->runs[i].name);
    free(r->runs);
    free(r->tokens);
    free(r);
}

void rstore_refresh_drop(redis_store *s)
{
    round_free(s->rf);
    s->rf = NULL;
}

/* Tokens in the round's next batch. */
static size_t round_next_size(const refresh_round *r)
{
    size_t left = r->runs[r->run].count - r->off;
    return left < RSTORE_REFRESH_BATCH ? left : RSTORE_REFRESH_BATCH;
}

/* Builds the round's next batch and moves past it; NULL when out of memory. */
static store_op *round_next_op(redis_store *s, refresh_round *r)
{
    const refresh_run *run = &r->runs[r->run];
    size_t k = round_next_size(r);
    store_op *o = rstore_op_new(s, OP_FIRE, SC_REFRESH, NULL);
    if (o) {
        if (run->pool)
            rstore_pool_arg(o, run->name, "qt");
        else
            rstore_key_arg(o, run->name, "qt");
        rstore_chan_arg(o, run->name);
        rstore_op_arg(o, "%" PRId64, r->liveness_ms);
        o->pool = run->pool;
        o->name = strdup(run->name);
        if (!o->name)
            o->oom = 1;
        for (size_t j = 0; j < k; j++)
            rstore_op_str(o, r->tokens[run->first + r->off + j]);
        o->ntokens = (int)k;
    }
    r->off += k;
    if (r->off == run->count) {
        r->run++;
        r->off = 0;
    }
    return o;
}

/* Sends refresh batches while the in-flight budget allows. */
void rstore_refresh_pump(redis_store *s)
{
    if (!s->up || !callbacks_allowed(s)) {
        rstore_refresh_drop(s);
        return;
    }
    while (s->rf && (s->rf_ops == 0 || s->rf_tokens + (int)round_next_size(s->rf) <= RSTORE_REFRESH_BATCH)) {
        store_op *o = round_next_op(s, s->rf);
        if (s->rf->run == s->rf->nruns)
            rstore_refresh_drop(s);
        if (!o) {
            LOG_WARN("redis: out of memory: liveness refresh round dropped");
            rstore_refresh_drop(s);
            return;
        }
        int ntokens = o->ntokens;
        if (rstore_op_send(o, 1) == 0) {
            s->rf_ops++;
            s->rf_tokens += ntokens;
        }
    }
}

int rstore_refresh(baton_store *b, const store_target *targets, const char *const *tokens, size_t n,
                   int64_t liveness_ms)
{
    redis_store *s = rs(b);
    if (n > 0 && (!targets || !tokens))
        return BATON_E_INVALID;
    if (!s->up)
        return BATON_E_UNAVAILABLE;
    if (s->rf) {
        LOG_WARN("redis: liveness refresh is still sending the last round; this one is skipped");
        return 0;
    }
    refresh_round *r = calloc(1, sizeof(*r));
    if (!r || (n > 0 &&
               (!(r->tokens = malloc(n * sizeof(*r->tokens))) || !(r->runs = calloc(n, sizeof(*r->runs))))))
        goto nomem;
    r->liveness_ms = liveness_ms;
    size_t m = 0;
    const store_target *last = NULL;
    for (size_t i = 0; i < n; i++) {
        size_t len = tokens[i] ? strlen(tokens[i]) : 0;
        if (!rstore_target_ok(&targets[i]) || len == 0 || len > BATON_TOKEN_LEN)
            continue;
        if (!last || !same_target(&targets[i], last)) {
            refresh_run *run = &r->runs[r->nruns];
            run->pool = targets[i].pool != NULL;
            run->name = strdup(run->pool ? targets[i].pool : targets[i].key);
            if (!run->name)
                goto nomem;
            run->first = m;
            r->nruns++;
            last = &targets[i];
        }
        memcpy(r->tokens[m++], tokens[i], len + 1);
        r->runs[r->nruns - 1].count++;
    }
    if (r->nruns == 0) {
        round_free(r);
        return 0;
    }
    s->rf = r;
    rstore_refresh_pump(s);
    return 0;
nomem:
    round_free(r);
    return BATON_E_NOMEM;
}
