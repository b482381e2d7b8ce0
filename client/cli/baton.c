/*
 * baton - command-line client of the Baton lock service, built only on
 * libbaton's public API (baton/baton.h).
 *
 *   baton exec [--pool P --devices N [--count C] [--weight W] | KEY] [--wait D] [--ttl D] -- CMD ARGS...
 *   baton acquire | renew | release | watch | describe | force-release ...
 *
 * Signals: every command that waits for something blocks SIGINT, SIGTERM,
 * SIGHUP, SIGQUIT, SIGCHLD and SIGUSR1 in all threads (before libbaton starts
 * any) and takes them with sigwaitinfo() in the main thread. Library callbacks
 * wake the main thread by raising SIGUSR1 after setting a flag.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "baton/baton.h"
#include "duration.h"
#include "ls.h"

extern char **environ;

enum {
    EXIT_OK = 0,
    EXIT_OTHER = 1,
    EXIT_USAGE = 2,
    EXIT_UNAVAILABLE = 69, /* EX_UNAVAILABLE */
    EXIT_LOST = 70,
    EXIT_BUSY = 75, /* EX_TEMPFAIL */
    EXIT_NOPERM = 77 /* EX_NOPERM: no or unknown token, or not allowed */
};

#define DEFAULT_TARGET "127.0.0.1:50051"

static const char *prog = "baton";

static const char main_help[] =
    "usage: baton COMMAND [OPTIONS] ...\n"
    "\n"
    "Commands:\n"
    "  exec [--pool P --devices N [--count C] [--weight W] | KEY] [options] -- CMD [ARGS...]\n"
    "                   hold a lock (stream mode) while CMD runs, like flock(1)\n"
    "  acquire KEY | --pool P --devices N [--count C] [--weight W]\n"
    "                   take a lease lock; prints its token and fencing number\n"
    "  renew --token T KEY     extend a lease lock\n"
    "  release --token T KEY   release a lease lock\n"
    "  watch KEY | --prefix P  print lock events until interrupted\n"
    "  describe KEY     show the holder of KEY\n"
    "  ls [--prefix P] [--older-than D] [--watch]   the locks held now: who holds what, since when\n"
    "  force-release --fencing N KEY   operator release of the holder with that fencing number\n"
    "Run 'baton COMMAND --help' for the options of a command.\n"
    "\n"
    "Common options:\n"
    "  --target ADDR    batond address (default: $BATON_TARGET, else " DEFAULT_TARGET ")\n"
    "  --owner TEXT     owner shown to others (default: <hostname>/<pid>)\n"
    "  --json           machine-readable output (one JSON object per line)\n"
    "  --tls-ca FILE    talk TLS; trust the server certificate's CA in FILE (PEM)\n"
    "  --tls-cert FILE, --tls-key FILE   client certificate and key for mTLS (imply TLS)\n"
    "  --token-file F   bearer token for batond's auth (first line of F; default: $BATON_AUTH_TOKEN)\n"
    "Lock options (exec and acquire; renew takes --ttl):\n"
    "  --ttl D          lock lifetime (default: the server's)\n"
    "  --wait D         longest wait for the lock; 0 = try once (default: the server's maximum)\n"
    "Durations take a unit: 500ms, 5s, 2m, 1h; a bare number means seconds.\n"
    "\n"
    "Exit status:\n"
    "  0   success\n"
    "  1   other error\n"
    "  2   usage error (bad option, duration, key rejected by the server)\n"
    "  69  batond or its Redis unavailable (EX_UNAVAILABLE)\n"
    "  70  the lock was lost, or the token no longer holds it\n"
    "  75  lock busy: not acquired within --wait (EX_TEMPFAIL; exec: --conflict-exit-code N)\n"
    "  77  no or unknown token, or the token may not use this key or call (EX_NOPERM)\n"
    "  exec otherwise exits with CMD's status (128+N if CMD died of signal N).\n";

/* ---- options shared by all commands ---- */

enum opt_id {
    O_TARGET = 1000,
    O_OWNER,
    O_TTL,
    O_WAIT,
    O_JSON,
    O_POOL,
    O_DEVICES,
    O_CONFLICT,
    O_TOKEN,
    O_PREFIX,
    O_FENCING,
    O_COUNT,
    O_WEIGHT,
    O_TLS_CA,
    O_TLS_CERT,
    O_TLS_KEY,
    O_TOKEN_FILE,
    O_OLDER_THAN,
    O_WATCH,
    O_INTERVAL,
    O_HELP
};

/* Which options a command accepts (bit per option). */
#define BIT(o) (1u << ((o)-O_TARGET))
#define COMMON                                                                                               \
    (BIT(O_TARGET) | BIT(O_OWNER) | BIT(O_JSON) | BIT(O_HELP) | BIT(O_TLS_CA) | BIT(O_TLS_CERT) |             \
     BIT(O_TLS_KEY) | BIT(O_TOKEN_FILE))

struct opts {
    const char *target;
    const char *owner;
    int64_t ttl_ms;
    int64_t wait_ms;
    int json;
    const char *pool;
    int devices;
    int count;
    int64_t weight;
    int conflict_exit;
    const char *token;
    const char *prefix;
    uint64_t fencing;
    int has_fencing;
    const char *tls_ca, *tls_cert, *tls_key;
    const char *token_file;
    int64_t older_than_ms; /* ls */
    int watch;             /* ls */
    int64_t interval_ms;   /* ls --watch */
};

struct command {
    const char *name;
    unsigned accepts;
    const char *usage;
    int (*run)(struct opts *o, int argc, char **argv);
};

static const struct command *cur; /* the command being run */

static int usage_error(const struct command *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int usage_error(const struct command *c, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s%s%s: ", prog, c ? " " : "", c ? c->name : "");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry '%s %s%s--help'.\n", prog, c ? c->name : "", c ? " " : "");
    return EXIT_USAGE;
}

/* Exit status for a libbaton error. */
static int exit_of(int err)
{
    switch (err) {
    case 0: return EXIT_OK;
    case BATON_ERR_BUSY: return EXIT_BUSY;
    case BATON_ERR_UNAVAILABLE:
    case BATON_ERR_TIMEOUT: return EXIT_UNAVAILABLE;
    case BATON_ERR_LOST:
    case BATON_ERR_NOT_HELD: return EXIT_LOST;
    case BATON_ERR_INVALID: return EXIT_USAGE;
    case BATON_ERR_UNAUTHENTICATED:
    case BATON_ERR_DENIED: return EXIT_NOPERM;
    default: return EXIT_OTHER;
    }
}

static int fail(const char *what, int err)
{
    fprintf(stderr, "%s: %s: %s (%s)\n", prog, what, baton_strerror(err), baton_last_error());
    return exit_of(err);
}

/* Writes s as a JSON string (quotes included). */
static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p < 0x20)
            fprintf(f, "\\u%04x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

static int parse_int(const char *s, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

/* Parses options up to the first operand ("+": POSIX order, so exec's CMD
 * keeps its own options). Returns -1 on success, else the exit status. */
static int parse_opts(const struct command *c, int argc, char **argv, struct opts *o)
{
    static const struct option longs[] = {{"target", required_argument, NULL, O_TARGET},
                                          {"owner", required_argument, NULL, O_OWNER},
                                          {"ttl", required_argument, NULL, O_TTL},
                                          {"wait", required_argument, NULL, O_WAIT},
                                          {"json", no_argument, NULL, O_JSON},
                                          {"pool", required_argument, NULL, O_POOL},
                                          {"devices", required_argument, NULL, O_DEVICES},
                                          {"conflict-exit-code", required_argument, NULL, O_CONFLICT},
                                          {"token", required_argument, NULL, O_TOKEN},
                                          {"prefix", required_argument, NULL, O_PREFIX},
                                          {"fencing", required_argument, NULL, O_FENCING},
                                          {"count", required_argument, NULL, O_COUNT},
                                          {"weight", required_argument, NULL, O_WEIGHT},
                                          {"tls-ca", required_argument, NULL, O_TLS_CA},
                                          {"tls-cert", required_argument, NULL, O_TLS_CERT},
                                          {"tls-key", required_argument, NULL, O_TLS_KEY},
                                          {"token-file", required_argument, NULL, O_TOKEN_FILE},
                                          {"older-than", required_argument, NULL, O_OLDER_THAN},
                                          {"watch", no_argument, NULL, O_WATCH},
                                          {"interval", required_argument, NULL, O_INTERVAL},
                                          {"help", no_argument, NULL, O_HELP},
                                          {NULL, 0, NULL, 0}};
    const char *env = getenv("BATON_TARGET");
    o->target = env && env[0] ? env : DEFAULT_TARGET;
    o->wait_ms = -1;
    o->conflict_exit = EXIT_BUSY;
    opterr = 0;
    optind = 1;
    int ch;
    long v;
    while ((ch = getopt_long(argc, argv, "+h", longs, NULL)) != -1) {
        if (ch == 'h')
            ch = O_HELP;
        if (ch == '?' || ch == ':') {
            /* For a long option glibc sets optopt to its value (O_*), not a
             * character: name the argument as typed instead. */
            if (optopt > 0 && optopt < O_TARGET)
                return usage_error(c, "unknown option or missing value: -%c", optopt);
            return usage_error(c, "unknown option or missing value: %s", argv[optind - 1]);
        }
        if (!(c->accepts & BIT(ch)))
            return usage_error(c, "option %s does not apply to this command", argv[optind - 1]);
        switch (ch) {
        case O_HELP: printf("usage: %s %s\n", prog, c->usage); exit(EXIT_OK);
        case O_TARGET: o->target = optarg; break;
        case O_OWNER: o->owner = optarg; break;
        case O_JSON: o->json = 1; break;
        case O_POOL: o->pool = optarg; break;
        case O_TOKEN: o->token = optarg; break;
        case O_PREFIX: o->prefix = optarg; break;
        case O_TLS_CA: o->tls_ca = optarg; break;
        case O_TLS_CERT: o->tls_cert = optarg; break;
        case O_TLS_KEY: o->tls_key = optarg; break;
        case O_TOKEN_FILE: o->token_file = optarg; break;
        case O_TTL:
            if (cli_parse_duration(optarg, &o->ttl_ms) != 0)
                return usage_error(c, "bad duration for --ttl: '%s' (e.g. 500ms, 5s, 2m, 1h)", optarg);
            break;
        case O_OLDER_THAN:
            if (cli_parse_duration(optarg, &o->older_than_ms) != 0)
                return usage_error(c, "bad duration for --older-than: '%s' (e.g. 30s, 10m, 1h)", optarg);
            break;
        case O_INTERVAL:
            if (cli_parse_duration(optarg, &o->interval_ms) != 0 || o->interval_ms <= 0)
                return usage_error(c, "bad duration for --interval: '%s' (e.g. 1s, 500ms)", optarg);
            break;
        case O_WATCH: o->watch = 1; break;
        case O_WAIT:
            if (cli_parse_duration(optarg, &o->wait_ms) != 0)
                return usage_error(c, "bad duration for --wait: '%s' (e.g. 0, 500ms, 5s, 2m, 1h)", optarg);
            break;
        case O_DEVICES:
            if (parse_int(optarg, 1, 1 << 20, &v) != 0)
                return usage_error(c, "bad --devices: '%s' (a positive integer)", optarg);
            o->devices = (int)v;
            break;
        case O_COUNT:
            if (parse_int(optarg, 1, 1 << 20, &v) != 0)
                return usage_error(c, "bad --count: '%s' (a positive integer)", optarg);
            o->count = (int)v;
            break;
        case O_WEIGHT:
            if (parse_int(optarg, 1, INT32_MAX, &v) != 0)
                return usage_error(c, "bad --weight: '%s' (a positive integer)", optarg);
            o->weight = v;
            break;
        case O_CONFLICT:
            if (parse_int(optarg, 0, 255, &v) != 0)
                return usage_error(c, "bad --conflict-exit-code: '%s' (0..255)", optarg);
            o->conflict_exit = (int)v;
            break;
        case O_FENCING: {
            char *end;
            errno = 0;
            unsigned long long f = strtoull(optarg, &end, 10);
            if (errno || end == optarg || *end || optarg[0] == '-')
                return usage_error(c, "bad --fencing: '%s'", optarg);
            o->fencing = f;
            o->has_fencing = 1;
            break;
        }
        }
    }
    return -1;
}

/* The bearer token: the first line of --token-file, else $BATON_AUTH_TOKEN
 * (not $BATON_TOKEN: exec exports that for the lock's own token), else none.
 * Returns 0, or the exit status after a message. */
static int read_auth_token(const struct opts *o, char *buf, size_t n, const char **out)
{
    *out = NULL;
    if (o->token_file) {
        FILE *f = fopen(o->token_file, "r");
        if (f == NULL) {
            fprintf(stderr, "%s: --token-file %s: %s\n", prog, o->token_file, strerror(errno));
            return EXIT_USAGE;
        }
        int ok = fgets(buf, (int)n, f) != NULL;
        fclose(f);
        buf[ok ? strcspn(buf, "\r\n") : 0] = '\0';
        if (buf[0] == '\0') {
            fprintf(stderr, "%s: --token-file %s: no token on its first line\n", prog, o->token_file);
            return EXIT_USAGE;
        }
        *out = buf;
        return 0;
    }
    const char *env = getenv("BATON_AUTH_TOKEN");
    if (env && env[0])
        *out = env;
    return 0;
}

static int new_client(const struct opts *o, baton_client **c)
{
    char token[4096];
    baton_client_options co = {.owner = o->owner,
                               .tls_ca_file = o->tls_ca,
                               .tls_cert_file = o->tls_cert,
                               .tls_key_file = o->tls_key};
    int rc = read_auth_token(o, token, sizeof token, &co.auth_token);
    if (rc != 0)
        return rc;
    int err = baton_client_new(o->target, &co, c);
    memset(token, 0, sizeof token);
    return err ? fail("connect", err) : 0;
}

/* ---- signals ---- */

static sigset_t handled;     /* blocked everywhere, taken by sigwaitinfo */
static sigset_t original;    /* restored in exec's child */
static atomic_int wake_lost; /* set by on_lost */
static atomic_int wake_done; /* set by async / watch end */

static void block_signals(void)
{
    sigemptyset(&handled);
    sigaddset(&handled, SIGINT);
    sigaddset(&handled, SIGTERM);
    sigaddset(&handled, SIGHUP);
    sigaddset(&handled, SIGQUIT);
    sigaddset(&handled, SIGCHLD);
    sigaddset(&handled, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &handled, &original);
}

static void wake_main(atomic_int *flag)
{
    atomic_store(flag, 1);
    kill(getpid(), SIGUSR1);
}

/* ---- exec ---- */

struct acquired {
    pthread_mutex_t mu;
    int done;
    int err;
    char msg[1024];
    baton_lock *lock;
};

static struct acquired acq = {.mu = PTHREAD_MUTEX_INITIALIZER};
static char lost_msg[1024];

static void on_acquired(int err, baton_lock *lock, const char *msg, void *ud)
{
    (void)ud;
    pthread_mutex_lock(&acq.mu);
    acq.done = 1;
    acq.err = err;
    acq.lock = lock;
    snprintf(acq.msg, sizeof acq.msg, "%s", msg);
    pthread_mutex_unlock(&acq.mu);
    wake_main(&wake_done);
}

static void on_lost(baton_lock *lock, int err, const char *msg, void *ud)
{
    (void)lock;
    (void)err;
    (void)ud;
    snprintf(lost_msg, sizeof lost_msg, "%s", msg);
    wake_main(&wake_lost);
}

/* A pool lock's device indexes, comma-separated ("1,3"), malloc'ed. */
static char *device_list(const baton_lock *l)
{
    int n = baton_lock_device_count(l);
    char *s = malloc((size_t)n * 12 + 1);
    if (s == NULL)
        return NULL;
    size_t used = 0;
    s[0] = '\0';
    for (int i = 0; i < n; i++)
        used += (size_t)sprintf(s + used, "%s%d", i ? "," : "", baton_lock_device_at(l, i));
    return s;
}

/* environ plus the BATON_* variables (earlier definitions of them dropped).
 * Built before fork: the child only execs. Caller frees the array and strings
 * [0, *n_own). */
static char **child_env(baton_lock *l, char ***own, size_t *n_own)
{
    static const char *names[] = {"BATON_KEY=",    "BATON_FENCING=",        "BATON_TOKEN=",
                                  "BATON_DEVICE=", "CUDA_VISIBLE_DEVICES=", "BATON_DEVICES="};
    size_t n = 0;
    while (environ[n])
        n++;
    char **env = calloc(n + 7, sizeof *env);
    char **mine = calloc(6, sizeof *mine);
    size_t cvd_len = (size_t)baton_lock_device_count(l) * 130 + 1;
    char *cvd = malloc(cvd_len);
    char *devs = baton_lock_device_count(l) > 0 ? device_list(l) : NULL;
    if (env == NULL || mine == NULL || cvd == NULL)
        goto fail;
    int pool = devs != NULL && baton_lock_cuda_visible_devices(l, cvd, cvd_len) == 0;
    size_t k = 0;
    if (asprintf(&mine[k++], "BATON_KEY=%s", baton_lock_key(l)) < 0 ||
        asprintf(&mine[k++], "BATON_FENCING=%" PRIu64, baton_lock_fencing(l)) < 0 ||
        asprintf(&mine[k++], "BATON_TOKEN=%s", baton_lock_token(l)) < 0 ||
        (pool && asprintf(&mine[k++], "BATON_DEVICE=%d", baton_lock_device(l)) < 0) ||
        (pool && asprintf(&mine[k++], "CUDA_VISIBLE_DEVICES=%s", cvd) < 0) ||
        (pool && asprintf(&mine[k++], "BATON_DEVICES=%s", devs) < 0)) {
        mine[k - 1] = NULL;
        goto fail;
    }
    free(cvd);
    free(devs);
    cvd = devs = NULL;
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        int ours = 0;
        for (size_t j = 0; j < sizeof names / sizeof names[0]; j++)
            if (strncmp(environ[i], names[j], strlen(names[j])) == 0)
                ours = 1;
        if (!ours)
            env[m++] = environ[i];
    }
    for (size_t i = 0; i < k; i++)
        env[m++] = mine[i];
    *own = mine;
    *n_own = k;
    return env;
fail:
    for (size_t i = 0; mine && i < 6; i++)
        free(mine[i]);
    free(mine);
    free(env);
    free(cvd);
    free(devs);
    return NULL;
}

/* ,"devices":[..],"keys":[..],"fencings":[..],"device_names":[..] of a pool
 * lock (names only when the pool has them); nothing for a key lock. */
static void json_devices(const baton_lock *l)
{
    int n = baton_lock_device_count(l);
    if (n == 0)
        return;
    const char *key = baton_lock_key(l);
    const char *slash = strrchr(key, '/');
    int plen = slash ? (int)(slash - key) : (int)strlen(key);
    printf(",\"devices\":[");
    for (int i = 0; i < n; i++)
        printf("%s%d", i ? "," : "", baton_lock_device_at(l, i));
    printf("],\"keys\":[");
    for (int i = 0; i < n; i++) {
        char k[600];
        snprintf(k, sizeof k, "%.*s/%d", plen, key, baton_lock_device_at(l, i));
        printf("%s", i ? "," : "");
        json_str(stdout, k);
    }
    printf("],\"fencings\":[");
    for (int i = 0; i < n; i++)
        printf("%s%" PRIu64, i ? "," : "", baton_lock_device_fencing(l, i));
    printf("]");
    if (baton_lock_device_name(l, 0)) {
        printf(",\"device_names\":[");
        for (int i = 0; i < n; i++) {
            printf("%s", i ? "," : "");
            json_str(stdout, baton_lock_device_name(l, i));
        }
        printf("]");
    }
}

/* Waits (sigwaitinfo) for the async acquire; forwards nothing yet: a signal
 * while waiting cancels the acquire. Returns 0 with *out, or an exit status. */
static int exec_wait_grant(baton_async *as, int *sig_out, baton_lock **out)
{
    for (;;) {
        pthread_mutex_lock(&acq.mu);
        int done = acq.done;
        pthread_mutex_unlock(&acq.mu);
        if (done)
            break;
        siginfo_t si;
        int sig = sigwaitinfo(&handled, &si);
        if (sig == SIGINT || sig == SIGTERM || sig == SIGHUP || sig == SIGQUIT) {
            *sig_out = sig;
            baton_async_cancel(as);
        }
    }
    baton_async_free(as);
    *out = acq.lock;
    return acq.err;
}

/* exec's --json line, once CMD is over (or was not started). */
static void exec_json(const baton_lock *l, int lost)
{
    printf("{\"key\":");
    json_str(stdout, baton_lock_key(l));
    printf(",\"fencing\":%" PRIu64, baton_lock_fencing(l));
    json_devices(l);
    printf(",\"lost\":%s}\n", lost ? "true" : "false");
}

/* Runs CMD while holding `l`; returns baton's exit status. */
static int exec_run(struct opts *o, baton_lock *l, char **cmd)
{
    /* Lost between the grant and here: CMD must not start unprotected. (The
     * message is readable only once on_lost has set wake_lost.) */
    int lost_early = atomic_exchange(&wake_lost, 0);
    if (lost_early || baton_lock_state_get(l) != BATON_LOCK_HELD) {
        fprintf(stderr, "%s: lock %s lost (%s); %s not started\n", prog, baton_lock_key(l),
                lost_early ? lost_msg : "before the command started", cmd[0]);
        if (o->json)
            exec_json(l, 1);
        return EXIT_LOST;
    }
    char **own = NULL;
    size_t n_own = 0;
    char **env = child_env(l, &own, &n_own);
    if (env == NULL) {
        fprintf(stderr, "%s: out of memory\n", prog);
        return EXIT_OTHER;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        /* Child: never touch gRPC; exec at once. */
        pthread_sigmask(SIG_SETMASK, &original, NULL);
        execvpe(cmd[0], cmd, env);
        int e = errno;
        const char *m = strerror(e);
        (void)!write(2, "baton: cannot run ", 18);
        (void)!write(2, cmd[0], strlen(cmd[0]));
        (void)!write(2, ": ", 2);
        (void)!write(2, m, strlen(m));
        (void)!write(2, "\n", 1);
        _exit(e == ENOENT ? 127 : 126);
    }
    for (size_t i = 0; i < n_own; i++)
        free(own[i]);
    free(own);
    free(env);
    if (pid < 0) {
        fprintf(stderr, "%s: fork: %s\n", prog, strerror(errno));
        return EXIT_OTHER;
    }

    int lost = 0, status = 0;
    for (;;) {
        if (atomic_exchange(&wake_lost, 0) && !lost) {
            lost = 1;
            fprintf(stderr, "%s: lock %s lost (%s); sending SIGTERM to %s\n", prog, baton_lock_key(l),
                    lost_msg, cmd[0]);
            kill(pid, SIGTERM);
        }
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid)
            break;
        siginfo_t si;
        int sig = sigwaitinfo(&handled, &si);
        /* A signal the kernel generated for the terminal (Ctrl-C, Ctrl-\,
         * hangup) went to the whole foreground process group, CMD included:
         * sending it again would make CMD see one Ctrl-C twice. */
        if ((sig == SIGINT || sig == SIGTERM || sig == SIGHUP || sig == SIGQUIT) && si.si_code != SI_KERNEL)
            kill(pid, sig);
    }
    if (o->json)
        exec_json(l, lost);
    if (lost)
        return EXIT_LOST;
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return EXIT_OTHER;
}

static int cmd_exec(struct opts *o, int argc, char **argv)
{
    const struct command *self = cur;
    const char *key = NULL;
    if (o->pool == NULL) {
        if (optind >= argc || strcmp(argv[optind], "--") == 0)
            return usage_error(self, "a KEY or --pool P --devices N is required");
        key = argv[optind++];
    } else if (o->devices <= 0) {
        return usage_error(self, "--pool needs --devices N");
    }
    if (o->pool == NULL && o->devices)
        return usage_error(self, "--devices needs --pool");
    if (o->pool == NULL && (o->count || o->weight))
        return usage_error(self, "--count and --weight need --pool");
    if (optind < argc && strcmp(argv[optind], "--") == 0)
        optind++;
    if (optind >= argc)
        return usage_error(self, "no command given (baton exec KEY -- CMD [ARGS...])");
    char **cmd = argv + optind;

    block_signals();
    baton_client *c = NULL;
    int rc = new_client(o, &c);
    if (rc)
        return rc;
    baton_acquire_options ao = {.owner = o->owner,
                                .ttl_ms = o->ttl_ms,
                                .wait_ms = o->wait_ms,
                                .mode = BATON_MODE_STREAM,
                                .on_lost = on_lost,
                                .count = o->count,
                                .weight = o->weight};
    baton_async *as = NULL;
    int err = baton_acquire_async(c, key, o->pool, o->devices, &ao, on_acquired, NULL, &as);
    baton_lock *l = NULL;
    int sig = 0;
    if (err == 0)
        err = exec_wait_grant(as, &sig, &l);
    if (err != 0) {
        if (sig) {
            rc = 128 + sig;
        } else {
            fprintf(stderr, "%s: exec: %s: %s (%s)\n", prog, key ? key : o->pool, baton_strerror(err),
                    acq.msg[0] ? acq.msg : baton_last_error());
            rc = err == BATON_ERR_BUSY ? o->conflict_exit : exit_of(err);
        }
        baton_client_free(c);
        return rc;
    }
    if (sig) {
        /* Interrupted at the moment of the grant: do not start CMD. */
        baton_lock_free(l);
        baton_client_free(c);
        return 128 + sig;
    }
    rc = exec_run(o, l, cmd);
    baton_lock_free(l); /* releases */
    baton_client_free(c);
    return rc;
}

/* ---- acquire / renew / release ---- */

static const char *one_key(const struct command *c, int argc, char **argv)
{
    if (optind != argc - 1) {
        usage_error(c, optind >= argc ? "KEY is required" : "exactly one KEY is expected");
        return NULL;
    }
    return argv[optind];
}

/*
 * The start of every command on one KEY: the KEY argument, the flag the
 * command requires (`missing` names it when absent, else NULL), and a
 * client. Returns 0, or the exit status to end with.
 */
static int key_command(struct opts *o, int argc, char **argv, const char *missing, const char **key,
                       baton_client **c)
{
    *key = one_key(cur, argc, argv);
    if (*key == NULL)
        return EXIT_USAGE;
    if (missing)
        return usage_error(cur, missing);
    *c = NULL;
    return new_client(o, c);
}

static int cmd_acquire(struct opts *o, int argc, char **argv)
{
    const char *key = NULL;
    baton_client *c;
    int rc;
    if (o->pool) {
        /* A pool instead of KEY. */
        if (optind != argc)
            return usage_error(cur, "KEY and --pool exclude each other");
        if (o->devices <= 0)
            return usage_error(cur, "--pool needs --devices N");
        if ((rc = new_client(o, &c)) != 0)
            return rc;
    } else {
        if (o->devices || o->count || o->weight)
            return usage_error(cur, "--devices, --count and --weight need --pool");
        if ((rc = key_command(o, argc, argv, NULL, &key, &c)) != 0)
            return rc;
    }
    baton_acquire_options ao = {.owner = o->owner,
                                .ttl_ms = o->ttl_ms,
                                .wait_ms = o->wait_ms,
                                .count = o->count,
                                .weight = o->weight};
    baton_lock *l = NULL;
    int err = o->pool ? baton_acquire_pool(c, o->pool, o->devices, &ao, &l) : baton_acquire(c, key, &ao, &l);
    if (err) {
        rc = fail(key ? key : o->pool, err);
    } else {
        if (o->json) {
            printf("{\"key\":");
            json_str(stdout, baton_lock_key(l));
            printf(",\"token\":\"%s\",\"fencing\":%" PRIu64 ",\"ttl_ms\":%" PRId64 ",\"device\":%d",
                   baton_lock_token(l), baton_lock_fencing(l), baton_lock_ttl_ms(l), baton_lock_device(l));
            json_devices(l);
            printf(",\"owner\":");
            json_str(stdout, baton_lock_owner(l));
            printf("}\n");
        } else {
            printf("key=%s token=%s fencing=%" PRIu64 " ttl_ms=%" PRId64 " device=%d", baton_lock_key(l),
                   baton_lock_token(l), baton_lock_fencing(l), baton_lock_ttl_ms(l), baton_lock_device(l));
            char *devs = baton_lock_device_count(l) > 0 ? device_list(l) : NULL;
            if (devs)
                printf(" devices=%s", devs);
            free(devs);
            printf("\n");
        }
        /* The lease outlives this process: free the handle, keep the lock. */
        baton_lock_detach(l);
    }
    baton_client_free(c);
    return rc;
}

static int cmd_renew(struct opts *o, int argc, char **argv)
{
    const char *key;
    baton_client *c;
    int rc = key_command(o, argc, argv, o->token ? NULL : "--token is required", &key, &c);
    if (rc)
        return rc;
    int64_t ttl = 0;
    int err = baton_renew_token(c, key, o->token, o->ttl_ms, &ttl);
    if (err) {
        rc = fail(key, err);
    } else if (o->json) {
        printf("{\"key\":");
        json_str(stdout, key);
        printf(",\"ttl_ms\":%" PRId64 "}\n", ttl);
    } else {
        printf("renewed %s ttl_ms=%" PRId64 "\n", key, ttl);
    }
    baton_client_free(c);
    return rc;
}

/* The success line of release and force-release: `verb KEY`, or with --json
 * {"key": KEY, "released": true}. */
static void print_released(const struct opts *o, const char *key, const char *verb)
{
    if (o->json) {
        printf("{\"key\":");
        json_str(stdout, key);
        printf(",\"released\":true}\n");
    } else {
        printf("%s %s\n", verb, key);
    }
}

static int cmd_release(struct opts *o, int argc, char **argv)
{
    const char *key;
    baton_client *c;
    int rc = key_command(o, argc, argv, o->token ? NULL : "--token is required", &key, &c);
    if (rc)
        return rc;
    int err = baton_release_token(c, key, o->token);
    if (err)
        rc = fail(key, err);
    else
        print_released(o, key, "released");
    baton_client_free(c);
    return rc;
}

static int cmd_describe(struct opts *o, int argc, char **argv)
{
    const char *key;
    baton_client *c;
    int rc = key_command(o, argc, argv, NULL, &key, &c);
    if (rc)
        return rc;
    baton_description d;
    int err = baton_describe(c, key, &d);
    if (err) {
        rc = fail(key, err);
    } else if (o->json) {
        printf("{\"key\":");
        json_str(stdout, key);
        printf(",\"held\":%s,\"owner\":", d.held ? "true" : "false");
        json_str(stdout, d.owner);
        printf(",\"fencing\":%" PRIu64 ",\"ttl_ms\":%" PRId64 ",\"waiters\":%" PRId64 "}\n", d.fencing,
               d.ttl_ms, d.waiters);
    } else if (d.held) {
        printf("%s held by %s fencing=%" PRIu64 " ttl_ms=%" PRId64 " waiters=%" PRId64 "\n", key, d.owner,
               d.fencing, d.ttl_ms, d.waiters);
    } else {
        printf("%s free waiters=%" PRId64 "\n", key, d.waiters);
    }
    baton_client_free(c);
    return rc;
}

static int cmd_force_release(struct opts *o, int argc, char **argv)
{
    const char *key;
    baton_client *c;
    int rc = key_command(
        o, argc, argv, o->has_fencing ? NULL : "--fencing is required (see 'baton describe KEY')", &key, &c);
    if (rc)
        return rc;
    int err = baton_force_release(c, key, o->fencing);
    if (err)
        rc = fail(key, err);
    else
        print_released(o, key, "force-released");
    baton_client_free(c);
    return rc;
}

/* ---- watch ---- */

static pthread_mutex_t out_mu = PTHREAD_MUTEX_INITIALIZER;
static int watch_json;
static int watch_end_err;

static void on_watch_event(const baton_event *ev, int err, const char *msg, void *ud)
{
    (void)ud;
    if (ev == NULL) {
        if (err != BATON_ERR_CANCELLED) {
            fprintf(stderr, "%s: watch ended: %s (%s)\n", prog, baton_strerror(err), msg);
            watch_end_err = err;
            wake_main(&wake_done);
        }
        return;
    }
    pthread_mutex_lock(&out_mu);
    if (watch_json) {
        printf("{\"type\":\"%s\",\"key\":", baton_event_type_name(ev->type));
        json_str(stdout, ev->key);
        printf(",\"owner\":");
        json_str(stdout, ev->owner);
        printf(",\"fencing\":%" PRIu64 ",\"at_unix_ms\":%" PRId64 "}\n", ev->fencing, ev->at_unix_ms);
    } else {
        printf("%" PRId64 " %s %s fencing=%" PRIu64 " owner=%s\n", ev->at_unix_ms,
               baton_event_type_name(ev->type), ev->key, ev->fencing, ev->owner);
    }
    fflush(stdout);
    pthread_mutex_unlock(&out_mu);
}

static int cmd_watch(struct opts *o, int argc, char **argv)
{
    const char *key = NULL;
    if (o->prefix == NULL) {
        key = one_key(cur, argc, argv);
        if (key == NULL)
            return EXIT_USAGE;
    } else if (optind != argc) {
        return usage_error(cur, "give either KEY or --prefix P, not both");
    }
    watch_json = o->json;
    block_signals();
    baton_client *c = NULL;
    int rc = new_client(o, &c);
    if (rc)
        return rc;
    baton_watcher *w = NULL;
    int err = baton_watch(c, key, o->prefix, on_watch_event, NULL, &w);
    if (err) {
        baton_client_free(c);
        return fail("watch", err);
    }
    for (;;) {
        if (atomic_load(&wake_done))
            break;
        siginfo_t si;
        int sig = sigwaitinfo(&handled, &si);
        if (sig == SIGINT || sig == SIGTERM || sig == SIGHUP || sig == SIGQUIT)
            break;
    }
    baton_watch_free(w);
    baton_client_free(c);
    return watch_end_err ? exit_of(watch_end_err) : EXIT_OK;
}

static int cmd_ls(struct opts *o, int argc, char **argv)
{
    if (optind != argc)
        return usage_error(cur, "takes no operand (use --prefix P)");
    baton_client *c = NULL;
    int rc = new_client(o, &c);
    if (rc)
        return rc;
    cli_ls_opts lo = {.prefix = o->prefix,
                      .older_than_ms = o->older_than_ms,
                      .json = o->json,
                      .watch = o->watch,
                      .interval_ms = o->interval_ms > 0 ? o->interval_ms : 2000};
    int err = cli_ls(c, &lo);
    baton_client_free(c);
    return err ? fail("ls", err) : EXIT_OK;
}

#define TTL_WAIT (BIT(O_TTL) | BIT(O_WAIT))
#define POOL_OPTS (BIT(O_POOL) | BIT(O_DEVICES) | BIT(O_COUNT) | BIT(O_WEIGHT))
static const struct command commands[] = {
    {"exec", COMMON | TTL_WAIT | POOL_OPTS | BIT(O_CONFLICT),
     "exec [--pool P --devices N [--count C] [--weight W] | KEY] [--wait D] [--ttl D]\n"
     "           [--conflict-exit-code N] [--owner O] [--target ADDR] [--json] -- CMD [ARGS...]\n"
     "Holds the lock (stream mode) while CMD runs, then releases it. CMD gets BATON_KEY,\n"
     "BATON_FENCING, BATON_TOKEN and, for pools, BATON_DEVICE (the first device),\n"
     "BATON_DEVICES (all of them, \"1,3\") and CUDA_VISIBLE_DEVICES (the same, or the\n"
     "devices' configured names). --count C: C devices at once, all or none; --weight W:\n"
     "a share W of each device's capacity (pools configured with one).\n"
     "SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to baton are forwarded to CMD (a terminal's\n"
     "Ctrl-C already reaches CMD, and is not sent twice). If the lock is lost (or\n"
     "batond stops answering for 3 s), CMD gets SIGTERM and baton exits 70 once it ended;\n"
     "otherwise baton exits with CMD's status (128+N for signal N). Busy (not acquired\n"
     "within --wait): 75 or --conflict-exit-code N. Default --wait: the server's maximum.",
     cmd_exec},
    {"acquire", COMMON | TTL_WAIT | POOL_OPTS,
     "acquire [--ttl D] [--wait D] [--owner O] [--target ADDR] [--json]\n"
     "           KEY | --pool P --devices N [--count C] [--weight W]\n"
     "Takes a lease lock that lives until 'baton release' or its TTL; prints\n"
     "key=K token=T fencing=F ttl_ms=N device=-1 (a pool: device=I devices=I,J; one\n"
     "JSON object with --json, for a pool with devices, keys, fencings, device_names).\n"
     "Release or renew a pool grant with any of its keys: that covers every device.",
     cmd_acquire},
    {"renew", COMMON | BIT(O_TTL) | BIT(O_TOKEN),
     "renew --token T [--ttl D] [--target ADDR] [--json] KEY\n"
     "Extends the lease held by token T (exit 70 if T no longer holds KEY).",
     cmd_renew},
    {"release", COMMON | BIT(O_TOKEN),
     "release --token T [--target ADDR] [--json] KEY\n"
     "Releases the lease held by token T (exit 70 if T no longer holds KEY).",
     cmd_release},
    {"watch", COMMON | BIT(O_PREFIX),
     "watch [--target ADDR] [--json] KEY | --prefix P\n"
     "Prints one line per lock event (ACQUIRED, RELEASED, EXPIRED, FORCE_RELEASED)\n"
     "until interrupted: 'AT_MS TYPE KEY fencing=F owner=O', or one JSON object per line.",
     cmd_watch},
    {"ls", COMMON | BIT(O_PREFIX) | BIT(O_OLDER_THAN) | BIT(O_WATCH) | BIT(O_INTERVAL),
     "ls [--prefix P] [--older-than D] [--watch [--interval D]] [--target ADDR] [--json]\n"
     "Lists the locks held now (every page of List): KEY OWNER FENCING HELD TTL WAITERS,\n"
     "sorted by key, or one JSON object per lock. --older-than D: only locks held at least D.\n"
     "--watch: refresh every --interval (default 2s) until interrupted, like top(1).",
     cmd_ls},
    {"describe", COMMON,
     "describe [--target ADDR] [--json] KEY\nShows the holder, fencing number, remaining TTL and waiters of "
     "KEY.",
     cmd_describe},
    {"force-release", COMMON | BIT(O_FENCING),
     "force-release --fencing N [--target ADDR] [--json] KEY\n"
     "Releases KEY only if its holder has fencing number N (exit 70 otherwise).",
     cmd_force_release},
    {NULL, 0, NULL, NULL}};

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(main_help, stderr);
        return EXIT_USAGE;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        fputs(main_help, stdout);
        return EXIT_OK;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("baton %d.%d.%d\n", BATON_VERSION_MAJOR, BATON_VERSION_MINOR, BATON_VERSION_PATCH);
        return EXIT_OK;
    }
    for (cur = commands; cur->name; cur++)
        if (strcmp(cur->name, argv[1]) == 0)
            break;
    if (cur->name == NULL)
        return usage_error(NULL, "unknown command '%s'", argv[1]);
    struct opts o = {0};
    int rc = parse_opts(cur, argc - 1, argv + 1, &o);
    if (rc >= 0)
        return rc;
    return cur->run(&o, argc - 1, argv + 1);
}
