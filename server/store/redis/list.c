/*
 * list.c - List (issue #18): one page of held locks from list.lua, a bounded
 * SCAN walk over P{K}:lock keys (never KEYS). The keys are found by the
 * script, not passed in KEYS; on a Redis Cluster it runs on each primary in
 * turn (cluster_calls.c), flagged allow-cross-slot-keys.
 */
#include "internal.h"
#include "reply.h"

#include <stdlib.h>

int rstore_list(baton_store *b, const char *prefix, int32_t limit, const char *cursor, store_list_cb cb,
                void *ud)
{
    redis_store *s = (redis_store *)b;
    if (!prefix || !cursor || limit < 1)
        return BATON_E_INVALID;
    if (!s->up)
        return BATON_E_UNAVAILABLE;
    store_op *o = rstore_op_new(s, OP_LIST, SC_LIST, ud);
    if (!o)
        return BATON_E_NOMEM;
    o->cb.list = cb;
    rstore_op_str(o, s->channel);
    rstore_op_str(o, s->prefix);
    rstore_op_str(o, prefix);
    rstore_op_arg(o, "%d", (int)limit);
    rstore_op_str(o, cursor);
    rstore_op_arg(o, "%d", limit * 10 > 1000 ? (int)limit * 10 : 1000); /* keys SCAN may examine */
    return rstore_op_send(o, 0);
}

void rstore_deliver_list(store_op *o, const redisReply *r)
{
    size_t cap = r->type == REDIS_REPLY_ARRAY && r->elements > 0 ? (r->elements - 1) / 6 : 0;
    store_lock_info *locks = cap ? calloc(cap, sizeof *locks) : NULL;
    size_t n = 0;
    const char *cursor = NULL;
    if (cap && !locks) {
        rstore_op_fail(o, BATON_E_NOMEM, "out of memory");
        return;
    }
    if (rstore_decode_list(r, locks, cap, &n, &cursor) != BATON_OK) {
        free(locks);
        rstore_op_fail(o, BATON_E_INTERNAL, "unexpected reply to list");
        return;
    }
    store_list_res res = {.locks = locks, .n = n, .next_cursor = cursor};
    if (o->cb.list)
        o->cb.list(o->ud, BATON_OK, NULL, &res);
    free(locks);
}
