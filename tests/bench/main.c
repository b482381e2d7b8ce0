/* baton-bench: flags, private servers, the scenario matrix, output. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"
#include "scenarios.h"

#ifndef BATON_BENCH_DEFAULT_BATOND
#define BATON_BENCH_DEFAULT_BATOND "batond"
#endif

#define MAX_LIST 16
#define MAX_EXTRA 16

typedef struct int_list {
    int v[MAX_LIST];
    size_t n;
} int_list;

typedef struct opts {
    char backends[256];
    char scenarios[256];
    int iters, rounds, streams, crash_rounds;
    int cluster; /* > 0: start a private Redis Cluster of that many primaries */
    int_list k, c, m;
    double duration;
    int64_t crash_ttl_ms;
    int64_t jitter_ms; /* -1: = poll_ms */
    const char *redis, *etcd, *baton, *batond;
    const char *batond_args[MAX_EXTRA];
    size_t nbatond_args;
    const char *json, *plot;
    int smoke;
    /* helper mode */
    const char *hold_backend, *hold_key;
    int64_t hold_ttl_ms;
} opts;

static const bench_backend *const ALL[] = {&bench_backend_redis, &bench_backend_etcd,
                                           &bench_backend_baton_lease, &bench_backend_baton_stream};
#define NALL (sizeof ALL / sizeof ALL[0])

static void usage(FILE *f)
{
    fprintf(f,
            "usage: baton-bench [options]\n"
            "Measures batond against raw Redis (SET NX PX + polling) and etcd v3lock, same machine,\n"
            "same client threads and key sets, one monotonic clock.\n\n"
            "  --backends LIST     redis,etcd,baton-lease,baton-stream (baton = both modes) [all]\n"
            "  --scenarios LIST    machine,uncontended,handoff,throughput,scale,crash,pools [all]\n"
            "                      (pools: batond only, multi-device handoff and pool grant cost)\n"
            "                      (machine: thread wake round trips, the floor under every backend)\n"
            "  --iters N           uncontended acquire+release cycles [1000]\n"
            "  --rounds R          handoff rounds per (backend, K) [200]\n"
            "  --k-list LIST       handoff waiter counts [1,16,256]\n"
            "  --c-list LIST       throughput client threads [1,8,64]\n"
            "  --m-list LIST       throughput key counts [1,64,1024]\n"
            "  --duration SEC      throughput duration per cell [3]\n"
            "  --streams N         scale: waiting streams on one batond [10000]\n"
            "  --crash-rounds N    crash recovery rounds per backend [3]\n"
            "  --crash-ttl-ms MS   TTL of the crashing holder (lease/TTL backends) [1000]\n"
            "  --poll-ms MS        raw-Redis waiter poll interval (redis-py default) [100]\n"
            "  --jitter-ms MS      handoff: random hold time added to 5 ms before release [= poll-ms]\n"
            "  --redis ADDR        use this Redis (host:port, unix:/path or cluster://HOST:PORT,...)\n"
            "                      instead of a private one\n"
            "  --cluster N         start a private Redis Cluster of N primaries (1-%d, no replicas) on\n"
            "                      127.0.0.1 instead of one Redis (batond backends only); throughput rows\n"
            "                      then show each primary's share of EVALSHA calls and of Redis CPU\n"
            "  --etcd HOST:PORT    use this etcd instead of a private one\n"
            "  --baton HOST:PORT   use this batond instead of a private one (no RSS then)\n"
            "  --batond PATH       batond binary to start [%s]\n"
            "  --batond-arg ARG    extra batond argument (repeatable)\n"
            "  --baton-client C    libbaton (default: lease operations over Session streams),\n"
            "                      libbaton-rpc (one RPC per operation) or stubs (generated gRPC stubs,\n"
            "                      no libbaton threads)\n"
            "  --json FILE         write all results and samples as JSON\n"
            "  --plot DIR          write PNG charts with gnuplot\n"
            "  --smoke             tiny run of everything; exit 1 unless every backend produced samples\n",
            BENCH_MAX_NODES, BATON_BENCH_DEFAULT_BATOND);
}

static int parse_list(const char *s, int_list *l)
{
    l->n = 0;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", s);
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        char *end;
        long v = strtol(t, &end, 10);
        if (*end || v < 1 || v > 1000000 || l->n == MAX_LIST)
            return -1;
        l->v[l->n++] = (int)v;
    }
    return l->n ? 0 : -1;
}

/* Is `name` in the comma list? "baton" matches both baton backends. */
static int in_list(const char *list, const char *name)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", list);
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (!strcmp(t, name) || !strcmp(t, "all"))
            return 1;
        if (!strcmp(t, "baton") && !strncmp(name, "baton-", 6))
            return 1;
    }
    return 0;
}

/* 1 unless every name in `list` is "all" or one of `known` (NULL-ended). */
static int bad_names(const char *list, const char *const *known)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", list);
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        int ok = !strcmp(t, "all");
        for (size_t i = 0; known[i] && !ok; i++)
            ok = !strcmp(t, known[i]);
        if (!ok)
            return 1;
    }
    return 0;
}

static const char *const SCENARIOS[] = {"machine", "uncontended", "handoff", "throughput",
                                        "scale",   "crash",       "pools",   NULL};
static const char *const BACKENDS[] = {"redis", "etcd", "baton", "baton-lease", "baton-stream", NULL};

static int parse_args(int argc, char **argv, opts *o)
{
    enum {
        O_BACKENDS = 256,
        O_SCEN,
        O_ITERS,
        O_ROUNDS,
        O_K,
        O_C,
        O_M,
        O_DUR,
        O_STREAMS,
        O_CROUNDS,
        O_CTTL,
        O_POLL,
        O_JITTER,
        O_REDIS,
        O_ETCD,
        O_BATON,
        O_BATOND,
        O_BATOND_ARG,
        O_JSON,
        O_PLOT,
        O_SMOKE,
        O_HOLD,
        O_HOLD_KEY,
        O_HOLD_TTL,
        O_BATON_CLIENT,
        O_CLUSTER,
        O_HELP
    };
    static const struct option lo[] = {{"backends", 1, 0, O_BACKENDS},
                                       {"scenarios", 1, 0, O_SCEN},
                                       {"iters", 1, 0, O_ITERS},
                                       {"rounds", 1, 0, O_ROUNDS},
                                       {"k-list", 1, 0, O_K},
                                       {"c-list", 1, 0, O_C},
                                       {"m-list", 1, 0, O_M},
                                       {"duration", 1, 0, O_DUR},
                                       {"streams", 1, 0, O_STREAMS},
                                       {"crash-rounds", 1, 0, O_CROUNDS},
                                       {"crash-ttl-ms", 1, 0, O_CTTL},
                                       {"poll-ms", 1, 0, O_POLL},
                                       {"jitter-ms", 1, 0, O_JITTER},
                                       {"redis", 1, 0, O_REDIS},
                                       {"etcd", 1, 0, O_ETCD},
                                       {"baton", 1, 0, O_BATON},
                                       {"batond", 1, 0, O_BATOND},
                                       {"batond-arg", 1, 0, O_BATOND_ARG},
                                       {"json", 1, 0, O_JSON},
                                       {"plot", 1, 0, O_PLOT},
                                       {"smoke", 0, 0, O_SMOKE},
                                       {"hold-helper", 1, 0, O_HOLD},
                                       {"hold-key", 1, 0, O_HOLD_KEY},
                                       {"hold-ttl-ms", 1, 0, O_HOLD_TTL},
                                       {"baton-client", 1, 0, O_BATON_CLIENT},
                                       {"cluster", 1, 0, O_CLUSTER},
                                       {"help", 0, 0, O_HELP},
                                       {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        int bad = 0;
        switch (ch) {
        case O_BACKENDS:
            snprintf(o->backends, sizeof o->backends, "%s", optarg);
            bad = bad_names(optarg, BACKENDS);
            break;
        case O_SCEN:
            snprintf(o->scenarios, sizeof o->scenarios, "%s", optarg);
            bad = bad_names(optarg, SCENARIOS);
            break;
        case O_ITERS: bad = (o->iters = atoi(optarg)) < 1; break;
        case O_ROUNDS: bad = (o->rounds = atoi(optarg)) < 1; break;
        case O_K: bad = parse_list(optarg, &o->k); break;
        case O_C: bad = parse_list(optarg, &o->c); break;
        case O_M: bad = parse_list(optarg, &o->m); break;
        case O_DUR: bad = (o->duration = atof(optarg)) <= 0; break;
        case O_STREAMS: bad = (o->streams = atoi(optarg)) < 1; break;
        case O_CROUNDS: bad = (o->crash_rounds = atoi(optarg)) < 1; break;
        case O_CTTL: bad = (o->crash_ttl_ms = atoll(optarg)) < 1; break;
        case O_POLL: bad = atoll(optarg) < 1; break; /* value read in main() */
        case O_JITTER: bad = (o->jitter_ms = atoll(optarg)) < 0; break;
        case O_REDIS: o->redis = optarg; break;
        case O_ETCD: o->etcd = optarg; break;
        case O_BATON: o->baton = optarg; break;
        case O_BATOND: o->batond = optarg; break;
        case O_BATOND_ARG:
            bad = o->nbatond_args == MAX_EXTRA;
            if (!bad)
                o->batond_args[o->nbatond_args++] = optarg;
            break;
        case O_JSON: o->json = optarg; break;
        case O_PLOT: o->plot = optarg; break;
        case O_SMOKE: o->smoke = 1; break;
        case O_HOLD: o->hold_backend = optarg; break;
        case O_HOLD_KEY: o->hold_key = optarg; break;
        case O_HOLD_TTL: o->hold_ttl_ms = atoll(optarg); break;
        case O_BATON_CLIENT:
            bad = strcmp(optarg, "libbaton") && strcmp(optarg, "libbaton-rpc") && strcmp(optarg, "stubs");
            bench_baton_use_stubs = !strcmp(optarg, "stubs");
            bench_baton_no_sessions = !strcmp(optarg, "libbaton-rpc");
            break;
        case O_CLUSTER: bad = (o->cluster = atoi(optarg)) < 1 || o->cluster > BENCH_MAX_NODES; break;
        case O_HELP:
        case 'h': usage(stdout); exit(0);
        default: return -1;
        }
        if (bad) {
            fprintf(stderr, "baton-bench: bad value for --%s: %s\n", lo[ch - 256].name, optarg);
            return -1;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "baton-bench: unexpected argument %s\n", argv[optind]);
        return -1;
    }
    return 0;
}

static const bench_backend *backend_named(const char *name)
{
    for (size_t i = 0; i < NALL; i++)
        if (!strcmp(ALL[i]->name, name))
            return ALL[i];
    return NULL;
}

static void copy_addr(char *dst, size_t len, const char *src)
{
    snprintf(dst, len, "%s", src && strcmp(src, "-") ? src : "");
}

/* Runs the victim side of the crash scenario (re-executed by scen_crash). */
static int hold_helper(const opts *o, bench_env *env)
{
    const bench_backend *b = backend_named(o->hold_backend);
    if (!b || !o->hold_key) {
        fprintf(stderr, "baton-bench: bad --hold-helper\n");
        return 2;
    }
    copy_addr(env->redis_addr, sizeof env->redis_addr, o->redis);
    copy_addr(env->etcd_target, sizeof env->etcd_target, o->etcd);
    copy_addr(env->baton_target, sizeof env->baton_target, o->baton);
    return scen_hold_helper(b, env, o->hold_key, o->hold_ttl_ms > 0 ? o->hold_ttl_ms : 1000);
}

static void smoke_defaults(opts *o)
{
    o->iters = 50;
    o->rounds = 10;
    parse_list("1,4", &o->k);
    parse_list("1,4", &o->c);
    parse_list("1,16", &o->m);
    o->duration = 0.3;
    o->streams = 200;
    o->crash_rounds = 1;
}

int main(int argc, char **argv)
{
    opts o = {.iters = 1000,
              .rounds = 200,
              .streams = 10000,
              .crash_rounds = 3,
              .duration = 3,
              .crash_ttl_ms = 1000,
              .jitter_ms = -1,
              .batond = BATON_BENCH_DEFAULT_BATOND};
    snprintf(o.backends, sizeof o.backends, "all");
    snprintf(o.scenarios, sizeof o.scenarios, "all");
    parse_list("1,16,256", &o.k);
    parse_list("1,8,64", &o.c);
    parse_list("1,64,1024", &o.m);
    bench_env env = {.poll_ms = 100};
    /* --poll-ms is read here: its value also sets the default jitter. */
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--poll-ms"))
            env.poll_ms = atoll(argv[i + 1]) > 0 ? atoll(argv[i + 1]) : 100;
    if (parse_args(argc, argv, &o) < 0) {
        usage(stderr);
        return 2;
    }
    if (o.hold_backend)
        return hold_helper(&o, &env);
    if (o.smoke)
        smoke_defaults(&o);
    if (o.jitter_ms < 0)
        o.jitter_ms = env.poll_ms;

    const bench_backend *sel[NALL];
    size_t nsel = 0;
    for (size_t i = 0; i < NALL; i++)
        if (in_list(o.backends, ALL[i]->name))
            sel[nsel++] = ALL[i];
    if (!nsel) {
        fprintf(stderr, "baton-bench: no backend selected by --backends %s\n", o.backends);
        return 2;
    }
    int need_redis = 0, need_etcd = 0, need_baton = 0;
    for (size_t i = 0; i < nsel; i++) {
        need_redis |= !strcmp(sel[i]->family, "redis") || !strcmp(sel[i]->family, "baton");
        need_etcd |= !strcmp(sel[i]->family, "etcd");
        need_baton |= !strcmp(sel[i]->family, "baton");
    }
    /* The raw-Redis backend speaks to one Redis: no MOVED handling. */
    int cluster = o.cluster || (o.redis && !strncmp(o.redis, "cluster://", 10));
    if (cluster && (o.redis && o.cluster)) {
        fprintf(stderr, "baton-bench: --cluster and --redis exclude each other\n");
        return 2;
    }
    for (size_t i = 0; cluster && i < nsel; i++)
        if (!strcmp(sel[i]->family, "redis")) {
            fprintf(stderr, "baton-bench: the redis backend does not speak Redis Cluster: pick --backends "
                            "baton (or etcd) with a cluster\n");
            return 2;
        }
    if (procs_init() < 0)
        return 2;
    if (o.redis)
        copy_addr(env.redis_addr, sizeof env.redis_addr, o.redis);
    else if (need_redis && (o.cluster ? procs_start_cluster(&env, o.cluster) : procs_start_redis(&env)) < 0)
        return 2;
    if (o.etcd)
        copy_addr(env.etcd_target, sizeof env.etcd_target, o.etcd);
    else if (need_etcd && procs_start_etcd(&env) < 0)
        return 2;
    if (o.baton)
        copy_addr(env.baton_target, sizeof env.baton_target, o.baton);
    else if (need_baton && procs_start_batond(&env, o.batond, o.batond_args, o.nbatond_args) < 0)
        return 2;
    fprintf(stderr, "baton-bench: redis %s, etcd %s, batond %s (pid %d)\n",
            env.redis_addr[0] ? env.redis_addr : "-", env.etcd_target[0] ? env.etcd_target : "-",
            env.baton_target[0] ? env.baton_target : "-", env.batond_pid);

    char self[4096];
    ssize_t sl = readlink("/proc/self/exe", self, sizeof self - 1);
    if (sl <= 0)
        return 2;
    self[sl] = 0;

    /* failed[i]: backend i had a scenario without samples or with errors. */
    int failed[NALL] = {0};
    int scale_failed = 0;
    int64_t jitter_ns = o.jitter_ms * 1000000;
    if (in_list(o.scenarios, "machine")) {
        fprintf(stderr, "baton-bench: machine\n");
        scen_machine(o.smoke ? 200 : 5000); /* context for the tables, not a backend: never fails a run */
    }
    if (in_list(o.scenarios, "uncontended"))
        for (size_t b = 0; b < nsel; b++) {
            fprintf(stderr, "baton-bench: uncontended %s\n", sel[b]->name);
            failed[b] |= scen_uncontended(sel[b], &env, o.iters) < 0;
        }
    if (in_list(o.scenarios, "handoff"))
        for (size_t k = 0; k < o.k.n; k++)
            for (size_t b = 0; b < nsel; b++) {
                fprintf(stderr, "baton-bench: handoff %s K=%d\n", sel[b]->name, o.k.v[k]);
                failed[b] |= scen_handoff(sel[b], &env, o.k.v[k], o.rounds, jitter_ns) < 0;
            }
    if (in_list(o.scenarios, "throughput"))
        for (size_t m = 0; m < o.m.n; m++)
            for (size_t c = 0; c < o.c.n; c++)
                for (size_t b = 0; b < nsel; b++) {
                    fprintf(stderr, "baton-bench: throughput %s C=%d M=%d\n", sel[b]->name, o.c.v[c],
                            o.m.v[m]);
                    failed[b] |= scen_throughput(sel[b], &env, o.c.v[c], o.m.v[m], o.duration) < 0;
                }
    if (in_list(o.scenarios, "scale") && need_baton) {
        fprintf(stderr, "baton-bench: scale %d streams\n", o.streams);
        scale_failed = scen_scale(&env, o.streams, o.rounds, jitter_ns) < 0;
    }
    if (in_list(o.scenarios, "pools") && need_baton) {
        fprintf(stderr, "baton-bench: pools\n");
        scale_failed |= scen_pools(&env, o.rounds, o.iters) < 0;
    }
    if (in_list(o.scenarios, "crash"))
        for (size_t b = 0; b < nsel; b++) {
            fprintf(stderr, "baton-bench: crash %s\n", sel[b]->name);
            failed[b] |= scen_crash(sel[b], &env, self, o.crash_rounds, o.crash_ttl_ms) < 0;
        }

    report_print(stdout);
    fflush(stdout);
    int rc = 0;
    if (o.json && report_json(o.json) < 0)
        rc = 1;
    if (o.plot && report_plot(o.plot) < 0)
        rc = 1;
    for (size_t b = 0; b < nsel; b++)
        if (failed[b]) {
            fprintf(stderr, "baton-bench: backend %s: a scenario produced no samples or had errors\n",
                    sel[b]->name);
            if (o.smoke)
                rc = 1;
        }
    if (scale_failed) {
        fprintf(stderr, "baton-bench: scale or pools scenario failed\n");
        if (o.smoke)
            rc = 1;
    }
    report_free();
    procs_cleanup();
    return rc;
}
