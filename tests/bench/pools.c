/* Pools (baton only, libbaton lease mode): what a multi-device grant costs.
 *   handoff: two clients pass a pool grant back and forth; the holder keeps
 *     it 5 ms, stamps the release and releases; the other one, blocked in
 *     baton_acquire_pool, stamps its grant. count=1 on a 1-device pool (a
 *     single-device handoff) next to count=2 on a 2-device pool (the release
 *     of 2 devices -> a waiter for 2 granted).
 *   grant: uncontended acquire (timed) + release on a free pool of 8 or 64
 *     devices, one device or all of them: the acquire script reads every
 *     device of the pool, so its cost grows with the pool. */
#include <stdatomic.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "baton/baton.h"
#include "bench.h"
#include "scenarios.h"

static atomic_uint g_pool_run;

static void add_row(const char *params, int64_t *s, size_t n, const char *note)
{
    bench_result r = {.metric = METRIC_LATENCY, .samples = s, .n = n, .rss_kib = -1};
    snprintf(r.scenario, sizeof r.scenario, "pools");
    snprintf(r.backend, sizeof r.backend, "baton-lease");
    snprintf(r.family, sizeof r.family, "baton");
    snprintf(r.params, sizeof r.params, "%s", params);
    snprintf(r.note, sizeof r.note, "%s", note);
    report_add(&r);
}

typedef struct pass {
    baton_client *c[2];
    char pool[64];
    int count;
    int rounds;
    _Atomic int64_t t_release;
    atomic_int nsamples, stop, errors, turn;
    int64_t *samples;
} pass;

typedef struct pass_arg {
    pass *p;
    int idx;
} pass_arg;

static void *pass_thread(void *arg)
{
    pass_arg *a = arg;
    pass *p = a->p;
    baton_acquire_options o = {.wait_ms = -1, .count = p->count};
    while (!atomic_load(&p->stop)) {
        baton_lock *l = NULL;
        if (baton_acquire_pool(p->c[a->idx], p->pool, p->count, &o, &l) != 0) {
            fprintf(stderr, "baton-bench: pools acquire: %s\n", baton_last_error());
            atomic_fetch_add(&p->errors, 1);
            atomic_store(&p->stop, 1);
            return NULL;
        }
        int64_t t = bench_now_ns();
        int64_t tr = atomic_exchange(&p->t_release, 0);
        if (tr) {
            int i = atomic_fetch_add(&p->nsamples, 1);
            if (i < p->rounds)
                p->samples[i] = t - tr;
            if (i + 1 >= p->rounds)
                atomic_store(&p->stop, 1);
        }
        atomic_store(&p->turn, a->idx);
        bench_sleep_ns(5000000);
        atomic_store(&p->t_release, bench_now_ns());
        if (baton_release(l) != 0) {
            atomic_fetch_add(&p->errors, 1);
            atomic_store(&p->stop, 1);
        }
        baton_lock_free(l);
        /* Ask again only once the other one has it (no self re-grant). */
        while (atomic_load(&p->turn) == a->idx && !atomic_load(&p->stop))
            bench_sleep_ns(20000);
    }
    return NULL;
}

static int pool_handoff(const bench_env *env, int count, int rounds)
{
    pass p = {.count = count, .rounds = rounds};
    snprintf(p.pool, sizeof p.pool, "bench-ph%u", atomic_fetch_add(&g_pool_run, 1));
    p.samples = calloc((size_t)rounds, sizeof *p.samples);
    int rv = -1;
    for (int i = 0; i < 2; i++)
        if (!p.samples || baton_client_new(env->baton_target, NULL, &p.c[i]) < 0) {
            fprintf(stderr, "baton-bench: pools client: %s\n", baton_last_error());
            goto out;
        }
    atomic_store(&p.turn, -1);
    pthread_t t[2];
    pass_arg a[2] = {{&p, 0}, {&p, 1}};
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, pass_thread, &a[i]);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    rv = atomic_load(&p.errors) ? -1 : 0;
out:
    for (int i = 0; i < 2; i++)
        if (p.c[i])
            baton_client_free(p.c[i]);
    int n = atomic_load(&p.nsamples);
    if (n > rounds)
        n = rounds;
    char params[64];
    snprintf(params, sizeof params, "handoff devices=%d count=%d", count, count);
    add_row(params, p.samples, (size_t)n,
            count > 1 ? "release of 2 -> waiter for 2 granted" : "release -> next grant");
    return rv == 0 && n > 0 ? 0 : -1;
}

static int pool_grant(const bench_env *env, int devices, int count, int iters)
{
    baton_client *c = NULL;
    if (baton_client_new(env->baton_target, NULL, &c) < 0) {
        fprintf(stderr, "baton-bench: pools client: %s\n", baton_last_error());
        return -1;
    }
    char pool[64];
    snprintf(pool, sizeof pool, "bench-pg%u", atomic_fetch_add(&g_pool_run, 1));
    int64_t *s = calloc((size_t)iters, sizeof *s);
    int n = 0, rv = 0;
    baton_acquire_options o = {.wait_ms = 0, .count = count};
    for (int i = 0; s && i < iters; i++) {
        baton_lock *l = NULL;
        int64_t t0 = bench_now_ns();
        if (baton_acquire_pool(c, pool, devices, &o, &l) != 0) {
            fprintf(stderr, "baton-bench: pools grant: %s\n", baton_last_error());
            rv = -1;
            break;
        }
        s[n++] = bench_now_ns() - t0;
        baton_release(l);
        baton_lock_free(l);
    }
    baton_client_free(c);
    char params[64];
    snprintf(params, sizeof params, "grant devices=%d count=%d", devices, count);
    add_row(params, s, (size_t)n, "acquire of a free pool (lease)");
    return rv == 0 && n > 0 ? 0 : -1;
}

int scen_pools(const bench_env *env, int rounds, int iters)
{
    int rv = 0;
    rv |= pool_handoff(env, 1, rounds);
    rv |= pool_handoff(env, 2, rounds);
    static const int cells[][2] = {{8, 1}, {8, 8}, {64, 1}, {64, 64}};
    for (size_t i = 0; i < sizeof cells / sizeof cells[0]; i++)
        rv |= pool_grant(env, cells[i][0], cells[i][1], iters);
    return rv;
}
