#ifndef BATON_CONFIG_H
#define BATON_CONFIG_H

/*
 * batond configuration: defaults, a YAML file (libyaml), then command-line
 * overrides (main.c). deploy/batond.yaml documents every key with its default.
 *
 * File shape (every key optional; durations are integers in milliseconds):
 *   listen: "127.0.0.1:50051"
 *   log_level: info                  # debug | info | warn | error
 *   redis:
 *     address: "127.0.0.1:6379"      # or redis://, unix:/path, sentinel://H:P,.../NAME
 *     username: ""                   # ACL user ("" = none)
 *     password: ""
 *     sentinel_password: ""
 *     database: 0
 *     key_prefix: "baton:"
 *     command_timeout_ms: 5000
 *     reconnect_ms: 200
 *     keyspace_events: true
 *     min_replicas: 0                # > 0: grants confirmed with WAIT
 *     replica_timeout_ms: 500
 *     failover_grace_ms: 0           # > 0: lock-delay after a new primary
 *   locks:
 *     default_ttl_ms: 600000
 *     min_ttl_ms: 100
 *     max_ttl_ms: 3600000
 *     max_wait_ms: 300000
 *     recheck_ms: 30000
 *     waiter_liveness_ms: 6000
 *     max_pool_devices: 64
 *   grpc:
 *     max_concurrent_streams: 20000
 *     max_message_bytes: 65536
 *     keepalive_time_ms: 10000
 *     keepalive_timeout_ms: 5000
 *   pools:
 *     - name: node7
 *       devices: 8
 *       capacity: 1                  # per device: weights of its holders sum to at most this
 *       device_names: [GPU-0a1b, ...] # optional, one per device (CUDA_VISIBLE_DEVICES)
 *   metrics:
 *     listen: ""                     # "host:port" serves GET /metrics; "" = off
 *   alerts:
 *     long_held:                     # first matching prefix applies
 *       - prefix: "gpu_lock:"
 *         after_ms: 3600000
 */

#include <stddef.h>
#include <stdint.h>

/* The longest device name (pools[].device_names). */
#define CONFIG_DEVICE_NAME_MAX 128
#include "config_security.h"

typedef struct config_pool {
    char *name;
    int32_t devices;
    int64_t capacity;    /* per device; default 1 */
    char **device_names; /* `devices` names, or NULL */
} config_pool;

/* alerts.long_held: a hold of a key starting with prefix ("" = every key)
 * that is older than after_ms. */
typedef struct config_long_held {
    char *prefix;
    int64_t after_ms;
} config_long_held;

typedef struct baton_config {
    char *listen;
    char *log_level;
    /* redis */
    char *redis_address;
    char *redis_username;
    char *redis_password;
    char *redis_sentinel_password;
    int redis_database;
    char *key_prefix;
    int64_t redis_command_timeout_ms;
    int64_t redis_reconnect_ms;
    int redis_keyspace_events;
    int redis_min_replicas;
    int64_t redis_replica_timeout_ms;
    int64_t redis_failover_grace_ms; /* 0 = off */
    /* locks */
    int64_t default_ttl_ms;
    int64_t min_ttl_ms;
    int64_t max_ttl_ms;
    int64_t max_wait_ms;
    int64_t recheck_ms;
    int64_t waiter_liveness_ms;
    int32_t max_pool_devices;
    /* grpc */
    int32_t max_concurrent_streams;
    int32_t max_message_bytes;
    int64_t keepalive_time_ms;
    int64_t keepalive_timeout_ms;
    /* pools */
    config_pool *pools;
    size_t npools;
    /* tls, auth, limits (config_security.h) */
    config_security sec;
    /* operate (#18): metrics and alerts */
    char *metrics_listen; /* "" = no metrics endpoint */
    char *log_format;     /* text | json */
    int log_lock_events;  /* log every grant and lock end */
    config_long_held *long_held;
    size_t nlong_held;
    int long_held_from_file;
    /* where the settings came from (config_to_yaml says it): one bit per
     * setting, in the order config_to_yaml lists them */
    uint64_t from_file;
    uint64_t from_flags;
    int pools_from_file;
} baton_config;

/* Fills every field with its default (strings are heap copies). */
void config_defaults(baton_config *c);
/* Frees every string and the pools array; leaves *c zeroed. */
void config_free(baton_config *c);

/*
 * Applies a YAML document on top of *c. Unknown keys, wrong types, values out
 * of range and inconsistent values (min_ttl > default_ttl > max_ttl, a pool
 * named twice, devices < 1 or > max_pool_devices, an invalid pool name) are
 * errors. On error returns -1 and writes "<name>:<line>: <key path>: <problem>"
 * to err, e.g. "batond.yaml:7: locks.max_ttl_ms: expected a positive integer";
 * `name` is what error messages call the document (the file path).
 * Returns 0 on success.
 */
int config_load_string(baton_config *c, const char *name, const char *yaml, size_t len, char *err,
                       size_t errlen);
/* Reads the file and calls config_load_string (an unreadable file is an error
 * naming the path and strerror). */
int config_load_file(baton_config *c, const char *path, char *err, size_t errlen);
/* Checks cross-field consistency after command-line overrides; same error form
 * with "<command line>" as name. */
int config_check(const baton_config *c, char *err, size_t errlen);

/* Replaces a string field (frees the old copy). Returns 0, or -1 on OOM. */
int config_set_string(char **field, const char *value);

/* Sets the string setting at `path` ("redis.address") from the command line,
 * and records that it came from there. Returns 0, BATON_E_INVALID (-1) for
 * a path that names no string setting, or BATON_E_NOMEM. */
int config_override(baton_config *c, const char *path, const char *value);

/* Sets a string setting of the tls section ("tls.cert_file") from the command
 * line. Returns 0, BATON_E_INVALID for any other path, or BATON_E_NOMEM. */
int config_security_override(baton_config *c, const char *path, const char *value);

/*
 * The settings in effect as a YAML document (heap string; NULL on OOM), one
 * key per line with a comment naming where it came from: "# default",
 * "# file" or "# command line". The Redis password is not shown. For
 * `batond --check-config` and for scripts that must know whether a
 * configuration chose a Redis (deploy/run.sh).
 */
char *config_to_yaml(const baton_config *c);

#endif
