#ifndef BATON_BENCH_H
#define BATON_BENCH_H

/*
 * baton-bench: Baton side by side with raw Redis and etcd, one process, one
 * clock (CLOCK_MONOTONIC), same client threads and key sets for every backend.
 *
 * Modules:
 *   procs.c      private redis-server / etcd / batond children (killed at exit)
 *   backend_*.c  one blocking lock client per backend (same shape for all)
 *   scenarios.c  uncontended, handoff, throughput, scale, crash
 *   report.c     samples -> percentiles -> table / JSON / gnuplot charts
 *   main.c       flags, helper mode (a crash victim), orchestration
 */

#include <stddef.h>
#include <stdio.h>
#include <stdint.h>

/* ---- clock ---- */
int64_t bench_now_ns(void);
void bench_sleep_ns(int64_t ns);

/* ---- where the servers are ---- */
typedef struct bench_env {
    char redis_addr[256];  /* "unix:/path", "host:port" or "cluster://HOST:PORT,..." */
    char etcd_target[128]; /* "127.0.0.1:P" (gRPC target) */
    char baton_target[128];
    int64_t poll_ms; /* raw-Redis waiter poll interval (redis-py Lock: 100 ms) */
    int batond_pid;  /* 0 when batond is external (no RSS, no CPU) */
    int etcd_pid;    /* 0 when etcd is external (no CPU) */
} bench_env;

/* ---- backends ---- */

/* One granted lock. Filled by acquire, consumed by release. */
typedef struct bench_hold {
    char key[160];
    char token[160]; /* redis/baton token, or etcd's ownership key */
    size_t token_len;
    void *call; /* baton: the baton_lock (libbaton) or the Acquire stream (stubs) */
} bench_hold;

typedef struct bench_backend {
    const char *name;   /* "redis", "etcd", "baton-lease", "baton-stream" */
    const char *family; /* "redis", "etcd", "baton": "ratio to the best other" compares families */
    /* One client (connection) used by one thread at a time. ttl_ms: the TTL of
     * its locks (etcd: its lease, rounded up to seconds). NULL + err on failure. */
    void *(*client_new)(const bench_env *env, int64_t ttl_ms, char *err, size_t errlen);
    /* Blocks until `key` is granted. 0, or -1 with err. */
    int (*acquire)(void *c, const char *key, bench_hold *h, char *err, size_t errlen);
    /* Releases what acquire granted. 0, or -1 with err. */
    int (*release)(void *c, bench_hold *h, char *err, size_t errlen);
    void (*client_free)(void *c);
} bench_backend;

extern const bench_backend bench_backend_redis;
extern const bench_backend bench_backend_etcd;
extern const bench_backend bench_backend_baton_lease;
extern const bench_backend bench_backend_baton_stream;
/* 1: the baton backends use the generated stubs directly instead of libbaton. */
extern int bench_baton_use_stubs;
extern int bench_baton_no_sessions; /* libbaton with disable_sessions */

/* ---- private servers (procs.c) ---- */

/* Creates a private temp dir and installs the exit/SIGINT/SIGTERM cleanup that
 * kills every child started below. Returns 0 or -1. */
int procs_init(void);
const char *procs_dir(void);
/* Each fills the env address; returns 0 or -1 (message on stderr). */
int procs_start_redis(bench_env *env);
int procs_start_etcd(bench_env *env);
int procs_start_batond(bench_env *env, const char *batond_path, const char *const *extra_args, size_t nextra);
/* Kills the children (SIGTERM, then SIGKILL) and removes the temp dir. Idempotent. */
void procs_cleanup(void);
/* A free TCP port on 127.0.0.1 (bind to 0, read it, close). 0 on failure. */
int procs_free_port(void);
/* VmRSS of pid in KiB, -1 if unknown. */
long procs_rss_kib(int pid);
/* CPU time (user + system) pid has used, in seconds; -1 if unknown. */
double procs_cpu_sec(int pid);
/* Starts an N-primary Redis Cluster (no replicas) on 127.0.0.1 and sets
 * env->redis_addr to cluster://... listing every node. 0 or -1. */
int procs_start_cluster(bench_env *env, int nodes);

/* ---- Redis nodes (backend_redis.c) ---- */
#define BENCH_MAX_NODES 8
#define CLUSTER_SLOTS_N 16384
typedef struct bench_redis_node {
    char addr[256]; /* "host:port" or "unix:/path" */
    int primary;
    double cpu_sec;       /* INFO cpu: used_cpu_user + used_cpu_sys; -1 unknown */
    double evalsha_calls; /* INFO commandstats: cmdstat_evalsha calls; -1 unknown */
} bench_redis_node;
/* The Redis nodes behind env->redis_addr, sorted by address, with their CPU
 * and EVALSHA counts so far: the one Redis, or every node a seed of a
 * cluster:// address lists in CLUSTER NODES. Count, or -1 if none answers. */
int bench_redis_nodes(const bench_env *env, bench_redis_node *out, int max);
/* CPU time all those nodes have used, in seconds; -1 if unknown. */
double bench_redis_cpu_sec(const bench_env *env);
/* Makes the cluster-enabled redis-servers on 127.0.0.1:ports[0..n) (cluster
 * bus on bus_ports) one cluster, the slots split evenly; waits until every
 * node says ok. 0 or -1. */
int bench_redis_cluster_create(const int *ports, const int *bus_ports, int n, char *err, size_t errlen);

/* ---- results (report.c) ---- */

typedef enum bench_metric {
    METRIC_LATENCY = 0, /* samples in ns, lower is better */
    METRIC_RATE = 1,    /* a single rate, higher is better */
} bench_metric;

/* Whose CPU a throughput row reports: the bench process (the clients), the
 * lock server (batond or etcd) and Redis. */
enum bench_cpu { CPU_CLIENT, CPU_SERVER, CPU_REDIS, CPU_N };

typedef struct bench_result {
    char scenario[32];
    char backend[32];
    char family[16];
    char params[96]; /* "K=16", "C=64 M=1024", ... */
    bench_metric metric;
    int64_t *samples; /* METRIC_LATENCY: owned, sorted by report_add */
    size_t n;
    double rate;  /* METRIC_RATE: per second */
    long rss_kib; /* scale: batond VmRSS, -1 = n/a */
    /* METRIC_RATE: CPU microseconds per cycle, by bench_cpu; < 0 = n/a. */
    double cpu_us[CPU_N];
    char note[96];
} bench_result;

/* Appends a result (takes ownership of samples; sorts them). */
void report_add(const bench_result *r);
size_t report_count(void);
const bench_result *report_get(size_t i);
int64_t report_pct(const bench_result *r, double p); /* ns; nearest rank */
/* Prints one table per scenario to f, then the target summary. */
void report_print(FILE *f);
int report_json(const char *path);
int report_plot(const char *dir);
void report_free(void);

#endif
