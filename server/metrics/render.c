/*
 * The Prometheus text exposition format (0.0.4) of a metrics snapshot.
 * Pure: no clock, no atomics, no I/O; tests/metrics/test_render.c drives it
 * from plain values and `promtool check metrics` checks real output.
 */
#include "metrics.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

static const char *const code_names[METRICS_NCODES] = {
    "OK",        "CANCELLED",       "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
    "NOT_FOUND", "ALREADY_EXISTS",  "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED",   "OUT_OF_RANGE",    "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
    "DATA_LOSS", "UNAUTHENTICATED",
};

static void head(FILE *f, const char *name, const char *type, const char *help)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value with \, " and newline escaped. */
static void label_value(FILE *f, const char *s)
{
    for (; s && *s; s++) {
        if (*s == '\\' || *s == '"')
            fprintf(f, "\\%c", *s);
        else if (*s == '\n')
            fputs("\\n", f);
        else
            fputc(*s, f);
    }
}

/* Seconds with no trailing zeros but one decimal: 0.0025, 1.0, 3600.0. */
static void seconds(FILE *f, uint64_t us)
{
    char frac[8];
    snprintf(frac, sizeof frac, "%06" PRIu64, us % 1000000);
    int n = 6;
    while (n > 1 && frac[n - 1] == '0')
        frac[--n] = '\0';
    fprintf(f, "%" PRIu64 ".%s", us / 1000000, frac);
}

/* One histogram; `label` ("script=\"acquire\"" or NULL) goes before le. */
static void histogram(FILE *f, const char *name, const char *label, const uint64_t *bounds, size_t nb,
                      const uint64_t *buckets, uint64_t sum_us)
{
    uint64_t cum = 0;
    for (size_t b = 0; b <= nb; b++) {
        cum += buckets[b];
        fprintf(f, "%s_bucket{%s%sle=\"", name, label ? label : "", label ? "," : "");
        if (b < nb)
            seconds(f, bounds[b]);
        else
            fputs("+Inf", f);
        fprintf(f, "\"} %" PRIu64 "\n", cum);
    }
    fprintf(f, "%s_sum%s%s%s ", name, label ? "{" : "", label ? label : "", label ? "}" : "");
    seconds(f, sum_us);
    fprintf(f, "\n%s_count%s%s%s %" PRIu64 "\n", name, label ? "{" : "", label ? label : "", label ? "}" : "",
            cum);
}

static void gauge(FILE *f, const char *name, const char *help, int64_t v)
{
    head(f, name, "gauge", help);
    fprintf(f, "%s %" PRId64 "\n", name, v);
}

char *metrics_render(const metrics_snapshot *s, size_t *len)
{
    char *out = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&out, &n);
    if (f == NULL)
        return NULL;

    head(f, "baton_build_info", "gauge", "Always 1; the version of batond in the label.");
    fputs("baton_build_info{version=\"", f);
    label_value(f, s->version);
    fputs("\"} 1\n", f);

    head(f, "baton_grants_total", "counter", "Locks granted by this batond, by hold mode.");
    fprintf(f, "baton_grants_total{mode=\"lease\"} %" PRIu64 "\n", s->grants[0]);
    fprintf(f, "baton_grants_total{mode=\"stream\"} %" PRIu64 "\n", s->grants[1]);

    head(f, "baton_releases_total", "counter",
         "Lock ends seen by this batond, by reason (expired: EXPIRED events, seen by every batond).");
    for (int i = 0; i < METRICS_END_COUNT; i++)
        fprintf(f, "baton_releases_total{reason=\"%s\"} %" PRIu64 "\n", metrics_end_names[i], s->ends[i]);

    head(f, "baton_acquire_timeouts_total", "counter",
         "Acquires that waited and were not granted within wait_ms.");
    fprintf(f, "baton_acquire_timeouts_total %" PRIu64 "\n", s->acquire_timeouts);

    head(f, "baton_requests_total", "counter", "RPCs answered, by method and gRPC status code.");
    for (size_t m = 0; m < metrics_nmethods && m < 16; m++)
        for (int c = 0; c < METRICS_NCODES; c++)
            if (s->requests[m][c])
                fprintf(f, "baton_requests_total{method=\"%s\",code=\"%s\"} %" PRIu64 "\n",
                        metrics_method_names[m], code_names[c], s->requests[m][c]);

    gauge(f, "baton_locks_held", "Locks held now, as seen on the events channel since this batond started.",
          s->locks_held);
    gauge(f, "baton_waiters", "Acquires waiting in this batond.", s->waiters);
    gauge(f, "baton_streams_open", "gRPC calls open on this batond.", s->streams_open);
    gauge(f, "baton_watchers", "Watch streams open on this batond.", s->watchers);
    gauge(f, "baton_redis_up", "1 while batond is connected and subscribed to Redis.", s->redis_up);
    gauge(f, "baton_long_held_locks", "Locks held longer than their alerts.long_held rule.", s->long_held);

    static const struct {
        const char *name, *help;
    } hists[METRICS_H_COUNT] = {
        {"baton_acquire_wait_seconds", "Time from an Acquire request to its grant."},
        {"baton_hold_seconds", "Time from a grant to the lock's end (events channel)."},
        {"baton_handoff_seconds", "Time from a lock's end to the grant to a waiter of this batond."},
    };
    for (int h = 0; h < METRICS_H_COUNT; h++) {
        head(f, hists[h].name, "histogram", hists[h].help);
        histogram(f, hists[h].name, NULL, metrics_lat_bounds_us, METRICS_LAT_BUCKETS, s->hist[h].buckets,
                  s->hist[h].sum_us);
    }

    head(f, "baton_redis_script_seconds", "histogram", "Redis Lua script round trips, by script.");
    for (size_t i = 0; i < metrics_nscripts && i < 16; i++) {
        char label[64];
        snprintf(label, sizeof label, "script=\"%s\"", metrics_script_names[i]);
        histogram(f, "baton_redis_script_seconds", label, metrics_script_bounds_us, METRICS_SCRIPT_BUCKETS,
                  s->scripts[i].buckets, s->scripts[i].sum_us);
    }

    if (s->npools) {
        head(f, "baton_pool_devices_held", "gauge", "Devices held of each configured pool.");
        for (size_t i = 0; i < s->npools; i++) {
            fputs("baton_pool_devices_held{pool=\"", f);
            label_value(f, s->pool_names[i]);
            fprintf(f, "\"} %" PRId64 "\n", s->pool_devices_held[i]);
        }
    }
    if (ferror(f)) {
        fclose(f);
        free(out);
        return NULL;
    }
    if (fclose(f) != 0) {
        free(out);
        return NULL;
    }
    if (len)
        *len = n;
    return out;
}
