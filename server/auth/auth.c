/*
 * Bearer tokens and prefix rules (auth.h). The digest comes from libcrypto.
 */
#include "auth.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#define DIGEST_LEN 32
#define BEARER "bearer "
#define TOKEN_MAX 4096 /* longer values are refused before hashing */

struct auth_token {
    char *name;
    unsigned char digest[DIGEST_LEN];
    char **prefixes;
    size_t nprefixes;
    int admin;
};

struct auth_table {
    auth_token *tokens;
    size_t n;
};

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static int sha256(const void *data, size_t len, unsigned char out[DIGEST_LEN])
{
    unsigned int n = 0;
    return EVP_Digest(data, len, out, &n, EVP_sha256(), NULL) == 1 && n == DIGEST_LEN ? 0 : -1;
}

int auth_sha256_hex(const void *data, size_t len, char out[65])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char d[DIGEST_LEN];
    if (sha256(data, len, d) != 0)
        return -1;
    for (size_t i = 0; i < DIGEST_LEN; i++) {
        out[2 * i] = hex[d[i] >> 4];
        out[2 * i + 1] = hex[d[i] & 15];
    }
    out[64] = '\0';
    return 0;
}

void auth_table_free(auth_table *t)
{
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->n; i++) {
        free(t->tokens[i].name);
        for (size_t j = 0; j < t->tokens[i].nprefixes; j++)
            free(t->tokens[i].prefixes[j]);
        free(t->tokens[i].prefixes);
    }
    free(t->tokens);
    free(t);
}

static int token_copy(auth_token *d, const config_token *s)
{
    if (s->sha256 == NULL || strlen(s->sha256) != 2 * DIGEST_LEN)
        return -1;
    for (size_t i = 0; i < DIGEST_LEN; i++) {
        int hi = hexval(s->sha256[2 * i]), lo = hexval(s->sha256[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        d->digest[i] = (unsigned char)(hi << 4 | lo);
    }
    d->admin = s->admin;
    if ((d->name = strdup(s->name ? s->name : "")) == NULL)
        return -1;
    if (s->nprefixes && (d->prefixes = calloc(s->nprefixes, sizeof *d->prefixes)) == NULL)
        return -1;
    for (size_t j = 0; j < s->nprefixes; j++) {
        d->nprefixes = j + 1;
        if ((d->prefixes[j] = strdup(s->prefixes[j])) == NULL)
            return -1;
    }
    return 0;
}

auth_table *auth_table_new(const config_token *tokens, size_t n)
{
    auth_table *t = calloc(1, sizeof *t);
    if (t == NULL)
        return NULL;
    if (n && (t->tokens = calloc(n, sizeof *t->tokens)) == NULL)
        goto fail;
    for (size_t i = 0; i < n; i++) {
        t->n = i + 1;
        if (token_copy(&t->tokens[i], &tokens[i]) != 0)
            goto fail;
    }
    return t;
fail:
    auth_table_free(t);
    return NULL;
}

const auth_token *auth_authenticate(const auth_table *t, const char *value, size_t len)
{
    size_t blen = sizeof BEARER - 1;
    if (t == NULL || value == NULL || len <= blen || len > TOKEN_MAX || strncasecmp(value, BEARER, blen) != 0)
        return NULL;
    unsigned char d[DIGEST_LEN];
    if (sha256(value + blen, len - blen, d) != 0)
        return NULL;
    /* Every entry is compared, whatever matched before. */
    const auth_token *found = NULL;
    for (size_t i = 0; i < t->n; i++) {
        uintptr_t match = (uintptr_t)(CRYPTO_memcmp(d, t->tokens[i].digest, DIGEST_LEN) == 0);
        uintptr_t mask = (uintptr_t)0 - match;
        found = (const auth_token *)(((uintptr_t)&t->tokens[i] & mask) | ((uintptr_t)found & ~mask));
    }
    return found;
}

const char *auth_token_name(const auth_token *tok)
{
    return tok->name;
}

int auth_token_admin(const auth_token *tok)
{
    return tok->admin;
}

static int starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

int auth_allows(const auth_token *tok, const char *name)
{
    for (size_t i = 0; i < tok->nprefixes; i++)
        if (starts_with(name, tok->prefixes[i]))
            return 1;
    return 0;
}

int auth_watch(const auth_token *tok, const char *prefix)
{
    if (auth_allows(tok, prefix))
        return AUTH_WATCH_ALL;
    for (size_t i = 0; i < tok->nprefixes; i++)
        if (starts_with(tok->prefixes[i], prefix))
            return AUTH_WATCH_FILTER;
    return AUTH_WATCH_NONE;
}

void auth_denied(const auth_token *tok, const char *what, const char *name, char *buf, size_t n)
{
    int used = snprintf(buf, n, "%s \"%.256s\" is outside the prefixes of token \"%s\" (allowed:", what, name,
                        tok->name);
    for (size_t i = 0; i < tok->nprefixes && used >= 0 && (size_t)used < n; i++)
        used += snprintf(buf + used, n - (size_t)used, "%s \"%s\"", i ? "," : "", tok->prefixes[i]);
    if (used >= 0 && (size_t)used < n)
        snprintf(buf + used, n - (size_t)used, ")");
}
