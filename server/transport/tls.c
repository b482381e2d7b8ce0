/*
 * TLS server credentials with reload (tls.h).
 */
#include "tls.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "log.h"

#define PEM_MAX (1 << 20)

struct tls_server {
    char *cert_file, *key_file, *ca_file;
    int require_client_cert;
    pthread_mutex_t mu;
    grpc_ssl_server_certificate_config *pending; /* guarded by mu: handed to gRPC at the next fetch */
};

static char *read_pem(const char *path, const char *key, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        snprintf(err, errlen, "%s: cannot read %s: %s", key, path, strerror(errno));
        return NULL;
    }
    char *buf = malloc(PEM_MAX + 1);
    size_t n = buf ? fread(buf, 1, PEM_MAX + 1, f) : 0;
    fclose(f);
    if (buf == NULL || n == 0 || n > PEM_MAX) {
        snprintf(err, errlen, "%s: %s is %s", key, path, buf == NULL ? "too big for memory" : n ? "larger than 1 MiB" : "empty");
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    return buf;
}

/* The certificate parses, the key parses and belongs to it, the CA parses. */
static int check_pems(const char *cert, const char *key, const char *ca, char *err, size_t errlen)
{
    int rc = -1;
    BIO *b = BIO_new_mem_buf(cert, -1);
    X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    b = BIO_new_mem_buf(key, -1);
    EVP_PKEY *k = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    if (x == NULL)
        snprintf(err, errlen, "tls.cert_file: no PEM certificate in it");
    else if (k == NULL)
        snprintf(err, errlen, "tls.key_file: no PEM private key in it (or it is encrypted)");
    else if (X509_check_private_key(x, k) != 1)
        snprintf(err, errlen, "tls.key_file: does not match the certificate of tls.cert_file");
    else
        rc = 0;
    X509_free(x);
    EVP_PKEY_free(k);
    if (rc == 0 && ca) {
        b = BIO_new_mem_buf(ca, -1);
        X509 *c = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
        BIO_free(b);
        if (c == NULL) {
            snprintf(err, errlen, "tls.client_ca_file: no PEM certificate in it");
            rc = -1;
        }
        X509_free(c);
    }
    ERR_clear_error();
    return rc;
}

/* Reads and checks the three files into a gRPC certificate config. */
static grpc_ssl_server_certificate_config *load_config(const tls_server *t, char *err, size_t errlen)
{
    grpc_ssl_server_certificate_config *cfg = NULL;
    char *cert = read_pem(t->cert_file, "tls.cert_file", err, errlen);
    char *key = cert ? read_pem(t->key_file, "tls.key_file", err, errlen) : NULL;
    char *ca = NULL;
    if (key && t->ca_file)
        ca = read_pem(t->ca_file, "tls.client_ca_file", err, errlen);
    if (key && (t->ca_file == NULL || ca) && check_pems(cert, key, ca, err, errlen) == 0) {
        grpc_ssl_pem_key_cert_pair pair = {.private_key = key, .cert_chain = cert};
        /* gRPC 1.51 asserts that a fetched config has root certificates
         * (ssl_security_connector.cc), even when client certificates are
         * not requested: then the server's own chain stands in, unused. */
        cfg = grpc_ssl_server_certificate_config_create(ca ? ca : cert, &pair, 1); /* copies the strings */
        if (cfg == NULL)
            snprintf(err, errlen, "tls: gRPC refused the certificate");
    }
    if (key)
        memset(key, 0, strlen(key));
    free(cert);
    free(key);
    free(ca);
    return cfg;
}

/* gRPC's fetcher: at start and before handshakes. */
static grpc_ssl_certificate_config_reload_status fetch(void *ud, grpc_ssl_server_certificate_config **config)
{
    tls_server *t = ud;
    pthread_mutex_lock(&t->mu);
    grpc_ssl_server_certificate_config *p = t->pending;
    t->pending = NULL;
    pthread_mutex_unlock(&t->mu);
    if (p == NULL)
        return GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_UNCHANGED;
    *config = p; /* gRPC owns it now */
    return GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_NEW;
}

tls_server *tls_server_new(const config_tls *cfg, char *err, size_t errlen)
{
    tls_server *t = calloc(1, sizeof *t);
    if (t == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&t->mu, NULL);
    t->require_client_cert = cfg->require_client_cert;
    t->cert_file = strdup(cfg->cert_file);
    t->key_file = strdup(cfg->key_file);
    if (cfg->client_ca_file && cfg->client_ca_file[0])
        t->ca_file = strdup(cfg->client_ca_file);
    if (t->cert_file == NULL || t->key_file == NULL || (cfg->client_ca_file[0] && t->ca_file == NULL)) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if ((t->pending = load_config(t, err, errlen)) == NULL)
        goto fail;
    return t;
fail:
    tls_server_free(t);
    return NULL;
}

grpc_server_credentials *tls_server_credentials(tls_server *t)
{
    grpc_ssl_client_certificate_request_type req = GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE;
    if (t->ca_file)
        req = t->require_client_cert ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                                     : GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY;
    grpc_ssl_server_credentials_options *o =
        grpc_ssl_server_credentials_create_options_using_config_fetcher(req, fetch, t);
    return o ? grpc_ssl_server_credentials_create_with_options(o) : NULL;
}

int tls_server_reload(tls_server *t, char *err, size_t errlen)
{
    grpc_ssl_server_certificate_config *cfg = load_config(t, err, errlen);
    if (cfg == NULL)
        return -1;
    pthread_mutex_lock(&t->mu);
    grpc_ssl_server_certificate_config *old = t->pending;
    t->pending = cfg;
    pthread_mutex_unlock(&t->mu);
    if (old)
        grpc_ssl_server_certificate_config_destroy(old);
    return 0;
}

void tls_server_free(tls_server *t)
{
    if (t == NULL)
        return;
    if (t->pending)
        grpc_ssl_server_certificate_config_destroy(t->pending);
    pthread_mutex_destroy(&t->mu);
    free(t->cert_file);
    free(t->key_file);
    free(t->ca_file);
    free(t);
}
