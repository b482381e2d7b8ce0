/*
 * libFuzzer target for everything batond parses from the network: each gRPC
 * request type (pb_decode_bytes: protobuf-c unpack plus the NUL-in-a-string
 * wire check, then its validate_* function, as the transport does) and the
 * pub/sub event payload (store_event_parse) that arrives from Redis. Crashes, leaks and sanitizer reports are
 * the findings; a request that validates must also satisfy the engine's preconditions.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "baton/v1/lock.pb-c.h"
#include "pb_codec.h"
#include "store.h"
#include "validate.h"

static const char *const pool_names[] = {"node7"};
static const int32_t pool_devices[] = {8};
static const validate_limits lim = {
    .default_ttl_ms = 600000,
    .min_ttl_ms = 100,
    .max_ttl_ms = 3600000,
    .max_wait_ms = 300000,
    .max_pool_devices = 64,
    .pool_names = pool_names,
    .pool_devices = pool_devices,
    .npools = 1,
};

/* What the transport does with a request's bytes: NULL when it answers
 * INVALID_ARGUMENT before validation. */
static void *decode(const ProtobufCMessageDescriptor *d, const uint8_t *data, size_t size)
{
    char err[512];
    err[0] = '\0';
    ProtobufCMessage *m = pb_decode_bytes(d, data, size, d->short_name, err, sizeof err);
    if (m == NULL && err[0] == '\0')
        abort(); /* every rejection says why */
    return m;
}

static void check_acquire(const Baton__V1__AcquireRequest *r)
{
    char err[512];
    engine_acquire_req out;
    if (validate_acquire(&lim, r, &out, err, sizeof err) == 0) {
        /* What engine_acquire relies on. */
        if ((out.key == NULL) == (out.pool == NULL) || out.ttl_ms < lim.min_ttl_ms ||
            out.ttl_ms > lim.max_ttl_ms || out.wait_ms < 0 || out.wait_ms > lim.max_wait_ms ||
            (out.pool && (out.devices < 1 || out.devices > lim.max_pool_devices)))
            abort();
    }
}

static void fuzz_acquire(const uint8_t *data, size_t size)
{
    Baton__V1__AcquireRequest *r = decode(&baton__v1__acquire_request__descriptor, data, size);
    if (r == NULL)
        return;
    check_acquire(r);
    baton__v1__acquire_request__free_unpacked(r, NULL);
}

/* A Session request carries one of the requests above. */
static void fuzz_session(const uint8_t *data, size_t size)
{
    char err[512];
    int64_t ttl;
    Baton__V1__SessionRequest *r = decode(&baton__v1__session_request__descriptor, data, size);
    if (r == NULL)
        return;
    switch (r->op_case) {
    case BATON__V1__SESSION_REQUEST__OP_ACQUIRE: check_acquire(r->acquire); break;
    case BATON__V1__SESSION_REQUEST__OP_RENEW: validate_renew(&lim, r->renew, &ttl, err, sizeof err); break;
    case BATON__V1__SESSION_REQUEST__OP_RELEASE: validate_release(r->release, err, sizeof err); break;
    default: break;
    }
    baton__v1__session_request__free_unpacked(r, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    /* The first byte picks the parser; the rest is its input. */
    uint8_t which = data[0];
    data++;
    size--;
    char err[512];
    int64_t ttl;
    switch (which % 9) {
    case 0: fuzz_acquire(data, size); break;
    case 1: {
        Baton__V1__RenewRequest *r = decode(&baton__v1__renew_request__descriptor, data, size);
        if (r) {
            if (validate_renew(&lim, r, &ttl, err, sizeof err) == 0 &&
                (ttl < lim.min_ttl_ms || ttl > lim.max_ttl_ms))
                abort();
            baton__v1__renew_request__free_unpacked(r, NULL);
        }
        break;
    }
    case 2: {
        Baton__V1__ReleaseRequest *r = decode(&baton__v1__release_request__descriptor, data, size);
        if (r) {
            validate_release(r, err, sizeof err);
            baton__v1__release_request__free_unpacked(r, NULL);
        }
        break;
    }
    case 3: {
        Baton__V1__WatchRequest *r = decode(&baton__v1__watch_request__descriptor, data, size);
        if (r) {
            validate_watch(r, err, sizeof err);
            baton__v1__watch_request__free_unpacked(r, NULL);
        }
        break;
    }
    case 4: {
        Baton__V1__DescribeRequest *r = decode(&baton__v1__describe_request__descriptor, data, size);
        if (r) {
            validate_describe(r, err, sizeof err);
            baton__v1__describe_request__free_unpacked(r, NULL);
        }
        break;
    }
    case 5: {
        Baton__V1__ForceReleaseRequest *r = decode(&baton__v1__force_release_request__descriptor, data, size);
        if (r) {
            if (validate_force_release(r, err, sizeof err) == 0 && r->fencing == 0)
                abort();
            baton__v1__force_release_request__free_unpacked(r, NULL);
        }
        break;
    }
    case 6: fuzz_session(data, size); break;
    case 7: {
        Baton__V1__ListRequest *r = decode(&baton__v1__list_request__descriptor, data, size);
        if (r) {
            int32_t limit;
            char cursor[24];
            if (validate_list(r, &limit, cursor, sizeof cursor, err, sizeof err) == 0 &&
                (limit < 1 || limit > LIST_MAX_LIMIT || strlen(cursor) > 20))
                abort();
            baton__v1__list_request__free_unpacked(r, NULL);
        }
        break;
    }
    default: {
        /* store_event_parse modifies its buffer: give it a private copy. */
        char *buf = malloc(size + 1);
        if (buf == NULL)
            return 0;
        memcpy(buf, data, size);
        buf[size] = '\0';
        store_event ev;
        if (store_event_parse(buf, size, &ev) == 0 && (ev.key == NULL || ev.owner == NULL))
            abort();
        free(buf);
        break;
    }
    }
    return 0;
}
