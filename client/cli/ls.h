#ifndef BATON_CLI_LS_H
#define BATON_CLI_LS_H

#include <stdint.h>

#include <baton/baton.h>

/* baton ls: the locks held now (List, every page), as a table or JSON lines. */
typedef struct cli_ls_opts {
    const char *prefix;    /* NULL: every key */
    int64_t older_than_ms; /* only locks held at least this long; 0: all */
    int json;              /* one JSON object per lock */
    int watch;             /* refresh every interval_ms until interrupted */
    int64_t interval_ms;
} cli_ls_opts;

/* Returns 0 or a libbaton error (the message is in baton_last_error()). */
int cli_ls(baton_client *c, const cli_ls_opts *o);

#endif
