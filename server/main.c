/*
 * batond: the Baton lock server.
 *
 *   batond [--config FILE] [--listen ADDR] [--redis ADDR] [--log-level L]
 *
 * Configuration: defaults, then the YAML file, then the flags, then a
 * consistency check. A bad configuration exits 2 with the reason on stderr.
 * SIGTERM / SIGINT shut down gracefully (exit 0); a second signal exits at once.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <grpc/grpc.h>

#include "config.h"
#include "engine.h"
#include "log.h"
#include "store.h"
#include "transport.h"

#ifndef BATON_VERSION
#define BATON_VERSION "0.1.0"
#endif

#define EXIT_USAGE 2

typedef struct daemon_state {
    struct event_base *base;
    baton_transport *transport;
    int stopping;
} daemon_state;

static void usage(FILE *f)
{
    fprintf(f, "usage: batond [--config FILE] [--listen ADDR] [--redis ADDR] [--log-level L]\n"
               "              [--check-config] [--help] [--version]\n"
               "  --config FILE     YAML configuration (see deploy/batond.yaml)\n"
               "  --listen ADDR     gRPC listen address, e.g. 127.0.0.1:50051 (port 0: any free port)\n"
               "  --redis ADDR      Redis address: host:port or unix:/path/to/redis.sock\n"
               "  --log-level L     debug | info | warn | error\n"
               "  --check-config    check the configuration, print the settings in effect (with\n"
               "                    where each came from) and exit: 0 if valid, 2 if not\n");
}

typedef struct cli_flags {
    const char *config;
    const char *listen;
    const char *redis;
    const char *log_level;
    int check_config;
} cli_flags;

/* Returns 0 to run, 1 when --help/--version already printed, -1 on a bad flag. */
static int parse_flags(int argc, char **argv, cli_flags *f)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"listen", required_argument, NULL, 'l'},
        {"redis", required_argument, NULL, 'r'},
        {"log-level", required_argument, NULL, 'L'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {"check-config", no_argument, NULL, 'C'},
        {NULL, 0, NULL, 0},
    };
    memset(f, 0, sizeof *f);
    opterr = 0;
    int ch;
    while ((ch = getopt_long(argc, argv, ":c:l:r:L:hVC", opts, NULL)) != -1) {
        switch (ch) {
        case 'c': f->config = optarg; break;
        case 'l': f->listen = optarg; break;
        case 'r': f->redis = optarg; break;
        case 'L': f->log_level = optarg; break;
        case 'C': f->check_config = 1; break;
        case 'h': usage(stdout); return 1;
        case 'V': printf("batond %s (grpc %s)\n", BATON_VERSION, grpc_version_string()); return 1;
        case ':':
            fprintf(stderr, "batond: option %s needs a value\n", argv[optind - 1]);
            usage(stderr);
            return -1;
        default:
            fprintf(stderr, "batond: unknown option %s\n", argv[optind - 1]);
            usage(stderr);
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "batond: unexpected argument %s\n", argv[optind]);
        usage(stderr);
        return -1;
    }
    return 0;
}

/* defaults -> file -> flags -> check. Returns 0 or -1 (message on stderr). */
static int load_config(baton_config *cfg, const cli_flags *f)
{
    char err[1024];
    config_defaults(cfg);
    if (f->config && config_load_file(cfg, f->config, err, sizeof err) != 0) {
        fprintf(stderr, "batond: %s\n", err);
        return -1;
    }
    const struct {
        const char *path, *value;
    } flags[] = {{"listen", f->listen}, {"redis.address", f->redis}, {"log_level", f->log_level}};
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) {
        if (flags[i].value && config_override(cfg, flags[i].path, flags[i].value) != 0) {
            fprintf(stderr, "batond: out of memory\n");
            return -1;
        }
    }
    if (config_check(cfg, err, sizeof err) != 0) {
        fprintf(stderr, "batond: %s\n", err);
        return -1;
    }
    return 0;
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
    daemon_state *d = ud;
    event_base_loopbreak(d->base);
}

static void on_signal(evutil_socket_t sig, short what, void *ud)
{
    daemon_state *d = ud;
    if (d->stopping) {
        LOG_WARN("second signal %d: exiting at once", (int)sig);
        _exit(1);
    }
    d->stopping = 1;
    LOG_INFO("signal %d: shutting down", (int)sig);
    transport_shutdown(d->transport, on_transport_done, d);
}

int main(int argc, char **argv)
{
    cli_flags flags;
    int rc = parse_flags(argc, argv, &flags);
    if (rc != 0)
        return rc > 0 ? 0 : EXIT_USAGE;

    baton_config cfg;
    if (load_config(&cfg, &flags) != 0) {
        config_free(&cfg);
        return EXIT_USAGE;
    }
    if (flags.check_config) {
        char *yaml = config_to_yaml(&cfg);
        config_free(&cfg);
        if (yaml == NULL) {
            fprintf(stderr, "batond: out of memory\n");
            return 1;
        }
        printf("# batond --check-config: the configuration is valid; settings in effect:\n%s", yaml);
        free(yaml);
        return 0;
    }
    log_set_level((log_level)log_level_parse(cfg.log_level));
    signal(SIGPIPE, SIG_IGN);

    int status = 1;
    daemon_state d = {0};
    baton_store *store = NULL;
    baton_engine *engine = NULL;
    struct event *sigterm = NULL, *sigint = NULL;
    const char **pool_names = NULL;
    int32_t *pool_devices = NULL;

    grpc_init();
    d.base = event_base_new();
    if (d.base == NULL) {
        LOG_ERROR("cannot create the event loop");
        goto done;
    }
    /* Two priorities: 0 for Redis wake-ups and command flushes (store_redis.c),
     * 1 (the default) for everything else. */
    if (event_base_priority_init(d.base, 2) != 0)
        LOG_WARN("cannot set up event priorities; wake-ups share one queue");

    store_redis_opts so = {
        .address = cfg.redis_address,
        .password = cfg.redis_password,
        .database = cfg.redis_database,
        .key_prefix = cfg.key_prefix,
        .command_timeout_ms = cfg.redis_command_timeout_ms,
        .reconnect_ms = cfg.redis_reconnect_ms,
        .keyspace_events = cfg.redis_keyspace_events,
    };
    store = store_redis_new(d.base, &so);
    if (store == NULL) {
        fprintf(stderr, "batond: redis.address: cannot use \"%s\"\n", cfg.redis_address);
        status = EXIT_USAGE;
        goto done;
    }
    engine_config ec = {.recheck_ms = cfg.recheck_ms, .liveness_ms = cfg.waiter_liveness_ms};
    engine = engine_new(d.base, store, &ec); /* sets store->hooks to itself */
    if (engine == NULL) {
        LOG_ERROR("cannot create the engine");
        goto done;
    }

    if (cfg.npools) {
        pool_names = calloc(cfg.npools, sizeof *pool_names);
        pool_devices = calloc(cfg.npools, sizeof *pool_devices);
        if (pool_names == NULL || pool_devices == NULL) {
            LOG_ERROR("out of memory");
            goto done;
        }
        for (size_t i = 0; i < cfg.npools; i++) {
            pool_names[i] = cfg.pools[i].name;
            pool_devices[i] = cfg.pools[i].devices;
        }
    }
    transport_opts to = {
        .listen = cfg.listen,
        .limits =
            {
                .default_ttl_ms = cfg.default_ttl_ms,
                .min_ttl_ms = cfg.min_ttl_ms,
                .max_ttl_ms = cfg.max_ttl_ms,
                .max_wait_ms = cfg.max_wait_ms,
                .max_pool_devices = cfg.max_pool_devices,
                .pool_names = pool_names,
                .pool_devices = pool_devices,
                .npools = cfg.npools,
            },
        .max_concurrent_streams = cfg.max_concurrent_streams,
        .max_message_bytes = cfg.max_message_bytes,
        .keepalive_time_ms = cfg.keepalive_time_ms,
        .keepalive_timeout_ms = cfg.keepalive_timeout_ms,
    };
    char err[512];
    d.transport = transport_new(d.base, engine, &to, err, sizeof err);
    if (d.transport == NULL) {
        fprintf(stderr, "batond: %s\n", err);
        goto done;
    }

    sigterm = evsignal_new(d.base, SIGTERM, on_signal, &d);
    sigint = evsignal_new(d.base, SIGINT, on_signal, &d);
    if (sigterm == NULL || sigint == NULL || evsignal_add(sigterm, NULL) != 0 ||
        evsignal_add(sigint, NULL) != 0) {
        LOG_ERROR("cannot install signal handlers");
        /* The transport is serving: stop it properly before freeing. */
        transport_shutdown(d.transport, on_transport_done, &d);
        event_base_dispatch(d.base);
        goto done;
    }

    char addr[600];
    bound_address(cfg.listen, transport_port(d.transport), addr, sizeof addr);
    LOG_INFO("batond listening on %s (redis %s)", addr, cfg.redis_address);

    event_base_dispatch(d.base);
    status = d.stopping ? 0 : 1;
    LOG_INFO("batond stopped");

done:
    if (sigterm)
        event_free(sigterm);
    if (sigint)
        event_free(sigint);
    transport_free(d.transport);
    if (engine)
        engine_free(engine);
    if (store)
        store->ops->free(store);
    if (d.base)
        event_base_free(d.base);
    free(pool_names);
    free(pool_devices);
    config_free(&cfg);
    grpc_shutdown();
    return status;
}
