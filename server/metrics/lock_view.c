#include "lock_view.h"
#include "log.h"
#include "map.h"
#include "metrics.h"

#include <stdlib.h>
#include <string.h>

#define HANDOFF_HORIZON_US (60 * INT64_C(1000000))

typedef struct held {
    map_node node;
    struct held *prev, *next; /* by acquisition, oldest first */
    int64_t acquired_ms;      /* Redis time */
    uint64_t fencing;
    int pool; /* configured pool index, or -1 */
    unsigned long_held : 1;
    char *owner;
    char key[];
} held;

typedef struct freed {
    map_node node;
    struct freed *next; /* by time freed, oldest first */
    int64_t at_us;      /* monotonic */
    int live;           /* 0: consumed by a grant, waiting to be purged */
    char key[];
} freed;

static struct {
    int on;
    map holds;
    held *oldest, *newest;
    size_t long_held;
    map freed_map;
    freed *f_head, *f_tail;
} V;

void lock_view_enable(void)
{
    V.on = 1;
}

int lock_view_enabled(void)
{
    return V.on;
}

static void held_unlink(held *h)
{
    map_remove(&V.holds, &h->node);
    if (h->prev)
        h->prev->next = h->next;
    else
        V.oldest = h->next;
    if (h->next)
        h->next->prev = h->prev;
    else
        V.newest = h->prev;
    if (h->long_held)
        V.long_held--;
    if (h->pool >= 0)
        metrics_pool_devices_add((size_t)h->pool, -1);
    free(h->owner);
    free(h);
}

static held *held_find(const char *key)
{
    uint64_t hash = map_hash_str(key);
    for (map_node *n = map_first(&V.holds, hash); n; n = map_next(n, hash)) {
        held *h = MAP_ENTRY(n, held, node);
        if (strcmp(h->key, key) == 0)
            return h;
    }
    return NULL;
}

static void publish(void)
{
    metrics_set_locks_held((int64_t)V.holds.len);
    metrics_set_long_held((int64_t)V.long_held);
}

static void freed_purge(int64_t now_us, int all)
{
    while (V.f_head && (all || !V.f_head->live || now_us - V.f_head->at_us > HANDOFF_HORIZON_US)) {
        freed *f = V.f_head;
        V.f_head = f->next;
        if (!V.f_head)
            V.f_tail = NULL;
        if (f->live)
            map_remove(&V.freed_map, &f->node);
        free(f);
    }
}

void lock_view_reset(void)
{
    while (V.oldest)
        held_unlink(V.oldest);
    freed_purge(0, 1);
    publish();
}

void lock_view_shutdown(void)
{
    lock_view_reset();
    map_free(&V.holds);
    map_free(&V.freed_map);
    memset(&V, 0, sizeof V);
}

size_t lock_view_held(void)
{
    return V.holds.len;
}

static void on_acquired(const store_event *ev)
{
    held *h = held_find(ev->key);
    if (h) /* its end was missed (a reconnect): this is a new hold */
        held_unlink(h);
    if (V.holds.len >= LOCK_VIEW_MAX_HOLDS)
        return;
    size_t kl = strlen(ev->key);
    h = calloc(1, sizeof *h + kl + 1);
    if (!h)
        return;
    memcpy(h->key, ev->key, kl + 1);
    h->owner = strdup(ev->owner ? ev->owner : "");
    if (!h->owner || map_insert(&V.holds, &h->node, map_hash_str(h->key)) != 0) {
        free(h->owner);
        free(h);
        return;
    }
    h->acquired_ms = ev->at_unix_ms;
    h->fencing = ev->fencing;
    h->pool = metrics_pool_of_device_key(h->key);
    if (h->pool >= 0)
        metrics_pool_devices_add((size_t)h->pool, 1);
    h->prev = V.newest;
    if (V.newest)
        V.newest->next = h;
    else
        V.oldest = h;
    V.newest = h;
}

void lock_view_log_grant(const char *key, const char *owner, uint64_t fencing, int stream_mode,
                         int64_t wait_us)
{
    if (!log_lock_events())
        return;
    log_field f[] = {LOG_STR("key", key), LOG_STR("owner", owner), LOG_INT("fencing", fencing),
                     LOG_STR("mode", stream_mode ? "stream" : "lease"), LOG_INT("wait_ms", wait_us / 1000)};
    log_fields(LOG_LEVEL_INFO, f, sizeof f / sizeof f[0], "lock granted");
}

static void log_end(const store_event *ev, int64_t hold_ms)
{
    if (!log_lock_events())
        return;
    const char *what = ev->type == STORE_EV_RELEASED  ? "RELEASED"
                       : ev->type == STORE_EV_EXPIRED ? "EXPIRED"
                                                      : "FORCE_RELEASED";
    log_field f[] = {LOG_STR("key", ev->key), LOG_STR("owner", ev->owner), LOG_INT("fencing", ev->fencing),
                     LOG_STR("event", what), LOG_INT("hold_ms", hold_ms)};
    /* hold_ms -1: the hold started before this batond saw it */
    log_fields(LOG_LEVEL_INFO, f, sizeof f / sizeof f[0], "lock ended");
}

static void on_ended(const store_event *ev)
{
    held *h = held_find(ev->key);
    if (!h || (ev->fencing && h->fencing && ev->fencing != h->fencing)) {
        log_end(ev, -1); /* a hold we never saw start */
        return;
    }
    int64_t ms = ev->at_unix_ms - h->acquired_ms;
    metrics_observe(METRICS_H_HOLD, (ms > 0 ? ms : 0) * 1000);
    log_end(ev, ms > 0 ? ms : 0);
    held_unlink(h);
}

void lock_view_event(const store_event *ev)
{
    if (!V.on || !ev->key)
        return;
    switch (ev->type) {
    case STORE_EV_ACQUIRED: on_acquired(ev); break;
    case STORE_EV_EXPIRED: metrics_end_count(METRICS_END_EXPIRED); /* fall through */
    case STORE_EV_RELEASED:
    case STORE_EV_FORCE_RELEASED: on_ended(ev); break;
    default: return;
    }
    publish();
}

static freed *freed_find(const char *key)
{
    uint64_t hash = map_hash_str(key);
    for (map_node *n = map_first(&V.freed_map, hash); n; n = map_next(n, hash)) {
        freed *f = MAP_ENTRY(n, freed, node);
        if (strcmp(f->key, key) == 0)
            return f;
    }
    return NULL;
}

void lock_view_key_freed(const char *key)
{
    if (!V.on || !key)
        return;
    int64_t now = metrics_now_us();
    freed_purge(now, 0);
    freed *old = freed_find(key);
    if (old) { /* the latest end counts: retire the earlier one */
        map_remove(&V.freed_map, &old->node);
        old->live = 0;
    }
    size_t kl = strlen(key);
    freed *f = calloc(1, sizeof *f + kl + 1);
    if (!f)
        return;
    memcpy(f->key, key, kl + 1);
    f->at_us = now;
    f->live = 1;
    if (map_insert(&V.freed_map, &f->node, map_hash_str(f->key)) != 0) {
        free(f);
        return;
    }
    if (V.f_tail)
        V.f_tail->next = f;
    else
        V.f_head = f;
    V.f_tail = f;
}

void lock_view_waiter_granted(const char *key)
{
    if (!V.on || !key)
        return;
    freed *f = freed_find(key);
    if (!f)
        return;
    int64_t now = metrics_now_us();
    if (now - f->at_us <= HANDOFF_HORIZON_US)
        metrics_observe(METRICS_H_HANDOFF, now - f->at_us);
    map_remove(&V.freed_map, &f->node);
    f->live = 0; /* freed by the next purge */
}

static const lock_view_rule *rule_for(const lock_view_rule *rules, size_t n, const char *key)
{
    for (size_t i = 0; i < n; i++)
        if (strncmp(key, rules[i].prefix, strlen(rules[i].prefix)) == 0)
            return &rules[i];
    return NULL;
}

size_t lock_view_sweep(const lock_view_rule *rules, size_t nrules, int64_t now_unix_ms,
                       void (*fired)(void *ud, const lock_view_hold *h), void *ud)
{
    if (!V.on || nrules == 0)
        return V.long_held;
    int64_t min_after = rules[0].after_ms;
    for (size_t i = 1; i < nrules; i++)
        if (rules[i].after_ms < min_after)
            min_after = rules[i].after_ms;
    /* Oldest first: stop at the first hold younger than every rule. */
    for (held *h = V.oldest; h && now_unix_ms - h->acquired_ms > min_after; h = h->next) {
        if (h->long_held)
            continue;
        const lock_view_rule *r = rule_for(rules, nrules, h->key);
        int64_t age = now_unix_ms - h->acquired_ms;
        if (!r || age <= r->after_ms)
            continue;
        h->long_held = 1;
        V.long_held++;
        lock_view_hold lh = {.key = h->key,
                             .owner = h->owner,
                             .fencing = h->fencing,
                             .acquired_unix_ms = h->acquired_ms,
                             .age_ms = age,
                             .rule = r};
        if (fired)
            fired(ud, &lh);
    }
    publish();
    return V.long_held;
}
