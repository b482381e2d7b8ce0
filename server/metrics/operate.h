#ifndef BATON_OPERATE_H
#define BATON_OPERATE_H

/*
 * batond's operator-facing side, started by main once the transport serves:
 *   - the /metrics HTTP server (metrics.listen; its own thread), and the
 *     hooks' registry turned on;
 *   - a timer on the loop thread that publishes what only the loop can read
 *     (waiters, open calls, watchers, Redis up) every OPERATE_TICK_MS, starts
 *     the lock view over after a Redis reconnect, and applies the
 *     alerts.long_held rules: each hold older than its rule is logged once
 *     at warn and reported once to watchers as LONG_HELD.
 * Loop thread only. Nothing here runs when neither metrics nor alerts are
 * configured.
 */

#include <stddef.h>

#include "config.h"
#include "engine.h"
#include "store.h"
#include "transport.h"

#define OPERATE_TICK_MS 250

typedef struct operate operate;

/* Returns 0 and *out (NULL when nothing is configured), or -1 with a
 * message in err (the metrics port cannot be bound). `cfg` and `version`
 * must outlive the result. */
int operate_start(struct event_base *base, const baton_config *cfg, baton_engine *engine, baton_store *store,
                  baton_transport *transport, const char *version, operate **out, char *err, size_t errlen);
/* The metrics port bound (0 when off). */
int operate_metrics_port(const operate *o);
/* Stops the HTTP thread and the timer; frees o. NULL is ignored. */
void operate_stop(operate *o);

#endif
