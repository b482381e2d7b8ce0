/*
 * daemon.c - the configuration turned into each module's options, the
 * modules built on one event loop, the loop run, and the shutdown sequence.
 * See daemon.h.
 */
#include "daemon.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/grpc.h>

#include "engine.h"
#include "log.h"
#include "operate.h"
#include "store.h"
#include "transport.h"

#define EXIT_USAGE 2
#ifndef BATON_VERSION
#define BATON_VERSION "0.1.0"
#endif

struct baton_daemon {
    const baton_config *cfg;
    struct event_base *base;
    baton_store *store;
    baton_engine *engine;
    baton_transport *transport;
    operate *ops;            /* metrics and alerts (issue #18); NULL when neither is configured */
    const char **pool_names; /* the transport's limits point here */
    int32_t *pool_devices;
    const char *const **pool_dev_names;
    int64_t *pool_capacity;
    int stopping; /* daemon_stop was called */
};

static store_redis_opts store_opts_of(const baton_config *cfg)
{
    store_redis_opts so = {
        .address = cfg->redis_address,
        .username = cfg->redis_username,
        .password = cfg->redis_password,
        .sentinel_password = cfg->redis_sentinel_password,
        .database = cfg->redis_database,
        .key_prefix = cfg->key_prefix,
        .command_timeout_ms = cfg->redis_command_timeout_ms,
        .reconnect_ms = cfg->redis_reconnect_ms,
        .keyspace_events = cfg->redis_keyspace_events,
        .min_replicas = cfg->redis_min_replicas,
        .replica_timeout_ms = cfg->redis_replica_timeout_ms,
        .failover_grace_ms = cfg->redis_failover_grace_ms,
    };
    return so;
}

static engine_config engine_opts_of(const baton_config *cfg)
{
    engine_config ec = {.recheck_ms = cfg->recheck_ms, .liveness_ms = cfg->waiter_liveness_ms};
    return ec;
}

/* The pools as the transport's parallel arrays (kept in d). */
static int transport_opts_of(baton_daemon *d, transport_opts *to)
{
    const baton_config *cfg = d->cfg;
    if (cfg->npools) {
        d->pool_names = calloc(cfg->npools, sizeof *d->pool_names);
        d->pool_devices = calloc(cfg->npools, sizeof *d->pool_devices);
        d->pool_dev_names = calloc(cfg->npools, sizeof *d->pool_dev_names);
        d->pool_capacity = calloc(cfg->npools, sizeof *d->pool_capacity);
        if (d->pool_names == NULL || d->pool_devices == NULL || d->pool_dev_names == NULL ||
            d->pool_capacity == NULL)
            return -1;
        for (size_t i = 0; i < cfg->npools; i++) {
            d->pool_names[i] = cfg->pools[i].name;
            d->pool_devices[i] = cfg->pools[i].devices;
            d->pool_dev_names[i] = (const char *const *)cfg->pools[i].device_names;
            d->pool_capacity[i] = cfg->pools[i].capacity;
        }
    }
    *to = (transport_opts){
        .listen = cfg->listen,
        .limits =
            {
                .default_ttl_ms = cfg->default_ttl_ms,
                .min_ttl_ms = cfg->min_ttl_ms,
                .max_ttl_ms = cfg->max_ttl_ms,
                .max_wait_ms = cfg->max_wait_ms,
                .max_pool_devices = cfg->max_pool_devices,
                .pool_names = d->pool_names,
                .pool_devices = d->pool_devices,
                .pool_device_names = d->pool_dev_names,
                .pool_capacity = d->pool_capacity,
                .npools = cfg->npools,
            },
        .max_concurrent_streams = cfg->max_concurrent_streams,
        .max_message_bytes = cfg->max_message_bytes,
        .keepalive_time_ms = cfg->keepalive_time_ms,
        .keepalive_timeout_ms = cfg->keepalive_timeout_ms,
        .sec = &cfg->sec,
    };
    return 0;
}

int daemon_new(const baton_config *cfg, baton_daemon **out)
{
    *out = NULL;
    baton_daemon *d = calloc(1, sizeof *d);
    if (d == NULL) {
        fprintf(stderr, "batond: out of memory\n");
        return 1;
    }
    d->cfg = cfg;
    grpc_init(); /* undone by daemon_free */
    int status = 1;
    d->base = event_base_new();
    if (d->base == NULL) {
        LOG_ERROR("cannot create the event loop");
        goto fail;
    }
    /* Two priorities: 0 for Redis wake-ups and command flushes (store_redis.c),
     * 1 (the default) for everything else. The store depends on this call
     * being made before it adds its events; if store_redis_new comes to set
     * the priorities on the base itself, this call goes. */
    if (event_base_priority_init(d->base, 2) != 0)
        LOG_WARN("cannot set up event priorities; wake-ups share one queue");

    store_redis_opts so = store_opts_of(cfg);
    d->store = store_redis_new(d->base, &so);
    if (d->store == NULL) {
        fprintf(stderr, "batond: redis.address: cannot use \"%s\"\n", cfg->redis_address);
        status = EXIT_USAGE;
        goto fail;
    }
    engine_config ec = engine_opts_of(cfg);
    d->engine = engine_new(d->base, d->store, &ec); /* sets store->hooks to itself */
    if (d->engine == NULL) {
        LOG_ERROR("cannot create the engine");
        goto fail;
    }
    transport_opts to;
    if (transport_opts_of(d, &to) != 0) {
        LOG_ERROR("out of memory");
        goto fail;
    }
    char err[512];
    d->transport = transport_new(d->base, d->engine, &to, err, sizeof err);
    if (d->transport == NULL) {
        fprintf(stderr, "batond: %s\n", err);
        /* An unreadable or mismatched TLS file is a configuration error. */
        if (strncmp(err, "tls.", 4) == 0)
            status = EXIT_USAGE;
        goto fail;
    }
    if (operate_start(d->base, cfg, d->engine, d->store, d->transport, BATON_VERSION, &d->ops, err,
                      sizeof err) != 0) {
        fprintf(stderr, "batond: %s\n", err);
        goto fail;
    }
    *out = d;
    return 0;
fail:
    daemon_free(d);
    return status;
}

struct event_base *daemon_base(baton_daemon *d)
{
    return d->base;
}

/* "host:0" with the port actually bound, for the log line. */
static void bound_address(const char *listen, int port, char *out, size_t outlen)
{
    const char *colon = strrchr(listen, ':');
    if (strncmp(listen, "unix:", 5) == 0 || colon == NULL)
        snprintf(out, outlen, "%s", listen);
    else
        snprintf(out, outlen, "%.*s:%d", (int)(colon - listen), listen, port);
}

static void on_transport_done(void *ud)
{
    baton_daemon *d = ud;
    event_base_loopbreak(d->base);
}

int daemon_run(baton_daemon *d)
{
    char addr[600];
    bound_address(d->cfg->listen, transport_port(d->transport), addr, sizeof addr);
    LOG_INFO("batond listening on %s (redis %s)%s%s", addr, d->cfg->redis_address,
             d->cfg->sec.tls.cert_file[0] ? ", TLS" : "", d->cfg->sec.auth ? ", bearer tokens required" : "");
    if (operate_metrics_port(d->ops)) {
        bound_address(d->cfg->metrics_listen, operate_metrics_port(d->ops), addr, sizeof addr);
        LOG_INFO("metrics on http://%s/metrics", addr);
    }
    event_base_dispatch(d->base);
    LOG_INFO("batond stopped");
    return d->stopping ? 0 : 1;
}

void daemon_reload_tls(baton_daemon *d)
{
    char err[512];
    if (transport_reload_tls(d->transport, err, sizeof err) == 0)
        LOG_INFO("SIGHUP: TLS certificate, key and client CA re-read; new connections use them");
    else
        LOG_WARN("SIGHUP: TLS not reloaded (%s); the previous files stay in use", err);
}

void daemon_stop(baton_daemon *d)
{
    if (d->stopping)
        return;
    d->stopping = 1;
    transport_shutdown(d->transport, on_transport_done, d);
}

void daemon_free(baton_daemon *d)
{
    if (d == NULL)
        return;
    if (d->transport && !d->stopping) {
        /* Still serving: stop it properly before freeing. */
        d->stopping = 1;
        transport_shutdown(d->transport, on_transport_done, d);
        event_base_dispatch(d->base);
    }
    operate_stop(d->ops); /* its timer and lock view go before the loop and the engine */
    transport_free(d->transport);
    if (d->engine)
        engine_free(d->engine);
    if (d->store)
        d->store->ops->free(d->store);
    if (d->base)
        event_base_free(d->base);
    free(d->pool_names);
    free(d->pool_devices);
    free(d->pool_dev_names);
    free(d->pool_capacity);
    free(d);
    grpc_shutdown();
}
