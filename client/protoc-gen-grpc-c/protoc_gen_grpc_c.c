/*
 * protoc-gen-grpc-c: a protoc plugin that writes typed gRPC client stubs for
 * the grpc_c runtime (grpc_c.h) next to protoc-c's output.
 *
 *   protoc --plugin=protoc-gen-grpc-c=PATH --grpc-c_out=DIR -I... a/b/x.proto
 *   -> DIR/a/b/x.grpc-c.h, DIR/a/b/x.grpc-c.c (include "a/b/x.pb-c.h")
 *
 * Naming (S = protobuf-c's lower-case name of the service's full name, e.g.
 * baton.v1.LockService -> baton__v1__lock_service; m = protobuf-c's lower-case
 * method name, e.g. ForceRelease -> force_release; U = upper case of S__GRPC__m):
 *   S__grpc_methods[]          method table (grpc_c_method), declaration order
 *   S__grpc_service            grpc_c_service {full name, count, table}
 *   S__grpc__m_method          macro: the table entry of method m (an lvalue)
 *   U_PATH, U_INDEX            "/pkg.Service/Method" and the table index
 *   unary:            S__grpc__m(channel, req, &resp, &status, opts)
 *   server-streaming: S__grpc__m_start(channel, req, opts), _read, _read_timeout
 *   client-streaming: S__grpc__m_start(channel, opts), _write, _close_send
 *   bidi:             S__grpc__m_start(channel, opts), _write, _read,
 *                     _read_timeout, _close_send
 *   every streaming:  S__grpc__m_cancel, S__grpc__m_finish, S__grpc__m_destroy
 * C type names and descriptors follow protobuf-c (FullNameToC / FullNameToLower,
 * including its `option (pb_c_file).c_package`).
 * A name clash (including with protobuf-c's own service symbols) or an
 * unsupported input is reported through CodeGeneratorResponse.error.
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "google/protobuf/compiler/plugin.pb-c.h"

typedef Google__Protobuf__FileDescriptorProto FileProto;
typedef Google__Protobuf__ServiceDescriptorProto ServiceProto;
typedef Google__Protobuf__MethodDescriptorProto MethodProto;

/* ---- growable string -------------------------------------------------- */

typedef struct buf {
    char *data;
    size_t len, cap;
    int oom;
} buf;

static void buf_vprintf(buf *b, const char *fmt, va_list ap)
{
    if (b->oom)
        return;
    for (;;) {
        va_list cp;
        va_copy(cp, ap);
        int n = vsnprintf(b->data ? b->data + b->len : NULL, b->data ? b->cap - b->len : 0, fmt, cp);
        va_end(cp);
        if (n < 0) {
            b->oom = 1;
            return;
        }
        if (b->data && (size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap * 2 : 1024;
        while (cap < b->len + (size_t)n + 1)
            cap *= 2;
        char *d = realloc(b->data, cap);
        if (!d) {
            b->oom = 1;
            return;
        }
        b->data = d;
        b->cap = cap;
    }
}

__attribute__((format(printf, 2, 3))) static void bp(buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(b, fmt, ap);
    va_end(ap);
}

/* Returns a malloc'd string built from fmt (NULL on OOM); caller frees. */
__attribute__((format(printf, 1, 2))) static char *xfmt(const char *fmt, ...)
{
    buf b = {0};
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(&b, fmt, ap);
    va_end(ap);
    if (b.oom) {
        free(b.data);
        return NULL;
    }
    return b.data ? b.data : calloc(1, 1);
}

/* ---- protobuf-c naming (mirrors protoc-c's c_helpers.cc) ---------------- */

/* CamelToLower: "LockService" -> "lock_service", "HTTPServer" -> "httpserver". */
static void camel_to_lower(buf *out, const char *s, size_t n)
{
    int was_upper = 1;
    for (size_t i = 0; i < n; i++) {
        int up = isupper((unsigned char)s[i]) != 0;
        if (up && !was_upper)
            bp(out, "_");
        bp(out, "%c", up ? tolower((unsigned char)s[i]) : s[i]);
        was_upper = up;
    }
}

/* ToCamel: "foo_bar" -> "FooBar", "v1" -> "V1". */
static void to_camel(buf *out, const char *s, size_t n)
{
    int next_upper = 1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '_') {
            next_upper = 1;
        } else if (next_upper) {
            bp(out, "%c", toupper((unsigned char)s[i]));
            next_upper = 0;
        } else {
            bp(out, "%c", s[i]);
        }
    }
}

/* Applies fn to each non-empty dot-separated piece, joined by "__".
 * Returns a malloc'd string (caller frees) or NULL on OOM. */
static char *map_pieces(const char *full, void (*fn)(buf *, const char *, size_t))
{
    buf b = {0};
    const char *p = full;
    while (*p) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        if (n) {
            if (b.len)
                bp(&b, "__");
            fn(&b, p, n);
        }
        p += n + (dot ? 1 : 0);
    }
    if (b.oom) {
        free(b.data);
        return NULL;
    }
    return b.data ? b.data : calloc(1, 1);
}

static char *full_name_to_lower(const char *full)
{
    return map_pieces(full, camel_to_lower);
}
static char *full_name_to_c(const char *full)
{
    return map_pieces(full, to_camel);
}

static char *upper_dup(const char *s)
{
    char *u = strdup(s);
    if (u)
        for (char *p = u; *p; p++)
            *p = (char)toupper((unsigned char)*p);
    return u;
}

/* ---- generation ------------------------------------------------------- */

typedef struct gen {
    const Google__Protobuf__Compiler__CodeGeneratorRequest *req;
    buf h, c;
    char *err;    /* first error (malloc'd); generation stops */
    char **names; /* symbols emitted for the current file (clash check) */
    size_t n_names, cap_names;
} gen;

__attribute__((format(printf, 2, 3))) static void fail(gen *g, const char *fmt, ...)
{
    if (g->err)
        return;
    buf b = {0};
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(&b, fmt, ap);
    va_end(ap);
    g->err = b.data ? b.data : strdup("protoc-gen-grpc-c: out of memory");
}

/* Records a symbol; reports a clash if it was already used in this file. */
static void claim(gen *g, char *name)
{
    if (!name) {
        fail(g, "out of memory");
        return;
    }
    for (size_t i = 0; i < g->n_names; i++)
        if (strcmp(g->names[i], name) == 0) {
            fail(g, "generated name '%s' is used twice (rename a method or service)", name);
            free(name);
            return;
        }
    if (g->n_names == g->cap_names) {
        size_t cap = g->cap_names ? g->cap_names * 2 : 64;
        char **n = realloc(g->names, cap * sizeof *n);
        if (!n) {
            fail(g, "out of memory");
            free(name);
            return;
        }
        g->names = n;
        g->cap_names = cap;
    }
    g->names[g->n_names++] = name;
}

static void names_reset(gen *g)
{
    for (size_t i = 0; i < g->n_names; i++)
        free(g->names[i]);
    g->n_names = 0;
}

/* Per-method names, all malloc'd. */
typedef struct mnames {
    char *prefix;               /* S__grpc__m */
    char *upper;                /* upper case of prefix */
    char *req_c, *resp_c;       /* C type names */
    char *req_desc, *resp_desc; /* descriptor variable names */
    const char *kind;
} mnames;

static void mnames_free(mnames *m)
{
    free(m->prefix);
    free(m->upper);
    free(m->req_c);
    free(m->resp_c);
    free(m->req_desc);
    free(m->resp_desc);
}

static const char *kind_of(const MethodProto *m)
{
    int cs = m->has_client_streaming && m->client_streaming;
    int ss = m->has_server_streaming && m->server_streaming;
    if (cs && ss)
        return "GRPC_C_KIND_BIDI_STREAMING";
    if (cs)
        return "GRPC_C_KIND_CLIENT_STREAMING";
    if (ss)
        return "GRPC_C_KIND_SERVER_STREAMING";
    return "GRPC_C_KIND_UNARY";
}

/* ---- protobuf-c's c_package file option -------------------------------- */

/* Reads a base-128 varint; returns bytes used, 0 when malformed. */
static size_t read_varint(const uint8_t *p, size_t len, uint64_t *v)
{
    *v = 0;
    for (size_t i = 0; i < len && i < 10; i++) {
        *v |= (uint64_t)(p[i] & 0x7f) << (7 * i);
        if (!(p[i] & 0x80))
            return i + 1;
    }
    return 0;
}

/* `option (pb_c_file).c_package = "x";` replaces the package in protobuf-c's
 * C names. FileOptions does not know the extension (field 1019 of
 * FileOptions, ProtobufCFileOptions.c_package = 6 in protobuf-c.proto), so it
 * sits in the unknown fields. Returns a pointer into the descriptor (not
 * NUL-terminated, *n bytes) or NULL when the option is absent. */
static const char *c_package_of(const FileProto *f, size_t *n)
{
    const char *found = NULL;
    if (!f->options)
        return NULL;
    for (unsigned i = 0; i < f->options->base.n_unknown_fields; i++) {
        const ProtobufCMessageUnknownField *u = &f->options->base.unknown_fields[i];
        if (u->tag != 1019 || u->wire_type != PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED)
            continue;
        /* protobuf-c keeps the length prefix in the unknown field's data. */
        uint64_t inner;
        size_t k0 = read_varint(u->data, u->len, &inner);
        if (!k0 || inner > u->len - k0)
            continue;
        const uint8_t *p = u->data + k0, *end = p + inner;
        while (p < end) {
            uint64_t key, v;
            size_t k = read_varint(p, (size_t)(end - p), &key);
            if (!k)
                break;
            p += k;
            switch (key & 7) {
            case 0:
                k = read_varint(p, (size_t)(end - p), &v);
                if (!k)
                    return found;
                p += k;
                break;
            case 1: p += 8; break;
            case 5: p += 4; break;
            case 2:
                k = read_varint(p, (size_t)(end - p), &v);
                if (!k || v > (uint64_t)(end - p - k))
                    return found;
                p += k;
                if ((key >> 3) == 6) { /* last one wins, as in protobuf */
                    found = (const char *)p;
                    *n = (size_t)v;
                }
                p += v;
                break;
            default: return found;
            }
        }
    }
    return found;
}

/* Full name as protobuf-c sees it (protoc-c's OverrideFullName); malloc'd. */
static char *override_full_name(const FileProto *f, const char *full)
{
    size_t n = 0;
    const char *pkg = c_package_of(f, &n);
    if (!pkg)
        return strdup(full);
    size_t plen = f->package ? strlen(f->package) : 0;
    if (strlen(full) < plen)
        return strdup(full);
    return xfmt("%.*s%s%s", (int)n, pkg, plen ? "" : ".", full + plen);
}

static int declares_message(Google__Protobuf__DescriptorProto *const *msgs, size_t n_msgs, const char *rest)
{
    const char *dot = strchr(rest, '.');
    size_t len = dot ? (size_t)(dot - rest) : strlen(rest);
    for (size_t i = 0; i < n_msgs; i++) {
        const Google__Protobuf__DescriptorProto *m = msgs[i];
        if (!m->name || strlen(m->name) != len || strncmp(m->name, rest, len) != 0)
            continue;
        if (!dot)
            return 1;
        return declares_message(m->nested_type, m->n_nested_type, dot + 1);
    }
    return 0;
}

/* The file of the request that declares message `full` (no leading dot). */
static const FileProto *file_of_message(const gen *g, const char *full)
{
    for (size_t i = 0; i < g->req->n_proto_file; i++) {
        const FileProto *f = g->req->proto_file[i];
        size_t plen = f->package ? strlen(f->package) : 0;
        const char *rest = full;
        if (plen) {
            if (strncmp(full, f->package, plen) != 0 || full[plen] != '.')
                continue;
            rest = full + plen + 1;
        }
        if (declares_message(f->message_type, f->n_message_type, rest))
            return f;
    }
    return NULL;
}

/* Type name ".pkg.Outer.Inner" -> C type and descriptor names. */
static int type_names(gen *g, const char *type, char **c_name, char **desc)
{
    if (!type || type[0] != '.') {
        fail(g, "type name '%s' is not fully qualified", type ? type : "(none)");
        return -1;
    }
    const FileProto *f = file_of_message(g, type + 1);
    if (!f) {
        fail(g, "message type %s is not declared in any file of the request", type);
        return -1;
    }
    char *full = override_full_name(f, type + 1);
    *c_name = full ? full_name_to_c(full) : NULL;
    char *lower = full ? full_name_to_lower(full) : NULL;
    free(full);
    *desc = lower ? xfmt("%s__descriptor", lower) : NULL;
    free(lower);
    if (!*c_name || !*desc) {
        fail(g, "out of memory");
        return -1;
    }
    return 0;
}

static int mnames_make(gen *g, const char *svc_lower, const MethodProto *m, mnames *out)
{
    memset(out, 0, sizeof *out);
    if (!m->name || !m->name[0]) {
        fail(g, "method without a name in service %s", svc_lower);
        return -1;
    }
    char *mlower = map_pieces(m->name, camel_to_lower);
    if (!mlower) {
        fail(g, "out of memory");
        return -1;
    }
    out->prefix = xfmt("%s__grpc__%s", svc_lower, mlower);
    /* protobuf-c's own service stub for this method; we must not reuse it. */
    claim(g, xfmt("%s__%s", svc_lower, mlower));
    free(mlower);
    out->upper = out->prefix ? upper_dup(out->prefix) : NULL;
    out->kind = kind_of(m);
    if (!out->prefix || !out->upper) {
        fail(g, "out of memory");
        return -1;
    }
    if (type_names(g, m->input_type, &out->req_c, &out->req_desc) != 0)
        return -1;
    if (type_names(g, m->output_type, &out->resp_c, &out->resp_desc) != 0)
        return -1;
    return 0;
}

static void gen_method(gen *g, const char *svc_full, const char *table, size_t idx, const MethodProto *mp,
                       const mnames *m)
{
    buf *h = &g->h, *c = &g->c;
    const char *P = m->prefix, *Q = m->req_c, *R = m->resp_c;
    int unary = strcmp(m->kind, "GRPC_C_KIND_UNARY") == 0;
    int reads = strstr(m->kind, "SERVER") || strstr(m->kind, "BIDI");
    int writes = strstr(m->kind, "CLIENT") || strstr(m->kind, "BIDI");
    int client_streaming = strstr(m->kind, "CLIENT") != NULL;

    claim(g, xfmt("%s_method", P));
    claim(g, xfmt("%s_PATH", m->upper));
    claim(g, xfmt("%s_INDEX", m->upper));
    bp(h, "\n/* rpc %s(%s%s) returns (%s%s) */\n", mp->name, writes ? "stream " : "", mp->input_type + 1,
       reads ? "stream " : "", mp->output_type + 1);
    bp(h, "#define %s_PATH \"/%s/%s\"\n", m->upper, svc_full, mp->name);
    bp(h, "#define %s_INDEX %zu\n", m->upper, idx);
    bp(h, "#define %s_method (%s[%zu])\n", P, table, idx);

    if (unary) {
        claim(g, strdup(P));
        bp(h,
           "/* Blocking call. Returns the status code (0 = OK). On OK *response (if\n"
           " * response is not NULL) is a new message the caller frees with\n"
           " * protobuf_c_message_free_unpacked(&(*response)->base, NULL). status and\n"
           " * opts may be NULL. See grpc_c_unary(). */\n"
           "int %s(grpc_channel *channel, const %s *request, %s **response,\n"
           "    grpc_c_status *status, const grpc_c_call_options *opts);\n",
           P, Q, R);
        bp(c,
           "int %s(grpc_channel *channel, const %s *request, %s **response,\n"
           "    grpc_c_status *status, const grpc_c_call_options *opts) {\n"
           "  ProtobufCMessage *m = NULL;\n"
           "  int code = grpc_c_unary(channel, &%s_method, (const ProtobufCMessage *)request, &m, status, "
           "opts);\n"
           "  if (response) *response = (%s *)m;\n"
           "  else if (m) protobuf_c_message_free_unpacked(m, NULL);\n"
           "  return code;\n"
           "}\n\n",
           P, Q, R, P, R);
        return;
    }

    claim(g, xfmt("%s_start", P));
    if (client_streaming || writes) {
        bp(h,
           "/* Starts the call (caller destroys the handle with %s_destroy); NULL on\n"
           " * bad arguments or OOM. See grpc_c_call_start(). */\n"
           "grpc_c_call *%s_start(grpc_channel *channel, const grpc_c_call_options *opts);\n",
           P, P);
        bp(c,
           "grpc_c_call *%s_start(grpc_channel *channel, const grpc_c_call_options *opts) {\n"
           "  return grpc_c_call_start(channel, &%s_method, NULL, opts);\n"
           "}\n\n",
           P, P);
    } else {
        bp(h,
           "/* Sends `request` and half-closes (caller destroys the handle with\n"
           " * %s_destroy); NULL on bad arguments or OOM. See grpc_c_call_start(). */\n"
           "grpc_c_call *%s_start(grpc_channel *channel, const %s *request,\n"
           "    const grpc_c_call_options *opts);\n",
           P, P, Q);
        bp(c,
           "grpc_c_call *%s_start(grpc_channel *channel, const %s *request,\n"
           "    const grpc_c_call_options *opts) {\n"
           "  return grpc_c_call_start(channel, &%s_method, (const ProtobufCMessage *)request, opts);\n"
           "}\n\n",
           P, Q, P);
    }
    if (writes) {
        claim(g, xfmt("%s_write", P));
        claim(g, xfmt("%s_close_send", P));
        bp(h,
           "/* Sends one message (borrowed). GRPC_C_OK or an error; see grpc_c_call_write(). */\n"
           "int %s_write(grpc_c_call *call, const %s *msg);\n"
           "/* Half-close; see grpc_c_call_close_send(). */\n"
           "int %s_close_send(grpc_c_call *call);\n",
           P, Q, P);
        bp(c,
           "int %s_write(grpc_c_call *call, const %s *msg) {\n"
           "  return grpc_c_call_write(call, (const ProtobufCMessage *)msg);\n"
           "}\n\n"
           "int %s_close_send(grpc_c_call *call) {\n"
           "  return grpc_c_call_close_send(call);\n"
           "}\n\n",
           P, Q, P);
    }
    if (reads) {
        claim(g, xfmt("%s_read", P));
        claim(g, xfmt("%s_read_timeout", P));
        bp(h,
           "/* Next message: GRPC_C_OK and *msg (caller frees with\n"
           " * protobuf_c_message_free_unpacked(&(*msg)->base, NULL)), GRPC_C_END, or an\n"
           " * error. _read_timeout may also return GRPC_C_TIMEOUT (call still alive).\n"
           " * See grpc_c_call_read(). */\n"
           "int %s_read(grpc_c_call *call, %s **msg);\n"
           "int %s_read_timeout(grpc_c_call *call, %s **msg, int64_t timeout_ms);\n",
           P, R, P, R);
        bp(c,
           "int %s_read(grpc_c_call *call, %s **msg) {\n"
           "  ProtobufCMessage *m = NULL;\n"
           "  int rc = grpc_c_call_read(call, &m);\n"
           "  if (msg) *msg = (%s *)m;\n"
           "  else if (m) protobuf_c_message_free_unpacked(m, NULL);\n"
           "  return rc;\n"
           "}\n\n"
           "int %s_read_timeout(grpc_c_call *call, %s **msg, int64_t timeout_ms) {\n"
           "  ProtobufCMessage *m = NULL;\n"
           "  int rc = grpc_c_call_read_timeout(call, &m, timeout_ms);\n"
           "  if (msg) *msg = (%s *)m;\n"
           "  else if (m) protobuf_c_message_free_unpacked(m, NULL);\n"
           "  return rc;\n"
           "}\n\n",
           P, R, R, P, R, R);
    }
    claim(g, xfmt("%s_cancel", P));
    claim(g, xfmt("%s_finish", P));
    claim(g, xfmt("%s_destroy", P));
    bp(h, "/* Thread-safe cancel; see grpc_c_call_cancel(). */\nvoid %s_cancel(grpc_c_call *call);\n", P);
    bp(c, "void %s_cancel(grpc_c_call *call) {\n  grpc_c_call_cancel(call);\n}\n\n", P);
    if (client_streaming) {
        bp(h,
           "/* Half-closes if needed and waits for the status (returned; 0 = OK). On OK\n"
           " * *response (if not NULL) is the reply, freed by the caller. See\n"
           " * grpc_c_call_finish(). */\n"
           "int %s_finish(grpc_c_call *call, %s **response, grpc_c_status *status);\n",
           P, R);
        bp(c,
           "int %s_finish(grpc_c_call *call, %s **response, grpc_c_status *status) {\n"
           "  ProtobufCMessage *m = NULL;\n"
           "  int code = grpc_c_call_finish(call, &m, status);\n"
           "  if (response) *response = (%s *)m;\n"
           "  else if (m) protobuf_c_message_free_unpacked(m, NULL);\n"
           "  return code;\n"
           "}\n\n",
           P, R, R);
    } else {
        bp(h,
           "/* Waits for the status (returned; 0 = OK), discarding unread messages.\n"
           " * See grpc_c_call_finish(). */\n"
           "int %s_finish(grpc_c_call *call, grpc_c_status *status);\n",
           P);
        bp(c,
           "int %s_finish(grpc_c_call *call, grpc_c_status *status) {\n"
           "  return grpc_c_call_finish(call, NULL, status);\n"
           "}\n\n",
           P);
    }
    bp(h, "/* Frees the handle (cancels a running call). */\nvoid %s_destroy(grpc_c_call *call);\n", P);
    bp(c, "void %s_destroy(grpc_c_call *call) {\n  grpc_c_call_destroy(call);\n}\n\n", P);
}

static void gen_service(gen *g, const FileProto *f, const ServiceProto *s)
{
    if (!s->name || !s->name[0]) {
        fail(g, "%s: service without a name", f->name);
        return;
    }
    char *full = (f->package && f->package[0]) ? xfmt("%s.%s", f->package, s->name) : strdup(s->name);
    char *cfull = full ? override_full_name(f, full) : NULL; /* C names only */
    char *lower = cfull ? full_name_to_lower(cfull) : NULL;
    free(cfull);
    char *table = lower ? xfmt("%s__grpc_methods", lower) : NULL;
    char *svc = lower ? xfmt("%s__grpc_service", lower) : NULL;
    if (!full || !lower || !table || !svc) {
        fail(g, "out of memory");
        goto out;
    }
    claim(g, xfmt("%s__init", lower)); /* protobuf-c's service symbols */
    claim(g, xfmt("%s__descriptor", lower));
    claim(g, strdup(table));
    claim(g, strdup(svc));

    bp(&g->h, "\n/* ---- service %s ---- */\n", full);
    if (s->n_method)
        bp(&g->h, "extern const grpc_c_method %s[%zu];\n", table, s->n_method);
    bp(&g->h, "extern const grpc_c_service %s;\n", svc);

    mnames *ms = calloc(s->n_method ? s->n_method : 1, sizeof *ms);
    if (!ms) {
        fail(g, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < s->n_method && !g->err; i++)
        mnames_make(g, lower, s->method[i], &ms[i]);
    if (!g->err && s->n_method) {
        bp(&g->c, "const grpc_c_method %s[%zu] = {\n", table, s->n_method);
        for (size_t i = 0; i < s->n_method; i++)
            bp(&g->c, "  {\"/%s/%s\", \"%s\", %s,\n   &%s, &%s},\n", full, s->method[i]->name,
               s->method[i]->name, ms[i].kind, ms[i].req_desc, ms[i].resp_desc);
        bp(&g->c, "};\n\n");
    }
    if (!g->err)
        bp(&g->c, "const grpc_c_service %s = {\"%s\", %zu, %s};\n\n", svc, full, s->n_method,
           s->n_method ? table : "NULL");
    for (size_t i = 0; i < s->n_method && !g->err; i++) {
        gen_method(g, full, table, i, s->method[i], &ms[i]);
    }
    for (size_t i = 0; i < s->n_method; i++)
        mnames_free(&ms[i]);
    free(ms);
out:
    free(full);
    free(lower);
    free(table);
    free(svc);
}

/* "a/b/x.proto" -> "a/b/x" (malloc'd), like protoc-c's StripProto. */
static char *strip_proto(const char *name)
{
    size_t n = strlen(name);
    if (n > 11 && strcmp(name + n - 11, ".protodevel") == 0)
        n -= 11;
    else if (n > 6 && strcmp(name + n - 6, ".proto") == 0)
        n -= 6;
    return strndup(name, n);
}

/* Generates both files for one .proto into *out (two new File messages). */
static void gen_file(gen *g, const FileProto *f,
                     Google__Protobuf__Compiler__CodeGeneratorResponse__File **out)
{
    char *base = strip_proto(f->name);
    char *guard = base ? xfmt("%s_GRPC_C_H", base) : NULL;
    if (!base || !guard) {
        fail(g, "out of memory");
        goto out;
    }
    for (char *p = guard; *p; p++)
        *p = isalnum((unsigned char)*p) ? (char)toupper((unsigned char)*p) : '_';

    bp(&g->h,
       "/* Generated by protoc-gen-grpc-c from %s. DO NOT EDIT.\n"
       " * Typed gRPC client stubs over the grpc_c runtime (see grpc_c.h for the\n"
       " * semantics, threading and ownership rules of every operation). */\n"
       "#ifndef %s\n#define %s\n\n"
       "#include <stdint.h>\n\n#include \"grpc_c.h\"\n#include \"%s.pb-c.h\"\n\n"
       "#ifdef __cplusplus\nextern \"C\" {\n#endif\n",
       f->name, guard, guard, base);
    bp(&g->c, "/* Generated by protoc-gen-grpc-c from %s. DO NOT EDIT. */\n#include \"%s.grpc-c.h\"\n\n",
       f->name, base);
    for (size_t i = 0; i < f->n_service && !g->err; i++)
        gen_service(g, f, f->service[i]);
    bp(&g->h, "\n#ifdef __cplusplus\n}\n#endif\n\n#endif /* %s */\n", guard);
    if (g->h.oom || g->c.oom)
        fail(g, "out of memory");
    if (g->err)
        goto out;

    for (int k = 0; k < 2; k++) {
        Google__Protobuf__Compiler__CodeGeneratorResponse__File *rf = malloc(sizeof *rf);
        if (!rf) {
            fail(g, "out of memory");
            goto out;
        }
        google__protobuf__compiler__code_generator_response__file__init(rf);
        rf->name = xfmt("%s.grpc-c.%s", base, k ? "c" : "h");
        buf *b = k ? &g->c : &g->h;
        rf->content = b->data;
        b->data = NULL;
        b->len = b->cap = 0;
        out[k] = rf;
        if (!rf->name)
            fail(g, "out of memory");
    }
out:
    free(base);
    free(guard);
}

static const FileProto *find_file(const Google__Protobuf__Compiler__CodeGeneratorRequest *req,
                                  const char *name)
{
    for (size_t i = 0; i < req->n_proto_file; i++)
        if (req->proto_file[i]->name && strcmp(req->proto_file[i]->name, name) == 0)
            return req->proto_file[i];
    return NULL;
}

static uint8_t *read_all(FILE *in, size_t *len)
{
    size_t cap = 65536, n = 0;
    uint8_t *data = malloc(cap);
    while (data) {
        size_t r = fread(data + n, 1, cap - n, in);
        n += r;
        if (r == 0)
            break;
        if (n == cap) {
            uint8_t *d = realloc(data, cap * 2);
            if (!d) {
                free(data);
                return NULL;
            }
            data = d;
            cap *= 2;
        }
    }
    if (data && ferror(in)) {
        free(data);
        return NULL;
    }
    *len = n;
    return data;
}

int main(void)
{
    size_t len = 0;
    uint8_t *data = read_all(stdin, &len);
    if (!data) {
        fprintf(stderr, "protoc-gen-grpc-c: cannot read the request from stdin\n");
        return 1;
    }
    Google__Protobuf__Compiler__CodeGeneratorRequest *req =
        google__protobuf__compiler__code_generator_request__unpack(NULL, len, data);
    free(data);
    if (!req) {
        fprintf(stderr, "protoc-gen-grpc-c: stdin is not a CodeGeneratorRequest\n");
        return 1;
    }

    Google__Protobuf__Compiler__CodeGeneratorResponse resp =
        GOOGLE__PROTOBUF__COMPILER__CODE_GENERATOR_RESPONSE__INIT;
    /* We only read services, so proto3 `optional` fields are no problem. */
    resp.has_supported_features = 1;
    resp.supported_features =
        GOOGLE__PROTOBUF__COMPILER__CODE_GENERATOR_RESPONSE__FEATURE__FEATURE_PROTO3_OPTIONAL;
    resp.file = calloc(req->n_file_to_generate * 2 + 1, sizeof *resp.file);
    gen g = {0};
    g.req = req;
    if (!resp.file)
        fail(&g, "out of memory");
    for (size_t i = 0; i < req->n_file_to_generate && !g.err; i++) {
        const FileProto *f = find_file(req, req->file_to_generate[i]);
        if (!f) {
            fail(&g, "%s: not in the request's proto_file list", req->file_to_generate[i]);
            break;
        }
        names_reset(&g);
        gen_file(&g, f, &resp.file[resp.n_file]);
        if (!g.err)
            resp.n_file += 2;
        for (size_t k = resp.n_file; g.err && k < resp.n_file + 2; k++) {
            if (!resp.file[k])
                continue; /* a half-made pair: free it here */
            free(resp.file[k]->name);
            free(resp.file[k]->content);
            free(resp.file[k]);
            resp.file[k] = NULL;
        }
        free(g.h.data);
        free(g.c.data);
        memset(&g.h, 0, sizeof g.h);
        memset(&g.c, 0, sizeof g.c);
    }
    names_reset(&g);
    free(g.names);
    if (g.err) {
        /* protoc prints the error and fails; no partial output. */
        for (size_t i = 0; i < resp.n_file; i++) {
            free(resp.file[i]->name);
            free(resp.file[i]->content);
            free(resp.file[i]);
        }
        resp.n_file = 0;
        resp.error = g.err;
    }

    size_t out_len = google__protobuf__compiler__code_generator_response__get_packed_size(&resp);
    uint8_t *out = malloc(out_len ? out_len : 1);
    int rc = 0;
    if (!out) {
        fprintf(stderr, "protoc-gen-grpc-c: out of memory\n");
        rc = 1;
    } else {
        google__protobuf__compiler__code_generator_response__pack(&resp, out);
        if (fwrite(out, 1, out_len, stdout) != out_len || fflush(stdout) != 0)
            rc = 1;
    }
    free(out);
    for (size_t i = 0; i < resp.n_file; i++) {
        free(resp.file[i]->name);
        free(resp.file[i]->content);
        free(resp.file[i]);
    }
    free(resp.file);
    free(g.err);
    google__protobuf__compiler__code_generator_request__free_unpacked(req, NULL);
    return rc;
}
