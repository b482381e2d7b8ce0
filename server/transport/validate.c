/*
 * Request validation (see validate.h). Pure: no allocation, no I/O. Every
 * rejection writes one message that starts with the field name, because the
 * transport returns it verbatim as the INVALID_ARGUMENT status message.
 */
#include "validate.h"
#include "keyname.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

__attribute__((format(printf, 3, 4))) static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return BATON_E_INVALID;
}

/* A proto3 string field that is unset decodes as "" (or NULL when a caller
 * builds the message by hand); both mean "not set". */
static int is_set(const char *s)
{
    return s != NULL && s[0] != '\0';
}

int validate_key(const char *field, const char *key, char *err, size_t errlen)
{
    char problem[160];
    if (keyname_check(key, BATON_KEY_MAX, problem, sizeof problem) != 0)
        return fail(err, errlen, "%s: %s", field, problem);
    return 0;
}

int validate_token(const char *field, const char *token, char *err, size_t errlen)
{
    if (!is_set(token))
        return fail(err, errlen, "%s: must not be empty", field);
    size_t n = strlen(token);
    for (size_t i = 0; i < n && i < BATON_TOKEN_LEN; i++) {
        unsigned char ch = (unsigned char)token[i];
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f')))
            return fail(err, errlen, "%s: must be %d lowercase hex characters, got byte 0x%02x at offset %zu",
                        field, BATON_TOKEN_LEN, ch, i);
    }
    if (n != BATON_TOKEN_LEN)
        return fail(err, errlen, "%s: must be %d lowercase hex characters, got %zu bytes", field,
                    BATON_TOKEN_LEN, n);
    return 0;
}

/*
 * Decodes one UTF-8 sequence at s[0..n). Returns its length and sets *cp, or
 * 0 when it is malformed: a stray continuation byte, a truncated sequence, an
 * overlong form, a surrogate (U+D800..U+DFFF) or a value above U+10FFFF.
 */
static size_t utf8_decode(const unsigned char *s, size_t n, uint32_t *cp)
{
    uint32_t c = s[0];
    size_t len;
    uint32_t min;
    if (c < 0x80) {
        *cp = c;
        return 1;
    } else if (c >= 0xC2 && c <= 0xDF) { /* 0xC0, 0xC1 only start overlong forms */
        len = 2, min = 0x80, c &= 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3, min = 0x800, c &= 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4, min = 0x10000, c &= 0x07;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        c = (c << 6) | (s[i] & 0x3F);
    }
    if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
        return 0;
    *cp = c;
    return len;
}

/* C0 controls, DEL and C1 controls (Unicode category Cc), except tab. */
static int is_control(uint32_t cp)
{
    return cp != '\t' && (cp < 0x20 || (cp >= 0x7F && cp <= 0x9F));
}

int validate_owner(const char *field, const char *owner, char *err, size_t errlen)
{
    if (owner == NULL)
        return 0; /* unset: the empty owner */
    size_t n = strlen(owner);
    if (n > BATON_OWNER_MAX)
        return fail(err, errlen, "%s: must be at most %d bytes, got %zu bytes", field, BATON_OWNER_MAX, n);
    const unsigned char *s = (const unsigned char *)owner;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t len = utf8_decode(s + i, n - i, &cp);
        if (len == 0)
            return fail(err, errlen, "%s: must be valid UTF-8, got byte 0x%02x at offset %zu", field, s[i],
                        i);
        if (is_control(cp))
            return fail(err, errlen,
                        "%s: must not contain control characters (except tab), got U+%04" PRIX32
                        " at offset %zu",
                        field, cp, i);
        i += len;
    }
    return 0;
}

int validate_ttl(const validate_limits *lim, int64_t ttl_ms, int64_t *out, char *err, size_t errlen)
{
    if (ttl_ms == 0) {
        *out = lim->default_ttl_ms;
        return 0;
    }
    if (ttl_ms < lim->min_ttl_ms || ttl_ms > lim->max_ttl_ms)
        return fail(err, errlen,
                    "ttl_ms: must be 0 (the default, %" PRId64 ") or between %" PRId64 " and %" PRId64
                    ", got %" PRId64,
                    lim->default_ttl_ms, lim->min_ttl_ms, lim->max_ttl_ms, ttl_ms);
    *out = ttl_ms;
    return 0;
}

static int wait_resolve(const validate_limits *lim, int64_t wait_ms, int64_t *out, char *err, size_t errlen)
{
    if (wait_ms < 0) {
        *out = lim->max_wait_ms;
        return 0;
    }
    if (wait_ms > lim->max_wait_ms)
        return fail(err, errlen,
                    "wait_ms: must be at most %" PRId64 " (0 = try once, negative = %" PRId64
                    "), got %" PRId64,
                    lim->max_wait_ms, lim->max_wait_ms, wait_ms);
    *out = wait_ms;
    return 0;
}

/*
 * A pool's devices are the keys "name/0" .. "name/<devices-1>", so the name
 * must leave room for "/<largest index>" within BATON_KEY_MAX.
 */
static int validate_pool(const validate_limits *lim, const Baton__V1__Pool *pool, char *err, size_t errlen)
{
    int rc = validate_key("pool.name", pool->name, err, errlen);
    if (rc != 0)
        return rc;
    if (pool->devices < 1 || pool->devices > lim->max_pool_devices)
        return fail(err, errlen, "pool.devices: must be between 1 and %" PRId32 ", got %" PRId32,
                    lim->max_pool_devices, pool->devices);
    for (size_t i = 0; i < lim->npools; i++) {
        if (strcmp(lim->pool_names[i], pool->name) == 0 && lim->pool_devices[i] != pool->devices)
            return fail(err, errlen, "pool.devices: pool '%s' is configured with %" PRId32 " devices",
                        pool->name, lim->pool_devices[i]);
    }
    if (pool->count < 0 || pool->count > pool->devices)
        return fail(err, errlen,
                    "pool.count: must be between 0 and pool.devices (%" PRId32
                    ") (0 or 1 = one device), got %" PRId32,
                    pool->devices, pool->count);
    size_t room = keyname_pool_name_max(pool->devices);
    if (strlen(pool->name) > room)
        return fail(err, errlen,
                    "pool.name: must be at most %zu bytes so that device keys 'name/<index>' fit in "
                    "%d bytes, got %zu bytes",
                    room, BATON_KEY_MAX, strlen(pool->name));
    return 0;
}

/*
 * A weight shares each device with others up to its pool's configured
 * capacity, so a pool that is not configured takes none (it has no capacity
 * anyone agreed on). A weight equal to the capacity is the whole device (0).
 */
static int validate_weight(const validate_limits *lim, const Baton__V1__Pool *pool, int64_t *weight,
                           int64_t *capacity, char *err, size_t errlen)
{
    *weight = 0;
    *capacity = 1;
    if (pool->weight == 0)
        return 0;
    if (pool->weight < 0)
        return fail(err, errlen, "pool.weight: must be 0 (the whole device) or positive, got %" PRId64,
                    pool->weight);
    size_t i = 0;
    while (i < lim->npools && strcmp(lim->pool_names[i], pool->name) != 0)
        i++;
    if (i == lim->npools)
        return fail(err, errlen,
                    "pool.weight: pool '%s' is not configured in batond; a weight needs the pool's "
                    "capacity (pools[].capacity), use 0 (the whole device)",
                    pool->name);
    int64_t cap = lim->pool_capacity ? lim->pool_capacity[i] : 1;
    if (pool->weight > cap)
        return fail(err, errlen,
                    "pool.weight: must be at most the capacity of pool '%s' (%" PRId64 "), got %" PRId64,
                    pool->name, cap, pool->weight);
    if (pool->weight < cap) {
        *weight = pool->weight;
        *capacity = cap;
    }
    return 0;
}

int validate_acquire(const validate_limits *lim, const Baton__V1__AcquireRequest *req,
                     engine_acquire_req *out, char *err, size_t errlen)
{
    int has_key = is_set(req->key);
    /* An all-default Pool message counts as unset (proto3 clients may send
     * one); devices without a name is a pool with its name missing. */
    int has_pool = req->pool != NULL && (is_set(req->pool->name) || req->pool->devices != 0);
    int rc;

    memset(out, 0, sizeof(*out));
    if (has_key == has_pool)
        return fail(err, errlen, "exactly one of key and pool must be set");
    if (has_key) {
        if ((rc = validate_key("key", req->key, err, errlen)) != 0)
            return rc;
        out->key = req->key;
    } else {
        if ((rc = validate_pool(lim, req->pool, err, errlen)) != 0)
            return rc;
        out->pool = req->pool->name;
        out->devices = req->pool->devices;
        out->count = req->pool->count > 1 ? req->pool->count : 1;
        if ((rc = validate_weight(lim, req->pool, &out->weight, &out->capacity, err, errlen)) != 0)
            return rc;
    }
    if ((rc = validate_owner("owner", req->owner, err, errlen)) != 0)
        return rc;
    out->owner = req->owner ? req->owner : "";
    if ((rc = validate_ttl(lim, req->ttl_ms, &out->ttl_ms, err, errlen)) != 0)
        return rc;
    if ((rc = wait_resolve(lim, req->wait_ms, &out->wait_ms, err, errlen)) != 0)
        return rc;
    switch (req->mode) {
    case BATON__V1__HOLD_MODE__HOLD_MODE_LEASE: out->mode = ENGINE_MODE_LEASE; break;
    case BATON__V1__HOLD_MODE__HOLD_MODE_STREAM: out->mode = ENGINE_MODE_STREAM; break;
    default:
        /* proto3 enums are open: an unknown number decodes as-is. */
        return fail(err, errlen, "mode: must be HOLD_MODE_LEASE (0) or HOLD_MODE_STREAM (1), got %d",
                    (int)req->mode);
    }
    return 0;
}

const char *const *validate_pool_device_names(const validate_limits *lim, const char *device_key)
{
    const char *slash = strrchr(device_key, '/');
    if (!slash || !lim->pool_device_names)
        return NULL;
    size_t n = (size_t)(slash - device_key);
    for (size_t i = 0; i < lim->npools; i++)
        if (strlen(lim->pool_names[i]) == n && memcmp(lim->pool_names[i], device_key, n) == 0)
            return lim->pool_device_names[i];
    return NULL;
}

int validate_renew(const validate_limits *lim, const Baton__V1__RenewRequest *req, int64_t *ttl_out,
                   char *err, size_t errlen)
{
    int rc;
    if ((rc = validate_key("key", req->key, err, errlen)) != 0)
        return rc;
    if ((rc = validate_token("token", req->token, err, errlen)) != 0)
        return rc;
    return validate_ttl(lim, req->ttl_ms, ttl_out, err, errlen);
}

int validate_release(const Baton__V1__ReleaseRequest *req, char *err, size_t errlen)
{
    int rc = validate_key("key", req->key, err, errlen);
    if (rc != 0)
        return rc;
    return validate_token("token", req->token, err, errlen);
}

int validate_watch(const Baton__V1__WatchRequest *req, char *err, size_t errlen)
{
    int has_key = is_set(req->key);
    int has_prefix = is_set(req->prefix);
    if (has_key == has_prefix)
        return fail(err, errlen, "exactly one of key and prefix must be set");
    if (has_key)
        return validate_key("key", req->key, err, errlen);
    return validate_key("prefix", req->prefix, err, errlen);
}

int validate_describe(const Baton__V1__DescribeRequest *req, char *err, size_t errlen)
{
    return validate_key("key", req->key, err, errlen);
}

int validate_force_release(const Baton__V1__ForceReleaseRequest *req, char *err, size_t errlen)
{
    int rc = validate_key("key", req->key, err, errlen);
    if (rc != 0)
        return rc;
    if (req->fencing == 0)
        return fail(err, errlen, "fencing: must be > 0 (the holder's fencing token, see Describe)");
    return 0;
}

/* ---- List (issue #18) ---- */

int validate_list(const Baton__V1__ListRequest *req, int32_t *limit_out, char *cursor, size_t cursorlen,
                  char *err, size_t errlen)
{
    if (is_set(req->prefix)) {
        int rc = validate_key("prefix", req->prefix, err, errlen);
        if (rc != 0)
            return rc;
    }
    if (req->limit < 0 || req->limit > LIST_MAX_LIMIT)
        return fail(err, errlen, "limit: must be between 0 (default %d) and %d, got %" PRId32,
                    LIST_DEFAULT_LIMIT, LIST_MAX_LIMIT, req->limit);
    *limit_out = req->limit ? req->limit : LIST_DEFAULT_LIMIT;
    const char *t = req->page_token ? req->page_token : "";
    size_t n = strlen(t);
    if (n == 0) {
        snprintf(cursor, cursorlen, "0");
        return 0;
    }
    if (n > 20 || strspn(t, "0123456789") != n || (n > 1 && t[0] == '0') || n + 1 > cursorlen)
        return fail(err, errlen, "page_token: not a next_page_token of List (got %zu bytes)", n);
    memcpy(cursor, t, n + 1);
    return 0;
}
