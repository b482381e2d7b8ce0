/*
 * The `tls:`, `auth:` and `limits:` sections (config_security.h).
 *
 * Not a compilation unit of its own: config.c includes this file at its end
 * so that these sections share its YAML typing, duplicate-key and error
 * helpers (and the config fuzzer, which compiles config.c, covers them).
 * Everything here is static; config.c calls the sec_* hooks from defaults,
 * copy, free, load, check and config_to_yaml.
 */

#define SEC_LIMIT_DEFAULTS                                                                                  \
    {                                                                                                        \
        .max_streams = 20000, .max_streams_per_connection = 15000, .max_streams_per_tenant = 15000,          \
        .max_waiting = 15000, .max_waiting_per_tenant = 12000, .max_waiters_per_key = 12000,                 \
        .max_watches = 5000, .max_watches_per_tenant = 2500, .max_watch_backlog = 200000,                    \
    }

typedef struct sec_field {
    const char *section, *key, *path;
    int type; /* 's' string ("" allowed), 'b' boolean, 'i' int32 >= 1 */
    size_t off;
} sec_field;

#define SOFF(m) offsetof(config_security, m)
static const sec_field SEC_FIELDS[] = {
    {"tls", "cert_file", "tls.cert_file", 's', SOFF(tls.cert_file)},
    {"tls", "key_file", "tls.key_file", 's', SOFF(tls.key_file)},
    {"tls", "client_ca_file", "tls.client_ca_file", 's', SOFF(tls.client_ca_file)},
    {"tls", "require_client_cert", "tls.require_client_cert", 'b', SOFF(tls.require_client_cert)},
    {"limits", "max_streams", "limits.max_streams", 'i', SOFF(limits.max_streams)},
    {"limits", "max_streams_per_connection", "limits.max_streams_per_connection", 'i',
     SOFF(limits.max_streams_per_connection)},
    {"limits", "max_streams_per_tenant", "limits.max_streams_per_tenant", 'i', SOFF(limits.max_streams_per_tenant)},
    {"limits", "max_waiting", "limits.max_waiting", 'i', SOFF(limits.max_waiting)},
    {"limits", "max_waiting_per_tenant", "limits.max_waiting_per_tenant", 'i', SOFF(limits.max_waiting_per_tenant)},
    {"limits", "max_waiters_per_key", "limits.max_waiters_per_key", 'i', SOFF(limits.max_waiters_per_key)},
    {"limits", "max_watches", "limits.max_watches", 'i', SOFF(limits.max_watches)},
    {"limits", "max_watches_per_tenant", "limits.max_watches_per_tenant", 'i', SOFF(limits.max_watches_per_tenant)},
    {"limits", "max_watch_backlog", "limits.max_watch_backlog", 'i', SOFF(limits.max_watch_backlog)},
};
#undef SOFF
#define NSEC_FIELDS (sizeof(SEC_FIELDS) / sizeof(SEC_FIELDS[0]))
_Static_assert(NSEC_FIELDS <= 32, "config_security.from_file has one bit per field");

static char **sec_str(config_security *s, const sec_field *f)
{
    return (char **)((char *)s + f->off);
}

static const char *sec_cstr(const config_security *s, const sec_field *f)
{
    return *(char *const *)((const char *)s + f->off);
}

static void sec_defaults(config_security *s)
{
    memset(s, 0, sizeof *s);
    for (size_t i = 0; i < NSEC_FIELDS; i++)
        if (SEC_FIELDS[i].type == 's')
            *sec_str(s, &SEC_FIELDS[i]) = strdup("");
    s->limits = (config_limits)SEC_LIMIT_DEFAULTS;
}

static void sec_tokens_free(config_token *t, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(t[i].name);
        free(t[i].sha256);
        for (size_t j = 0; j < t[i].nprefixes; j++)
            free(t[i].prefixes[j]);
        free(t[i].prefixes);
    }
    free(t);
}

static void sec_free(config_security *s)
{
    for (size_t i = 0; i < NSEC_FIELDS; i++)
        if (SEC_FIELDS[i].type == 's')
            free(*sec_str(s, &SEC_FIELDS[i]));
    sec_tokens_free(s->tokens, s->ntokens);
    memset(s, 0, sizeof *s);
}

static int sec_token_copy(config_token *d, const config_token *s)
{
    d->admin = s->admin;
    d->name = strdup(s->name);
    d->sha256 = strdup(s->sha256);
    if (d->name == NULL || d->sha256 == NULL)
        return -1;
    if (s->nprefixes) {
        if ((d->prefixes = calloc(s->nprefixes, sizeof *d->prefixes)) == NULL)
            return -1;
        for (size_t j = 0; j < s->nprefixes; j++) {
            d->nprefixes = j + 1;
            if ((d->prefixes[j] = strdup(s->prefixes[j])) == NULL)
                return -1;
        }
    }
    return 0;
}

/* Deep copy; on OOM returns -1 with *dst freed. */
static int sec_copy(config_security *dst, const config_security *src)
{
    *dst = *src;
    for (size_t i = 0; i < NSEC_FIELDS; i++)
        if (SEC_FIELDS[i].type == 's')
            *sec_str(dst, &SEC_FIELDS[i]) = NULL;
    dst->tokens = NULL;
    dst->ntokens = 0;
    for (size_t i = 0; i < NSEC_FIELDS; i++) {
        const sec_field *f = &SEC_FIELDS[i];
        if (f->type == 's' && sec_cstr(src, f) && (*sec_str(dst, f) = strdup(sec_cstr(src, f))) == NULL)
            goto fail;
    }
    if (src->ntokens) {
        if ((dst->tokens = calloc(src->ntokens, sizeof *dst->tokens)) == NULL)
            goto fail;
        for (size_t i = 0; i < src->ntokens; i++) {
            dst->ntokens = i + 1;
            if (sec_token_copy(&dst->tokens[i], &src->tokens[i]) != 0)
                goto fail;
        }
    }
    return 0;
fail:
    sec_free(dst);
    return -1;
}

static int sec_is_section(const char *key)
{
    return strcmp(key, "tls") == 0 || strcmp(key, "auth") == 0 || strcmp(key, "limits") == 0;
}

/* Cross-field TLS rules; `line` and `name` locate the tls section (0: none). */
static int sec_check_tls(const config_security *s, const char *name, int line, char *err, size_t errlen)
{
    const config_tls *t = &s->tls;
    int cert = t->cert_file && t->cert_file[0], key = t->key_file && t->key_file[0];
    int ca = t->client_ca_file && t->client_ca_file[0];
    if (cert != key)
        return report(err, errlen, name, line, cert ? "tls.key_file" : "tls.cert_file",
                      "tls.cert_file and tls.key_file must be set together");
    if (ca && !cert)
        return report(err, errlen, name, line, "tls.client_ca_file",
                      "client certificates need TLS: set tls.cert_file and tls.key_file too");
    if (t->require_client_cert && !ca)
        return report(err, errlen, name, line, "tls.require_client_cert",
                      "needs tls.client_ca_file (the CA that signs client certificates)");
    return 0;
}

static int sec_load_scalars(load_ctx *x, const char *section, const yaml_node_t *m)
{
    char allowed[512];
    config_security *s = &x->c->sec;
    for (const yaml_node_pair_t *p = m->data.mapping.pairs.start; p < m->data.mapping.pairs.top; p++) {
        if (check_map_key(x, m, p, section) != 0)
            return -1;
        const yaml_node_t *k = yaml_document_get_node(x->doc, p->key);
        const yaml_node_t *v = yaml_document_get_node(x->doc, p->value);
        size_t i;
        for (i = 0; i < NSEC_FIELDS; i++)
            if (strcmp(SEC_FIELDS[i].section, section) == 0 && strcmp(SEC_FIELDS[i].key, scalar_text(k)) == 0)
                break;
        if (i == NSEC_FIELDS) {
            size_t used = 0;
            allowed[0] = '\0';
            for (size_t j = 0; j < NSEC_FIELDS; j++) {
                if (strcmp(SEC_FIELDS[j].section, section) != 0)
                    continue;
                int w = snprintf(allowed + used, sizeof allowed - used, "%s%s", used ? ", " : "",
                                 SEC_FIELDS[j].key);
                if (w > 0 && (size_t)w < sizeof allowed - used)
                    used += (size_t)w;
            }
            return unknown_key(x, k, section, allowed);
        }
        const sec_field *f = &SEC_FIELDS[i];
        void *at = (char *)s + f->off;
        if (f->type == 's') {
            if (load_string(x, v, f->path, sec_str(s, f)) != 0)
                return -1;
        } else if (f->type == 'b') {
            int b;
            if (v->type != YAML_SCALAR_NODE || !is_plain(v) || parse_bool(scalar_text(v), &b) != 0)
                return report(x->err, x->errlen, x->name, node_line(v), f->path,
                              "expected a boolean (true/false/yes/no), got %s", describe(v));
            *(int *)at = b;
        } else {
            int64_t n;
            if (load_int(x, v, f->path, &n) != 0)
                return -1;
            if (n < 1 || n > INT32_MAX)
                return report(x->err, x->errlen, x->name, node_line(v), f->path,
                              "must be between 1 and %d, got %" PRId64, INT32_MAX, n);
            *(int32_t *)at = (int32_t)n;
        }
        s->from_file |= UINT32_C(1) << i;
    }
    return 0;
}

static int token_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > CONFIG_TOKEN_NAME_MAX)
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '_' ||
              *s == '-' || *s == '.'))
            return 0;
    return 1;
}

/* prefixes: a sequence of strings, each "" (everything) or key characters. */
static int load_prefixes(load_ctx *x, const yaml_node_t *v, const char *path, config_token *t)
{
    if (v->type != YAML_SEQUENCE_NODE)
        return report(x->err, x->errlen, x->name, node_line(v), path,
                      "expected a sequence of key prefixes (\"\" = every key), got %s", describe(v));
    size_t n = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
    for (size_t j = 0; j < t->nprefixes; j++)
        free(t->prefixes[j]);
    free(t->prefixes);
    t->prefixes = NULL;
    t->nprefixes = 0;
    if (n == 0)
        return report(x->err, x->errlen, x->name, node_line(v), path,
                      "must name at least one prefix (\"\" = every key)");
    if ((t->prefixes = calloc(n, sizeof *t->prefixes)) == NULL)
        return oom(x);
    for (size_t j = 0; j < n; j++) {
        const yaml_node_t *it = yaml_document_get_node(x->doc, v->data.sequence.items.start[j]);
        char ipath[160], problem[256];
        snprintf(ipath, sizeof ipath, "%s[%zu]", path, j);
        t->nprefixes = j + 1;
        if (load_string(x, it, ipath, &t->prefixes[j]) != 0)
            return -1;
        if (t->prefixes[j][0] != '\0' && keyname_check(t->prefixes[j], BATON_KEY_MAX, problem, sizeof problem) != 0)
            return report(x->err, x->errlen, x->name, node_line(it), ipath, "%s", problem);
    }
    return 0;
}

static int load_token(load_ctx *x, size_t i, const yaml_node_t *m, config_token *t)
{
    char path[48], kpath[128];
    int have_prefixes = 0;
    snprintf(path, sizeof path, "auth.tokens[%zu]", i);
    if (m->type != YAML_MAPPING_NODE)
        return report(x->err, x->errlen, x->name, node_line(m), path,
                      "expected a mapping with name, sha256, prefixes and admin, got %s", describe(m));
    for (const yaml_node_pair_t *p = m->data.mapping.pairs.start; p < m->data.mapping.pairs.top; p++) {
        if (check_map_key(x, m, p, path) != 0)
            return -1;
        const yaml_node_t *k = yaml_document_get_node(x->doc, p->key);
        const yaml_node_t *v = yaml_document_get_node(x->doc, p->value);
        const char *key = scalar_text(k);
        snprintf(kpath, sizeof kpath, "%s.%.32s", path, key);
        if (strcmp(key, "name") == 0) {
            if (load_string(x, v, kpath, &t->name) != 0)
                return -1;
            if (!token_name_ok(t->name))
                return report(x->err, x->errlen, x->name, node_line(v), kpath,
                              "must be 1..%d bytes of A-Z a-z 0-9 _ - . (it prefixes owners as \"name/...\")",
                              CONFIG_TOKEN_NAME_MAX);
            for (size_t j = 0; j < i; j++)
                if (strcmp(x->c->sec.tokens[j].name, t->name) == 0)
                    return report(x->err, x->errlen, x->name, node_line(v), kpath,
                                  "token '%s' is already defined as auth.tokens[%zu]", t->name, j);
        } else if (strcmp(key, "sha256") == 0) {
            if (load_string(x, v, kpath, &t->sha256) != 0)
                return -1;
            size_t n = strlen(t->sha256);
            int hex = n == 64;
            for (size_t j = 0; hex && j < n; j++) {
                char ch = t->sha256[j];
                if (ch >= 'A' && ch <= 'F')
                    t->sha256[j] = (char)(ch - 'A' + 'a');
                else if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f')))
                    hex = 0;
            }
            if (!hex)
                return report(x->err, x->errlen, x->name, node_line(v), kpath,
                              "expected 64 hex digits (sha256sum of the token, not the token), got %zu "
                              "characters",
                              n);
            for (size_t j = 0; j < i; j++)
                if (strcmp(x->c->sec.tokens[j].sha256, t->sha256) == 0)
                    return report(x->err, x->errlen, x->name, node_line(v), kpath,
                                  "the same token as auth.tokens[%zu] ('%s')", j, x->c->sec.tokens[j].name);
        } else if (strcmp(key, "prefixes") == 0) {
            if (load_prefixes(x, v, kpath, t) != 0)
                return -1;
            have_prefixes = 1;
        } else if (strcmp(key, "admin") == 0) {
            if (v->type != YAML_SCALAR_NODE || !is_plain(v) || parse_bool(scalar_text(v), &t->admin) != 0)
                return report(x->err, x->errlen, x->name, node_line(v), kpath,
                              "expected a boolean (true/false/yes/no), got %s", describe(v));
        } else {
            return unknown_key(x, k, path, "name, sha256, prefixes, admin");
        }
    }
    if (t->name == NULL)
        return report(x->err, x->errlen, x->name, node_line(m), path, "missing name");
    if (t->sha256 == NULL)
        return report(x->err, x->errlen, x->name, node_line(m), path, "missing sha256");
    if (!have_prefixes)
        return report(x->err, x->errlen, x->name, node_line(m), path,
                      "missing prefixes (the keys it may use; [\"\"] = every key)");
    return 0;
}

/* auth: {tokens: [...]}; the section replaces any tokens already loaded. */
static int sec_load_auth(load_ctx *x, const yaml_node_t *m)
{
    config_security *s = &x->c->sec;
    const yaml_node_t *tokens = NULL;
    if (m->type != YAML_MAPPING_NODE)
        return report(x->err, x->errlen, x->name, node_line(m), "auth", "expected a mapping with tokens, got %s",
                      describe(m));
    for (const yaml_node_pair_t *p = m->data.mapping.pairs.start; p < m->data.mapping.pairs.top; p++) {
        if (check_map_key(x, m, p, "auth") != 0)
            return -1;
        const yaml_node_t *k = yaml_document_get_node(x->doc, p->key);
        if (strcmp(scalar_text(k), "tokens") != 0)
            return unknown_key(x, k, "auth", "tokens");
        tokens = yaml_document_get_node(x->doc, p->value);
    }
    if (tokens == NULL || tokens->type != YAML_SEQUENCE_NODE ||
        tokens->data.sequence.items.top == tokens->data.sequence.items.start)
        return report(x->err, x->errlen, x->name, node_line(tokens ? tokens : m), "auth.tokens",
                      "expected a non-empty sequence of {name, sha256, prefixes, admin}, got %s",
                      tokens ? describe(tokens) : "nothing");
    sec_tokens_free(s->tokens, s->ntokens);
    size_t n = (size_t)(tokens->data.sequence.items.top - tokens->data.sequence.items.start);
    s->ntokens = 0;
    if ((s->tokens = calloc(n, sizeof *s->tokens)) == NULL)
        return oom(x);
    s->auth = 1;
    for (size_t i = 0; i < n; i++) {
        const yaml_node_t *it = yaml_document_get_node(x->doc, tokens->data.sequence.items.start[i]);
        s->ntokens = i + 1;
        if (load_token(x, i, it, &s->tokens[i]) != 0)
            return -1;
    }
    return 0;
}

static int sec_load_section(load_ctx *x, const char *section, const yaml_node_t *m)
{
    if (strcmp(section, "auth") == 0)
        return sec_load_auth(x, m);
    if (is_null(m))
        return 0;
    if (m->type != YAML_MAPPING_NODE)
        return report(x->err, x->errlen, x->name, node_line(m), section, "expected a mapping, got %s",
                      describe(m));
    if (sec_load_scalars(x, section, m) != 0)
        return -1;
    return strcmp(section, "tls") == 0 ? sec_check_tls(&x->c->sec, x->name, node_line(m), x->err, x->errlen) : 0;
}

int config_security_override(baton_config *c, const char *path, const char *value)
{
    for (size_t i = 0; i < NSEC_FIELDS; i++) {
        if (strcmp(SEC_FIELDS[i].path, path) != 0)
            continue;
        if (SEC_FIELDS[i].type != 's')
            return BATON_E_INVALID;
        if (config_set_string(sec_str(&c->sec, &SEC_FIELDS[i]), value) != 0)
            return BATON_E_NOMEM;
        c->sec.from_flags |= UINT32_C(1) << i;
        return 0;
    }
    return BATON_E_INVALID;
}

static void sec_to_yaml(FILE *f, const config_security *s)
{
    const char *section = NULL;
    for (size_t i = 0; i < NSEC_FIELDS; i++) {
        const sec_field *fd = &SEC_FIELDS[i];
        if (section == NULL || strcmp(section, fd->section) != 0)
            fprintf(f, "%s:\n", fd->section);
        section = fd->section;
        fprintf(f, "  %s: ", fd->key);
        const void *at = (const char *)s + fd->off;
        if (fd->type == 's')
            put_quoted(f, sec_cstr(s, fd));
        else if (fd->type == 'b')
            fputs(*(const int *)at ? "true" : "false", f);
        else
            fprintf(f, "%" PRId32, *(const int32_t *)at);
        uint32_t bit = UINT32_C(1) << i;
        fprintf(f, "  # %s\n", s->from_flags & bit ? "command line" : s->from_file & bit ? "file" : "default");
    }
    if (!s->auth) {
        fputs("# auth: none (no section: callers need no token)\n", f);
        return;
    }
    fputs("auth:  # file\n  tokens:\n", f);
    for (size_t i = 0; i < s->ntokens; i++) {
        const config_token *t = &s->tokens[i];
        fputs("    - name: ", f);
        put_quoted(f, t->name);
        fputs("\n      sha256: ", f);
        put_quoted(f, t->sha256);
        fputs("\n      prefixes: [", f);
        for (size_t j = 0; j < t->nprefixes; j++) {
            if (j)
                fputs(", ", f);
            put_quoted(f, t->prefixes[j]);
        }
        fprintf(f, "]\n      admin: %s\n", t->admin ? "true" : "false");
    }
}
