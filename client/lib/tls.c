/*
 * tls.c - the channel's security: TLS (CA, client certificate and key,
 * server name) and the bearer token sent with every call
 * (baton_client_options.tls*, auth_token).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define PEM_MAX (1 << 20)

static int set(const char *s)
{
    return s != NULL && s[0] != '\0';
}

/* The whole file into *out (a NUL-terminated heap string). 0 or an error. */
static int read_pem(const char *field, const char *path, char **out)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return baton__fail(BATON_ERR_INVALID, "%s: cannot read %s: %s", field, path, strerror(errno));
    char *buf = malloc(PEM_MAX + 1);
    size_t n = buf ? fread(buf, 1, PEM_MAX + 1, f) : 0;
    fclose(f);
    if (buf == NULL)
        return baton__fail(BATON_ERR_NOMEM, "out of memory");
    if (n == 0 || n > PEM_MAX) {
        free(buf);
        return baton__fail(BATON_ERR_INVALID, "%s: %s is %s", field, path, n ? "larger than 1 MiB" : "empty");
    }
    buf[n] = '\0';
    *out = buf;
    return 0;
}

/* A token travels as an HTTP/2 header value: printable ASCII only. */
static int token_ok(const char *t)
{
    for (; *t; t++)
        if (*t < 0x21 || *t > 0x7e)
            return 0;
    return 1;
}

int baton__security_init(baton_client *c, const baton_client_options *opts)
{
    if (opts->auth_token == NULL)
        return 0;
    if (!set(opts->auth_token) || !token_ok(opts->auth_token))
        return baton__fail(BATON_ERR_INVALID, "auth_token must be printable ASCII without spaces");
    size_t n = strlen(opts->auth_token) + sizeof "Bearer ";
    if ((c->auth.value = malloc(n)) == NULL)
        return baton__fail(BATON_ERR_NOMEM, "out of memory");
    snprintf(c->auth.value, n, "Bearer %s", opts->auth_token);
    c->auth.md.key = "authorization";
    c->auth.md.value = c->auth.value;
    return 0;
}

int baton__channel_open(baton_client *c, const char *target, const baton_client_options *opts,
                        const grpc_c_channel_options *copts)
{
    int tls = opts->tls || set(opts->tls_ca_file) || set(opts->tls_cert_file) || set(opts->tls_key_file) ||
              set(opts->tls_server_name);
    if (!tls) {
        c->channel = grpc_c_channel_create_insecure(target, copts);
        return c->channel ? 0 : baton__fail(BATON_ERR_NOMEM, "cannot create a channel to %s", target);
    }
    if (set(opts->tls_cert_file) != set(opts->tls_key_file))
        return baton__fail(BATON_ERR_INVALID, "tls_cert_file and tls_key_file go together (a client certificate "
                                              "and its key)");
    grpc_c_tls_options t = {.server_name = opts->tls_server_name};
    char *ca = NULL, *cert = NULL, *key = NULL;
    int rc = 0;
    if (set(opts->tls_ca_file))
        rc = read_pem("tls_ca_file", opts->tls_ca_file, &ca);
    if (rc == 0 && set(opts->tls_cert_file)) {
        rc = read_pem("tls_cert_file", opts->tls_cert_file, &cert);
        if (rc == 0)
            rc = read_pem("tls_key_file", opts->tls_key_file, &key);
    }
    if (rc == 0) {
        t.root_pem = ca;
        t.cert_pem = cert;
        t.key_pem = key;
        c->channel = grpc_c_channel_create_tls(target, &t, copts);
        if (c->channel == NULL)
            rc = baton__fail(BATON_ERR_NOMEM, "cannot create a TLS channel to %s", target);
    }
    if (key)
        memset(key, 0, strlen(key));
    free(ca);
    free(cert);
    free(key);
    return rc;
}

void baton__security_free(baton_client *c)
{
    free(c->auth.value);
    c->auth.value = NULL;
}
