/* Private redis-server / etcd / batond children of one bench run. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

#define MAX_CHILDREN (8 + BENCH_MAX_NODES)

static char g_dir[128];
static pid_t g_children[MAX_CHILDREN];
static const char *g_child_names[MAX_CHILDREN];
static size_t g_nchildren;
static volatile sig_atomic_t g_cleaned;

int64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void bench_sleep_ns(int64_t ns)
{
    if (ns <= 0)
        return;
    struct timespec ts = {.tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

const char *procs_dir(void)
{
    return g_dir;
}

/* Only async-signal-safe calls: this also runs from the signal handler. */
static void kill_children(void)
{
    for (size_t i = 0; i < g_nchildren; i++)
        if (g_children[i] > 0)
            kill(g_children[i], SIGKILL);
}

static void on_signal(int sig)
{
    kill_children();
    /* The temp dir is left behind on a signal; it is small and under /tmp. */
    signal(sig, SIG_DFL);
    raise(sig);
}

static int rm_rf(const char *path)
{
    /* Why fork+exec instead of nftw: etcd's data dir nests a few levels and
     * this keeps the cleanup to one obvious line. */
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        execlp("rm", "rm", "-rf", path, (char *)NULL);
        _exit(127);
    }
    int st;
    waitpid(pid, &st, 0);
    return 0;
}

void procs_cleanup(void)
{
    if (g_cleaned)
        return;
    g_cleaned = 1;
    for (size_t i = 0; i < g_nchildren; i++)
        if (g_children[i] > 0)
            kill(g_children[i], SIGTERM);
    for (size_t i = 0; i < g_nchildren; i++) {
        if (g_children[i] <= 0)
            continue;
        int st;
        int64_t deadline = bench_now_ns() + 3000000000LL;
        while (waitpid(g_children[i], &st, WNOHANG) == 0) {
            if (bench_now_ns() > deadline) {
                kill(g_children[i], SIGKILL);
                waitpid(g_children[i], &st, 0);
                break;
            }
            bench_sleep_ns(10000000);
        }
        g_children[i] = 0;
    }
    if (g_dir[0] && !getenv("BENCH_KEEP_TMP"))
        rm_rf(g_dir);
}

int procs_init(void)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/baton-bench.XXXXXX");
    if (!mkdtemp(g_dir)) {
        perror("baton-bench: mkdtemp");
        g_dir[0] = 0;
        return -1;
    }
    atexit(procs_cleanup);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

int procs_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return 0;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    int port = 0;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

/* fork + exec with stdout/stderr to dir/<name>.log; the child dies with us
 * (PR_SET_PDEATHSIG) even if we are SIGKILLed. */
static pid_t spawn(const char *name, char *const argv[])
{
    if (g_nchildren == MAX_CHILDREN)
        return -1;
    char log[512];
    snprintf(log, sizeof log, "%s/%s.log", g_dir, name);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(1);
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        int null = open("/dev/null", O_RDONLY);
        if (null >= 0) {
            dup2(null, 0);
            close(null);
        }
        execvp(argv[0], argv);
        _exit(127);
    }
    g_children[g_nchildren] = pid;
    g_child_names[g_nchildren] = name;
    g_nchildren++;
    return pid;
}

static void dump_log(const char *name)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s.log", g_dir, name);
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    char line[512];
    int n = 0;
    fprintf(stderr, "---- %s (last lines) ----\n", path);
    long lines = 0;
    while (fgets(line, sizeof line, f))
        lines++;
    rewind(f);
    while (fgets(line, sizeof line, f))
        if (++n > lines - 20)
            fputs(line, stderr);
    fclose(f);
}

static int child_alive(pid_t pid)
{
    int st;
    return waitpid(pid, &st, WNOHANG) == 0;
}

static int unix_connectable(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0)
        return 0;
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
    int ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

static int tcp_connectable(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return 0;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

/* Polls `ready` until it holds, the child dies, or 15 s pass. */
static int wait_ready(const char *name, pid_t pid, int (*ready)(const void *), const void *arg)
{
    int64_t deadline = bench_now_ns() + 15000000000LL;
    while (bench_now_ns() < deadline) {
        if (ready(arg))
            return 0;
        if (!child_alive(pid)) {
            fprintf(stderr, "baton-bench: %s exited during start-up\n", name);
            dump_log(name);
            return -1;
        }
        bench_sleep_ns(20000000);
    }
    fprintf(stderr, "baton-bench: %s not ready after 15 s\n", name);
    dump_log(name);
    return -1;
}

static int ready_unix(const void *p)
{
    return unix_connectable(p);
}

static int ready_tcp(const void *p)
{
    return tcp_connectable(*(const int *)p);
}

/* batond listens before its Redis connection is up (Acquire answers
 * UNAVAILABLE until then): ready once the port accepts and it logged
 * "health SERVING", which follows the whole store's "store up" (on a
 * Cluster each node also logs its own "store up" before that). */
static int ready_batond(const void *p)
{
    if (!ready_tcp(p))
        return 0;
    char path[512];
    snprintf(path, sizeof path, "%s/batond.log", g_dir);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char line[512];
    int up = 0;
    while (!up && fgets(line, sizeof line, f))
        up = strstr(line, "health SERVING") != NULL;
    fclose(f);
    return up;
}

int procs_start_redis(bench_env *env)
{
    char sock[200];
    snprintf(sock, sizeof sock, "%s/redis.sock", g_dir);
    char *argv[] = {"redis-server",
                    "--port",
                    "0",
                    "--unixsocket",
                    sock,
                    "--unixsocketperm",
                    "700",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--notify-keyspace-events",
                    "Ex",
                    "--maxclients",
                    "10000",
                    NULL};
    pid_t pid = spawn("redis", argv);
    if (pid < 0 || wait_ready("redis", pid, ready_unix, sock) < 0)
        return -1;
    snprintf(env->redis_addr, sizeof env->redis_addr, "unix:%s", sock);
    return 0;
}

int procs_start_cluster(bench_env *env, int nodes)
{
    static const char *const names[BENCH_MAX_NODES] = {"redis-c0", "redis-c1", "redis-c2", "redis-c3",
                                                       "redis-c4", "redis-c5", "redis-c6", "redis-c7"};
    int ports[BENCH_MAX_NODES], buses[BENCH_MAX_NODES];
    pid_t pids[BENCH_MAX_NODES];
    if (nodes < 1 || nodes > BENCH_MAX_NODES)
        return -1;
    size_t len = (size_t)snprintf(env->redis_addr, sizeof env->redis_addr, "cluster://");
    for (int i = 0; i < nodes; i++) {
        /* The cluster bus gets a free port of its own (cluster-port), not +10000. */
        int bus = buses[i] = procs_free_port();
        ports[i] = procs_free_port();
        if (!ports[i] || !bus || bus == ports[i])
            return -1;
        char port[16], busport[16], conf[300], dir[200];
        snprintf(port, sizeof port, "%d", ports[i]);
        snprintf(busport, sizeof busport, "%d", bus);
        snprintf(conf, sizeof conf, "%s/nodes-%d.conf", g_dir, ports[i]);
        snprintf(dir, sizeof dir, "%s", g_dir);
        char *argv[] = {"redis-server", "--port", port, "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                        "--cluster-port", busport, "--cluster-config-file", conf, "--cluster-node-timeout",
                        "5000", "--dir", dir, "--save", "", "--appendonly", "no", "--notify-keyspace-events", "Ex",
                        "--maxclients", "10000", NULL};
        pids[i] = spawn(names[i], argv);
        if (pids[i] < 0)
            return -1;
        len += (size_t)snprintf(env->redis_addr + len, sizeof env->redis_addr - len, "%s127.0.0.1:%d",
                                i ? "," : "", ports[i]);
    }
    for (int i = 0; i < nodes; i++)
        if (wait_ready(names[i], pids[i], ready_tcp, &ports[i]) < 0)
            return -1;
    char err[256];
    if (bench_redis_cluster_create(ports, buses, nodes, err, sizeof err) < 0) {
        fprintf(stderr, "baton-bench: cluster: %s\n", err);
        dump_log(names[0]);
        return -1;
    }
    return 0;
}

int procs_start_etcd(bench_env *env)
{
    int cport = procs_free_port(), pport = procs_free_port();
    if (!cport || !pport || cport == pport)
        return -1;
    char data[300], curl[64], purl[64], cluster[96];
    snprintf(data, sizeof data, "%s/etcd-data", g_dir);
    snprintf(curl, sizeof curl, "http://127.0.0.1:%d", cport);
    snprintf(purl, sizeof purl, "http://127.0.0.1:%d", pport);
    snprintf(cluster, sizeof cluster, "default=%s", purl);
    char *argv[] = {"etcd",    "--name",
                    "default", "--data-dir",
                    data,      "--listen-client-urls",
                    curl,      "--advertise-client-urls",
                    curl,      "--listen-peer-urls",
                    purl,      "--initial-advertise-peer-urls",
                    purl,      "--initial-cluster",
                    cluster,   NULL};
    pid_t pid = spawn("etcd", argv);
    if (pid < 0 || wait_ready("etcd", pid, ready_tcp, &cport) < 0)
        return -1;
    snprintf(env->etcd_target, sizeof env->etcd_target, "127.0.0.1:%d", cport);
    env->etcd_pid = pid;
    return 0;
}

int procs_start_batond(bench_env *env, const char *batond_path, const char *const *extra, size_t nextra)
{
    int port = procs_free_port();
    if (!port)
        return -1;
    char listen[64];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    const char *argv[32];
    size_t n = 0;
    argv[n++] = batond_path;
    argv[n++] = "--listen";
    argv[n++] = listen;
    argv[n++] = "--redis";
    argv[n++] = env->redis_addr;
    for (size_t i = 0; i < nextra && n < 31; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    pid_t pid = spawn("batond", (char *const *)argv);
    if (pid < 0 || wait_ready("batond", pid, ready_batond, &port) < 0)
        return -1;
    snprintf(env->baton_target, sizeof env->baton_target, "127.0.0.1:%d", port);
    env->batond_pid = pid;
    return 0;
}

long procs_rss_kib(int pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char line[256];
    long kib = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

double procs_cpu_sec(int pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    /* Fields after the command name, which may hold spaces: from the last ')'. */
    const char *p = strrchr(buf, ')');
    unsigned long long utime, stime;
    if (!p || sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime) != 2)
        return -1;
    long hz = sysconf(_SC_CLK_TCK);
    return hz > 0 ? (double)(utime + stime) / (double)hz : -1;
}
