#ifndef BATON_MAP_H
#define BATON_MAP_H

/*
 * The one hash map of batond and libbaton: intrusive and chained. An entry
 * embeds a map_node; the map never allocates entries, only its bucket
 * array, which doubles when the map holds as many entries as buckets.
 *
 * The map knows hashes, not keys: the caller hashes (map_hash_u64 for ids,
 * map_hash_str for names) and compares its own keys while walking one
 * hash's chain, so the same map serves uint64 ids and strings, and an
 * entry may carry extra conditions (an id that appears twice while one of
 * the two is finished):
 *
 *     for (map_node *n = map_first(&m, h); n; n = map_next(n, h)) {
 *         op *o = MAP_ENTRY(n, op, node);
 *         if (o->id == id) return o;
 *     }
 *
 * Not thread-safe: each map belongs to one thread or one lock.
 */

#include <stddef.h>
#include <stdint.h>

typedef struct map_node {
    struct map_node *next;
    uint64_t hash;
} map_node;

typedef struct map {
    map_node **buckets;
    size_t cap; /* 0 or a power of two */
    size_t len;
} map;

#define MAP_ENTRY(node, type, member) ((type *)(void *)((char *)(node)-offsetof(type, member)))

uint64_t map_hash_u64(uint64_t id);
uint64_t map_hash_str(const char *s);

/* Adds n under hash. Returns 0, or -1 when the first bucket array cannot be
 * allocated (a failed growth keeps the longer chains and still adds). */
int map_insert(map *m, map_node *n, uint64_t hash);
/* Removes n, which must be in m. */
void map_remove(map *m, map_node *n);
/* The first / next entry of hash's chain whose hash equals `hash`, or NULL. */
map_node *map_first(const map *m, uint64_t hash);
map_node *map_next(const map_node *n, uint64_t hash);
/* Calls fn on every entry, in no set order. fn may remove (and free) the
 * entry it is given, but change the map in no other way. */
void map_each(const map *m, void (*fn)(map_node *n, void *ud), void *ud);
/* Frees the bucket array (not the entries). */
void map_free(map *m);

#endif
