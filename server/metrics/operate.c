#include "operate.h"
#include "lock_view.h"
#include "log.h"
#include "metrics.h"
#include "metrics_http.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <event2/event.h>

struct operate {
    baton_engine *engine;
    baton_store *store;
    baton_transport *transport;
    metrics_http *http;
    struct event *tick;
    int was_up, ever_up;
    lock_view_rule *rules;
    size_t nrules;
};

static int64_t unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void long_held_fired(void *ud, const lock_view_hold *h)
{
    operate *o = ud;
    log_field f[] = {LOG_STR("key", h->key), LOG_STR("owner", h->owner), LOG_INT("fencing", h->fencing),
                     LOG_INT("age_ms", h->age_ms)};
    log_fields(LOG_LEVEL_WARN, f, sizeof f / sizeof f[0],
               "long-held lock: '%s' held by '%s' (fencing %" PRIu64 ") for %" PRId64
               " ms, longer than alerts.long_held prefix '%s' allows (%" PRId64 " ms)",
               h->key, h->owner, h->fencing, h->age_ms, h->rule->prefix, h->rule->after_ms);
    store_event ev = {.type = STORE_EV_LONG_HELD,
                      .key = h->key,
                      .owner = h->owner,
                      .fencing = h->fencing,
                      .at_unix_ms = h->acquired_unix_ms + h->age_ms};
    engine_watch_notify(o->engine, &ev);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    operate *o = arg;
    int up = store_redis_is_up(o->store);
    if (up && !o->was_up && o->ever_up)
        lock_view_reset(); /* a reconnect: events may have been missed meanwhile */
    o->was_up = up;
    o->ever_up |= up;
    engine_stats st;
    engine_get_stats(o->engine, &st);
    metrics_gauges g = {
        .waiters = (int64_t)st.waiting,
        .streams_open = (int64_t)transport_live_calls(o->transport),
        .watchers = (int64_t)st.watches,
        .redis_up = up,
    };
    metrics_publish(&g);
    if (o->nrules)
        lock_view_sweep(o->rules, o->nrules, unix_ms(), long_held_fired, o);
}

int operate_start(struct event_base *base, const baton_config *cfg, baton_engine *engine, baton_store *store,
                  baton_transport *transport, const char *version, operate **out, char *err, size_t errlen)
{
    *out = NULL;
    int metrics_on = cfg->metrics_listen && cfg->metrics_listen[0];
    if (!metrics_on && cfg->nlong_held == 0 && !cfg->log_lock_events)
        return 0;
    operate *o = calloc(1, sizeof *o);
    if (!o)
        goto nomem;
    o->engine = engine;
    o->store = store;
    o->transport = transport;
    if (cfg->nlong_held) {
        o->rules = calloc(cfg->nlong_held, sizeof *o->rules);
        if (!o->rules)
            goto nomem;
        for (size_t i = 0; i < cfg->nlong_held; i++)
            o->rules[i] = (lock_view_rule){cfg->long_held[i].prefix, cfg->long_held[i].after_ms};
        o->nrules = cfg->nlong_held;
    }
    if (metrics_on) {
        const char **pools = cfg->npools ? calloc(cfg->npools, sizeof *pools) : NULL;
        if (cfg->npools && !pools)
            goto nomem;
        for (size_t i = 0; i < cfg->npools; i++)
            pools[i] = cfg->pools[i].name;
        metrics_enable(pools, cfg->npools);
        free(pools);
        o->http = metrics_http_start(cfg->metrics_listen, version, err, errlen);
        if (!o->http) {
            operate_stop(o);
            return -1;
        }
    }
    lock_view_enable();
    o->tick = event_new(base, -1, EV_PERSIST, on_tick, o);
    if (!o->tick)
        goto nomem;
    struct timeval tv = {0, OPERATE_TICK_MS * 1000};
    event_add(o->tick, &tv);
    on_tick(-1, 0, o);
    *out = o;
    return 0;
nomem:
    operate_stop(o);
    snprintf(err, errlen, "out of memory");
    return -1;
}

int operate_metrics_port(const operate *o)
{
    return o ? metrics_http_port(o->http) : 0;
}

void operate_stop(operate *o)
{
    if (!o)
        return;
    metrics_http_stop(o->http);
    if (o->tick)
        event_free(o->tick);
    lock_view_shutdown();
    metrics_reset(); /* after the HTTP thread is gone */
    free(o->rules);
    free(o);
}
