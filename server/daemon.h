/*
 * daemon.h - batond's life once its configuration is known: one event loop
 * (the libevent loop thread) with the store, the engine and the transport
 * on it, built from the parsed configuration, run until a graceful stop,
 * and taken down in order (transport, engine, store, loop).
 *
 * main.c parses the flags and the configuration and owns the signals; it
 * hands the configuration here and calls daemon_stop on SIGTERM / SIGINT.
 */
#ifndef BATON_DAEMON_H
#define BATON_DAEMON_H

#include <event2/event.h>

#include "config.h"

typedef struct baton_daemon baton_daemon;

/* Builds the event loop, the store, the engine and the transport (the
 * transport serves from here on). Returns 0 with *out set, or batond's exit
 * status with the reason on stderr or in the log: 2 for a Redis address
 * that cannot be used, 1 for any other failure. cfg must outlive *out. */
int daemon_new(const baton_config *cfg, baton_daemon **out);

/* The event loop, for main.c's signal events. */
struct event_base *daemon_base(baton_daemon *d);

/* Runs the event loop until it stops. Returns 0 after a graceful stop
 * (daemon_stop), 1 if the loop ended on its own. */
int daemon_run(baton_daemon *d);

/* Starts the graceful stop (the transport drains, then the loop ends);
 * once only, later calls do nothing. Loop thread only. */
void daemon_stop(baton_daemon *d);

/* SIGHUP: re-reads the TLS files for new connections; logs the outcome.
 * Loop thread only. */
void daemon_reload_tls(baton_daemon *d);

/* Frees everything daemon_new built. A transport still serving (a daemon
 * that never ran, or never stopped) is shut down properly first. */
void daemon_free(baton_daemon *d);

#endif
