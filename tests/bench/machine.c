/* The machine scenario: what waking another thread costs here. Every backend
 * pays it between its processes and threads (a raw-Redis cycle has two round
 * trips, a batond call goes client -> batond -> Redis -> batond -> client and
 * hands off between batond's threads), so these rows are the floor that the
 * other tables stand on. On a VM whose idle vCPUs halt, the cross-CPU figure
 * is many times the same-CPU one. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "bench.h"
#include "scenarios.h"

typedef struct wake_peer {
    int ping, pong;
    int rounds;
    int cpu;
} wake_peer;

static int pin(pthread_t th, int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return pthread_setaffinity_np(th, sizeof set, &set);
}

static void *peer_main(void *arg)
{
    wake_peer *p = arg;
    if (pin(pthread_self(), p->cpu) != 0)
        return NULL;
    uint64_t v;
    for (int i = 0; i < p->rounds; i++)
        if (read(p->ping, &v, sizeof v) != sizeof v || write(p->pong, &v, sizeof v) != sizeof v)
            break;
    return NULL;
}

/* Round trips between this thread on `mine` and a peer on `theirs`: each
 * side blocks in read() on an eventfd until the other writes it. */
static int wake_rtt(int mine, int theirs, int rounds, const char *params)
{
    const int warm = 50;
    wake_peer p = {.ping = eventfd(0, EFD_CLOEXEC), .pong = eventfd(0, EFD_CLOEXEC), .rounds = warm + rounds,
                   .cpu = theirs};
    int64_t *s = calloc((size_t)rounds, sizeof *s);
    int rc = -1, started = 0;
    pthread_t th;
    if (p.ping < 0 || p.pong < 0 || s == NULL || pin(pthread_self(), mine) != 0)
        goto out;
    if (pthread_create(&th, NULL, peer_main, &p) != 0)
        goto out;
    started = 1;
    int i;
    for (i = 0; i < warm + rounds; i++) {
        uint64_t v = 1;
        int64_t t0 = bench_now_ns();
        if (write(p.ping, &v, sizeof v) != sizeof v || read(p.pong, &v, sizeof v) != sizeof v)
            break;
        if (i >= warm)
            s[i - warm] = bench_now_ns() - t0;
    }
    if (i == warm + rounds) {
        bench_result r = {.metric = METRIC_LATENCY, .samples = s, .n = (size_t)rounds, .rss_kib = -1};
        snprintf(r.scenario, sizeof r.scenario, "machine");
        snprintf(r.backend, sizeof r.backend, "threads");
        snprintf(r.family, sizeof r.family, "machine");
        snprintf(r.params, sizeof r.params, "%s", params);
        snprintf(r.note, sizeof r.note, "wake round trip (eventfd)");
        report_add(&r);
        s = NULL;
        rc = 0;
    }
out:
    if (started) {
        if (rc != 0)
            pthread_cancel(th); /* it may still wait in read() */
        pthread_join(th, NULL);
    }
    free(s);
    if (p.ping >= 0)
        close(p.ping);
    if (p.pong >= 0)
        close(p.pong);
    if (rc != 0)
        fprintf(stderr, "baton-bench: machine %s: cannot measure\n", params);
    return rc;
}

int scen_machine(int rounds)
{
    cpu_set_t orig;
    if (pthread_getaffinity_np(pthread_self(), sizeof orig, &orig) != 0)
        return -1;
    int cpus[2], n = 0;
    for (int c = 0; c < CPU_SETSIZE && n < 2; c++)
        if (CPU_ISSET(c, &orig))
            cpus[n++] = c;
    int rc = wake_rtt(cpus[0], cpus[0], rounds, "same CPU");
    if (n == 2)
        rc |= wake_rtt(cpus[0], cpus[1], rounds, "other CPU");
    pthread_setaffinity_np(pthread_self(), sizeof orig, &orig);
    return rc;
}
