#ifndef BATON_BENCH_SCENARIOS_H
#define BATON_BENCH_SCENARIOS_H

/* Each scenario adds its results with report_add() and returns 0 when it
 * produced samples without errors, -1 otherwise (details on stderr). */

#include <stdint.h>

#include "bench.h"

int scen_uncontended(const bench_backend *b, const bench_env *env, int iters);
/* K waiters, R handoffs; the holder sleeps 5 ms + uniform[0, jitter) before releasing. */
int scen_handoff(const bench_backend *b, const bench_env *env, int k, int rounds, int64_t jitter_ns);
/* The same, reported under scenario `scen` with keys named prefix<n>. */
int scen_handoff_tagged(const bench_backend *b, const bench_env *env, int k, int rounds, int64_t jitter_ns,
                        const char *scen, const char *prefix);
int scen_throughput(const bench_backend *b, const bench_env *env, int clients, int keys, double secs);
/* `self`: path of this executable, re-run in helper mode as the victim. */
int scen_crash(const bench_backend *b, const bench_env *env, const char *self, int rounds, int64_t ttl_ms);
/* Helper mode (never returns on success). */
int scen_hold_helper(const bench_backend *b, const bench_env *env, const char *key, int64_t ttl_ms);
/* Baton only: `streams` waiting Acquire streams on one key, opened without a
 * thread per stream; reports batond's VmRSS and handoff latency (K=1 on
 * another key, both baton modes) while they wait. */
int scen_scale(const bench_env *env, int streams, int rounds, int64_t jitter_ns);
/* Baton only (libbaton lease): a pool grant's handoff, one device beside two
 * (count=2), and the uncontended grant on pools of 8 and 64 devices (pools.c). */
int scen_pools(const bench_env *env, int rounds, int iters);
/* No backend: thread wake round trips on one CPU and across two (machine.c). */
int scen_machine(int rounds);

#endif
