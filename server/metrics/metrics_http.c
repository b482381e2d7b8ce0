#include "metrics_http.h"
#include "metrics.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <microhttpd.h>

#define HTTP_MAX_CONNECTIONS 128
#define HTTP_IDLE_TIMEOUT_S 3

struct metrics_http {
    struct MHD_Daemon *d;
    int port;
    const char *version;
};

static const char CONTENT_TYPE[] = "text/plain; version=0.0.4; charset=utf-8";

static enum MHD_Result reply_text(struct MHD_Connection *c, unsigned code, const char *text)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_PERSISTENT);
    if (r == NULL)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
    if (code == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    enum MHD_Result ok = MHD_queue_response(c, code, r);
    MHD_destroy_response(r);
    return ok;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **state)
{
    metrics_http *h = cls;
    static int first;
    if (*state == NULL) { /* headers only so far: answer once the body (if any) is read */
        *state = &first;
        return MHD_YES;
    }
    if (*upload_size) { /* a body we do not want: drop it */
        *upload_size = 0;
        return MHD_YES;
    }
    int get = strcmp(method, MHD_HTTP_METHOD_GET) == 0, head = strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
    if (!get && !head)
        return reply_text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed: use GET /metrics\n");
    if (strcmp(url, "/metrics") != 0)
        return reply_text(c, MHD_HTTP_NOT_FOUND, "not found: batond serves GET /metrics\n");

    metrics_snapshot *s = malloc(sizeof *s);
    if (s == NULL)
        return reply_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
    metrics_snapshot_take(s, h->version);
    size_t len = 0;
    char *text = metrics_render(s, &len);
    free(s);
    if (text == NULL)
        return reply_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
    struct MHD_Response *r = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
    if (r == NULL) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, CONTENT_TYPE);
    enum MHD_Result ok = MHD_queue_response(c, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ok;
}

/* "host:port" / "[v6]:port" -> a listening socket, or -1 with err set. */
static int listen_on(const char *addr, int *port, char *err, size_t errlen)
{
    char host[256];
    const char *colon = strrchr(addr, ':');
    if (colon == NULL || colon == addr || colon[1] == '\0') {
        snprintf(err, errlen, "metrics.listen: \"%s\" is not host:port", addr);
        return -1;
    }
    size_t hl = (size_t)(colon - addr);
    if (addr[0] == '[' && hl >= 2 && addr[hl - 1] == ']') {
        addr++;
        hl -= 2;
    }
    if (hl >= sizeof host) {
        snprintf(err, errlen, "metrics.listen: host too long");
        return -1;
    }
    memcpy(host, addr, hl);
    host[hl] = '\0';
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host[0] ? host : NULL, colon + 1, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "metrics.listen: cannot resolve \"%s\": %s", addr, gai_strerror(rc));
        return -1;
    }
    int fd = -1, e = 0;
    for (struct addrinfo *a = res; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) {
            e = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, a->ai_addr, a->ai_addrlen) != 0 || listen(fd, 64) != 0) {
            e = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0) {
        snprintf(err, errlen, "metrics.listen: cannot listen on %s: %s", addr, strerror(e));
        return -1;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    *port = 0;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET)
            *port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        else if (ss.ss_family == AF_INET6)
            *port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    return fd;
}

metrics_http *metrics_http_start(const char *listen, const char *version, char *err, size_t errlen)
{
    metrics_http *h = calloc(1, sizeof *h);
    if (h == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    h->version = version;
    int fd = listen_on(listen, &h->port, err, errlen);
    if (fd < 0) {
        free(h);
        return NULL;
    }
    h->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO, 0, NULL, NULL, on_request, h,
                            MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd, MHD_OPTION_CONNECTION_LIMIT,
                            (unsigned)HTTP_MAX_CONNECTIONS, MHD_OPTION_CONNECTION_TIMEOUT,
                            (unsigned)HTTP_IDLE_TIMEOUT_S, MHD_OPTION_END);
    if (h->d == NULL) {
        close(fd);
        free(h);
        snprintf(err, errlen, "metrics.listen: cannot start the HTTP server on %s", listen);
        return NULL;
    }
    return h;
}

int metrics_http_port(const metrics_http *h)
{
    return h ? h->port : 0;
}

void metrics_http_stop(metrics_http *h)
{
    if (h == NULL)
        return;
    MHD_stop_daemon(h->d); /* closes the listening socket too */
    free(h);
}
