/*
 * rconn: a minimal non-blocking RESP connection on a libevent event_base.
 *
 * Why it exists: hiredis 0.14's async API knows only SUBSCRIBE/PSUBSCRIBE.
 * It asserts when a push arrives on a connection it does not think is
 * subscribed and routes pushes through a channel dict it fills only for
 * SUBSCRIBE, so it cannot carry sharded pub/sub (SSUBSCRIBE / SMESSAGE /
 * SUNSUBSCRIBE, Redis 7) on a Redis Cluster. rconn does no bookkeeping at all:
 * EVERY reply and push goes, in arrival order, to one callback. Matching
 * replies to commands (they come back in order) is the caller's job.
 *
 * Only hiredis' sync-context pieces are used: redisConnectNonBlock /
 * redisConnectUnixNonBlock for the socket, redisFormatCommand* for encoding
 * and its redisReader (with size checks wrapped around its reply builders)
 * for decoding. Replies are ordinary redisReply trees.
 *
 * Calling convention:
 *   - no hook is ever called from inside rconn_open_* or rconn_command*:
 *     a connect failure seen at once, and any write error, is reported from
 *     the loop (a later turn), so callers never see re-entrancy;
 *   - closed() is called at most once, after which the rconn is dead (no
 *     more hooks; commands are refused); the caller still frees it;
 *   - rconn_free() may be called from anywhere, including inside any of the
 *     rconn's own hooks (freeing then happens when the hook returns); no
 *     hook is called after rconn_free();
 *   - commands may be queued before the connect completes: they are written,
 *     in order, once it does (after connected() returns, so commands queued
 *     from inside connected() follow them);
 *   - memory is bounded per reply: a reply larger than the limit (512 MiB by
 *     default, counting its decoded strings and arrays plus the undecoded
 *     bytes buffered for it) or malformed RESP closes the connection with
 *     closed("protocol error"). An error REPLY (-ERR ...) is a reply, not a
 *     close. The output queue is not bounded: the caller decides how much to
 *     pipeline.
 *
 * Not done here: no connect or reply timeouts (the caller's timers free the
 * rconn), no AUTH/SELECT (send them as commands), no TLS. Host names are
 * resolved by hiredis with a blocking getaddrinfo(), and only the first
 * address that starts connecting is tried (as with hiredis async).
 */
#ifndef BATON_STORE_REDIS_RCONN_H
#define BATON_STORE_REDIS_RCONN_H

#include <stdarg.h>
#include <stddef.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

typedef struct rconn rconn;

typedef struct rconn_hooks {
    /* The TCP / unix connect completed. Optional. */
    void (*connected)(void *ud);
    /* Every reply and push, in arrival order. r is freed when this returns. */
    void (*reply)(void *ud, const redisReply *r);
    /* Connect failure, EOF, I/O or protocol error; called once. The rconn is
     * dead from then on: free it (from here or later). why is a short text
     * ("connect: Connection refused", "connection closed by server",
     * "protocol error", ...) valid during the call only. */
    void (*closed)(void *ud, const char *why);
    void *ud;
} rconn_hooks;

/* Default and settable bound on one reply (see the header comment). */
#define RCONN_MAX_REPLY ((size_t)512 * 1024 * 1024)

/* Starts connecting. NULL only when out of memory or an argument is invalid
 * (NULL base, hooks, reply or closed hook, host or path); every other failure
 * (refused, unresolvable name, ...) is reported through closed() from the
 * loop. The hooks are copied. */
rconn *rconn_open_tcp(struct event_base *b, const char *host, int port, const rconn_hooks *h);
rconn *rconn_open_unix(struct event_base *b, const char *path, const rconn_hooks *h);

/* Queues one command (hiredis format: %s, %b, %d ...; argv binary-safe) to
 * be written as soon as the socket allows. 0 when queued; -1 when not: the
 * format is invalid, memory ran out, or the rconn is dead or dying (closed()
 * has been or is about to be called). Never calls a hook. */
int rconn_command(rconn *c, const char *fmt, ...);
int rconn_vcommand(rconn *c, const char *fmt, va_list ap);
int rconn_command_argv(rconn *c, int argc, const char **argv, const size_t *argvlen);

/* Sets the priority of the read event (see rstore_prioritise: with a base
 * made with several priorities, 0 runs replies before other work of the same
 * turn). 0 on success; -1 when prio is out of range for the base, or when
 * the rconn failed at once (closed() is coming) and has no read event. */
int rconn_set_priority(rconn *c, int prio);

/* Lowers (or raises) the per-reply bound; for tests and tight callers. */
void rconn_set_max_reply(rconn *c, size_t max_bytes);

/* Bytes queued and not yet written (for callers that pace pipelines). */
size_t rconn_pending_output(const rconn *c);

/* 1 once connected() has been called and until the rconn is dead. */
int rconn_is_connected(const rconn *c);

/* Closes the socket and frees everything; NULL is ignored. Safe from inside
 * the rconn's own hooks (deferred until the hook returns); no hook is called
 * afterwards. */
void rconn_free(rconn *c);

#endif
