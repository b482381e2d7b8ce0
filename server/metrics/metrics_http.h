#ifndef BATON_METRICS_HTTP_H
#define BATON_METRICS_HTTP_H

/*
 * The /metrics HTTP endpoint: libmicrohttpd on a thread of its own, off the
 * lock path. GET (or HEAD) /metrics answers the Prometheus text format from
 * a snapshot of the registry (metrics.h); other paths 404, other methods 405.
 * At most 128 connections; one idle for 3 s (a half-sent request included)
 * is closed, so a burst of junk connections blocks scrapes for 3 s at most.
 */

#include <stddef.h>

typedef struct metrics_http metrics_http;

/* Binds `listen` ("host:port", "[v6]:port"; port 0 = any free port) and
 * starts serving. Returns NULL with a message in err ("metrics.listen:
 * cannot listen on ADDR: reason"). `version` must outlive the server. */
metrics_http *metrics_http_start(const char *listen, const char *version, char *err, size_t errlen);
/* The TCP port bound. */
int metrics_http_port(const metrics_http *h);
/* Stops the thread, closes the socket, frees h. NULL is ignored. */
void metrics_http_stop(metrics_http *h);

#endif
