/*
 * Encoding of the events channel payload:
 *   "<TYPE> <fencing> <at_unix_ms> <key> <owner>"
 * Pure functions, no I/O (see store.h). The owner is last, may contain
 * spaces and may be empty; the separating space before an empty owner is
 * optional when parsing.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "store.h"

static const struct {
    store_event_type type;
    const char *name;
} event_names[] = {
    {STORE_EV_ACQUIRED, "ACQUIRED"}, {STORE_EV_RELEASED, "RELEASED"},
    {STORE_EV_EXPIRED, "EXPIRED"},   {STORE_EV_FORCE_RELEASED, "FORCE_RELEASED"},
    {STORE_EV_WAKE, "WAKE"},         {STORE_EV_WAKE_POOL, "WAKE_POOL"},
};

const char *store_event_type_name(store_event_type t)
{
    for (size_t i = 0; i < sizeof(event_names) / sizeof(event_names[0]); i++)
        if (event_names[i].type == t)
            return event_names[i].name;
    return NULL;
}

/* Type from the n bytes at s (not NUL-terminated); 0 if unknown. */
static store_event_type type_of(const char *s, size_t n)
{
    for (size_t i = 0; i < sizeof(event_names) / sizeof(event_names[0]); i++)
        if (strlen(event_names[i].name) == n && memcmp(event_names[i].name, s, n) == 0)
            return event_names[i].type;
    return 0;
}

/* Decimal digits only (no sign, no spaces), at most `max`. */
static int parse_u64(const char *s, size_t n, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;
    if (n == 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        uint64_t d = (uint64_t)(s[i] - '0');
        if (v > (max - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

/* Length of the field starting at p (up to the next space or end). */
static size_t field_len(const char *p, const char *end)
{
    const char *sp = memchr(p, ' ', (size_t)(end - p));
    return sp ? (size_t)(sp - p) : (size_t)(end - p);
}

/*
 * Why the key and owner are moved to the start of buf: the owner runs to the
 * end of the payload and we may not write past buf[len-1] to terminate it. The
 * three leading fields are decoded into numbers first, which frees at least
 * as many bytes as the two terminators need.
 */
int store_event_parse(char *buf, size_t len, store_event *ev)
{
    if (!buf || !ev || len == 0 || memchr(buf, '\0', len))
        return BATON_E_INVALID;
    const char *end = buf + len;
    const char *p = buf;
    size_t n;

    n = field_len(p, end);
    store_event_type type = type_of(p, n);
    if (!type || p + n == end)
        return BATON_E_INVALID;
    p += n + 1;

    uint64_t fencing;
    n = field_len(p, end);
    if (parse_u64(p, n, UINT64_MAX, &fencing) != 0 || p + n == end)
        return BATON_E_INVALID;
    p += n + 1;

    uint64_t at;
    n = field_len(p, end);
    if (parse_u64(p, n, INT64_MAX, &at) != 0 || p + n == end)
        return BATON_E_INVALID;
    p += n + 1;

    size_t key_len = field_len(p, end);
    if (key_len == 0)
        return BATON_E_INVALID;
    const char *key = p;
    const char *owner = p + key_len; /* == end, or the space before the owner */
    size_t owner_len = 0;
    if (owner < end) {
        owner++;
        owner_len = (size_t)(end - owner);
    }

    /* Compact "key\0owner\0" into buf; key >= buf + 6, so it fits in len. */
    memmove(buf, key, key_len);
    buf[key_len] = '\0';
    memmove(buf + key_len + 1, owner, owner_len);
    buf[key_len + 1 + owner_len] = '\0';

    ev->type = type;
    ev->fencing = fencing;
    ev->at_unix_ms = (int64_t)at;
    ev->key = buf;
    ev->owner = buf + key_len + 1;
    return 0;
}

int store_event_format(const store_event *ev, char *out, size_t outlen)
{
    const char *name = ev ? store_event_type_name(ev->type) : NULL;
    if (!name || !ev->key || !ev->key[0] || strchr(ev->key, ' ') || ev->at_unix_ms < 0 || !out)
        return -1;
    int n = snprintf(out, outlen, "%s %" PRIu64 " %" PRId64 " %s %s", name, ev->fencing, ev->at_unix_ms,
                     ev->key, ev->owner ? ev->owner : "");
    if (n < 0 || (size_t)n >= outlen)
        return -1;
    return n;
}
