#ifndef BATON_KEYNAME_H
#define BATON_KEYNAME_H

/*
 * The character rules of lock keys, pool names, watch prefixes and the Redis
 * key prefix, shared by request validation and configuration. Pure.
 */

#include <stddef.h>
#include <stdint.h>

#define KEYNAME_CHARSET "[A-Za-z0-9_-.:/@+=]"

/* 1 if ch may appear in a key. */
int keyname_byte_ok(unsigned char ch);

/* 0 if s is 1..max bytes of KEYNAME_CHARSET; else -1 with the problem (no
 * field name, e.g. "must not be empty") written to problem. */
int keyname_check(const char *s, size_t max, char *problem, size_t n);

/* The longest pool name whose device keys "name/0" .. "name/<devices-1>" all
 * fit in BATON_KEY_MAX bytes (devices >= 1). */
size_t keyname_pool_name_max(int32_t devices);

#endif
