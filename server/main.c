/*
 * batond: the Baton lock server.
 *
 *   batond [--config FILE] [--listen ADDR] [--redis ADDR] [--log-level L]
 *
 * Configuration: defaults, then the YAML file, then the flags, then a
 * consistency check. A bad configuration exits 2 with the reason on stderr.
 * SIGTERM / SIGINT shut down gracefully (exit 0); a second signal exits at once.
 * SIGHUP re-reads the TLS certificate, key and client CA (open connections stay).
 *
 * This file holds the flags and the signals; daemon.c builds and runs the
 * modules from the configuration.
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
#include "daemon.h"
#include "log.h"

#ifndef BATON_VERSION
#define BATON_VERSION "0.1.0"
#endif

#define EXIT_USAGE 2

static void usage(FILE *f)
{
    fprintf(f, "usage: batond [--config FILE] [--listen ADDR] [--redis ADDR] [--log-level L]\n"
               "              [--tls-cert FILE --tls-key FILE [--tls-client-ca FILE]]\n"
               "              [--metrics-listen ADDR] [--log-format F] [--check-config] [--help] [--version]\n"
               "  --config FILE     YAML configuration (see deploy/batond.yaml)\n"
               "  --listen ADDR     gRPC listen address, e.g. 127.0.0.1:50051 (port 0: any free port)\n"
               "  --redis ADDR      Redis address: host:port, redis://, unix:/path, sentinel://H:P,.../NAME,\n"
               "                    cluster://H:P,... (seed nodes)\n"
               "  --log-level L     debug | info | warn | error\n"
               "  --tls-cert FILE   serve TLS with this PEM certificate chain (tls.cert_file)\n"
               "  --tls-key FILE    ...and this PEM private key (tls.key_file)\n"
               "  --tls-client-ca FILE  verify client certificates against this CA (tls.client_ca_file)\n"
               "  --metrics-listen ADDR  serve Prometheus GET /metrics on host:port (\"\": off)\n"
               "  --log-format F    text | json (one JSON object per line)\n"
               "  --check-config    check the configuration, print the settings in effect (with\n"
               "                    where each came from) and exit: 0 if valid, 2 if not\n");
}

typedef struct cli_flags {
    const char *config;
    const char *listen;
    const char *redis;
    const char *log_level;
    const char *tls_cert, *tls_key, *tls_client_ca;
    const char *metrics_listen;
    const char *log_format;
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
        {"tls-cert", required_argument, NULL, 'T'},
        {"tls-key", required_argument, NULL, 'K'},
        {"tls-client-ca", required_argument, NULL, 'A'},
        {"metrics-listen", required_argument, NULL, 'M'},
        {"log-format", required_argument, NULL, 'F'},
        {NULL, 0, NULL, 0},
    };
    memset(f, 0, sizeof *f);
    opterr = 0;
    int ch;
    while ((ch = getopt_long(argc, argv, ":c:l:r:L:hVCT:K:A:", opts, NULL)) != -1) {
        switch (ch) {
        case 'c': f->config = optarg; break;
        case 'l': f->listen = optarg; break;
        case 'r': f->redis = optarg; break;
        case 'L': f->log_level = optarg; break;
        case 'M': f->metrics_listen = optarg; break;
        case 'F': f->log_format = optarg; break;
        case 'C': f->check_config = 1; break;
        case 'T': f->tls_cert = optarg; break;
        case 'K': f->tls_key = optarg; break;
        case 'A': f->tls_client_ca = optarg; break;
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
    } flags[] = {{"listen", f->listen},
                 {"redis.address", f->redis},
                 {"log_level", f->log_level},
                 {"metrics.listen", f->metrics_listen},
                 {"log_format", f->log_format}};
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) {
        if (flags[i].value && config_override(cfg, flags[i].path, flags[i].value) != 0) {
            fprintf(stderr, "batond: out of memory\n");
            return -1;
        }
    }
    const struct {
        const char *path, *value;
    } tls_flags[] = {{"tls.cert_file", f->tls_cert}, {"tls.key_file", f->tls_key},
                     {"tls.client_ca_file", f->tls_client_ca}};
    for (size_t i = 0; i < sizeof tls_flags / sizeof tls_flags[0]; i++) {
        if (tls_flags[i].value && config_security_override(cfg, tls_flags[i].path, tls_flags[i].value) != 0) {
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

/* SIGHUP: new TLS files for new connections. */
static void on_sighup(evutil_socket_t sig, short what, void *ud)
{
    (void)sig;
    (void)what;
    daemon_reload_tls(ud);
}

static void on_signal(evutil_socket_t sig, short what, void *ud)
{
    static int stopping;
    (void)what;
    if (stopping) {
        LOG_WARN("second signal %d: exiting at once", (int)sig);
        _exit(1);
    }
    stopping = 1;
    LOG_INFO("signal %d: shutting down", (int)sig);
    daemon_stop(ud);
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
    log_set_format((log_format)log_format_parse(cfg.log_format));
    log_set_lock_events(cfg.log_lock_events);
    signal(SIGPIPE, SIG_IGN);

    baton_daemon *d = NULL;
    int status = daemon_new(&cfg, &d);
    if (status != 0) {
        config_free(&cfg);
        return status;
    }
    struct event_base *base = daemon_base(d);
    struct event *sigterm = evsignal_new(base, SIGTERM, on_signal, d);
    struct event *sigint = evsignal_new(base, SIGINT, on_signal, d);
    struct event *sighup = evsignal_new(base, SIGHUP, on_sighup, d);
    if (sigterm == NULL || sigint == NULL || sighup == NULL || evsignal_add(sigterm, NULL) != 0 ||
        evsignal_add(sigint, NULL) != 0 || evsignal_add(sighup, NULL) != 0) {
        LOG_ERROR("cannot install signal handlers");
        status = 1; /* daemon_free stops the serving transport properly */
    } else {
        status = daemon_run(d);
    }
    if (sigterm)
        event_free(sigterm);
    if (sigint)
        event_free(sigint);
    if (sighup)
        event_free(sighup);
    daemon_free(d);
    config_free(&cfg);
    return status;
}
