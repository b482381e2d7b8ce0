/* Results: percentiles, tables, JSON and gnuplot charts. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"

static bench_result *g_res;
static size_t g_n, g_cap;

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

void report_add(const bench_result *r)
{
    if (g_n == g_cap) {
        size_t cap = g_cap ? g_cap * 2 : 64;
        bench_result *n = realloc(g_res, cap * sizeof *n);
        if (!n) {
            fprintf(stderr, "baton-bench: out of memory\n");
            exit(2);
        }
        g_res = n;
        g_cap = cap;
    }
    g_res[g_n] = *r;
    if (r->metric == METRIC_LATENCY && r->samples)
        qsort(g_res[g_n].samples, r->n, sizeof *r->samples, cmp_i64);
    g_n++;
}

size_t report_count(void)
{
    return g_n;
}

const bench_result *report_get(size_t i)
{
    return i < g_n ? &g_res[i] : NULL;
}

int64_t report_pct(const bench_result *r, double p)
{
    if (!r->n)
        return -1;
    size_t rank = (size_t)ceil(p / 100.0 * (double)r->n);
    if (rank < 1)
        rank = 1;
    if (rank > r->n)
        rank = r->n;
    return r->samples[rank - 1];
}

void report_free(void)
{
    for (size_t i = 0; i < g_n; i++)
        free(g_res[i].samples);
    free(g_res);
    g_res = NULL;
    g_n = g_cap = 0;
}

/* The comparison value of a row: p50 for latencies (lower is better), the
 * rate for throughput (higher is better). */
static double row_value(const bench_result *r)
{
    if (r->metric == METRIC_RATE)
        return r->rate;
    return r->n ? (double)report_pct(r, 50) : NAN;
}

/* row / best row of another family with the same scenario and params. */
static double ratio_to_best_other(const bench_result *r)
{
    double best = NAN;
    for (size_t i = 0; i < g_n; i++) {
        const bench_result *o = &g_res[i];
        if (strcmp(o->scenario, r->scenario) || strcmp(o->params, r->params) ||
            !strcmp(o->family, r->family) || !o->n)
            continue;
        double v = row_value(o);
        if (isnan(best) || (r->metric == METRIC_RATE ? v > best : v < best))
            best = v;
    }
    double mine = row_value(r);
    if (isnan(best) || isnan(mine) || best == 0)
        return NAN;
    return mine / best;
}

static void fmt_ms(char *buf, size_t len, int64_t ns)
{
    if (ns < 0)
        snprintf(buf, len, "-");
    else
        snprintf(buf, len, "%.3f", (double)ns / 1e6);
}

/* Microseconds, or "-" when not known (negative). */
static void fmt_us(char *buf, size_t len, double us)
{
    if (us < 0)
        snprintf(buf, len, "-");
    else
        snprintf(buf, len, "%.0f", us);
}

static const bench_result *find(const char *scen, const char *backend, const char *params)
{
    for (size_t i = 0; i < g_n; i++)
        if (!strcmp(g_res[i].scenario, scen) && !strcmp(g_res[i].backend, backend) &&
            (!params || !strcmp(g_res[i].params, params)) && g_res[i].n)
            return &g_res[i];
    return NULL;
}

static void print_targets(FILE *f)
{
    fprintf(f, "\n== targets (batond) ==\n");
    const char *modes[] = {"baton-lease", "baton-stream"};
    for (int m = 0; m < 2; m++) {
        for (int k = 0; k < 2; k++) {
            char params[16];
            snprintf(params, sizeof params, "K=%d", k ? 16 : 1);
            const bench_result *r = find("handoff", modes[m], params);
            if (!r)
                continue;
            double p99 = (double)report_pct(r, 99) / 1e6;
            fprintf(f, "  handoff p99 < 1 ms, %-12s %-5s: %8.3f ms  %s\n", modes[m], params, p99,
                    p99 < 1.0 ? "MET" : "MISSED");
        }
    }
    const bench_result *rr = find("uncontended", "redis", NULL);
    for (int m = 0; m < 2 && rr; m++) {
        const bench_result *r = find("uncontended", modes[m], NULL);
        if (!r)
            continue;
        double x = (double)report_pct(r, 50) / (double)report_pct(rr, 50);
        fprintf(f, "  uncontended p50 <= 2x redis, %-12s: x%.2f  %s\n", modes[m], x,
                x <= 2.0 ? "MET" : "MISSED");
    }
    const bench_result *tr = find("throughput", "redis", "C=64 M=1024");
    const bench_result *te = find("throughput", "etcd", "C=64 M=1024");
    for (int m = 0; m < 2; m++) {
        const bench_result *r = find("throughput", modes[m], "C=64 M=1024");
        if (!r)
            continue;
        if (tr)
            fprintf(f, "  throughput C=64 M=1024 >= 0.5x redis, %-12s: x%.2f  %s\n", modes[m],
                    r->rate / tr->rate, r->rate >= 0.5 * tr->rate ? "MET" : "MISSED");
        if (te)
            fprintf(f, "  throughput C=64 M=1024 >= 10x etcd,   %-12s: x%.2f  %s\n", modes[m],
                    r->rate / te->rate, r->rate >= 10 * te->rate ? "MET" : "MISSED");
    }
    for (size_t i = 0; i < g_n; i++) {
        const bench_result *r = &g_res[i];
        if (strcmp(r->scenario, "scale") || r->rss_kib < 0 || !strstr(r->params, "waiting"))
            continue;
        double mib = (double)r->rss_kib / 1024.0;
        fprintf(f, "  scale RSS < 400 MiB (%s): %.1f MiB  %s\n", r->params, mib,
                mib < 400 ? "MET" : "MISSED");
        break;
    }
    const bench_result *cs = find("crash", "baton-stream", NULL);
    if (cs) {
        double mx = (double)report_pct(cs, 100) / 1e6;
        fprintf(f, "  stream-mode crash recovery < 100 ms (max of %zu): %.3f ms  %s\n", cs->n, mx,
                mx < 100 ? "MET" : "MISSED");
    }
}

void report_print(FILE *f)
{
    const char *done[16];
    size_t ndone = 0;
    for (size_t i = 0; i < g_n; i++) {
        const char *scen = g_res[i].scenario;
        int seen = 0;
        for (size_t j = 0; j < ndone; j++)
            seen |= !strcmp(done[j], scen);
        if (seen || ndone == 16)
            continue;
        done[ndone++] = scen;
        int rate = g_res[i].metric == METRIC_RATE;
        fprintf(f, "\n== %s ==\n", scen);
        if (rate)
            fprintf(f, "%-13s %-16s %10s %14s %12s %8s %8s %8s  %s\n", "backend", "params", "cycles", "rate/s",
                    "vs best oth", "cpu cli", "cpu srv", "cpu rds", "note");
        else
            fprintf(f, "%-13s %-16s %6s %10s %10s %10s %10s %10s %12s  %s\n", "backend", "params", "n",
                    "p50 ms", "p90 ms", "p99 ms", "max ms", "rss MiB", "vs best oth", "note");
        for (size_t k = i; k < g_n; k++) {
            const bench_result *r = &g_res[k];
            if (strcmp(r->scenario, scen))
                continue;
            double x = ratio_to_best_other(r);
            char ratio[32];
            if (isnan(x))
                snprintf(ratio, sizeof ratio, "-");
            else
                snprintf(ratio, sizeof ratio, "x%.2f", x);
            if (r->metric == METRIC_RATE) {
                char cpu[CPU_N][16];
                for (int k = 0; k < CPU_N; k++)
                    fmt_us(cpu[k], sizeof cpu[k], r->cpu_us[k]);
                fprintf(f, "%-13s %-16s %10zu %14.1f %12s %8s %8s %8s  %s\n", r->backend, r->params, r->n, r->rate,
                        ratio, cpu[0], cpu[1], cpu[2], r->note);
                continue;
            }
            char p50[24], p90[24], p99[24], mx[24], rss[24];
            fmt_ms(p50, sizeof p50, report_pct(r, 50));
            fmt_ms(p90, sizeof p90, report_pct(r, 90));
            fmt_ms(p99, sizeof p99, report_pct(r, 99));
            fmt_ms(mx, sizeof mx, report_pct(r, 100));
            if (r->rss_kib >= 0)
                snprintf(rss, sizeof rss, "%.1f", (double)r->rss_kib / 1024.0);
            else
                snprintf(rss, sizeof rss, "-");
            fprintf(f, "%-13s %-16s %6zu %10s %10s %10s %10s %10s %12s  %s\n", r->backend, r->params, r->n,
                    p50, p90, p99, mx, rss, ratio, r->note);
        }
    }
    fprintf(f, "\n(vs best oth: this row's p50 (latency) or rate (throughput) divided by the best row of\n"
               " another backend family with the same parameters; <1 is better for latency, >1 for rate.\n"
               " cpu cli / srv / rds: CPU microseconds per cycle of the bench's clients, the lock server\n"
               " (batond or etcd) and Redis, all on the same machine; - where not known or not used)\n");
    print_targets(f);
}

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            fprintf(f, "\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            fprintf(f, "\\u%04x", *s);
        else
            fputc(*s, f);
    }
    fputc('"', f);
}

int report_json(const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "baton-bench: %s: %s\n", path, strerror(errno));
        return -1;
    }
    fprintf(f, "{\"results\": [");
    for (size_t i = 0; i < g_n; i++) {
        const bench_result *r = &g_res[i];
        fprintf(f, "%s\n  {\"scenario\": ", i ? "," : "");
        json_str(f, r->scenario);
        fprintf(f, ", \"backend\": ");
        json_str(f, r->backend);
        fprintf(f, ", \"params\": ");
        json_str(f, r->params);
        fprintf(f, ", \"note\": ");
        json_str(f, r->note);
        fprintf(f, ", \"n\": %zu", r->n);
        double x = ratio_to_best_other(r);
        if (!isnan(x))
            fprintf(f, ", \"ratio_to_best_other\": %.4f", x);
        if (r->metric == METRIC_RATE) {
            fprintf(f, ", \"rate_per_s\": %.2f", r->rate);
            static const char *const names[CPU_N] = {"cpu_client_us_per_cycle", "cpu_server_us_per_cycle",
                                                     "cpu_redis_us_per_cycle"};
            for (int k = 0; k < CPU_N; k++)
                if (r->cpu_us[k] >= 0)
                    fprintf(f, ", \"%s\": %.1f", names[k], r->cpu_us[k]);
            fprintf(f, "}");
            continue;
        }
        if (r->rss_kib >= 0)
            fprintf(f, ", \"batond_rss_kib\": %ld", r->rss_kib);
        if (r->n)
            fprintf(f, ", \"p50_ns\": %lld, \"p90_ns\": %lld, \"p99_ns\": %lld, \"max_ns\": %lld",
                    (long long)report_pct(r, 50), (long long)report_pct(r, 90), (long long)report_pct(r, 99),
                    (long long)report_pct(r, 100));
        fprintf(f, ", \"samples_ns\": [");
        for (size_t k = 0; k < r->n; k++)
            fprintf(f, "%s%lld", k ? "," : "", (long long)r->samples[k]);
        fprintf(f, "]}");
    }
    fprintf(f, "\n]}\n");
    return fclose(f) == 0 ? 0 : -1;
}

/* Runs gnuplot on script; 0 on success. */
static int run_gnuplot(const char *script)
{
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        execlp("gnuplot", "gnuplot", script, (char *)NULL);
        _exit(127);
    }
    int st;
    if (waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "baton-bench: gnuplot %s failed (is gnuplot-nox installed?)\n", script);
        return -1;
    }
    return 0;
}

/* One CDF chart per distinct params of `scen` (handoff: one per K). */
static int plot_latency_cdf(FILE *gp, const char *dir, const char *scen)
{
    int charts = 0;
    for (size_t i = 0; i < g_n; i++) {
        const bench_result *r = &g_res[i];
        if (strcmp(r->scenario, scen))
            continue;
        int first = 1;
        for (size_t j = 0; j < i; j++)
            if (!strcmp(g_res[j].scenario, scen) && !strcmp(g_res[j].params, r->params))
                first = 0;
        if (!first)
            continue;
        char tag[sizeof r->params];
        snprintf(tag, sizeof tag, "%s", r->params);
        for (char *p = tag; *p; p++)
            if (*p == ' ' || *p == '=')
                *p = '_';
        fprintf(gp, "set output '%s/%s_%s.png'\n", dir, scen, tag);
        fprintf(gp, "set title '%s latency CDF, %s (release -> next grant)'\n", scen, r->params);
        fprintf(gp, "set xlabel 'latency (ms, log)'\nset ylabel 'fraction of samples'\nset logscale x\n"
                    "unset logscale y\nset yrange [0:1]\nset key bottom right\nset grid\n");
        fprintf(gp, "plot ");
        int series = 0;
        for (size_t k = i; k < g_n; k++) {
            const bench_result *o = &g_res[k];
            if (strcmp(o->scenario, scen) || strcmp(o->params, r->params) || !o->n)
                continue;
            char path[512];
            snprintf(path, sizeof path, "%s/%s_%s_%s.dat", dir, scen, tag, o->backend);
            FILE *d = fopen(path, "w");
            if (!d)
                return -1;
            for (size_t s = 0; s < o->n; s++)
                fprintf(d, "%.6f %.6f\n", (double)o->samples[s] / 1e6, (double)(s + 1) / (double)o->n);
            fclose(d);
            fprintf(gp, "%s'%s' using 1:2 with steps lw 2 title '%s'", series ? ", " : "", path, o->backend);
            series++;
        }
        fprintf(gp, "%s\n", series ? "" : "NaN notitle");
        charts++;
    }
    return charts;
}

static int plot_throughput(FILE *gp, const char *dir)
{
    /* One chart: cycles/s against clients, a line per backend and key count. */
    char keys[16][16];
    size_t nkeys = 0;
    const char *backends[8];
    size_t nb = 0;
    for (size_t i = 0; i < g_n; i++) {
        const bench_result *r = &g_res[i];
        if (strcmp(r->scenario, "throughput"))
            continue;
        const char *m = strstr(r->params, "M=");
        int dup = 0;
        for (size_t k = 0; m && k < nkeys; k++)
            dup |= !strcmp(keys[k], m);
        if (m && !dup && nkeys < 16)
            snprintf(keys[nkeys++], sizeof keys[0], "%s", m);
        dup = 0;
        for (size_t k = 0; k < nb; k++)
            dup |= !strcmp(backends[k], r->backend);
        if (!dup && nb < 8)
            backends[nb++] = r->backend;
    }
    if (!nkeys)
        return 0;
    fprintf(gp, "set output '%s/throughput.png'\n", dir);
    fprintf(gp, "set title 'throughput: acquire+release cycles/s against client threads'\n"
                "set xlabel 'client threads (log)'\nset ylabel 'cycles/s (log)'\nset logscale x\n"
                "set logscale y\nset autoscale y\nset key outside right\nset grid\n");
    fprintf(gp, "plot ");
    int series = 0;
    for (size_t b = 0; b < nb; b++) {
        for (size_t k = 0; k < nkeys; k++) {
            char path[512];
            snprintf(path, sizeof path, "%s/throughput_%s_%s.dat", dir, backends[b], keys[k] + 2);
            FILE *d = fopen(path, "w");
            if (!d)
                return -1;
            int pts = 0;
            for (size_t i = 0; i < g_n; i++) {
                const bench_result *r = &g_res[i];
                int c = 0;
                const char *m = strstr(r->params, "M=");
                if (strcmp(r->scenario, "throughput") || strcmp(r->backend, backends[b]) || !m ||
                    strcmp(m, keys[k]) || sscanf(r->params, "C=%d", &c) != 1 || r->rate <= 0)
                    continue;
                fprintf(d, "%d %.3f\n", c, r->rate);
                pts++;
            }
            fclose(d);
            if (!pts)
                continue;
            /* Colour = backend, dash and point = key count. */
            fprintf(gp, "%s'%s' using 1:2 with linespoints lw 2 lc %zu dt %zu pt %zu title '%s %s'",
                    series ? ", " : "", path, b + 1, k + 1, k + 5, backends[b], keys[k]);
            series++;
        }
    }
    fprintf(gp, "%s\n", series ? "" : "NaN notitle");
    return 1;
}

int report_plot(const char *dir)
{
    if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
        fprintf(stderr, "baton-bench: mkdir %s: %s\n", dir, strerror(errno));
        return -1;
    }
    char script[512];
    snprintf(script, sizeof script, "%s/charts.gp", dir);
    FILE *gp = fopen(script, "w");
    if (!gp)
        return -1;
    fprintf(gp, "set terminal pngcairo size 1000,600 noenhanced\n");
    int charts = 0, n;
    if ((n = plot_latency_cdf(gp, dir, "handoff")) > 0)
        charts += n;
    if ((n = plot_latency_cdf(gp, dir, "crash")) > 0)
        charts += n;
    if ((n = plot_throughput(gp, dir)) > 0)
        charts += n;
    fclose(gp);
    if (!charts)
        return 0;
    return run_gnuplot(script);
}
