#ifndef BATON_STORE_REDIS_CLUSTER_MAP_H
#define BATON_STORE_REDIS_CLUSTER_MAP_H

/*
 * Redis Cluster routing, the pure part (no I/O; unit-tested from plain
 * values in tests/store/redis/test_cluster_map.c): CRC16 key slots, the hash
 * tag Baton gives its names on a Cluster, one channel name per slot, the slot
 * map from a CLUSTER SLOTS reply, and redirect errors.
 *
 * Layout on a Cluster (store.h has the standalone layout; P = key prefix):
 *   A Baton name N (a key or a pool) hashes by its TAG: N up to its first
 *   '/' after its first byte, or all of N (a name "/x" has the tag "/x", not
 *   an empty one, which Redis would ignore). So a pool "gpu" and its devices "gpu/0", "gpu/1" share
 *   one slot (a pool grant touches them all in one script), while different
 *   pools and plain keys spread across the shards.
 *   Record `rec` of key N:    P{TAG}REST:rec   (REST = N after TAG: "" or "/...")
 *   Record `rec` of pool N:   P pool{TAG}REST:rec
 *   Events of slot s:         P events{T(s)}   (SPUBLISH; T(s) hashes to s)
 *   The fencing floor record of a node: P epoch{T(s)} for a slot s it serves.
 *   Every script also declares P{TAG}:~guard (or P pool{TAG}:~guard), a key
 *   that never exists, so that no script runs while its slot moves (ops.c).
 */

#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#define CLUSTER_NSLOTS 16384
#define CLUSTER_MAX_NODES 64     /* primaries in one map */
#define CLUSTER_HOST_MAX 256
#define CLUSTER_TAG_MAX 8        /* bytes of a slot's channel tag, with its NUL */
#define CLUSTER_NO_NODE 0xFFFFu  /* slot_node[] of a slot no primary serves */

/* CRC16-CCITT (XMODEM), Redis Cluster's key hash: "123456789" -> 0x31C3. */
uint16_t cluster_crc16(const char *buf, size_t len);

/* Redis' slot of a Redis key (its {hash tag} rule: the bytes between the
 * first '{' and the next '}', when not empty, else the whole key). */
int cluster_key_slot(const char *key, size_t len);

/* Length of the TAG of Baton name `name` (see above): up to its first '/'
 * after the first byte. */
size_t cluster_name_tag_len(const char *name);

/* Slot of a Baton key or pool name: CRC16 of its TAG, mod 16384. */
int cluster_name_slot(const char *name);

/* Writes record `rec` of name N ("lock", "q", ...) as laid out on a Cluster:
 * "<prefix><kind>{TAG}REST:<rec>", kind "" for a key or "pool" for a pool.
 * Returns the length, or -1 when it does not fit in outlen. */
int cluster_record_name(char *out, size_t outlen, const char *prefix, const char *kind, const char *name,
                        const char *rec);

/* The inverse for expirations: when `redis_key` (len bytes) is
 * "<prefix>{TAG}REST:lock", copies the Baton key TAG REST into key (a buffer
 * of keylen bytes) and returns 0; -1 otherwise. Works for the standalone
 * layout too ("<prefix>{N}:lock", REST empty). */
int cluster_lock_key_of(const char *redis_key, size_t len, const char *prefix, char *key, size_t keylen);

/* A short tag whose slot is `slot` (0 <= slot < 16384): CRC16(tag) % 16384 ==
 * slot. Deterministic; the table is built once, on first use, from the
 * lowest numbers in base 36 that reach each slot. */
const char *cluster_slot_tag(int slot);

/* The slot map: which primary serves each slot. */
typedef struct cluster_node {
    char host[CLUSTER_HOST_MAX];
    int port;
} cluster_node;

typedef struct cluster_map {
    uint16_t slot_node[CLUSTER_NSLOTS]; /* index into nodes[], or CLUSTER_NO_NODE */
    cluster_node nodes[CLUSTER_MAX_NODES];
    int nnodes;
} cluster_map;

/* Builds *out from a CLUSTER SLOTS reply. Each entry is {start, end,
 * primary[, replicas...]} with a node {host, port, id, ...}; an empty host
 * (or "?") means "the node this reply came from": `from_host` is used then.
 * Nodes are numbered in order of first appearance. Returns 0, or -1 with a
 * reason in err (malformed reply, more than CLUSTER_MAX_NODES primaries,
 * slot out of range). Slots no entry covers are CLUSTER_NO_NODE. */
int cluster_map_parse_slots(const redisReply *r, const char *from_host, cluster_map *out, char *err,
                            size_t errlen);

/* Slots that no primary serves (the map is incomplete while > 0). */
int cluster_map_uncovered(const cluster_map *m);

/* Index of host:port in m->nodes, or -1. */
int cluster_map_find(const cluster_map *m, const char *host, int port);

/* A Redis error reply that is about routing, not about the command. */
typedef enum cluster_redirect_kind {
    CLUSTER_REDIRECT_NONE = 0, /* not a routing error */
    CLUSTER_REDIRECT_MOVED,    /* "MOVED <slot> <host>:<port>": the slot lives there now */
    CLUSTER_REDIRECT_ASK,      /* "ASK <slot> <host>:<port>": this once, there, after ASKING */
    CLUSTER_REDIRECT_TRYAGAIN, /* "TRYAGAIN ...": a slot migrating; retry shortly */
    CLUSTER_REDIRECT_DOWN,     /* "CLUSTERDOWN ...": the cluster cannot serve it now */
} cluster_redirect_kind;

typedef struct cluster_redirect {
    cluster_redirect_kind kind;
    int slot;                       /* MOVED / ASK */
    char host[CLUSTER_HOST_MAX];    /* MOVED / ASK; "" = the node that answered */
    int port;                       /* MOVED / ASK */
} cluster_redirect;

/* Classifies error text err (len bytes, no NUL needed). Returns the kind
 * (also in out->kind); a malformed MOVED / ASK is CLUSTER_REDIRECT_NONE. */
cluster_redirect_kind cluster_redirect_parse(const char *err, size_t len, cluster_redirect *out);

#endif
