/* The store contract (contract.c) against the in-memory fake store. */
#include "contract.h"
#include "fake_store.h"

static baton_store *open_fake(struct event_base *base)
{
    return fake_store_new(base);
}

int main(void)
{
    const contract_backend b = {.name = "contract/fake", .open = open_fake};
    return contract_run(&b);
}
