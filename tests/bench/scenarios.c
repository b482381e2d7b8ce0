/* The scenarios. Every one drives a backend only through bench_backend, so
 * all backends run exactly the same client code. */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"
#include "scenarios.h"

#define DEFAULT_TTL_MS 30000

static atomic_uint g_run; /* makes every scenario run's keys unique */

static unsigned next_run(void)
{
    return atomic_fetch_add(&g_run, 1) + 1;
}

/* xorshift; per-thread state, no locking. */
static uint64_t rnd(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static void fail_msg(const bench_backend *b, const char *what, const char *err)
{
    fprintf(stderr, "baton-bench: %s %s: %s\n", b->name, what, err);
}

static int64_t *samples_new(size_t n)
{
    int64_t *s = calloc(n ? n : 1, sizeof *s);
    if (!s) {
        fprintf(stderr, "baton-bench: out of memory\n");
        exit(2);
    }
    return s;
}

static void add_latency(const char *scen, const bench_backend *b, const char *params, int64_t *s, size_t n,
                        const char *note)
{
    bench_result r = {.metric = METRIC_LATENCY, .samples = s, .n = n, .rss_kib = -1};
    snprintf(r.scenario, sizeof r.scenario, "%s", scen);
    snprintf(r.backend, sizeof r.backend, "%s", b->name);
    snprintf(r.family, sizeof r.family, "%s", b->family);
    snprintf(r.params, sizeof r.params, "%s", params);
    snprintf(r.note, sizeof r.note, "%s", note ? note : "");
    report_add(&r);
}

/* ---- 1. uncontended ------------------------------------------------------ */

int scen_uncontended(const bench_backend *b, const bench_env *env, int iters)
{
    char err[256] = "";
    void *c = b->client_new(env, DEFAULT_TTL_MS, err, sizeof err);
    if (!c) {
        fail_msg(b, "client", err);
        return -1;
    }
    char key[64];
    snprintf(key, sizeof key, "u%u", next_run());
    int64_t *s = samples_new((size_t)iters);
    size_t n = 0;
    int warm = iters / 10 + 1;
    for (int i = 0; i < warm + iters; i++) {
        bench_hold h = {0};
        int64_t t0 = bench_now_ns();
        if (b->acquire(c, key, &h, err, sizeof err) < 0) {
            fail_msg(b, "acquire", err);
            break;
        }
        if (b->release(c, &h, err, sizeof err) < 0) {
            fail_msg(b, "release", err);
            break;
        }
        if (i >= warm)
            s[n++] = bench_now_ns() - t0;
    }
    b->client_free(c);
    char params[64];
    snprintf(params, sizeof params, "N=%d", iters);
    add_latency("uncontended", b, params, s, n, "acquire+release");
    return n ? 0 : -1;
}

/* ---- 2. handoff ------------------------------------------------------------ */

/*
 * K+1 threads pass one key around: the holder sleeps a random time (so no
 * waiter's poll period lines up with the release), stamps t_release and
 * releases; whichever waiter is granted next stamps the grant on the same
 * monotonic clock. The releaser then queues up again, so K stay waiting.
 */
typedef struct handoff {
    const bench_backend *b;
    char key[64];
    void **clients;
    int rounds;
    int64_t min_hold_ns, jitter_ns;
    _Atomic int64_t t_release; /* 0 = none pending */
    atomic_llong grants;       /* every grant, sampled or not */
    atomic_int nsamples;
    atomic_int stop;
    atomic_int errors;
    int64_t *samples;
} handoff;

typedef struct handoff_arg {
    handoff *h;
    int idx;
    int holding; /* thread 0 starts holding the key */
    bench_hold hold;
} handoff_arg;

static void *handoff_thread(void *p)
{
    handoff_arg *a = p;
    handoff *h = a->h;
    void *c = h->clients[a->idx];
    uint64_t seed = 0x9e3779b97f4a7c15ull * (uint64_t)(a->idx + 1) ^ (uint64_t)bench_now_ns();
    char err[256];
    for (;;) {
        if (!a->holding) {
            if (h->b->acquire(c, h->key, &a->hold, err, sizeof err) < 0) {
                fail_msg(h->b, "handoff acquire", err);
                atomic_fetch_add(&h->errors, 1);
                atomic_store(&h->stop, 1);
                return NULL;
            }
            int64_t t = bench_now_ns();
            atomic_fetch_add(&h->grants, 1);
            int64_t tr = atomic_exchange(&h->t_release, 0);
            if (tr && !atomic_load(&h->stop)) {
                int i = atomic_fetch_add(&h->nsamples, 1);
                if (i < h->rounds)
                    h->samples[i] = t - tr;
                if (i + 1 >= h->rounds)
                    atomic_store(&h->stop, 1);
            }
        }
        a->holding = 0;
        if (!atomic_load(&h->stop)) {
            bench_sleep_ns(h->min_hold_ns +
                           (h->jitter_ns > 0 ? (int64_t)(rnd(&seed) % (uint64_t)h->jitter_ns) : 0));
            atomic_store(&h->t_release, bench_now_ns());
        }
        int stop = atomic_load(&h->stop);
        long long g = atomic_load(&h->grants);
        if (h->b->release(c, &a->hold, err, sizeof err) < 0) {
            fail_msg(h->b, "handoff release", err);
            atomic_fetch_add(&h->errors, 1);
            atomic_store(&h->stop, 1);
            return NULL;
        }
        if (stop)
            return NULL;
        /* Queue up again only once a waiter took the key: an unfair lock
         * (raw Redis) would otherwise hand it straight back to the releaser
         * and we would time a self re-grant instead of a handoff. */
        while (atomic_load(&h->grants) == g && !atomic_load(&h->stop))
            bench_sleep_ns(20000);
    }
}

int scen_handoff_tagged(const bench_backend *b, const bench_env *env, int k, int rounds, int64_t jitter_ns,
                        const char *scen, const char *prefix)
{
    handoff h = {.b = b, .rounds = rounds, .min_hold_ns = 5000000, .jitter_ns = jitter_ns};
    snprintf(h.key, sizeof h.key, "%s%u", prefix, next_run());
    h.samples = samples_new((size_t)rounds);
    int nthreads = k + 1;
    h.clients = calloc((size_t)nthreads, sizeof *h.clients);
    handoff_arg *args = calloc((size_t)nthreads, sizeof *args);
    pthread_t *tids = calloc((size_t)nthreads, sizeof *tids);
    int started = 0, rv = -1;
    char err[256] = "";
    if (!h.clients || !args || !tids)
        goto out;
    for (int i = 0; i < nthreads; i++) {
        h.clients[i] = b->client_new(env, DEFAULT_TTL_MS, err, sizeof err);
        if (!h.clients[i]) {
            fail_msg(b, "client", err);
            goto out;
        }
    }
    /* Thread 0 holds before anyone waits, the K waiters queue up, then go. */
    args[0] = (handoff_arg){.h = &h, .idx = 0, .holding = 1};
    if (b->acquire(h.clients[0], h.key, &args[0].hold, err, sizeof err) < 0) {
        fail_msg(b, "acquire", err);
        goto out;
    }
    for (int i = 1; i < nthreads; i++) {
        args[i] = (handoff_arg){.h = &h, .idx = i};
        if (pthread_create(&tids[i], NULL, handoff_thread, &args[i]) != 0)
            break;
        started = i;
    }
    bench_sleep_ns(200000000LL + (int64_t)k * 2000000);
    if (pthread_create(&tids[0], NULL, handoff_thread, &args[0]) == 0) {
        pthread_join(tids[0], NULL);
    } else {
        atomic_store(&h.stop, 1);
        b->release(h.clients[0], &args[0].hold, err, sizeof err);
    }
    for (int i = 1; i <= started; i++)
        pthread_join(tids[i], NULL);
    rv = 0;
out:
    if (h.clients)
        for (int i = 0; i < nthreads; i++)
            if (h.clients[i])
                b->client_free(h.clients[i]);
    int n = atomic_load(&h.nsamples);
    if (n > rounds)
        n = rounds;
    char params[64];
    snprintf(params, sizeof params, "K=%d", k);
    char note[96] = "release -> next grant";
    if (atomic_load(&h.errors))
        snprintf(note, sizeof note, "%d errors", atomic_load(&h.errors));
    add_latency(scen, b, params, h.samples, (size_t)n, note);
    free(h.clients);
    free(args);
    free(tids);
    return rv == 0 && n > 0 && !atomic_load(&h.errors) ? 0 : -1;
}

int scen_handoff(const bench_backend *b, const bench_env *env, int k, int rounds, int64_t jitter_ns)
{
    return scen_handoff_tagged(b, env, k, rounds, jitter_ns, "handoff", "h");
}

/* ---- 3. throughput ---------------------------------------------------------- */

typedef struct tput {
    const bench_backend *b;
    const bench_env *env;
    unsigned run;
    int keys;
    atomic_int stop;
    atomic_int errors;
    atomic_llong cycles;
} tput;

typedef struct tput_arg {
    tput *t;
    void *client;
    int idx;
} tput_arg;

static void *tput_thread(void *p)
{
    tput_arg *a = p;
    tput *t = a->t;
    uint64_t seed = 0x2545f4914f6cdd1dull * (uint64_t)(a->idx + 1);
    long long mine = 0;
    char key[64], err[256];
    while (!atomic_load(&t->stop)) {
        snprintf(key, sizeof key, "t%u-%d", t->run, (int)(rnd(&seed) % (uint64_t)t->keys));
        bench_hold h = {0};
        if (t->b->acquire(a->client, key, &h, err, sizeof err) < 0 ||
            t->b->release(a->client, &h, err, sizeof err) < 0) {
            fail_msg(t->b, "throughput cycle", err);
            atomic_fetch_add(&t->errors, 1);
            break;
        }
        if (!atomic_load(&t->stop))
            mine++;
    }
    atomic_fetch_add(&t->cycles, mine);
    return NULL;
}

/* CPU seconds so far of the bench process, the backend's lock server and
 * Redis, by bench_cpu; -1 where the backend does not use it or the server is
 * external. Returns how many readings that apply could not be taken. */
static int cpu_now(const bench_backend *b, const bench_env *env, double sec[CPU_N])
{
    int missing = 0;
    struct rusage ru;
    sec[CPU_CLIENT] = sec[CPU_SERVER] = sec[CPU_REDIS] = -1;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        sec[CPU_CLIENT] = (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
                          ((double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_usec) / 1e6;
    else
        missing++;
    int server = !strcmp(b->family, "baton") ? env->batond_pid : !strcmp(b->family, "etcd") ? env->etcd_pid : 0;
    if (server && (sec[CPU_SERVER] = procs_cpu_sec(server)) < 0)
        missing++;
    if (strcmp(b->family, "etcd") && (sec[CPU_REDIS] = bench_redis_cpu_sec(env)) < 0)
        missing++;
    return missing;
}

/* "evalsha/cyc E" and, on more than one primary, each primary's share of the
 * EVALSHA calls and of the Redis CPU between two readings (nodes by address). */
static void shard_note(char *buf, size_t len, const bench_redis_node *n0, int c0, const bench_redis_node *n1,
                       int c1, size_t cycles)
{
    buf[0] = 0;
    if (c0 < 1 || c0 != c1 || !cycles)
        return;
    double calls[BENCH_MAX_NODES], cpu[BENCH_MAX_NODES], tcalls = 0, tcpu = 0;
    int np = 0;
    for (int i = 0; i < c0; i++) {
        if (strcmp(n0[i].addr, n1[i].addr) || n0[i].evalsha_calls < 0 || n1[i].evalsha_calls < 0 ||
            n0[i].cpu_sec < 0 || n1[i].cpu_sec < 0)
            return;
        if (!n1[i].primary)
            continue;
        tcalls += calls[np] = n1[i].evalsha_calls - n0[i].evalsha_calls;
        tcpu += cpu[np] = n1[i].cpu_sec - n0[i].cpu_sec;
        np++;
    }
    size_t at = (size_t)snprintf(buf, len, "evalsha/cyc %.2f", tcalls / (double)cycles);
    if (np < 2 || tcalls <= 0 || tcpu <= 0)
        return;
    at += (size_t)snprintf(buf + at, len - at, "; shard%% evalsha");
    for (int i = 0; i < np && at < len; i++)
        at += (size_t)snprintf(buf + at, len - at, "%s%.0f", i ? "/" : " ", 100 * calls[i] / tcalls);
    if (at < len)
        at += (size_t)snprintf(buf + at, len - at, " cpu");
    for (int i = 0; i < np && at < len; i++)
        at += (size_t)snprintf(buf + at, len - at, "%s%.0f", i ? "/" : " ", 100 * cpu[i] / tcpu);
}

int scen_throughput(const bench_backend *b, const bench_env *env, int clients, int keys, double secs)
{
    tput t = {.b = b, .env = env, .run = next_run(), .keys = keys};
    tput_arg *args = calloc((size_t)clients, sizeof *args);
    pthread_t *tids = calloc((size_t)clients, sizeof *tids);
    char err[256] = "";
    int started = 0, ok = 0;
    if (!args || !tids)
        goto out;
    for (int i = 0; i < clients; i++) {
        args[i] = (tput_arg){.t = &t, .idx = i};
        args[i].client = b->client_new(env, DEFAULT_TTL_MS, err, sizeof err);
        if (!args[i].client) {
            fail_msg(b, "client", err);
            goto out;
        }
    }
    double cpu0[CPU_N], cpu1[CPU_N];
    int redis = strcmp(b->family, "etcd") != 0;
    bench_redis_node nodes0[BENCH_MAX_NODES], nodes1[BENCH_MAX_NODES];
    int nn0 = redis ? bench_redis_nodes(env, nodes0, BENCH_MAX_NODES) : 0;
    int cpu_missing = cpu_now(b, env, cpu0);
    int64_t t0 = bench_now_ns();
    for (int i = 0; i < clients; i++) {
        if (pthread_create(&tids[i], NULL, tput_thread, &args[i]) != 0)
            break;
        started++;
    }
    bench_sleep_ns((int64_t)(secs * 1e9));
    atomic_store(&t.stop, 1);
    int64_t elapsed = bench_now_ns() - t0;
    for (int i = 0; i < started; i++)
        pthread_join(tids[i], NULL);
    /* The CPU window also holds the cycles cut off at the stop, which are not
     * counted: at most one per client, against thousands counted. */
    cpu_missing += cpu_now(b, env, cpu1);
    int nn1 = redis ? bench_redis_nodes(env, nodes1, BENCH_MAX_NODES) : 0;
    bench_result r = {.metric = METRIC_RATE, .rss_kib = -1};
    snprintf(r.scenario, sizeof r.scenario, "throughput");
    snprintf(r.backend, sizeof r.backend, "%s", b->name);
    snprintf(r.family, sizeof r.family, "%s", b->family);
    snprintf(r.params, sizeof r.params, "C=%d M=%d", clients, keys);
    r.rate = (double)atomic_load(&t.cycles) / ((double)elapsed / 1e9);
    r.n = (size_t)atomic_load(&t.cycles);
    for (int k = 0; k < CPU_N; k++)
        r.cpu_us[k] = cpu0[k] >= 0 && cpu1[k] >= 0 && r.n ? (cpu1[k] - cpu0[k]) * 1e6 / (double)r.n : -1;
    char shards[80];
    shard_note(shards, sizeof shards, nodes0, nn0, nodes1, nn1, r.n);
    snprintf(r.note, sizeof r.note, "%s%s%s", atomic_load(&t.errors) ? "errors" : "cycles/s", shards[0] ? "; " : "",
             shards);
    report_add(&r);
    /* A reading gone missing would quietly blank the columns that explain
     * the rates: the cell fails (so does a smoke run). */
    if (cpu_missing) {
        char what[128];
        snprintf(what, sizeof what, "throughput %s", r.params);
        fail_msg(b, what, "CPU per cycle not measured");
    }
    ok = started == clients && r.n > 0 && !atomic_load(&t.errors) && !cpu_missing;
out:
    if (args)
        for (int i = 0; i < clients; i++)
            if (args[i].client)
                b->client_free(args[i].client);
    free(args);
    free(tids);
    return ok ? 0 : -1;
}

/* ---- 5. crash recovery ------------------------------------------------------- */

/*
 * The victim is this same program re-executed in helper mode (so the child
 * never touches gRPC state inherited through fork): it acquires the key,
 * prints "held", and sleeps until it is SIGKILLed.
 */
static pid_t spawn_victim(const char *self, const bench_backend *b, const bench_env *env, const char *key,
                          int64_t ttl_ms, int *rfd)
{
    int p[2];
    if (pipe(p) < 0)
        return -1;
    char ttl[32];
    snprintf(ttl, sizeof ttl, "%lld", (long long)ttl_ms);
    pid_t pid = fork();
    if (pid < 0) {
        close(p[0]);
        close(p[1]);
        return -1;
    }
    if (pid == 0) {
        dup2(p[1], 1);
        close(p[0]);
        close(p[1]);
        const char *backend = b->name;
        execl(self, self, "--baton-client", bench_baton_use_stubs ? "stubs" : bench_baton_no_sessions ? "libbaton-rpc" : "libbaton", "--hold-helper",
              backend, "--hold-key", key, "--hold-ttl-ms", ttl, "--redis",
              env->redis_addr[0] ? env->redis_addr : "-", "--etcd",
              env->etcd_target[0] ? env->etcd_target : "-", "--baton",
              env->baton_target[0] ? env->baton_target : "-", (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    *rfd = p[0];
    return pid;
}

/* Reads "held\n" from the victim within 10 s. */
static int wait_held(int fd)
{
    char buf[64];
    size_t got = 0;
    int64_t deadline = bench_now_ns() + 10000000000LL;
    while (got < sizeof buf - 1 && bench_now_ns() < deadline) {
        ssize_t n = read(fd, buf + got, sizeof buf - 1 - got);
        if (n <= 0)
            return -1;
        got += (size_t)n;
        buf[got] = 0;
        if (strstr(buf, "held\n"))
            return 0;
    }
    return -1;
}

typedef struct crash_waiter {
    const bench_backend *b;
    void *client;
    const char *key;
    bench_hold hold;
    int64_t t_grant;
    int err;
} crash_waiter;

static void *crash_waiter_thread(void *p)
{
    crash_waiter *w = p;
    char err[256];
    if (w->b->acquire(w->client, w->key, &w->hold, err, sizeof err) < 0) {
        fail_msg(w->b, "crash waiter acquire", err);
        w->err = 1;
        return NULL;
    }
    w->t_grant = bench_now_ns();
    if (w->b->release(w->client, &w->hold, err, sizeof err) < 0)
        fail_msg(w->b, "crash waiter release", err);
    return NULL;
}

int scen_crash(const bench_backend *b, const bench_env *env, const char *self, int rounds, int64_t ttl_ms)
{
    char err[256] = "";
    int64_t *s = samples_new((size_t)rounds);
    size_t n = 0;
    void *c = b->client_new(env, DEFAULT_TTL_MS, err, sizeof err);
    if (!c) {
        fail_msg(b, "client", err);
        free(s);
        return -1;
    }
    for (int r = 0; r < rounds; r++) {
        char key[64];
        snprintf(key, sizeof key, "c%u", next_run());
        int fd = -1;
        pid_t pid = spawn_victim(self, b, env, key, ttl_ms, &fd);
        if (pid < 0)
            break;
        if (wait_held(fd) < 0) {
            fprintf(stderr, "baton-bench: %s crash victim did not report a hold\n", b->name);
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            close(fd);
            break;
        }
        crash_waiter w = {.b = b, .client = c, .key = key};
        pthread_t tid;
        if (pthread_create(&tid, NULL, crash_waiter_thread, &w) != 0) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            close(fd);
            break;
        }
        bench_sleep_ns(200000000); /* let the waiter queue up */
        int64_t t_kill = bench_now_ns();
        kill(pid, SIGKILL);
        pthread_join(tid, NULL);
        waitpid(pid, NULL, 0);
        close(fd);
        if (w.err)
            break;
        s[n++] = w.t_grant - t_kill;
    }
    b->client_free(c);
    char params[64], note[96];
    int stream = strcmp(b->name, "baton-stream") == 0;
    snprintf(params, sizeof params, "%s", stream ? "stream closed" : "TTL expiry");
    snprintf(note, sizeof note, "SIGKILL -> grant; holder ttl %lld ms, killed ~200 ms after its grant",
             (long long)ttl_ms);
    add_latency("crash", b, params, s, n, note);
    return n ? 0 : -1;
}

/* Helper mode: acquire, say so, wait to be killed. */
int scen_hold_helper(const bench_backend *b, const bench_env *env, const char *key, int64_t ttl_ms)
{
    char err[256] = "";
    void *c = b->client_new(env, ttl_ms, err, sizeof err);
    if (!c) {
        fail_msg(b, "helper client", err);
        return 1;
    }
    bench_hold h = {0};
    if (b->acquire(c, key, &h, err, sizeof err) < 0) {
        fail_msg(b, "helper acquire", err);
        return 1;
    }
    if (write(1, "held\n", 5) != 5)
        return 1;
    for (;;)
        pause();
}
