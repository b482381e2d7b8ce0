/*
 * rpc_list.c - List (issue #18): one page of held locks. A unary call: the
 * engine calls back once and the call ends with its ListResponse or an error.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

static void list_done(void *ud, int err, const char *msg, const store_list_res *res)
{
    tcall *c = ud;
    Baton__V1__LockInfo *infos = NULL;
    Baton__V1__LockInfo **ptrs = NULL;
    if (err != BATON_OK || res == NULL) {
        call_finish(c, err != BATON_OK ? err : BATON_E_INTERNAL, msg);
        goto out;
    }
    if (res->n &&
        ((infos = calloc(res->n, sizeof *infos)) == NULL || (ptrs = calloc(res->n, sizeof *ptrs)) == NULL)) {
        call_finish(c, BATON_E_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < res->n; i++) {
        const store_lock_info *l = &res->locks[i];
        baton__v1__lock_info__init(&infos[i]);
        infos[i].key = (char *)l->key;
        infos[i].owner = (char *)l->owner;
        infos[i].fencing = l->fencing;
        infos[i].ttl_ms = l->ttl_ms;
        infos[i].held_for_ms = l->held_for_ms;
        infos[i].waiters = l->waiters;
        ptrs[i] = &infos[i];
    }
    Baton__V1__ListResponse r = BATON__V1__LIST_RESPONSE__INIT;
    r.n_locks = res->n;
    r.locks = ptrs;
    /* The store's cursor "0" means the walk is complete. */
    r.next_page_token = (char *)(strcmp(res->next_cursor, "0") == 0 ? "" : res->next_cursor);
    call_reply(c, &r.base);
out:
    free(infos);
    free(ptrs);
    c->engine_ref = 0;
    call_unref(c);
}

static void list_start(tcall *c, ProtobufCMessage *m)
{
    Baton__V1__ListRequest *r = (Baton__V1__ListRequest *)m;
    char err[ERRBUF], cursor[24];
    const char *emsg = NULL;
    int32_t limit;
    if (validate_list(r, &limit, cursor, sizeof cursor, err, sizeof err) != 0) {
        call_finish(c, BATON_E_INVALID, err);
        return;
    }
    /* With auth: an admin token lists anything; another lists only within
     * its own prefixes (so it never sees another tenant's holders). */
    const char *prefix = r->prefix ? r->prefix : "";
    if (guard_admin(&c->who, "List", err, sizeof err) != BATON_OK) {
        int grc = guard_name(&c->who, "list prefix", prefix, err, sizeof err);
        if (grc != BATON_OK) {
            call_finish(c, grc, err);
            return;
        }
    }
    int rc = engine_list(c->t->engine, prefix, limit, cursor, list_done, c, &emsg);
    if (rc != 0) {
        call_finish(c, rc, emsg);
        return;
    }
    c->engine_ref = 1;
    c->refs++;
}

const rpc_method transport__list_rpc = {&baton__v1__lock_service__descriptor, "List", .start = list_start};
