/*
 * batond configuration (see config.h): defaults, one YAML document loaded with
 * libyaml's document API, and the consistency checks shared by the file
 * loader and the command line.
 *
 * Loading is all-or-nothing: the document is applied to a deep copy of the
 * caller's config, which replaces it only when every check passed, so a
 * failed load leaves *c as it was (and nothing leaks on any error path).
 *
 * Typing is strict on purpose: a config that silently means something else
 * than its author thought is worse than one that fails to load. Quoted
 * scalars are strings; plain scalars are null ("", "~", "null"), booleans
 * (true/false/yes/no), decimal integers, or else strings.
 */
#include "config.h"
#include "keyname.h"
#include "log.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <yaml.h>

#include "address.h"
#include "errors.h"

#define KEY_PREFIX_MAX 64
#define CONFIG_FILE_MAX (1 << 20) /* a config file is a few KiB; refuse anything huge */
#define MS_HOUR INT64_C(3600000)
#define MS_DAY (24 * MS_HOUR)
#define MS_YEAR (365 * MS_DAY)

typedef enum field_type {
    F_SECRET,       /* any string, may be empty; never shown (config_to_yaml) */
    F_STR_NONEMPTY, /* a non-empty string */
    F_STR,          /* any string, may be empty */
    F_REDIS_ADDR,   /* a redis.address form (store/redis/address.h) */
    F_LOG_LEVEL,    /* debug | info | warn | error */
    F_KEY_PREFIX,   /* 1..64 bytes of the key charset */
    F_INT,          /* int */
    F_I32,          /* int32_t */
    F_I64,          /* int64_t */
    F_BOOL,         /* int, 0 or 1 */
    F_ADDR_OPT,     /* "" (off) or "host:port" with a port 0..65535 */
    F_LOG_FORMAT,   /* text | json */
} field_type;

typedef struct field {
    const char *section; /* NULL: top level */
    const char *key;
    const char *path; /* "section.key", as error messages name it */
    field_type type;
    size_t off;
    int64_t min, max; /* integers only */
} field;

#define OFF(m) offsetof(baton_config, m)
static const field FIELDS[] = {
    {NULL, "listen", "listen", F_STR_NONEMPTY, OFF(listen), 0, 0},
    {NULL, "log_level", "log_level", F_LOG_LEVEL, OFF(log_level), 0, 0},
    {"redis", "address", "redis.address", F_REDIS_ADDR, OFF(redis_address), 0, 0},
    {"redis", "username", "redis.username", F_STR, OFF(redis_username), 0, 0},
    {"redis", "password", "redis.password", F_SECRET, OFF(redis_password), 0, 0},
    {"redis", "sentinel_password", "redis.sentinel_password", F_SECRET, OFF(redis_sentinel_password), 0, 0},
    {"redis", "database", "redis.database", F_INT, OFF(redis_database), 0, INT32_MAX},
    {"redis", "key_prefix", "redis.key_prefix", F_KEY_PREFIX, OFF(key_prefix), 0, 0},
    {"redis", "command_timeout_ms", "redis.command_timeout_ms", F_I64, OFF(redis_command_timeout_ms), 1,
     MS_HOUR},
    {"redis", "reconnect_ms", "redis.reconnect_ms", F_I64, OFF(redis_reconnect_ms), 1, MS_HOUR},
    {"redis", "keyspace_events", "redis.keyspace_events", F_BOOL, OFF(redis_keyspace_events), 0, 1},
    {"redis", "min_replicas", "redis.min_replicas", F_INT, OFF(redis_min_replicas), 0, 64},
    {"redis", "replica_timeout_ms", "redis.replica_timeout_ms", F_I64, OFF(redis_replica_timeout_ms), 1,
     MS_HOUR},
    /* a lock-delay of minutes would be an outage of its own */
    {"redis", "failover_grace_ms", "redis.failover_grace_ms", F_I64, OFF(redis_failover_grace_ms), 0,
     600000},
    {"locks", "default_ttl_ms", "locks.default_ttl_ms", F_I64, OFF(default_ttl_ms), 1, MS_YEAR},
    {"locks", "min_ttl_ms", "locks.min_ttl_ms", F_I64, OFF(min_ttl_ms), 1, MS_YEAR},
    {"locks", "max_ttl_ms", "locks.max_ttl_ms", F_I64, OFF(max_ttl_ms), 1, MS_YEAR},
    {"locks", "max_wait_ms", "locks.max_wait_ms", F_I64, OFF(max_wait_ms), 0, MS_YEAR},
    {"locks", "recheck_ms", "locks.recheck_ms", F_I64, OFF(recheck_ms), 1, MS_DAY},
    /* the engine refreshes liveness every third of it: keep that >= 10 ms */
    {"locks", "waiter_liveness_ms", "locks.waiter_liveness_ms", F_I64, OFF(waiter_liveness_ms), 30, MS_HOUR},
    {"locks", "max_pool_devices", "locks.max_pool_devices", F_I32, OFF(max_pool_devices), 1, 4096},
    {"grpc", "max_concurrent_streams", "grpc.max_concurrent_streams", F_I32, OFF(max_concurrent_streams), 1,
     INT32_MAX},
    /* a request carries up to three 256-byte strings: 1 KiB is the floor */
    {"grpc", "max_message_bytes", "grpc.max_message_bytes", F_I32, OFF(max_message_bytes), 1024, INT32_MAX},
    /* gRPC takes these as int channel arguments */
    {"grpc", "keepalive_time_ms", "grpc.keepalive_time_ms", F_I64, OFF(keepalive_time_ms), 1, INT32_MAX},
    {"grpc", "keepalive_timeout_ms", "grpc.keepalive_timeout_ms", F_I64, OFF(keepalive_timeout_ms), 1,
     INT32_MAX},
    /* ---- operate (#18): metrics (alerts: load_alerts) ---- */
    {"metrics", "listen", "metrics.listen", F_ADDR_OPT, OFF(metrics_listen), 0, 0},
    {NULL, "log_format", "log_format", F_LOG_FORMAT, OFF(log_format), 0, 0},
    {NULL, "log_lock_events", "log_lock_events", F_BOOL, OFF(log_lock_events), 0, 1},
};
#undef OFF
#define NFIELDS (sizeof(FIELDS) / sizeof(FIELDS[0]))
_Static_assert(NFIELDS <= 64, "baton_config.from_file has one bit per field");

static const char *const SECTIONS[] = {"redis", "locks", "grpc", "metrics"};
#define NSECTIONS (sizeof(SECTIONS) / sizeof(SECTIONS[0]))

/* The tls, auth and limits sections: config_security.c, included at the end. */
struct load_ctx;
static void sec_defaults(config_security *s);
static void sec_free(config_security *s);
static int sec_copy(config_security *dst, const config_security *src);
static int sec_is_section(const char *key);
static int sec_load_section(struct load_ctx *x, const char *section, const yaml_node_t *m);
static int sec_check_tls(const config_security *s, const char *name, int line, char *err, size_t errlen);
static void sec_to_yaml(FILE *f, const config_security *s);

/* Line numbers (1-based, 0 = not in the file) for error messages. */
typedef struct cfg_lines {
    int field[NFIELDS];
    int *pool_name;    /* npools entries, or NULL */
    int *pool_devices; /* npools entries, or NULL */
} cfg_lines;

/* ---------------------------------------------------------------- errors */

/* Writes "<name>:<line>: <path>: <problem>" (line and path omitted when 0 /
 * NULL) to err. Always returns -1 so callers can `return report(...)`. */
__attribute__((format(printf, 6, 7))) static int report(char *err, size_t errlen, const char *name, int line,
                                                        const char *path, const char *fmt, ...)
{
    char problem[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(problem, sizeof(problem), fmt, ap);
    va_end(ap);
    if (err == NULL || errlen == 0)
        return -1;
    char where[64] = "";
    if (line > 0)
        snprintf(where, sizeof(where), ":%d", line);
    if (path)
        snprintf(err, errlen, "%s%s: %s: %s", name, where, path, problem);
    else
        snprintf(err, errlen, "%s%s: %s", name, where, problem);
    return -1;
}

/* ------------------------------------------------------ defaults and copy */

static char **str_at(baton_config *c, const field *f)
{
    return (char **)((char *)c + f->off);
}

static char *const *cstr_at(const baton_config *c, const field *f)
{
    return (char *const *)((const char *)c + f->off);
}

static int64_t int_get(const baton_config *c, const field *f)
{
    const void *p = (const char *)c + f->off;
    switch (f->type) {
    case F_INT:
    case F_BOOL: return *(const int *)p;
    case F_I32: return *(const int32_t *)p;
    case F_I64: return *(const int64_t *)p;
    default: return 0;
    }
}

static void int_set(baton_config *c, const field *f, int64_t v)
{
    void *p = (char *)c + f->off;
    switch (f->type) {
    case F_INT:
    case F_BOOL: *(int *)p = (int)v; break;
    case F_I32: *(int32_t *)p = (int32_t)v; break;
    case F_I64: *(int64_t *)p = v; break;
    default: break;
    }
}

static int is_string_type(field_type t)
{
    return t == F_SECRET || t == F_STR_NONEMPTY || t == F_STR || t == F_REDIS_ADDR || t == F_LOG_LEVEL ||
           t == F_KEY_PREFIX || t == F_ADDR_OPT || t == F_LOG_FORMAT;
}

int config_set_string(char **field, const char *value)
{
    char *copy = strdup(value ? value : "");
    if (copy == NULL)
        return -1;
    free(*field);
    *field = copy;
    return 0;
}

void config_defaults(baton_config *c)
{
    memset(c, 0, sizeof(*c));
    /* strdup failure leaves NULL, which config_check reports as empty. */
    c->listen = strdup("127.0.0.1:50051");
    c->log_level = strdup("info");
    c->redis_address = strdup("127.0.0.1:6379");
    c->redis_username = strdup("");
    c->redis_password = strdup("");
    c->redis_sentinel_password = strdup("");
    c->redis_replica_timeout_ms = 500;
    c->redis_failover_grace_ms = 0;
    c->redis_database = 0;
    c->key_prefix = strdup("baton:");
    c->redis_command_timeout_ms = 5000;
    c->redis_reconnect_ms = 200;
    c->redis_keyspace_events = 1;
    c->default_ttl_ms = 600000;
    c->min_ttl_ms = 100;
    c->max_ttl_ms = 3600000;
    c->max_wait_ms = 300000;
    c->recheck_ms = 30000;
    c->waiter_liveness_ms = 6000;
    c->max_pool_devices = 64;
    c->max_concurrent_streams = 20000;
    c->max_message_bytes = 65536;
    c->keepalive_time_ms = 10000;
    c->keepalive_timeout_ms = 5000;
    c->pools = NULL;
    c->npools = 0;
    sec_defaults(&c->sec);
    c->metrics_listen = strdup("");
    c->log_format = strdup("text");
}

static void long_held_free(config_long_held *rules, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(rules[i].prefix);
    free(rules);
}

static void names_free(char **names, int32_t n)
{
    for (int32_t i = 0; names && i < n; i++)
        free(names[i]);
    free(names);
}

static void pools_free(config_pool *pools, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(pools[i].name);
        names_free(pools[i].device_names, pools[i].devices);
    }
    free(pools);
}

void config_free(baton_config *c)
{
    for (size_t i = 0; i < NFIELDS; i++) {
        if (is_string_type(FIELDS[i].type))
            free(*str_at(c, &FIELDS[i]));
    }
    pools_free(c->pools, c->npools);
    sec_free(&c->sec);
    long_held_free(c->long_held, c->nlong_held);
    memset(c, 0, sizeof(*c));
}

/* Deep copy of src into dst (which is overwritten). Returns 0 or -1 on OOM
 * (dst is then zeroed). */
static int config_copy(baton_config *dst, const baton_config *src)
{
    *dst = *src;
    for (size_t i = 0; i < NFIELDS; i++) {
        if (is_string_type(FIELDS[i].type))
            *str_at(dst, &FIELDS[i]) = NULL;
    }
    dst->pools = NULL;
    dst->npools = 0;
    memset(&dst->sec, 0, sizeof dst->sec);
    dst->long_held = NULL;
    dst->nlong_held = 0;
    for (size_t i = 0; i < NFIELDS; i++) {
        const field *f = &FIELDS[i];
        if (!is_string_type(f->type) || *cstr_at(src, f) == NULL)
            continue;
        if ((*str_at(dst, f) = strdup(*cstr_at(src, f))) == NULL)
            goto fail;
    }
    if (src->npools > 0) {
        dst->pools = calloc(src->npools, sizeof(*dst->pools));
        if (dst->pools == NULL)
            goto fail;
        dst->npools = src->npools;
        for (size_t i = 0; i < src->npools; i++) {
            dst->pools[i].devices = src->pools[i].devices;
            dst->pools[i].capacity = src->pools[i].capacity;
            if (src->pools[i].name && (dst->pools[i].name = strdup(src->pools[i].name)) == NULL)
                goto fail;
            if (src->pools[i].device_names) {
                int32_t n = src->pools[i].devices;
                if ((dst->pools[i].device_names = calloc((size_t)n, sizeof(char *))) == NULL)
                    goto fail;
                for (int32_t d = 0; d < n; d++)
                    if ((dst->pools[i].device_names[d] = strdup(src->pools[i].device_names[d])) == NULL)
                        goto fail;
            }
        }
    }
    if (sec_copy(&dst->sec, &src->sec) != 0)
        goto fail;
    if (src->nlong_held > 0) {
        dst->long_held = calloc(src->nlong_held, sizeof(*dst->long_held));
        if (dst->long_held == NULL)
            goto fail;
        dst->nlong_held = src->nlong_held;
        for (size_t i = 0; i < src->nlong_held; i++) {
            dst->long_held[i].after_ms = src->long_held[i].after_ms;
            if ((dst->long_held[i].prefix = strdup(src->long_held[i].prefix)) == NULL)
                goto fail;
        }
    }
    return 0;
fail:
    config_free(dst);
    return -1;
}

/* ----------------------------------------------------------- value checks */

/* "" or "host:port" / "[v6]:port" with a decimal port 0..65535. */
static int addr_check(const char *s, char *problem, size_t n)
{
    if (s == NULL || s[0] == '\0')
        return 0;
    const char *colon = strrchr(s, ':');
    const char *p = colon ? colon + 1 : NULL;
    long port = -1;
    if (p && *p && strspn(p, "0123456789") == strlen(p) && strlen(p) <= 5)
        port = strtol(p, NULL, 10);
    if (colon == NULL || colon == s || port < 0 || port > 65535) {
        snprintf(problem, n, "expected \"host:port\" (port 0..65535) or \"\" for off, got '%.64s'", s);
        return -1;
    }
    return 0;
}

/* Single-field check (the loader also enforces types). */
static int field_check(const baton_config *c, const field *f, char *problem, size_t n)
{
    const char *s = is_string_type(f->type) ? *cstr_at(c, f) : NULL;
    switch (f->type) {
    case F_SECRET:
    case F_STR:
        if (s == NULL) {
            snprintf(problem, n, "must be set");
            return -1;
        }
        return 0;
    case F_STR_NONEMPTY:
        if (s == NULL || s[0] == '\0') {
            snprintf(problem, n, "must not be empty");
            return -1;
        }
        return 0;
    case F_LOG_LEVEL:
        if (s == NULL || log_level_parse(s) < 0) {
            snprintf(problem, n, "must be one of debug, info, warn, error, got '%.64s'", s ? s : "");
            return -1;
        }
        return 0;
    case F_KEY_PREFIX: return keyname_check(s, KEY_PREFIX_MAX, problem, n);
    case F_REDIS_ADDR: {
        redis_addr a;
        char why[200];
        if (s == NULL || s[0] == '\0') {
            snprintf(problem, n, "must not be empty");
            return -1;
        }
        if (redis_addr_parse(s, &a, why, sizeof why) != 0) {
            snprintf(problem, n, "%s", why);
            return -1;
        }
        return 0;
    }
    case F_ADDR_OPT: return addr_check(s, problem, n);
    case F_LOG_FORMAT:
        if (s == NULL || log_format_parse(s) < 0) {
            snprintf(problem, n, "must be text or json, got '%.64s'", s ? s : "");
            return -1;
        }
        return 0;
    case F_INT:
    case F_I32:
    case F_I64:
    case F_BOOL: {
        int64_t v = int_get(c, f);
        if (v < f->min || v > f->max) {
            snprintf(problem, n, "must be between %" PRId64 " and %" PRId64 ", got %" PRId64, f->min, f->max,
                     v);
            return -1;
        }
        return 0;
    }
    }
    return 0;
}

/* Of two fields in conflict, blame the one set later in the file (the one
 * most likely just edited); with neither in the file, blame `a`. */
static size_t blame(const cfg_lines *lines, size_t a, size_t b)
{
    if (lines && lines->field[b] > lines->field[a])
        return b;
    return a;
}

static int line_of(const cfg_lines *lines, size_t i)
{
    return lines ? lines->field[i] : 0;
}

static int check_pools(const baton_config *c, const cfg_lines *lines, const char *name, char *err,
                       size_t errlen)
{
    char path[64], problem[256];
    for (size_t i = 0; i < c->npools; i++) {
        const config_pool *p = &c->pools[i];
        int name_line = lines && lines->pool_name ? lines->pool_name[i] : 0;
        int dev_line = lines && lines->pool_devices ? lines->pool_devices[i] : 0;

        snprintf(path, sizeof(path), "pools[%zu].name", i);
        if (keyname_check(p->name, BATON_KEY_MAX, problem, sizeof(problem)) != 0)
            return report(err, errlen, name, name_line, path, "%s", problem);
        for (size_t j = 0; j < i; j++) {
            if (strcmp(c->pools[j].name, p->name) == 0) {
                int first = lines && lines->pool_name ? lines->pool_name[j] : 0;
                if (first > 0)
                    return report(err, errlen, name, name_line, path,
                                  "pool '%s' is already defined at line %d", p->name, first);
                return report(err, errlen, name, name_line, path,
                              "pool '%s' is already defined as pools[%zu]", p->name, j);
            }
        }
        snprintf(path, sizeof(path), "pools[%zu].devices", i);
        if (p->devices < 1 || p->devices > c->max_pool_devices)
            return report(err, errlen, name, dev_line, path,
                          "must be between 1 and locks.max_pool_devices (%" PRId32 "), got %" PRId32,
                          c->max_pool_devices, p->devices);
        /* Device keys are "name/0" .. "name/<devices-1>". */
        size_t room = keyname_pool_name_max(p->devices);
        if (strlen(p->name) > room) {
            snprintf(path, sizeof(path), "pools[%zu].name", i);
            return report(err, errlen, name, name_line, path,
                          "must be at most %zu bytes so that device keys 'name/<index>' fit in %d "
                          "bytes, got %zu bytes",
                          room, BATON_KEY_MAX, strlen(p->name));
        }
    }
    return 0;
}

static int find_field(const char *section, const char *key)
{
    for (size_t i = 0; i < NFIELDS; i++) {
        const field *f = &FIELDS[i];
        int same = section ? (f->section && strcmp(f->section, section) == 0) : f->section == NULL;
        if (same && strcmp(f->key, key) == 0)
            return (int)i;
    }
    return -1;
}

/* Every single-field check, then the cross-field ones. */
static int check_all(const baton_config *c, const cfg_lines *lines, const char *name, char *err,
                     size_t errlen)
{
    char problem[256];
    for (size_t i = 0; i < NFIELDS; i++) {
        if (field_check(c, &FIELDS[i], problem, sizeof(problem)) != 0)
            return report(err, errlen, name, line_of(lines, i), FIELDS[i].path, "%s", problem);
    }
    size_t def = (size_t)find_field("locks", "default_ttl_ms");
    size_t min = (size_t)find_field("locks", "min_ttl_ms");
    size_t max = (size_t)find_field("locks", "max_ttl_ms");
    if (c->min_ttl_ms > c->default_ttl_ms) {
        size_t b = blame(lines, min, def);
        return report(err, errlen, name, line_of(lines, b), FIELDS[b].path,
                      "locks.min_ttl_ms (%" PRId64 ") must not exceed locks.default_ttl_ms (%" PRId64 ")",
                      c->min_ttl_ms, c->default_ttl_ms);
    }
    if (c->redis_min_replicas > 0 && c->redis_replica_timeout_ms >= c->redis_command_timeout_ms) {
        /* WAIT blocks the command connection: its own reply must not count as overdue. */
        size_t rt = (size_t)find_field("redis", "replica_timeout_ms");
        size_t ct = (size_t)find_field("redis", "command_timeout_ms");
        size_t b = blame(lines, rt, ct);
        return report(err, errlen, name, line_of(lines, b), FIELDS[b].path,
                      "redis.replica_timeout_ms (%" PRId64 ") must be below redis.command_timeout_ms (%" PRId64
                      ") when redis.min_replicas is set",
                      c->redis_replica_timeout_ms, c->redis_command_timeout_ms);
    }
    if (c->redis_database != 0 && c->redis_address && strncmp(c->redis_address, "cluster://", 10) == 0) {
        size_t db = (size_t)find_field("redis", "database");
        size_t ad = (size_t)find_field("redis", "address");
        size_t b = blame(lines, db, ad);
        return report(err, errlen, name, line_of(lines, b), FIELDS[b].path,
                      "redis.database must be 0 with a cluster:// address (Redis Cluster has one database)");
    }
    if (c->default_ttl_ms > c->max_ttl_ms) {
        size_t b = blame(lines, def, max);
        return report(err, errlen, name, line_of(lines, b), FIELDS[b].path,
                      "locks.default_ttl_ms (%" PRId64 ") must not exceed locks.max_ttl_ms (%" PRId64 ")",
                      c->default_ttl_ms, c->max_ttl_ms);
    }
    if (check_pools(c, lines, name, err, errlen) != 0)
        return -1;
    return sec_check_tls(&c->sec, name, 0, err, errlen);
}

int config_check(const baton_config *c, char *err, size_t errlen)
{
    return check_all(c, NULL, "<command line>", err, errlen);
}

/* ------------------------------------------------------------ YAML typing */

typedef enum scalar_kind { K_NULL, K_BOOL, K_INT, K_STRING } scalar_kind;

typedef struct load_ctx {
    baton_config *c; /* the working copy */
    yaml_document_t *doc;
    const char *name;
    char *err;
    size_t errlen;
    cfg_lines lines;
} load_ctx;

static int node_line(const yaml_node_t *n)
{
    return (int)n->start_mark.line + 1;
}

static const char *scalar_text(const yaml_node_t *n)
{
    return (const char *)n->data.scalar.value;
}

static int is_plain(const yaml_node_t *n)
{
    return n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE || n->data.scalar.style == YAML_ANY_SCALAR_STYLE;
}

static int parse_bool(const char *s, int *out)
{
    if (strcasecmp(s, "true") == 0 || strcasecmp(s, "yes") == 0)
        return *out = 1, 0;
    if (strcasecmp(s, "false") == 0 || strcasecmp(s, "no") == 0)
        return *out = 0, 0;
    return -1;
}

/* Decimal integer: optional '-', digits, no leading zeros (YAML 1.1 reads
 * "010" as octal), no exponent, suffix or sign '+'. Returns 0, -1 when it is
 * not such an integer, -2 when it is one but does not fit int64. */
static int parse_int(const char *s, int64_t *out)
{
    int neg = 0;
    if (*s == '-')
        neg = 1, s++;
    if (*s < '0' || *s > '9')
        return -1;
    if (s[0] == '0' && s[1] != '\0')
        return -1;
    uint64_t v = 0;
    int overflow = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        unsigned d = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - d) / 10)
            overflow = 1;
        else
            v = v * 10 + d;
    }
    uint64_t limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    if (overflow || v > limit)
        return -2;
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return 0;
}

static scalar_kind classify(const yaml_node_t *n)
{
    const char *s = scalar_text(n);
    int b;
    int64_t i;
    if (!is_plain(n))
        return K_STRING;
    if (s[0] == '\0' || strcmp(s, "~") == 0 || strcmp(s, "null") == 0 || strcmp(s, "Null") == 0 ||
        strcmp(s, "NULL") == 0)
        return K_NULL;
    if (parse_bool(s, &b) == 0)
        return K_BOOL;
    if (parse_int(s, &i) != -1)
        return K_INT;
    return K_STRING;
}

/* "a mapping", "an integer", ... for "expected X, got Y" messages. */
static const char *describe(const yaml_node_t *n)
{
    switch (n->type) {
    case YAML_MAPPING_NODE: return "a mapping";
    case YAML_SEQUENCE_NODE: return "a sequence";
    case YAML_SCALAR_NODE:
        switch (classify(n)) {
        case K_NULL: return "null";
        case K_BOOL: return "a boolean";
        case K_INT: return "an integer";
        case K_STRING: return "a string";
        }
        break;
    default: break;
    }
    return "nothing";
}

static int oom(load_ctx *x)
{
    return report(x->err, x->errlen, x->name, 0, NULL, "out of memory");
}

/* A string value: quoted, or a plain scalar that is not null/bool/integer. */
static int load_string(load_ctx *x, const yaml_node_t *n, const char *path, char **out)
{
    if (n->type != YAML_SCALAR_NODE)
        return report(x->err, x->errlen, x->name, node_line(n), path, "expected a string, got %s",
                      describe(n));
    scalar_kind k = classify(n);
    if (k != K_STRING)
        return report(x->err, x->errlen, x->name, node_line(n), path,
                      "expected a string, got %s (quote it: \"%.64s\")", describe(n), scalar_text(n));
    if (strlen(scalar_text(n)) != n->data.scalar.length)
        return report(x->err, x->errlen, x->name, node_line(n), path, "must not contain NUL bytes");
    char *copy = strdup(scalar_text(n));
    if (copy == NULL)
        return oom(x);
    free(*out);
    *out = copy;
    return 0;
}

static int load_int(load_ctx *x, const yaml_node_t *n, const char *path, int64_t *out)
{
    if (n->type != YAML_SCALAR_NODE || classify(n) == K_NULL || classify(n) == K_BOOL)
        return report(x->err, x->errlen, x->name, node_line(n), path, "expected an integer, got %s",
                      describe(n));
    if (!is_plain(n)) {
        int64_t ignored;
        return report(x->err, x->errlen, x->name, node_line(n), path, "expected an integer, got a string%s",
                      parse_int(scalar_text(n), &ignored) == 0 ? " (remove the quotes)" : "");
    }
    int rc = parse_int(scalar_text(n), out);
    if (rc == -2)
        return report(x->err, x->errlen, x->name, node_line(n), path, "integer out of range: %.64s",
                      scalar_text(n));
    if (rc != 0)
        return report(x->err, x->errlen, x->name, node_line(n), path,
                      "expected a decimal integer (milliseconds for durations), got '%.64s'", scalar_text(n));
    return 0;
}

static int load_field(load_ctx *x, size_t idx, const yaml_node_t *n)
{
    const field *f = &FIELDS[idx];
    char problem[256];
    int rc;

    x->lines.field[idx] = node_line(n);
    if (is_string_type(f->type)) {
        rc = load_string(x, n, f->path, str_at(x->c, f));
    } else if (f->type == F_BOOL) {
        int b;
        if (n->type != YAML_SCALAR_NODE || !is_plain(n) || parse_bool(scalar_text(n), &b) != 0)
            return report(x->err, x->errlen, x->name, node_line(n), f->path,
                          "expected a boolean (true/false/yes/no), got %s", describe(n));
        int_set(x->c, f, b);
        rc = 0;
    } else {
        int64_t v;
        if ((rc = load_int(x, n, f->path, &v)) != 0)
            return rc;
        if (v < f->min || v > f->max)
            return report(x->err, x->errlen, x->name, node_line(n), f->path,
                          "must be between %" PRId64 " and %" PRId64 ", got %" PRId64, f->min, f->max, v);
        int_set(x->c, f, v);
    }
    if (rc != 0)
        return rc;
    if (field_check(x->c, f, problem, sizeof(problem)) != 0)
        return report(x->err, x->errlen, x->name, node_line(n), f->path, "%s", problem);
    x->c->from_file |= UINT64_C(1) << idx;
    return 0;
}

/* ------------------------------------------------------------ YAML walk */

/*
 * Checks that mapping key `k` (pair `i` of mapping `m`) is a scalar and not a
 * repeat of an earlier key: libyaml accepts duplicate keys, and a silently
 * ignored first value is exactly the surprise strict loading avoids.
 */
static int check_map_key(load_ctx *x, const yaml_node_t *m, const yaml_node_pair_t *pair, const char *parent)
{
    const yaml_node_t *k = yaml_document_get_node(x->doc, pair->key);
    if (k == NULL || k->type != YAML_SCALAR_NODE)
        return report(x->err, x->errlen, x->name, k ? node_line(k) : 0, parent,
                      "mapping keys must be plain words, got %s", k ? describe(k) : "nothing");
    for (const yaml_node_pair_t *p = m->data.mapping.pairs.start; p < pair; p++) {
        const yaml_node_t *pk = yaml_document_get_node(x->doc, p->key);
        if (pk && pk->type == YAML_SCALAR_NODE && strcmp(scalar_text(pk), scalar_text(k)) == 0) {
            char path[160];
            if (parent)
                snprintf(path, sizeof(path), "%s.%.64s", parent, scalar_text(k));
            else
                snprintf(path, sizeof(path), "%.64s", scalar_text(k));
            return report(x->err, x->errlen, x->name, node_line(k), path, "duplicate key (first at line %d)",
                          node_line(pk));
        }
    }
    return 0;
}

static int unknown_key(load_ctx *x, const yaml_node_t *k, const char *parent, const char *allowed)
{
    char path[160];
    if (parent)
        snprintf(path, sizeof(path), "%s.%.64s", parent, scalar_text(k));
    else
        snprintf(path, sizeof(path), "%.64s", scalar_text(k));
    return report(x->err, x->errlen, x->name, node_line(k), path, "unknown key (allowed: %s)", allowed);
}

/* "a, b, c": the keys allowed in `section` (NULL = top level). */
static void allowed_keys(const char *section, char *buf, size_t n)
{
    size_t used = 0;
    buf[0] = '\0';
#define APPEND(s)                                                                                            \
    do {                                                                                                     \
        int w = snprintf(buf + used, n - used, "%s%s", used ? ", " : "", (s));                               \
        if (w > 0 && (size_t)w < n - used)                                                                   \
            used += (size_t)w;                                                                               \
    } while (0)
    for (size_t i = 0; i < NFIELDS; i++) {
        int same = section ? (FIELDS[i].section && strcmp(FIELDS[i].section, section) == 0)
                           : FIELDS[i].section == NULL;
        if (same)
            APPEND(FIELDS[i].key);
    }
    if (section == NULL) {
        for (size_t i = 0; i < NSECTIONS; i++)
            APPEND(SECTIONS[i]);
        APPEND("pools");
        APPEND("tls");
        APPEND("auth");
        APPEND("limits");
        APPEND("alerts");
    }
#undef APPEND
}

static int is_null(const yaml_node_t *n)
{
    return n->type == YAML_SCALAR_NODE && classify(n) == K_NULL;
}

/* redis / locks / grpc: a mapping of fields (or null: an empty section). */
static int load_section(load_ctx *x, const char *section, const yaml_node_t *m)
{
    char allowed[512];
    if (is_null(m))
        return 0;
    if (m->type != YAML_MAPPING_NODE)
        return report(x->err, x->errlen, x->name, node_line(m), section, "expected a mapping, got %s",
                      describe(m));
    for (const yaml_node_pair_t *p = m->data.mapping.pairs.start; p < m->data.mapping.pairs.top; p++) {
        if (check_map_key(x, m, p, section) != 0)
            return -1;
        const yaml_node_t *k = yaml_document_get_node(x->doc, p->key);
        const yaml_node_t *v = yaml_document_get_node(x->doc, p->value);
        int idx = find_field(section, scalar_text(k));
        if (idx < 0) {
            allowed_keys(section, allowed, sizeof(allowed));
            return unknown_key(x, k, section, allowed);
        }
        if (load_field(x, (size_t)idx, v) != 0)
            return -1;
    }
    return 0;
}

/* A device name: it goes into CUDA_VISIBLE_DEVICES (comma-separated) and
 * BATON_DEVICES, so no separators, spaces or control characters. */
static int device_name_problem(const char *s, char *problem, size_t n)
{
    size_t len = strlen(s);
    if (len == 0 || len > CONFIG_DEVICE_NAME_MAX) {
        snprintf(problem, n, "must be 1..%d bytes, got %zu", CONFIG_DEVICE_NAME_MAX, len);
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch <= ' ' || ch == ',' || ch == 0x7f) {
            snprintf(problem, n,
                     "must not contain spaces, commas or control characters, got byte 0x%02x "
                     "at offset %zu",
                     ch, i);
            return -1;
        }
    }
    return 0;
}

/* pools[i].device_names: a sequence of distinct names, one per device (the
 * count is checked by load_pool once devices is known). */
static int load_device_names(load_ctx *x, const yaml_node_t *s, const char *path, char ***out, int32_t *n)
{
    char kpath[128], problem[160];
    if (s->type != YAML_SEQUENCE_NODE)
        return report(x->err, x->errlen, x->name, node_line(s), path,
                      "expected a sequence of names, one per device, got %s", describe(s));
    size_t len = (size_t)(s->data.sequence.items.top - s->data.sequence.items.start);
    char **names = calloc(len ? len : 1, sizeof(char *));
    if (names == NULL)
        return oom(x), -1;
    for (size_t i = 0; i < len; i++) {
        const yaml_node_t *v = yaml_document_get_node(x->doc, s->data.sequence.items.start[i]);
        snprintf(kpath, sizeof(kpath), "%s[%zu]", path, i);
        if (load_string(x, v, kpath, &names[i]) != 0)
            goto fail;
        if (device_name_problem(names[i], problem, sizeof(problem)) != 0) {
            report(x->err, x->errlen, x->name, node_line(v), kpath, "%s", problem);
            goto fail;
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(names[j], names[i]) == 0) {
                report(x->err, x->errlen, x->name, node_line(v), kpath,
                       "'%s' is already the name of device %zu", names[i], j);
                goto fail;
            }
    }
    *out = names;
    *n = (int32_t)len;
    return 0;
fail:
    names_free(names, (int32_t)len);
    return -1;
}

/* The keys of one pool entry into *out; *nnames: how many device_names it
 * read (not yet checked against devices). */
static int load_pool_keys(load_ctx *x, size_t i, const yaml_node_t *m, config_pool *out, int *name_line,
                          int *dev_line, int32_t *nnames_out)
{
    char path[64], kpath[96];
    int32_t nnames = 0;
    int names_line = 0;
    out->capacity = 1;
    snprintf(path, sizeof(path), "pools[%zu]", i);
    if (m->type != YAML_MAPPING_NODE)
        return report(x->err, x->errlen, x->name, node_line(m), path,
                      "expected a mapping with name and devices, got %s", describe(m));
    for (const yaml_node_pair_t *p = m->data.mapping.pairs.start; p < m->data.mapping.pairs.top; p++) {
        if (check_map_key(x, m, p, path) != 0)
            return -1;
        const yaml_node_t *k = yaml_document_get_node(x->doc, p->key);
        const yaml_node_t *v = yaml_document_get_node(x->doc, p->value);
        if (strcmp(scalar_text(k), "name") == 0) {
            snprintf(kpath, sizeof(kpath), "%s.name", path);
            *name_line = node_line(v);
            if (load_string(x, v, kpath, &out->name) != 0)
                return -1;
        } else if (strcmp(scalar_text(k), "devices") == 0) {
            int64_t d;
            snprintf(kpath, sizeof(kpath), "%s.devices", path);
            *dev_line = node_line(v);
            if (load_int(x, v, kpath, &d) != 0)
                return -1;
            /* The upper bound (locks.max_pool_devices) is checked once the
             * whole document is read: locks may come after pools. */
            if (d < 1 || d > INT32_MAX)
                return report(x->err, x->errlen, x->name, node_line(v), kpath,
                              "must be between 1 and locks.max_pool_devices, got %" PRId64, d);
            out->devices = (int32_t)d;
        } else if (strcmp(scalar_text(k), "capacity") == 0) {
            int64_t cap;
            snprintf(kpath, sizeof(kpath), "%s.capacity", path);
            if (load_int(x, v, kpath, &cap) != 0)
                return -1;
            if (cap < 1 || cap > INT32_MAX)
                return report(x->err, x->errlen, x->name, node_line(v), kpath,
                              "must be between 1 and %d, got %" PRId64, INT32_MAX, cap);
            out->capacity = cap;
        } else if (strcmp(scalar_text(k), "device_names") == 0) {
            snprintf(kpath, sizeof(kpath), "%s.device_names", path);
            names_line = node_line(v);
            names_free(out->device_names, nnames);
            out->device_names = NULL;
            *nnames_out = nnames = 0;
            if (load_device_names(x, v, kpath, &out->device_names, &nnames) != 0)
                return -1;
            *nnames_out = nnames;
        } else {
            return unknown_key(x, k, path, "name, devices, capacity, device_names");
        }
    }
    if (out->name == NULL)
        return report(x->err, x->errlen, x->name, node_line(m), path, "missing name");
    if (out->devices == 0)
        return report(x->err, x->errlen, x->name, node_line(m), path, "missing devices");
    if (out->device_names && nnames != out->devices) {
        snprintf(kpath, sizeof(kpath), "%s.device_names", path);
        return report(x->err, x->errlen, x->name, names_line, kpath,
                      "must list one name per device (%" PRId32 "), got %" PRId32, out->devices, nnames);
    }
    return 0;
}

/* One "- name: N\n  devices: D" entry into *out. On error its device names
 * are freed here (pools_free counts them by devices, which may differ). */
static int load_pool(load_ctx *x, size_t i, const yaml_node_t *m, config_pool *out, int *name_line,
                     int *dev_line)
{
    int32_t nnames = 0;
    if (load_pool_keys(x, i, m, out, name_line, dev_line, &nnames) == 0)
        return 0;
    names_free(out->device_names, nnames);
    out->device_names = NULL;
    return -1;
}

/* pools: a sequence of pool mappings; replaces any pools already in *c. */
static int load_pools(load_ctx *x, const yaml_node_t *s)
{
    x->c->pools_from_file = 1; /* (kept only if the whole load succeeds) */
    if (is_null(s)) {
        pools_free(x->c->pools, x->c->npools);
        x->c->pools = NULL;
        x->c->npools = 0;
        return 0;
    }
    if (s->type != YAML_SEQUENCE_NODE)
        return report(x->err, x->errlen, x->name, node_line(s), "pools",
                      "expected a sequence of {name, devices}, got %s", describe(s));
    size_t n = (size_t)(s->data.sequence.items.top - s->data.sequence.items.start);
    config_pool *pools = NULL;
    int *name_lines = NULL, *dev_lines = NULL;
    if (n > 0) {
        pools = calloc(n, sizeof(*pools));
        name_lines = calloc(n, sizeof(int));
        dev_lines = calloc(n, sizeof(int));
        if (pools == NULL || name_lines == NULL || dev_lines == NULL) {
            oom(x);
            goto fail;
        }
    }
    for (size_t i = 0; i < n; i++) {
        const yaml_node_t *item = yaml_document_get_node(x->doc, s->data.sequence.items.start[i]);
        if (load_pool(x, i, item, &pools[i], &name_lines[i], &dev_lines[i]) != 0)
            goto fail;
    }
    pools_free(x->c->pools, x->c->npools);
    free(x->lines.pool_name);
    free(x->lines.pool_devices);
    x->c->pools = pools;
    x->c->npools = n;
    x->lines.pool_name = name_lines;
    x->lines.pool_devices = dev_lines;
    return 0;
fail:
    pools_free(pools, n);
    free(name_lines);
    free(dev_lines);
    return -1;
}

/* ---- operate (#18): alerts ---- */

/* One "- prefix: P\n  after_ms: N" entry of alerts.long_held into *out. */
static int load_long_held_rule(load_ctx *x, size_t i, const yaml_node_t *m, config_long_held *out, int *line)
{
    char path[64], kpath[96], problem[256];
    snprintf(path, sizeof(path), "alerts.long_held[%zu]", i);
    *line = node_line(m);
    if (m->type != YAML_MAPPING_NODE)
        return report(x->err, x->errlen, x->name, node_line(m), path,
                      "expected a mapping with prefix and after_ms, got %s", describe(m));
    for (const yaml_node_pair_t *p = m->data.mapping.pairs.start; p < m->data.mapping.pairs.top; p++) {
        if (check_map_key(x, m, p, path) != 0)
            return -1;
        const yaml_node_t *k = yaml_document_get_node(x->doc, p->key);
        const yaml_node_t *v = yaml_document_get_node(x->doc, p->value);
        if (strcmp(scalar_text(k), "prefix") == 0) {
            snprintf(kpath, sizeof(kpath), "%s.prefix", path);
            /* "" (quoted) is every key */
            if (v->type == YAML_SCALAR_NODE && !is_plain(v) && scalar_text(v)[0] == '\0') {
                free(out->prefix);
                if ((out->prefix = strdup("")) == NULL)
                    return oom(x);
            } else if (load_string(x, v, kpath, &out->prefix) != 0) {
                return -1;
            } else if (keyname_check(out->prefix, BATON_KEY_MAX, problem, sizeof(problem)) != 0) {
                return report(x->err, x->errlen, x->name, node_line(v), kpath, "%s", problem);
            }
        } else if (strcmp(scalar_text(k), "after_ms") == 0) {
            snprintf(kpath, sizeof(kpath), "%s.after_ms", path);
            if (load_int(x, v, kpath, &out->after_ms) != 0)
                return -1;
            if (out->after_ms < 1 || out->after_ms > MS_YEAR)
                return report(x->err, x->errlen, x->name, node_line(v), kpath,
                              "must be between 1 and %" PRId64 ", got %" PRId64, MS_YEAR, out->after_ms);
        } else {
            return unknown_key(x, k, path, "prefix, after_ms");
        }
    }
    if (out->prefix == NULL)
        return report(x->err, x->errlen, x->name, node_line(m), path, "missing prefix (\"\" for every key)");
    if (out->after_ms == 0)
        return report(x->err, x->errlen, x->name, node_line(m), path, "missing after_ms");
    return 0;
}

/* alerts: {long_held: [rules]}; replaces any rules already in *c. */
static int load_alerts(load_ctx *x, const yaml_node_t *m)
{
    if (is_null(m))
        return 0;
    if (m->type != YAML_MAPPING_NODE)
        return report(x->err, x->errlen, x->name, node_line(m), "alerts", "expected a mapping, got %s",
                      describe(m));
    for (const yaml_node_pair_t *p = m->data.mapping.pairs.start; p < m->data.mapping.pairs.top; p++) {
        if (check_map_key(x, m, p, "alerts") != 0)
            return -1;
        const yaml_node_t *k = yaml_document_get_node(x->doc, p->key);
        const yaml_node_t *s = yaml_document_get_node(x->doc, p->value);
        if (strcmp(scalar_text(k), "long_held") != 0)
            return unknown_key(x, k, "alerts", "long_held");
        x->c->long_held_from_file = 1;
        if (is_null(s)) {
            long_held_free(x->c->long_held, x->c->nlong_held);
            x->c->long_held = NULL;
            x->c->nlong_held = 0;
            continue;
        }
        if (s->type != YAML_SEQUENCE_NODE)
            return report(x->err, x->errlen, x->name, node_line(s), "alerts.long_held",
                          "expected a sequence of {prefix, after_ms}, got %s", describe(s));
        size_t n = (size_t)(s->data.sequence.items.top - s->data.sequence.items.start);
        config_long_held *rules = n ? calloc(n, sizeof(*rules)) : NULL;
        int *lines = n ? calloc(n, sizeof(int)) : NULL;
        if (n && (rules == NULL || lines == NULL)) {
            free(rules);
            free(lines);
            return oom(x);
        }
        int rc = 0;
        for (size_t i = 0; i < n && rc == 0; i++) {
            const yaml_node_t *item = yaml_document_get_node(x->doc, s->data.sequence.items.start[i]);
            rc = load_long_held_rule(x, i, item, &rules[i], &lines[i]);
            for (size_t j = 0; rc == 0 && j < i; j++) {
                if (strcmp(rules[j].prefix, rules[i].prefix) == 0) {
                    char path[64];
                    snprintf(path, sizeof(path), "alerts.long_held[%zu].prefix", i);
                    rc = report(x->err, x->errlen, x->name, lines[i], path,
                                "prefix '%s' already has a rule at line %d", rules[i].prefix, lines[j]);
                }
            }
        }
        free(lines);
        if (rc != 0) {
            long_held_free(rules, n);
            return rc;
        }
        long_held_free(x->c->long_held, x->c->nlong_held);
        x->c->long_held = rules;
        x->c->nlong_held = n;
    }
    return 0;
}

static int load_root(load_ctx *x, const yaml_node_t *root)
{
    char allowed[512];
    if (root == NULL || is_null(root))
        return 0; /* an empty file: every default stands */
    if (root->type != YAML_MAPPING_NODE)
        return report(x->err, x->errlen, x->name, node_line(root), NULL,
                      "expected a mapping of settings at the top level, got %s", describe(root));
    for (const yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top; p++) {
        if (check_map_key(x, root, p, NULL) != 0)
            return -1;
        const yaml_node_t *k = yaml_document_get_node(x->doc, p->key);
        const yaml_node_t *v = yaml_document_get_node(x->doc, p->value);
        const char *key = scalar_text(k);
        int idx = find_field(NULL, key);
        int rc;
        if (idx >= 0) {
            rc = load_field(x, (size_t)idx, v);
        } else if (strcmp(key, "pools") == 0) {
            rc = load_pools(x, v);
        } else if (sec_is_section(key)) {
            rc = sec_load_section(x, key, v);
        } else if (strcmp(key, "alerts") == 0) {
            rc = load_alerts(x, v);
        } else {
            size_t s;
            for (s = 0; s < NSECTIONS && strcmp(key, SECTIONS[s]) != 0; s++)
                ;
            if (s == NSECTIONS) {
                allowed_keys(NULL, allowed, sizeof(allowed));
                return unknown_key(x, k, NULL, allowed);
            }
            rc = load_section(x, SECTIONS[s], v);
        }
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* libyaml's reader errors carry a byte offset but no line: count them. */
static int line_at_offset(const char *yaml, size_t len, size_t off)
{
    int line = 1;
    for (size_t i = 0; i < off && i < len; i++)
        line += yaml[i] == '\n';
    return line;
}

static int syntax_error(const yaml_parser_t *p, const char *name, const char *yaml, size_t len, char *err,
                        size_t errlen)
{
    const char *problem = p->problem ? p->problem : "malformed YAML";
    if (p->error == YAML_MEMORY_ERROR)
        return report(err, errlen, name, 0, NULL, "out of memory");
    if (p->error == YAML_READER_ERROR)
        return report(err, errlen, name, line_at_offset(yaml, len, p->problem_offset), NULL,
                      "invalid YAML: %s (character 0x%02x at byte offset %zu)", problem,
                      (unsigned)p->problem_value, p->problem_offset);
    if (p->context)
        return report(err, errlen, name, (int)p->problem_mark.line + 1, NULL,
                      "invalid YAML: %s %s (opened at line %d)", problem, p->context,
                      (int)p->context_mark.line + 1);
    return report(err, errlen, name, (int)p->problem_mark.line + 1, NULL, "invalid YAML: %s", problem);
}

int config_load_string(baton_config *c, const char *name, const char *yaml, size_t len, char *err,
                       size_t errlen)
{
    yaml_parser_t parser;
    yaml_document_t doc, extra;
    baton_config work;
    load_ctx x;
    int rc = -1, have_doc = 0;

    if (err && errlen)
        err[0] = '\0';
    if (!name)
        name = "<config>";
    if (config_copy(&work, c) != 0)
        return report(err, errlen, name, 0, NULL, "out of memory");
    memset(&x, 0, sizeof(x));
    x.c = &work;
    x.doc = &doc;
    x.name = name;
    x.err = err;
    x.errlen = errlen;

    if (!yaml_parser_initialize(&parser)) {
        report(err, errlen, name, 0, NULL, "out of memory");
        goto out_work;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)yaml, len);
    /* yaml_parser_load deletes the document itself when it fails. */
    if (!yaml_parser_load(&parser, &doc)) {
        syntax_error(&parser, name, yaml, len, err, errlen);
        goto out_parser;
    }
    have_doc = 1;
    if (load_root(&x, yaml_document_get_root_node(&doc)) != 0)
        goto out_doc;
    /* One document per file: a second one would be silently ignored. */
    if (yaml_document_get_root_node(&doc) != NULL) {
        if (!yaml_parser_load(&parser, &extra)) {
            syntax_error(&parser, name, yaml, len, err, errlen);
            goto out_doc;
        }
        yaml_node_t *r = yaml_document_get_root_node(&extra);
        int line = r ? node_line(r) : 0;
        yaml_document_delete(&extra);
        if (r != NULL) {
            report(err, errlen, name, line, NULL, "only one YAML document is allowed");
            goto out_doc;
        }
    }
    if (check_all(&work, &x.lines, name, err, errlen) != 0)
        goto out_doc;
    config_free(c);
    *c = work;
    memset(&work, 0, sizeof(work));
    rc = 0;
out_doc:
    if (have_doc)
        yaml_document_delete(&doc);
out_parser:
    yaml_parser_delete(&parser);
out_work:
    free(x.lines.pool_name);
    free(x.lines.pool_devices);
    config_free(&work);
    return rc;
}

int config_load_file(baton_config *c, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t len = 0;
    int rc = -1;

    if (f == NULL)
        return report(err, errlen, path, 0, NULL, "cannot open: %s", strerror(errno));
    buf = malloc(CONFIG_FILE_MAX + 1);
    if (buf == NULL) {
        report(err, errlen, path, 0, NULL, "out of memory");
        goto out;
    }
    len = fread(buf, 1, CONFIG_FILE_MAX + 1, f);
    if (ferror(f)) {
        report(err, errlen, path, 0, NULL, "cannot read: %s", strerror(errno));
        goto out;
    }
    if (len > CONFIG_FILE_MAX) {
        report(err, errlen, path, 0, NULL, "file is larger than %d bytes", CONFIG_FILE_MAX);
        goto out;
    }
    rc = config_load_string(c, path, buf, len, err, errlen);
out:
    free(buf);
    fclose(f);
    return rc;
}

/* -------------------------------------------------------- effective view */

int config_override(baton_config *c, const char *path, const char *value)
{
    for (size_t i = 0; i < NFIELDS; i++) {
        if (strcmp(FIELDS[i].path, path) != 0)
            continue;
        if (!is_string_type(FIELDS[i].type))
            return BATON_E_INVALID;
        if (config_set_string(str_at(c, &FIELDS[i]), value) != 0)
            return BATON_E_NOMEM;
        c->from_flags |= UINT64_C(1) << i;
        return 0;
    }
    return BATON_E_INVALID;
}

/* s as a YAML double-quoted scalar. */
static void put_quoted(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p < 0x20 || *p == 0x7f)
            fprintf(f, "\\x%02x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

char *config_to_yaml(const baton_config *c)
{
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    if (f == NULL)
        return NULL;
    const char *section = NULL;
    for (size_t i = 0; i < NFIELDS; i++) {
        const field *fd = &FIELDS[i];
        if (fd->section && (section == NULL || strcmp(section, fd->section) != 0))
            fprintf(f, "%s:\n", fd->section);
        section = fd->section;
        fprintf(f, "%s%s: ", fd->section ? "  " : "", fd->key);
        if (fd->type == F_SECRET) {
            const char *v = *cstr_at(c, fd);
            fputs(v && v[0] ? "\"(set, not shown)\"" : "\"\"", f);
        } else if (is_string_type(fd->type)) {
            put_quoted(f, *cstr_at(c, fd));
        } else if (fd->type == F_BOOL) {
            fputs(int_get(c, fd) ? "true" : "false", f);
        } else {
            fprintf(f, "%" PRId64, int_get(c, fd));
        }
        uint64_t bit = UINT64_C(1) << i;
        fprintf(f, "  # %s\n", c->from_flags & bit ? "command line" : c->from_file & bit ? "file" : "default");
    }
    if (c->npools == 0) {
        fprintf(f, "pools: []  # %s\n", c->pools_from_file ? "file" : "default");
    } else {
        fputs("pools:  # file\n", f);
        for (size_t i = 0; i < c->npools; i++) {
            fputs("  - name: ", f);
            put_quoted(f, c->pools[i].name);
            fprintf(f, "\n    devices: %" PRId32 "\n", c->pools[i].devices);
            if (c->pools[i].capacity != 1)
                fprintf(f, "    capacity: %" PRId64 "\n", c->pools[i].capacity);
            if (c->pools[i].device_names) {
                fputs("    device_names: [", f);
                for (int32_t d = 0; d < c->pools[i].devices; d++) {
                    fputs(d ? ", " : "", f);
                    put_quoted(f, c->pools[i].device_names[d]);
                }
                fputs("]\n", f);
            }
        }
    }
    sec_to_yaml(f, &c->sec);
    if (c->nlong_held == 0) {
        fprintf(f, "alerts:\n  long_held: []  # %s\n", c->long_held_from_file ? "file" : "default");
    } else {
        fputs("alerts:\n  long_held:  # file\n", f);
        for (size_t i = 0; i < c->nlong_held; i++) {
            fputs("    - prefix: ", f);
            put_quoted(f, c->long_held[i].prefix);
            fprintf(f, "\n      after_ms: %" PRId64 "\n", c->long_held[i].after_ms);
        }
    }
    if (ferror(f)) {
        fclose(f);
        free(out);
        return NULL;
    }
    if (fclose(f) != 0) {
        free(out);
        return NULL;
    }
    return out;
}

#include "config_security.c"
