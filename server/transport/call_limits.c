/*
 * Counters for the `limits:` section (call_limits.h): one map of entries keyed by
 * "<kind letter>:<name>" (t: tenant, c: connection, k: key).
 */
#include "call_limits.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "map.h"

struct limits_entry {
    map_node node;
    size_t refs;
    size_t count[LIMITS_KINDS]; /* key entries: count[LIMITS_WAITING] */
    char name[];                /* "t:team-a", "c:ipv4:10.0.0.1:5123", "k:video:1" */
};

struct limits {
    config_limits cfg;
    map entries;
    size_t total[LIMITS_KINDS];
};

static const char *const KIND_NAME[LIMITS_KINDS] = {"streams open", "acquires waiting", "Watch streams open"};

limits *limits_new(const config_limits *cfg)
{
    limits *l = calloc(1, sizeof *l);
    if (l)
        l->cfg = *cfg;
    return l;
}

static void free_entry(map_node *n, void *ud)
{
    (void)ud;
    free(MAP_ENTRY(n, limits_entry, node));
}

void limits_free(limits *l)
{
    if (l == NULL)
        return;
    map_each(&l->entries, free_entry, NULL);
    map_free(&l->entries);
    free(l);
}

static limits_entry *entry_ref(limits *l, char kind, const char *name)
{
    size_t len = strlen(name);
    char *full = malloc(len + 3);
    if (full == NULL)
        return NULL;
    full[0] = kind;
    full[1] = ':';
    memcpy(full + 2, name, len + 1);
    uint64_t h = map_hash_str(full);
    for (map_node *n = map_first(&l->entries, h); n; n = map_next(n, h)) {
        limits_entry *e = MAP_ENTRY(n, limits_entry, node);
        if (strcmp(e->name, full) == 0) {
            free(full);
            e->refs++;
            return e;
        }
    }
    limits_entry *e = calloc(1, sizeof *e + len + 3);
    if (e == NULL || map_insert(&l->entries, &e->node, h) != 0) {
        free(e);
        free(full);
        return NULL;
    }
    memcpy(e->name, full, len + 3);
    free(full);
    e->refs = 1;
    return e;
}

limits_entry *limits_tenant(limits *l, const char *name)
{
    return entry_ref(l, 't', name);
}

limits_entry *limits_conn(limits *l, const char *name)
{
    return entry_ref(l, 'c', name);
}

void limits_unref(limits *l, limits_entry *e)
{
    if (e == NULL || --e->refs > 0)
        return;
    map_remove(&l->entries, &e->node);
    free(e);
}

static int32_t total_max(const config_limits *c, int kind)
{
    return kind == LIMITS_STREAM ? c->max_streams : kind == LIMITS_WAITING ? c->max_waiting : c->max_watches;
}

static int32_t tenant_max(const config_limits *c, int kind)
{
    return kind == LIMITS_STREAM    ? c->max_streams_per_tenant
           : kind == LIMITS_WAITING ? c->max_waiting_per_tenant
                                    : c->max_watches_per_tenant;
}

int limits_take(limits *l, int kind, limits_entry *tenant, limits_entry *conn, char *msg, size_t n)
{
    const config_limits *c = &l->cfg;
    static const char *const TOTAL_KEY[LIMITS_KINDS] = {"max_streams", "max_waiting", "max_watches"};
    static const char *const TENANT_KEY[LIMITS_KINDS] = {"max_streams_per_tenant", "max_waiting_per_tenant",
                                                         "max_watches_per_tenant"};
    if (l->total[kind] >= (size_t)total_max(c, kind)) {
        snprintf(msg, n, "limits.%s (%d) reached: too many %s on this server", TOTAL_KEY[kind],
                 (int)total_max(c, kind), KIND_NAME[kind]);
        return -1;
    }
    if (tenant && tenant->count[kind] >= (size_t)tenant_max(c, kind)) {
        snprintf(msg, n, "limits.%s (%d) reached by \"%s\"", TENANT_KEY[kind], (int)tenant_max(c, kind),
                 tenant->name + 2);
        return -1;
    }
    if (kind == LIMITS_STREAM && conn && conn->count[kind] >= (size_t)c->max_streams_per_connection) {
        snprintf(msg, n, "limits.max_streams_per_connection (%d) reached on this connection",
                 (int)c->max_streams_per_connection);
        return -1;
    }
    l->total[kind]++;
    if (tenant)
        tenant->count[kind]++;
    if (kind == LIMITS_STREAM && conn)
        conn->count[kind]++;
    return 0;
}

void limits_give(limits *l, int kind, limits_entry *tenant, limits_entry *conn)
{
    l->total[kind]--;
    if (tenant)
        tenant->count[kind]--;
    if (kind == LIMITS_STREAM && conn)
        conn->count[kind]--;
}

limits_entry *limits_key_take(limits *l, const char *key, char *msg, size_t n)
{
    limits_entry *e = entry_ref(l, 'k', key);
    if (e == NULL) {
        snprintf(msg, n, "out of memory");
        return NULL;
    }
    if (e->count[LIMITS_WAITING] >= (size_t)l->cfg.max_waiters_per_key) {
        snprintf(msg, n, "limits.max_waiters_per_key (%d) reached on \"%.256s\"", (int)l->cfg.max_waiters_per_key,
                 key);
        limits_unref(l, e);
        return NULL;
    }
    e->count[LIMITS_WAITING]++;
    return e;
}

void limits_key_give(limits *l, limits_entry *key)
{
    if (key == NULL)
        return;
    key->count[LIMITS_WAITING]--;
    limits_unref(l, key);
}

size_t limits_watch_backlog(const limits *l)
{
    size_t watches = l->total[LIMITS_WATCH] ? l->total[LIMITS_WATCH] : 1;
    size_t share = (size_t)l->cfg.max_watch_backlog / watches;
    return share < LIMITS_WATCH_BACKLOG_MIN   ? LIMITS_WATCH_BACKLOG_MIN
           : share > LIMITS_WATCH_BACKLOG_MAX ? LIMITS_WATCH_BACKLOG_MAX
                                              : share;
}

size_t limits_count(const limits *l, int kind)
{
    return l->total[kind];
}

size_t limits_entries(const limits *l)
{
    return l->entries.len;
}
