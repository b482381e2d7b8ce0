/* list.c - baton_list: one page of the List RPC (issue #18). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

int baton_list(baton_client *c, const char *prefix, int32_t limit, const char *page_token,
               baton_list_page *out)
{
    if (c == NULL || out == NULL)
        return baton__fail(BATON_ERR_INVALID, "baton_list: client and out are required");
    memset(out, 0, sizeof *out);
    if (page_token && strlen(page_token) >= sizeof out->next_page_token)
        return baton__fail(BATON_ERR_INVALID, "baton_list: page_token is not one List returned");
    Baton__V1__ListRequest req = BATON__V1__LIST_REQUEST__INIT;
    Baton__V1__ListResponse *resp = NULL;
    grpc_c_status st = GRPC_C_STATUS_INIT;
    grpc_c_call_options o = baton__unary_opts(c);
    req.prefix = (char *)(prefix ? prefix : "");
    req.limit = limit;
    req.page_token = (char *)(page_token ? page_token : "");
    int rc = 0;
    if (baton__v1__lock_service__grpc__list(c->channel, &req, &resp, &st, &o) != GRPC_C_CODE_OK) {
        rc = baton__fail_status(&st, BATON__PHASE_CALL, "list");
    } else if (resp->n_locks && (out->locks = calloc(resp->n_locks, sizeof *out->locks)) == NULL) {
        rc = baton__fail(BATON_ERR_NOMEM, "baton_list: out of memory");
    } else {
        for (size_t i = 0; i < resp->n_locks; i++) {
            const Baton__V1__LockInfo *l = resp->locks[i];
            baton_lock_info *d = &out->locks[i];
            snprintf(d->key, sizeof d->key, "%s", l->key ? l->key : "");
            snprintf(d->owner, sizeof d->owner, "%s", l->owner ? l->owner : "");
            d->fencing = l->fencing;
            d->ttl_ms = l->ttl_ms;
            d->held_for_ms = l->held_for_ms;
            d->waiters = l->waiters;
        }
        out->n = resp->n_locks;
        snprintf(out->next_page_token, sizeof out->next_page_token, "%s",
                 resp->next_page_token ? resp->next_page_token : "");
    }
    if (resp)
        baton__v1__list_response__free_unpacked(resp, NULL);
    baton__conn_note(c, st.code);
    grpc_c_status_clear(&st);
    return rc;
}

void baton_list_page_free(baton_list_page *p)
{
    if (p == NULL)
        return;
    free(p->locks);
    memset(p, 0, sizeof *p);
}
