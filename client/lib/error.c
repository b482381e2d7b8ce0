/* error.c - error codes, the one gRPC status mapping, per-thread messages. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static _Thread_local char last_error[1024];

const char *baton_strerror(int err)
{
    switch (err) {
    case 0: return "success";
    case BATON_ERR_INVALID: return "invalid argument";
    case BATON_ERR_BUSY: return "lock busy (not acquired within the wait)";
    case BATON_ERR_NOT_HELD: return "the token does not hold the lock";
    case BATON_ERR_UNAVAILABLE: return "lock service or its Redis unavailable";
    case BATON_ERR_LOST: return "lock lost";
    case BATON_ERR_TIMEOUT: return "timed out";
    case BATON_ERR_CANCELLED: return "cancelled";
    case BATON_ERR_NOMEM: return "out of memory or resources";
    case BATON_ERR_NOTSUP: return "not supported";
    case BATON_ERR_INTERNAL: return "internal error";
    case BATON_ERR_NOT_FOUND: return "not found";
    case BATON_ERR_UNAUTHENTICATED: return "not authenticated (no or unknown token)";
    case BATON_ERR_DENIED: return "permission denied";
    default: return "unknown error";
    }
}

const char *baton_error_name(int err)
{
    switch (err) {
    case 0: return "OK";
    case BATON_ERR_INVALID: return "INVALID";
    case BATON_ERR_BUSY: return "BUSY";
    case BATON_ERR_NOT_HELD: return "NOT_HELD";
    case BATON_ERR_UNAVAILABLE: return "UNAVAILABLE";
    case BATON_ERR_LOST: return "LOST";
    case BATON_ERR_TIMEOUT: return "TIMEOUT";
    case BATON_ERR_CANCELLED: return "CANCELLED";
    case BATON_ERR_NOMEM: return "NOMEM";
    case BATON_ERR_NOTSUP: return "NOTSUP";
    case BATON_ERR_INTERNAL: return "INTERNAL";
    case BATON_ERR_NOT_FOUND: return "NOT_FOUND";
    case BATON_ERR_UNAUTHENTICATED: return "UNAUTHENTICATED";
    case BATON_ERR_DENIED: return "DENIED";
    default: return "UNKNOWN";
    }
}

const char *baton_last_error(void)
{
    return last_error;
}

int baton__err_of_code(int code, enum baton__phase phase)
{
    switch (code) {
    case GRPC_C_CODE_OK: return 0;
    case GRPC_C_CODE_INVALID_ARGUMENT:
    case GRPC_C_CODE_OUT_OF_RANGE: return BATON_ERR_INVALID;
    case GRPC_C_CODE_ABORTED: return phase == BATON__PHASE_ACQUIRE ? BATON_ERR_BUSY : BATON_ERR_LOST;
    case GRPC_C_CODE_FAILED_PRECONDITION: return BATON_ERR_NOT_HELD;
    case GRPC_C_CODE_UNAVAILABLE: return BATON_ERR_UNAVAILABLE;
    case GRPC_C_CODE_DEADLINE_EXCEEDED: return BATON_ERR_TIMEOUT;
    case GRPC_C_CODE_CANCELLED: return BATON_ERR_CANCELLED;
    case GRPC_C_CODE_RESOURCE_EXHAUSTED: return BATON_ERR_NOMEM;
    case GRPC_C_CODE_UNIMPLEMENTED: return BATON_ERR_NOTSUP;
    case GRPC_C_CODE_NOT_FOUND: return BATON_ERR_NOT_FOUND;
    case GRPC_C_CODE_UNAUTHENTICATED: return BATON_ERR_UNAUTHENTICATED;
    case GRPC_C_CODE_PERMISSION_DENIED: return BATON_ERR_DENIED;
    default: return BATON_ERR_INTERNAL;
    }
}

int baton__fail(int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return err;
}

int baton__fail_status(const grpc_c_status *st, enum baton__phase phase, const char *what)
{
    int err = baton__err_of_code(st->code, phase);
    const char *msg = st->message && st->message[0] ? st->message : grpc_c_code_name(st->code);
    return baton__fail(err, "%s: %s", what, msg);
}

char *baton__strdup(const char *s)
{
    char *d = strdup(s ? s : "");
    if (d == NULL)
        baton__fail(BATON_ERR_NOMEM, "out of memory");
    return d;
}
