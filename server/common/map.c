#include "map.h"

#include <stdlib.h>

uint64_t map_hash_u64(uint64_t id)
{
    /* Fibonacci hashing: ids are often sequential; spread them. */
    uint64_t h = id * 0x9E3779B97F4A7C15ull;
    return h ^ (h >> 32);
}

uint64_t map_hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    return h;
}

static map_node **bucket(const map *m, uint64_t hash)
{
    return &m->buckets[hash & (m->cap - 1)];
}

static void grow(map *m)
{
    size_t cap = m->cap ? m->cap * 2 : 16;
    map_node **nb = calloc(cap, sizeof *nb);
    if (nb == NULL)
        return;
    for (size_t i = 0; i < m->cap; i++) {
        for (map_node *n = m->buckets[i], *next; n; n = next) {
            next = n->next;
            map_node **b = &nb[n->hash & (cap - 1)];
            n->next = *b;
            *b = n;
        }
    }
    free(m->buckets);
    m->buckets = nb;
    m->cap = cap;
}

int map_insert(map *m, map_node *n, uint64_t hash)
{
    if (m->len >= m->cap)
        grow(m);
    if (m->cap == 0)
        return -1;
    n->hash = hash;
    map_node **b = bucket(m, hash);
    n->next = *b;
    *b = n;
    m->len++;
    return 0;
}

void map_remove(map *m, map_node *n)
{
    map_node **p = bucket(m, n->hash);
    while (*p != n)
        p = &(*p)->next;
    *p = n->next;
    n->next = NULL;
    m->len--;
}

map_node *map_first(const map *m, uint64_t hash)
{
    if (m->cap == 0)
        return NULL;
    map_node *n = *bucket(m, hash);
    while (n && n->hash != hash)
        n = n->next;
    return n;
}

map_node *map_next(const map_node *n, uint64_t hash)
{
    for (n = n->next; n && n->hash != hash; n = n->next)
        ;
    return (map_node *)n;
}

void map_each(const map *m, void (*fn)(map_node *n, void *ud), void *ud)
{
    for (size_t i = 0; i < m->cap; i++)
        for (map_node *n = m->buckets[i], *next; n; n = next) {
            next = n->next;
            fn(n, ud);
        }
}

void map_free(map *m)
{
    free(m->buckets);
    m->buckets = NULL;
    m->cap = m->len = 0;
}
