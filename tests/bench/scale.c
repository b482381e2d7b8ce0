/* Scale (baton only): many waiting Acquire streams on one batond, opened
 * through the generated stubs without a thread per stream (a call start only
 * hands the request to the transport; nobody reads the streams while they
 * wait). Then batond's RSS and a handoff measured beside them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "baton/v1/lock.grpc-c.h"
#include "bench.h"
#include "scenarios.h"

/* Waiters batond reports for key, or -1. */
static int64_t describe_waiters(grpc_channel *ch, const char *key)
{
    Baton__V1__DescribeRequest req = BATON__V1__DESCRIBE_REQUEST__INIT;
    req.key = (char *)key;
    Baton__V1__DescribeResponse *resp = NULL;
    grpc_c_call_options o = {.timeout_ms = 10000};
    if (baton__v1__lock_service__grpc__describe(ch, &req, &resp, NULL, &o) != 0)
        return -1;
    int64_t w = resp->waiters;
    baton__v1__describe_response__free_unpacked(resp, NULL);
    return w;
}

static void add_rss_row(const char *params, long rss, int64_t waiters, int streams)
{
    bench_result r = {.metric = METRIC_LATENCY, .rss_kib = rss};
    snprintf(r.scenario, sizeof r.scenario, "scale");
    snprintf(r.backend, sizeof r.backend, "batond");
    snprintf(r.family, sizeof r.family, "baton");
    snprintf(r.params, sizeof r.params, "%s", params);
    snprintf(r.note, sizeof r.note, "VmRSS; %lld of %d streams queued", (long long)waiters, streams);
    report_add(&r);
}

int scen_scale(const bench_env *env, int streams, int rounds, int64_t jitter_ns)
{
    const bench_backend *hb = &bench_backend_baton_lease;
    char err[256] = "";
    int rv = -1;
    long rss0 = env->batond_pid ? procs_rss_kib(env->batond_pid) : -1;
    grpc_channel *ch = grpc_c_channel_create_insecure(env->baton_target, NULL);
    grpc_c_call **calls = calloc((size_t)streams, sizeof *calls);
    void *holder = hb->client_new(env, 600000, err, sizeof err);
    bench_hold hold = {0};
    int held = 0, opened = 0;
    if (!ch || !calls || !holder) {
        fprintf(stderr, "baton-bench: scale setup: %s\n", err[0] ? err : "out of memory");
        goto out;
    }
    if (hb->acquire(holder, "scale", &hold, err, sizeof err) < 0) {
        fprintf(stderr, "baton-bench: scale holder: %s\n", err);
        goto out;
    }
    held = 1;
    Baton__V1__AcquireRequest req = BATON__V1__ACQUIRE_REQUEST__INIT;
    req.key = hold.key;
    req.owner = "bench-scale-waiter";
    req.wait_ms = -1;
    req.mode = BATON__V1__HOLD_MODE__HOLD_MODE_STREAM;
    grpc_c_call_options o = {.wait_for_ready = 1};
    int64_t t0 = bench_now_ns();
    for (int i = 0; i < streams; i++) {
        calls[i] = baton__v1__lock_service__grpc__acquire_start(ch, &req, &o);
        if (!calls[i])
            break;
        opened++;
    }
    /* Wait until batond has queued them all (or stops making progress). */
    int64_t waiters = 0, last = -1;
    int64_t last_change = bench_now_ns();
    while (bench_now_ns() - last_change < 10000000000LL) {
        waiters = describe_waiters(ch, hold.key);
        if (waiters >= opened)
            break;
        if (waiters != last) {
            last = waiters;
            last_change = bench_now_ns();
        }
        bench_sleep_ns(100000000);
    }
    double open_s = (double)(bench_now_ns() - t0) / 1e9;
    fprintf(stderr, "baton-bench: scale: %lld of %d streams queued after %.1f s\n", (long long)waiters,
            streams, open_s);
    long rss1 = env->batond_pid ? procs_rss_kib(env->batond_pid) : -1;
    char params[64];
    snprintf(params, sizeof params, "idle");
    add_rss_row(params, rss0, 0, 0);
    snprintf(params, sizeof params, "S=%d waiting", streams);
    add_rss_row(params, rss1, waiters, streams);

    /* Handoff beside them: the same measurement as scenario 2 with K=1. */
    int hr = rounds < 100 ? rounds : 100;
    int ok1 = scen_handoff_tagged(&bench_backend_baton_lease, env, 1, hr, jitter_ns, "scale", "sh") == 0;
    int ok2 = scen_handoff_tagged(&bench_backend_baton_stream, env, 1, hr, jitter_ns, "scale", "sh") == 0;
    /* Name the rows after the load they ran under. */
    for (size_t i = report_count(); i-- > 0;) {
        bench_result *r = (bench_result *)report_get(i);
        if (!strcmp(r->scenario, "scale") && !strcmp(r->params, "K=1")) {
            snprintf(r->params, sizeof r->params, "K=1 +%dS", streams);
            r->rss_kib = env->batond_pid ? procs_rss_kib(env->batond_pid) : -1;
        }
    }
    rv = waiters >= opened && opened == streams && ok1 && ok2 ? 0 : -1;
out:
    for (int i = 0; i < opened; i++) {
        baton__v1__lock_service__grpc__acquire_cancel(calls[i]);
        baton__v1__lock_service__grpc__acquire_destroy(calls[i]);
    }
    free(calls);
    if (held && hb->release(holder, &hold, err, sizeof err) < 0)
        fprintf(stderr, "baton-bench: scale holder release: %s\n", err);
    if (holder)
        hb->client_free(holder);
    if (ch)
        grpc_c_channel_destroy(ch);
    return rv;
}
