/*
 * Hand-built redisReply trees for the reply decoder tests and fuzzer:
 * R_INT(v), R_STR("s"), R_ERR("msg"), R_NIL(), R_ARR(n, e1, ..., en).
 * Every node is heap-allocated; free the root with reply_free.
 */
#ifndef BATON_TESTS_REPLY_BUILD_H
#define BATON_TESTS_REPLY_BUILD_H

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

static inline redisReply *reply_node(int type)
{
    redisReply *r = calloc(1, sizeof(*r));
    if (!r)
        abort();
    r->type = type;
    return r;
}

static inline redisReply *reply_int(long long v)
{
    redisReply *r = reply_node(REDIS_REPLY_INTEGER);
    r->integer = v;
    return r;
}

/* A string (or error / status) reply of n bytes; str may hold NULs. */
static inline redisReply *reply_strn(int type, const char *str, size_t n)
{
    redisReply *r = reply_node(type);
    r->str = malloc(n + 1);
    if (!r->str)
        abort();
    memcpy(r->str, str, n);
    r->str[n] = '\0';
    r->len = n;
    return r;
}

static inline redisReply *reply_arr(size_t n, ...)
{
    redisReply *r = reply_node(REDIS_REPLY_ARRAY);
    r->elements = n;
    r->element = n ? calloc(n, sizeof(*r->element)) : NULL;
    if (n && !r->element)
        abort();
    va_list ap;
    va_start(ap, n);
    for (size_t i = 0; i < n; i++)
        r->element[i] = va_arg(ap, redisReply *);
    va_end(ap);
    return r;
}

static inline void reply_free(redisReply *r)
{
    if (!r)
        return;
    if (r->element)
        for (size_t i = 0; i < r->elements; i++)
            reply_free(r->element[i]);
    free(r->element);
    free(r->str);
    free(r);
}

#define R_INT(v) reply_int(v)
#define R_STR(s) reply_strn(REDIS_REPLY_STRING, (s), strlen(s))
#define R_ERR(s) reply_strn(REDIS_REPLY_ERROR, (s), strlen(s))
#define R_NIL() reply_node(REDIS_REPLY_NIL)
#define R_ARR(...) reply_arr(__VA_ARGS__)

#endif
