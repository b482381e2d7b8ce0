/* Unit tests for server/store/redis/cluster_map.c: CRC16 key slots, Baton's
 * name tags and record names on a Cluster, the per-slot channel tags, the
 * slot map from hand-built CLUSTER SLOTS replies, and redirect errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "cluster_map.h"
#include "reply_build.h"

static int slot_of(const char *key)
{
    return cluster_key_slot(key, strlen(key));
}

static void crc16_vector(void **state)
{
    assert_int_equal(cluster_crc16("123456789", 9), 0x31C3);
    assert_int_equal(cluster_crc16("", 0), 0);
    /* bytes above 0x7f are unsigned */
    assert_int_equal(cluster_crc16("\xff", 1), 0x1EF0);
}

static void key_slots(void **state)
{
    assert_int_equal(slot_of("foo"), 12182);
    assert_int_equal(slot_of("bar"), 5061);
    assert_int_equal(slot_of("hello"), 866);
    assert_int_equal(slot_of("{user1000}.following"), slot_of("{user1000}.followers"));
    assert_int_equal(slot_of("{user1000}.following"), slot_of("user1000"));
    /* an empty {} hashes the whole key, not "bar" */
    assert_int_equal(slot_of("foo{}{bar}"), cluster_crc16("foo{}{bar}", 10) & 16383);
    assert_int_not_equal(slot_of("foo{}{bar}"), slot_of("bar"));
    /* from the first '{' to the next '}' */
    assert_int_equal(slot_of("foo{{bar}}zap"), slot_of("{bar"));
    assert_int_equal(slot_of("foo{{bar}}zap"), 4015);
    assert_int_equal(slot_of("foo{bar}{zap}"), slot_of("bar"));
    /* no closing brace: the whole key */
    assert_int_equal(slot_of("foo{bar"), cluster_crc16("foo{bar", 7) & 16383);
    /* len counts, not the NUL */
    assert_int_equal(cluster_key_slot("foo{bar}zzz", 3), slot_of("foo"));
    assert_int_equal(cluster_key_slot("{a}", 2), slot_of("{a"));
}

static void name_tags(void **state)
{
    assert_int_equal(cluster_name_tag_len("gpu/3"), 3);
    assert_int_equal(cluster_name_tag_len("a"), 1);
    assert_int_equal(cluster_name_tag_len("a/b/c"), 1);
    assert_int_equal(cluster_name_tag_len("gpu"), 3);
    assert_int_equal(cluster_name_tag_len("gpu/"), 3);
    /* a leading '/' stays in the tag, so that it is never empty */
    assert_int_equal(cluster_name_tag_len("/x"), 2);
    assert_int_equal(cluster_name_tag_len("/p/0"), 2);
    assert_int_equal(cluster_name_tag_len("/"), 1);
    assert_int_equal(cluster_name_slot("gpu/3"), slot_of("gpu"));
    assert_int_equal(cluster_name_slot("gpu"), 14480);
    assert_int_equal(cluster_name_slot("a/b/c"), slot_of("a"));
    assert_int_equal(cluster_name_slot("rack/gpus/7"), cluster_name_slot("rack/gpus"));
    assert_int_equal(cluster_name_slot("/p/0"), cluster_name_slot("/p"));
}

static void record_names(void **state)
{
    char buf[128];
    assert_int_equal(cluster_record_name(buf, sizeof buf, "baton:", "", "gpu/3", "lock"), 18);
    assert_string_equal(buf, "baton:{gpu}/3:lock");
    assert_int_equal(cluster_record_name(buf, sizeof buf, "baton:", "pool", "gpu", "q"), 17);
    assert_string_equal(buf, "baton:pool{gpu}:q");
    cluster_record_name(buf, sizeof buf, "baton:", "pool", "rack/gpus", "q");
    assert_string_equal(buf, "baton:pool{rack}/gpus:q");
    cluster_record_name(buf, sizeof buf, "", "", "k", "lock");
    assert_string_equal(buf, "{k}:lock");
    cluster_record_name(buf, sizeof buf, "p:", "", "/x", "lock");
    assert_string_equal(buf, "p:{/x}:lock");
    cluster_record_name(buf, sizeof buf, "p:", "", "/p/0", "lock");
    assert_string_equal(buf, "p:{/p}/0:lock");
    /* exactly fitting, and one byte short */
    char small[19];
    assert_int_equal(cluster_record_name(small, sizeof small, "baton:", "", "gpu/3", "lock"), 18);
    assert_string_equal(small, "baton:{gpu}/3:lock");
    assert_int_equal(cluster_record_name(small, 18, "baton:", "", "gpu/3", "lock"), -1);
    assert_int_equal(cluster_record_name(small, 1, "baton:", "", "gpu/3", "lock"), -1);
}

/* Every record of a name is in the name's slot, and a pool is in the slot of
 * its devices: what a multi-key script on a Cluster needs. */
static void records_hash_to_name_slot(void **state)
{
    static const char *names[] = {"gpu", "gpu/0",     "gpu/15", "a/b/c",         "k",    "/x", "/p", "/p/0",
                                  "//0", "rack/gpus", "x:y",    "a-b.c@d+e=f_g", "gpu/", "/"};
    static const char *kinds[] = {"", "pool"};
    static const char *recs[] = {"lock", "q", "tokens", "owner"};
    static const char *prefixes[] = {"baton:", "", "t1:"};
    char buf[256];
    for (size_t n = 0; n < sizeof names / sizeof *names; n++)
        for (size_t k = 0; k < 2; k++)
            for (size_t r = 0; r < sizeof recs / sizeof *recs; r++)
                for (size_t p = 0; p < 3; p++) {
                    int len = cluster_record_name(buf, sizeof buf, prefixes[p], kinds[k], names[n], recs[r]);
                    assert_true(len > 0);
                    if (cluster_key_slot(buf, (size_t)len) != cluster_name_slot(names[n]))
                        fail_msg("%s: slot %d, name %s slot %d", buf, cluster_key_slot(buf, (size_t)len),
                                 names[n], cluster_name_slot(names[n]));
                }
    assert_int_equal(cluster_name_slot("gpu"), cluster_name_slot("gpu/3"));
    assert_int_equal(cluster_name_slot("/"), cluster_name_slot("//0"));
}

static int lock_key(const char *redis_key, const char *prefix, char *key, size_t keylen)
{
    return cluster_lock_key_of(redis_key, strlen(redis_key), prefix, key, keylen);
}

static void lock_key_of(void **state)
{
    char key[64];
    /* Cluster layout */
    assert_int_equal(lock_key("baton:{gpu}/3:lock", "baton:", key, sizeof key), 0);
    assert_string_equal(key, "gpu/3");
    assert_int_equal(lock_key("baton:{a}/b/c:lock", "baton:", key, sizeof key), 0);
    assert_string_equal(key, "a/b/c");
    assert_int_equal(lock_key("baton:{/p}/0:lock", "baton:", key, sizeof key), 0);
    assert_string_equal(key, "/p/0");
    assert_int_equal(lock_key("{a}/b:c:lock", "", key, sizeof key), 0);
    assert_string_equal(key, "a/b:c");
    /* standalone layout */
    assert_int_equal(lock_key("baton:{k}:lock", "baton:", key, sizeof key), 0);
    assert_string_equal(key, "k");
    assert_int_equal(lock_key("baton:{gpu/3}:lock", "baton:", key, sizeof key), 0);
    assert_string_equal(key, "gpu/3");
    /* round trip through cluster_record_name */
    static const char *names[] = {"gpu/3", "k", "a/b/c", "/x", "/p/0", "x:y/z", "gpu/"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        char rec[128];
        int len = cluster_record_name(rec, sizeof rec, "pre:", "", names[i], "lock");
        assert_true(len > 0);
        assert_int_equal(cluster_lock_key_of(rec, (size_t)len, "pre:", key, sizeof key), 0);
        assert_string_equal(key, names[i]);
    }
    /* len counts: the NUL is not needed */
    assert_int_equal(cluster_lock_key_of("baton:{k}:lockXX", 14, "baton:", key, sizeof key), 0);
    assert_string_equal(key, "k");
    /* rejections */
    assert_int_equal(lock_key("other:{k}:lock", "baton:", key, sizeof key), -1); /* wrong prefix */
    assert_int_equal(lock_key("baton:{k}:q", "baton:", key, sizeof key), -1);    /* not :lock */
    assert_int_equal(lock_key("baton:{k}:locks", "baton:", key, sizeof key), -1);
    assert_int_equal(lock_key("baton:{k}lock", "baton:", key, sizeof key), -1);
    assert_int_equal(lock_key("baton:k:lock", "baton:", key, sizeof key), -1);  /* no braces */
    assert_int_equal(lock_key("baton:{k:lock", "baton:", key, sizeof key), -1); /* no '}' */
    assert_int_equal(lock_key("baton:k}:lock", "baton:", key, sizeof key), -1);
    assert_int_equal(lock_key("baton:{}:lock", "baton:", key, sizeof key), -1); /* empty */
    assert_int_equal(lock_key("baton:{}/x:lock", "baton:", key, sizeof key), -1);
    assert_int_equal(lock_key("baton:pool{gpu}:lock", "baton:", key, sizeof key), -1); /* a pool */
    assert_int_equal(lock_key("baton:{a/b}/c:lock", "baton:", key, sizeof key), -1);   /* no layout */
    assert_int_equal(lock_key("baton:{a}b:lock", "baton:", key, sizeof key), -1);
    assert_int_equal(lock_key("baton:{a}/b}:lock", "baton:", key, sizeof key), -1);
    assert_int_equal(lock_key("baton:{a{b}:lock", "baton:", key, sizeof key), -1);
    assert_int_equal(lock_key("baton:", "baton:", key, sizeof key), -1);
    assert_int_equal(lock_key(":lock", "", key, sizeof key), -1);
    assert_int_equal(lock_key("baton:{:lock", "baton:", key, sizeof key), -1);
    assert_int_equal(cluster_lock_key_of("baton:{k\0}:lock", 15, "baton:", key, sizeof key), -1);
    /* too long for the buffer: "gpu/3" needs 6 bytes */
    assert_int_equal(lock_key("baton:{gpu}/3:lock", "baton:", key, 5), -1);
    assert_int_equal(lock_key("baton:{gpu}/3:lock", "baton:", key, 6), 0);
    assert_string_equal(key, "gpu/3");
    assert_int_equal(lock_key("baton:{gpu/3}:lock", "baton:", key, 5), -1);
}

static void slot_tags(void **state)
{
    for (int s = 0; s < CLUSTER_NSLOTS; s++) {
        const char *tag = cluster_slot_tag(s);
        assert_non_null(tag);
        size_t len = strlen(tag);
        assert_true(len > 0 && len < CLUSTER_TAG_MAX);
        if (slot_of(tag) != s)
            fail_msg("slot %d: tag %s hashes to %d", s, tag, slot_of(tag));
        /* usable inside {}: base 36 lowercase only */
        assert_int_equal(strspn(tag, "0123456789abcdefghijklmnopqrstuvwxyz"), len);
        /* so the channel P events{T(s)} is in slot s */
        char chan[32];
        snprintf(chan, sizeof chan, "baton:events{%s}", tag);
        assert_int_equal(slot_of(chan), s);
    }
    /* the lowest numbers win: "0" is the tag of its own slot, and so is "1" */
    assert_string_equal(cluster_slot_tag(slot_of("0")), "0");
    assert_string_equal(cluster_slot_tag(slot_of("z")), "z");
    /* the same pointer and text on every call */
    assert_ptr_equal(cluster_slot_tag(100), cluster_slot_tag(100));
    assert_null(cluster_slot_tag(-1));
    assert_null(cluster_slot_tag(CLUSTER_NSLOTS));
}

/* --------------------------------------------------------- CLUSTER SLOTS */

static redisReply *node3(const char *host, int port, const char *id)
{
    return R_ARR(3, R_STR(host), R_INT(port), R_STR(id));
}

static cluster_map map; /* 48 KiB: not on the stack */

static void parse_ok(redisReply *r, const char *from)
{
    char err[256] = "";
    int rc = cluster_map_parse_slots(r, from, &map, err, sizeof err);
    if (rc != 0)
        fail_msg("unexpected error: %s", err);
    reply_free(r);
}

/* -1 with a message that contains `want`, and an empty map. */
static void parse_bad(redisReply *r, const char *from, const char *want)
{
    char err[256] = "";
    memset(&map, 0x11, sizeof map);
    int rc = cluster_map_parse_slots(r, from, &map, err, sizeof err);
    reply_free(r);
    assert_int_equal(rc, -1);
    if (!strstr(err, want))
        fail_msg("error \"%s\" does not say \"%s\"", err, want);
    assert_int_equal(map.nnodes, 0);
    assert_int_equal(cluster_map_uncovered(&map), CLUSTER_NSLOTS);
}

static void slots_three_primaries(void **state)
{
    /* the entry for the last range comes first: nodes are numbered in order
     * of first appearance */
    parse_ok(
        R_ARR(
            3,
            R_ARR(4, R_INT(10923), R_INT(16383), node3("10.0.0.3", 7002, "c"), node3("10.0.0.6", 7005, "f")),
            R_ARR(4, R_INT(0), R_INT(5460), node3("10.0.0.1", 7000, "a"), node3("10.0.0.4", 7003, "d")),
            R_ARR(5, R_INT(5461), R_INT(10922), node3("10.0.0.2", 7001, "b"), node3("10.0.0.5", 7004, "e"),
                  node3("10.0.0.7", 7006, "g"))),
        "10.0.0.9");
    assert_int_equal(map.nnodes, 3);
    assert_string_equal(map.nodes[0].host, "10.0.0.3");
    assert_int_equal(map.nodes[0].port, 7002);
    assert_string_equal(map.nodes[1].host, "10.0.0.1");
    assert_int_equal(map.nodes[1].port, 7000);
    assert_string_equal(map.nodes[2].host, "10.0.0.2");
    assert_int_equal(map.nodes[2].port, 7001);
    assert_int_equal(map.slot_node[0], 1);
    assert_int_equal(map.slot_node[5460], 1);
    assert_int_equal(map.slot_node[5461], 2);
    assert_int_equal(map.slot_node[10922], 2);
    assert_int_equal(map.slot_node[10923], 0);
    assert_int_equal(map.slot_node[16383], 0);
    assert_int_equal(map.slot_node[slot_of("foo")], 0);
    assert_int_equal(cluster_map_uncovered(&map), 0);
    assert_int_equal(cluster_map_find(&map, "10.0.0.2", 7001), 2);
    assert_int_equal(cluster_map_find(&map, "10.0.0.2", 7000), -1);
    assert_int_equal(cluster_map_find(&map, "10.0.0.5", 7004), -1); /* a replica */
    assert_int_equal(cluster_map_find(&map, "10.0.0.3", 7002), 0);
}

static void slots_partial_and_shared(void **state)
{
    /* one primary serving two ranges is one node; the rest is uncovered */
    parse_ok(R_ARR(3, R_ARR(3, R_INT(0), R_INT(99), node3("h", 1, "a")),
                   R_ARR(3, R_INT(200), R_INT(299), node3("h", 1, "a")),
                   R_ARR(3, R_INT(5000), R_INT(5000), node3("h", 2, "b"))),
             "x");
    assert_int_equal(map.nnodes, 2);
    assert_int_equal(cluster_map_uncovered(&map), CLUSTER_NSLOTS - 201);
    assert_int_equal(map.slot_node[99], 0);
    assert_int_equal(map.slot_node[100], CLUSTER_NO_NODE);
    assert_int_equal(map.slot_node[250], 0);
    assert_int_equal(map.slot_node[5000], 1);
    assert_int_equal(map.slot_node[4999], CLUSTER_NO_NODE);
    /* no entries: nothing covered */
    parse_ok(R_ARR(0), "x");
    assert_int_equal(map.nnodes, 0);
    assert_int_equal(cluster_map_uncovered(&map), CLUSTER_NSLOTS);
    assert_int_equal(cluster_map_find(&map, "h", 1), -1);
}

static void slots_empty_host_and_metadata(void **state)
{
    /* Redis 7: "" or "?" for the node that answered; a metadata map (here
     * the RESP2 form, a flat array) after the id; nodes without an id (old
     * Redis) */
    parse_ok(
        R_ARR(3,
              R_ARR(3, R_INT(0), R_INT(8191),
                    R_ARR(4, R_STR(""), R_INT(7000), R_STR("a"),
                          R_ARR(2, R_STR("hostname"), R_STR("n1.example")))),
              R_ARR(3, R_INT(8192), R_INT(16000), R_ARR(4, R_STR("?"), R_INT(7001), R_STR("b"), R_ARR(0))),
              R_ARR(3, R_INT(16001), R_INT(16383), R_ARR(2, R_STR("::1"), R_INT(7002)))),
        "192.168.1.5");
    assert_int_equal(map.nnodes, 3);
    assert_string_equal(map.nodes[0].host, "192.168.1.5");
    assert_int_equal(map.nodes[0].port, 7000);
    assert_string_equal(map.nodes[1].host, "192.168.1.5");
    assert_int_equal(map.nodes[1].port, 7001);
    assert_string_equal(map.nodes[2].host, "::1");
    assert_int_equal(cluster_map_find(&map, "192.168.1.5", 7001), 1);
    assert_int_equal(cluster_map_uncovered(&map), 0);
    /* "" and the same host spelled out are one node */
    parse_ok(R_ARR(2, R_ARR(3, R_INT(0), R_INT(1), node3("", 7000, "a")),
                   R_ARR(3, R_INT(2), R_INT(3), node3("h", 7000, "a"))),
             "h");
    assert_int_equal(map.nnodes, 1);
    /* a host of 255 bytes fits */
    char host[CLUSTER_HOST_MAX];
    memset(host, 'h', sizeof host - 1);
    host[sizeof host - 1] = '\0';
    parse_ok(R_ARR(1, R_ARR(3, R_INT(0), R_INT(0), node3(host, 1, "a"))), "x");
    assert_string_equal(map.nodes[0].host, host);
}

static void slots_malformed(void **state)
{
    parse_bad(R_INT(1), "x", "not an array");
    parse_bad(R_ERR("ERR This instance has cluster support disabled"), "x", "not an array");
    parse_bad(NULL, "x", "not an array");
    parse_bad(R_ARR(1, R_INT(0)), "x", "entry 0: not an array");
    parse_bad(R_ARR(1, R_NIL()), "x", "entry 0");
    parse_bad(R_ARR(2, R_ARR(3, R_INT(0), R_INT(1), node3("h", 1, "a")), R_ARR(2, R_INT(2), R_INT(3))), "x",
              "entry 1: not an array of start, end and a primary");
    parse_bad(R_ARR(1, R_ARR(3, R_STR("0"), R_INT(1), node3("h", 1, "a"))), "x", "not an integer");
    parse_bad(R_ARR(1, R_ARR(3, R_INT(0), R_NIL(), node3("h", 1, "a"))), "x", "not an integer");
    parse_bad(R_ARR(1, R_ARR(3, R_INT(5), R_INT(4), node3("h", 1, "a"))), "x", "5-4 starts after its end");
    parse_bad(R_ARR(1, R_ARR(3, R_INT(0), R_INT(16384), node3("h", 1, "a"))), "x", "0-16384 out of 0..16383");
    parse_bad(R_ARR(1, R_ARR(3, R_INT(16384), R_INT(16384), node3("h", 1, "a"))), "x", "out of 0..16383");
    parse_bad(R_ARR(1, R_ARR(3, R_INT(-1), R_INT(3), node3("h", 1, "a"))), "x", "out of 0..16383");
    parse_bad(R_ARR(1, R_ARR(3, R_INT(0), R_INT(1LL << 40), node3("h", 1, "a"))), "x", "out of 0..16383");
    /* nodes */
    parse_bad(R_ARR(1, R_ARR(3, R_INT(0), R_INT(1), R_STR("h:1"))), "x",
              "not an array of at least host and port");
    parse_bad(R_ARR(1, R_ARR(3, R_INT(0), R_INT(1), R_ARR(1, R_STR("h")))), "x", "at least host and port");
    parse_bad(R_ARR(1, R_ARR(3, R_INT(0), R_INT(1), R_ARR(3, R_INT(1), R_INT(1), R_STR("a")))), "x",
              "host is not a string");
    parse_bad(R_ARR(1, R_ARR(3, R_INT(0), R_INT(1), R_ARR(3, R_STR("h"), R_STR("7000"), R_STR("a")))), "x",
              "port is not an integer");
    parse_bad(R_ARR(1, R_ARR(3, R_INT(0), R_INT(1), node3("h", 0, "a"))), "x", "port 0 out of range");
    parse_bad(R_ARR(1, R_ARR(3, R_INT(0), R_INT(1), node3("h", 65536, "a"))), "x", "port 65536 out of range");
    parse_bad(R_ARR(1, R_ARR(3, R_INT(0), R_INT(1), R_ARR(3, R_STR("h"), R_INT(1), R_INT(5)))), "x",
              "id is not a string");
    parse_bad(R_ARR(1, R_ARR(3, R_INT(0), R_INT(1), R_ARR(4, R_STR("h"), R_INT(1), R_STR("a"), R_STR("m")))),
              "x", "metadata is not a map");
    parse_bad(R_ARR(1, R_ARR(3, R_INT(0), R_INT(1),
                             R_ARR(4, R_STR("h"), R_INT(1), R_STR("a"), R_ARR(1, R_STR("hostname"))))),
              "x", "metadata is not a map");
    /* a malformed replica fails the reply too */
    parse_bad(R_ARR(1, R_ARR(4, R_INT(0), R_INT(1), node3("h", 1, "a"), node3("r", -3, "b"))), "x",
              "port -3 out of range");
    parse_bad(R_ARR(1, R_ARR(4, R_INT(0), R_INT(1), node3("h", 1, "a"), R_NIL())), "x",
              "at least host and port");
    /* unknown host and nothing to stand for it */
    parse_bad(R_ARR(1, R_ARR(3, R_INT(0), R_INT(1), node3("", 1, "a"))), NULL, "host is unknown");
    parse_bad(R_ARR(1, R_ARR(3, R_INT(0), R_INT(1), node3("?", 1, "a"))), "", "host is unknown");
    /* a host too long, or with a NUL in it */
    char host[CLUSTER_HOST_MAX + 1];
    memset(host, 'h', sizeof host - 1);
    host[sizeof host - 1] = '\0';
    parse_bad(R_ARR(1, R_ARR(3, R_INT(0), R_INT(1), node3(host, 1, "a"))), "x", "host is 256 bytes");
    parse_bad(R_ARR(1, R_ARR(3, R_INT(0), R_INT(1),
                             R_ARR(3, reply_strn(REDIS_REPLY_STRING, "h\0x", 3), R_INT(1), R_STR("a")))),
              "x", "NUL");
    /* a slot served twice */
    parse_bad(R_ARR(2, R_ARR(3, R_INT(0), R_INT(10), node3("h", 1, "a")),
                    R_ARR(3, R_INT(10), R_INT(20), node3("h", 2, "b"))),
              "x", "entry 1: slot 10 already served");
}

static void slots_too_many_primaries(void **state)
{
    redisReply *r = reply_arr(0);
    r->elements = CLUSTER_MAX_NODES + 1;
    r->element = calloc(r->elements, sizeof *r->element);
    assert_non_null(r->element);
    for (size_t i = 0; i < r->elements; i++)
        r->element[i] = R_ARR(3, R_INT((long long)i), R_INT((long long)i), node3("h", 1000 + (int)i, "id"));
    parse_bad(r, "x", "entry 64: more than 64 primaries");
    /* 64 is fine */
    r = reply_arr(0);
    r->elements = CLUSTER_MAX_NODES;
    r->element = calloc(r->elements, sizeof *r->element);
    assert_non_null(r->element);
    for (size_t i = 0; i < r->elements; i++)
        r->element[i] = R_ARR(3, R_INT((long long)i), R_INT((long long)i), node3("h", 1000 + (int)i, "id"));
    parse_ok(r, "x");
    assert_int_equal(map.nnodes, CLUSTER_MAX_NODES);
    assert_int_equal(cluster_map_find(&map, "h", 1063), 63);
    assert_int_equal(cluster_map_uncovered(&map), CLUSTER_NSLOTS - 64);
}

/* --------------------------------------------------------------- redirects */

static cluster_redirect rd;

static cluster_redirect_kind redirect(const char *err)
{
    memset(&rd, 0x5a, sizeof rd);
    cluster_redirect_kind k = cluster_redirect_parse(err, strlen(err), &rd);
    assert_int_equal(rd.kind, k);
    return k;
}

static void redirect_none(const char *err)
{
    if (redirect(err) != CLUSTER_REDIRECT_NONE)
        fail_msg("\"%s\" is a redirect of kind %d", err, (int)rd.kind);
}

static void redirects(void **state)
{
    assert_int_equal(redirect("MOVED 3999 127.0.0.1:6381"), CLUSTER_REDIRECT_MOVED);
    assert_int_equal(rd.slot, 3999);
    assert_string_equal(rd.host, "127.0.0.1");
    assert_int_equal(rd.port, 6381);
    assert_int_equal(redirect("ASK 3999 127.0.0.1:6381"), CLUSTER_REDIRECT_ASK);
    assert_int_equal(rd.slot, 3999);
    assert_string_equal(rd.host, "127.0.0.1");
    assert_int_equal(rd.port, 6381);
    assert_int_equal(redirect("MOVED 3999 :6381"), CLUSTER_REDIRECT_MOVED);
    assert_string_equal(rd.host, "");
    assert_int_equal(rd.port, 6381);
    assert_int_equal(redirect("MOVED 3999 ?:6381"), CLUSTER_REDIRECT_MOVED);
    assert_string_equal(rd.host, "");
    assert_int_equal(redirect("MOVED 1 ::1:6380"), CLUSTER_REDIRECT_MOVED);
    assert_int_equal(rd.slot, 1);
    assert_string_equal(rd.host, "::1");
    assert_int_equal(rd.port, 6380);
    assert_int_equal(redirect("ASK 16383 redis-0.redis.svc:65535"), CLUSTER_REDIRECT_ASK);
    assert_int_equal(rd.slot, 16383);
    assert_string_equal(rd.host, "redis-0.redis.svc");
    assert_int_equal(rd.port, 65535);
    assert_int_equal(redirect("MOVED 0 h:1"), CLUSTER_REDIRECT_MOVED);
    assert_int_equal(rd.slot, 0);
    assert_int_equal(rd.port, 1);
    assert_int_equal(redirect("TRYAGAIN Multiple keys request during rehashing of slot"),
                     CLUSTER_REDIRECT_TRYAGAIN);
    assert_int_equal(redirect("TRYAGAIN"), CLUSTER_REDIRECT_TRYAGAIN);
    assert_int_equal(redirect("CLUSTERDOWN The cluster is down"), CLUSTER_REDIRECT_DOWN);
    assert_int_equal(redirect("CLUSTERDOWN Hash slot not served"), CLUSTER_REDIRECT_DOWN);
    /* len counts: no NUL needed */
    assert_int_equal(cluster_redirect_parse("MOVED 12 h:6381789", 15, &rd), CLUSTER_REDIRECT_MOVED);
    assert_int_equal(rd.port, 6381);
    /* NULL out is allowed */
    assert_int_equal(cluster_redirect_parse("ASK 1 h:2", 9, NULL), CLUSTER_REDIRECT_ASK);
    /* a host of 255 bytes fits, 256 does not */
    char buf[CLUSTER_HOST_MAX + 32];
    memset(buf, 0, sizeof buf);
    memcpy(buf, "MOVED 5 ", 8);
    memset(buf + 8, 'h', CLUSTER_HOST_MAX - 1);
    strcat(buf, ":1");
    assert_int_equal(redirect(buf), CLUSTER_REDIRECT_MOVED);
    assert_int_equal(strlen(rd.host), CLUSTER_HOST_MAX - 1);
    memset(buf + 8, 'h', CLUSTER_HOST_MAX);
    strcpy(buf + 8 + CLUSTER_HOST_MAX, ":1");
    redirect_none(buf);
}

static void not_redirects(void **state)
{
    redirect_none("ERR unknown command");
    redirect_none("CROSSSLOT Keys in request don't hash to the same slot");
    redirect_none("NOSCRIPT No matching script");
    redirect_none("");
    redirect_none("MOVED");
    redirect_none("MOVED ");
    redirect_none("MOVED 3999");
    redirect_none("MOVED 3999 ");
    redirect_none("MOVED 3999 127.0.0.1");   /* no port */
    redirect_none("MOVED 3999 127.0.0.1:");  /* empty port */
    redirect_none("MOVED 3999 127.0.0.1:0"); /* port out of range */
    redirect_none("MOVED 3999 127.0.0.1:65536");
    redirect_none("MOVED 3999 127.0.0.1:99999999999");
    redirect_none("MOVED 3999 127.0.0.1:-1");
    redirect_none("MOVED 3999 127.0.0.1:+1");
    redirect_none("MOVED 3999 127.0.0.1:80x");
    redirect_none("MOVED 16384 127.0.0.1:6381"); /* bad slot */
    redirect_none("MOVED -1 127.0.0.1:6381");
    redirect_none("MOVED x 127.0.0.1:6381");
    redirect_none("MOVED 99999999999 127.0.0.1:6381");
    redirect_none("MOVED  3999 127.0.0.1:6381");
    redirect_none("MOVED 3999  127.0.0.1:6381");
    redirect_none("MOVED 3999 127.0.0.1:6381 more");
    redirect_none("MOVED 3999 127.0.0.1:6381 ");
    redirect_none("ASK 3999");
    redirect_none("ASK x h:1");
    redirect_none("MOVEDX 3999 h:1");
    redirect_none("moved 3999 h:1");
    redirect_none("ASKING");
    redirect_none("TRYAGAINX");
    redirect_none("CLUSTERDOWNX");
    redirect_none(" MOVED 3999 h:1");
    assert_int_equal(cluster_redirect_parse("MOVED 1 h\0x:2", 13, &rd), CLUSTER_REDIRECT_NONE);
    /* a malformed one leaves no half-parsed target */
    assert_int_equal(redirect("MOVED 12 h:0"), CLUSTER_REDIRECT_NONE);
    assert_int_equal(rd.slot, -1);
    assert_string_equal(rd.host, "");
    assert_int_equal(rd.port, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(crc16_vector),
        cmocka_unit_test(key_slots),
        cmocka_unit_test(name_tags),
        cmocka_unit_test(record_names),
        cmocka_unit_test(records_hash_to_name_slot),
        cmocka_unit_test(lock_key_of),
        cmocka_unit_test(slot_tags),
        cmocka_unit_test(slots_three_primaries),
        cmocka_unit_test(slots_partial_and_shared),
        cmocka_unit_test(slots_empty_host_and_metadata),
        cmocka_unit_test(slots_malformed),
        cmocka_unit_test(slots_too_many_primaries),
        cmocka_unit_test(redirects),
        cmocka_unit_test(not_redirects),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
