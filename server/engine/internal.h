#ifndef BATON_ENGINE_INTERNAL_H
#define BATON_ENGINE_INTERNAL_H

/*
 * The lock engine's internals, shared by its files and by no other module
 * (see engine.h for the contract).
 *
 * Objects and who owns them:
 *   waiter   one Acquire. Lives in e->all from engine_acquire until it ends
 *            (finished or engine_acquire_end). While it waits it is also in
 *            its target's FIFO `waiters` list; while it holds a STREAM lock it
 *            is in the `holds` list of the target of the key it holds.
 *   target   "k:<key>" or "p:<pool>" in e->targets (map.h); freed when both
 *            lists are empty. Carries the retry timer of the store's retry_ms
 *            hint.
 *   call     one store call in flight (its `ud`): an attempt_call,
 *            renew_call, unary_call or cleanup embeds one. Linked in e->calls
 *            so shutdown knows when every reply is in and engine_free can
 *            orphan them (call.e = NULL: the late reply only frees it).
 *   cleanup  "make sure this token neither holds nor waits": dequeue and/or
 *            token-checked releases. If Redis is unavailable it waits in
 *            e->pending and is sent again after the next reconnect. This is
 *            how every grant the store may have made without the engine
 *            delivering it is released.
 *
 * Re-entrancy rule: sink and watch callbacks may call back into the engine
 * (engine_acquire_end from inside `granted` or `queued`, for example). Every
 * function calls a sink last, after the engine state is consistent, and
 * never touches the waiter (or any target pointer) afterwards.
 *
 * Files (functions one file shares with the others carry its name as their
 * prefix and are declared at the end of this header; engine__ marks the
 * module's plumbing):
 *   engine.c   lifecycle, engine_acquire, shutdown, store hooks, timers
 *   waiter.c   a waiter's creation, end and wait timer; BUSY messages
 *   target.c   targets by name, kicks, the store's retry hint
 *   attempt.c  one store acquire of a waiter and what its reply does
 *   handoff.c  a release that carries the next local waiter's acquire
 *   cleanup.c  dequeues and releases of tokens, again after a reconnect
 *   hold.c     STREAM holds: renewal, loss, release events
 *   watch.c    Watch subscriptions and event delivery
 *   unary.c    Renew, Release, ForceRelease, Describe
 */

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <event2/event.h>

#include "clock.h"
#include "engine.h"
#include "map.h"

#define MSG_MAX 1024
#define TNAME_MAX (BATON_KEY_MAX + 8)
#define MSG_UNAVAILABLE "Redis unavailable"
#define MSG_SHUTDOWN "server shutting down"

typedef enum waiter_state {
    W_ATTEMPTING,    /* one store acquire in flight */
    W_QUEUED,        /* in the Redis queue, sleeping until a kick */
    W_LEASE_GRANTED, /* LEASE grant delivered; waits for engine_acquire_end */
    W_HOLDING,       /* STREAM grant delivered; renewed until it ends */
} waiter_state;

typedef struct target target;
typedef struct attempt_call attempt_call;
typedef struct renew_call renew_call;

typedef struct wlist {
    engine_waiter *head, *tail;
} wlist;

/* A waiter sits in two lists at once (all waiters; its target's waiters or
 * holds), each through its own link. */
typedef struct wlink {
    engine_waiter *prev, *next;
} wlink;

struct engine_waiter {
    baton_engine *e;
    waiter_state state;
    unsigned dirty : 1;     /* kicked while attempting: attempt again after the reply */
    unsigned ended : 1;     /* no sink calls any more; the attempt reply cleans up */
    unsigned timed_out : 1; /* wait_ms passed while attempting */
    unsigned have_info : 1; /* holder_* below come from a store reply */
    engine_mode mode;
    char token[BATON_TOKEN_LEN + 1];
    char *key;  /* plain key, or NULL (owned) */
    char *pool; /* pool name, or NULL (owned) */
    int32_t devices;
    int32_t count;    /* pool: devices per grant */
    int64_t weight;   /* pool: share of each device, 0 = whole */
    int64_t capacity; /* pool, with a weight */
    char *owner;      /* owned */
    int64_t ttl_ms;
    int64_t wait_ms;
    engine_acquire_sink sink;
    void *ud;

    wlist *all_list; /* e->all, or e->todo during shutdown */
    wlink alink;
    target *tgt; /* target whose list `tlist` holds this waiter, or NULL */
    wlist *tlist;
    wlink tlink;

    struct event *wait_timer;
    attempt_call *attempt_call;
    int64_t attempt_sent_ms;
    int64_t last_position;
    int64_t created_us; /* metrics: request to grant */
    /* last not-granted reply, for BUSY messages */
    char *holder_owner; /* owned, may be NULL */
    uint64_t holder_fencing;
    int64_t position;
    int64_t queue_len;

    /* granted */
    char *held_key; /* owned */
    uint64_t fencing;
    int64_t expiry_ms; /* STREAM: monotonic time by which the lock surely expired
                        * in Redis unless a renew succeeded since */
    struct event *renew_timer;
    renew_call *renew_call;
    int may_reassert; /* STREAM: the store changed primary since the last renewal;
                       * a key found free is re-asserted, not given up */
};

struct target {
    baton_engine *e;
    map_node node; /* in e->targets, by map_hash_str(name) */
    wlist waiters; /* FIFO of local waiters that wait (wait_ms > 0) */
    wlist holds;   /* STREAM holds of this key ("k:" targets) */
    struct event *retry;
    int64_t retry_at; /* monotonic ms the retry timer fires at; 0 = not armed */
    char name[];
};

typedef struct call {
    baton_engine *e; /* NULL once the engine is freed: the reply only frees the call */
    struct call *prev, *next;
} call;

struct attempt_call {
    call call;
    engine_waiter *w; /* NULL if the waiter was freed meanwhile (engine_free) */
};

struct renew_call {
    call call;
    engine_waiter *w; /* NULL once the waiter ended */
    int64_t sent_ms;
    int reassert; /* a store reassert, not a renew */
};

typedef struct cleanup {
    call call;
    struct cleanup *pnext; /* in e->pending while waiting for a reconnect */
    char token[BATON_TOKEN_LEN + 1];
    char *key;  /* release this key (a plain key, or a known device key) */
    char *pool; /* release every device of this pool (grant unknown) */
    int32_t devices;
    int dequeue;                /* also remove the token from the queue of key / pool */
    int handoff;                /* key is a known grant: its release may hand it on */
    attempt_call *next_attempt; /* the waiter the key's release hands it to, in flight */
    int outstanding;
    int failed;
} cleanup;

typedef enum unary_kind { UNARY_RENEW, UNARY_RELEASE, UNARY_FORCE, UNARY_DESCRIBE, UNARY_LIST } unary_kind;

typedef struct unary_call {
    call call;
    unary_kind kind;
    engine_hold_cb hold_cb;
    engine_describe_cb describe_cb;
    engine_list_cb list_cb;
    void *ud;
    uint64_t fencing;
    attempt_call *next_attempt; /* UNARY_RELEASE: the waiter it hands the key to, in flight */
    char key[];
} unary_call;

struct engine_watch {
    baton_engine *e;
    engine_watch *prev, *next;
    char *key;    /* owned, or NULL */
    char *prefix; /* owned, or NULL */
    size_t prefix_len;
    engine_watch_cb cb;
    engine_watch_ended_cb ended;
    void *ud;
    int stopped; /* stopped while events were being delivered */
};

struct baton_engine {
    struct event_base *base;
    baton_store *store;
    engine_config cfg;
    int up;
    int shutting_down;
    int serving; /* last value reported to serving_cb (engine_serving) */
    void (*serving_cb)(void *ud, int serving);
    void *serving_ud;

    wlist all;
    wlist todo; /* shutdown: waiters not yet visited */

    map targets; /* target by name */

    call *calls; /* store calls in flight */
    cleanup *pending;

    engine_watch *watches;
    int delivering; /* > 0 while watch callbacks run */
    int watch_stopped;

    struct event *recheck_timer;
    struct event *liveness_timer;
    struct event *done_ev;
    void (*done_cb)(void *ud);
    void *done_ud;
    int done_scheduled;

    engine_stats stats;
};

static inline struct timeval tv_of_ms(int64_t ms)
{
    if (ms < 0)
        ms = 0;
    struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)((ms % 1000) * 1000)};
    return tv;
}

static inline char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

/*
 * The two intrusive lists every file uses: waiters (through one of their
 * links) and store calls in flight. Inline here, not in waiter.c and
 * engine.c: a grant cycle goes through them several times, and as static
 * functions of the one engine.c they were inlined too.
 */
#define WLINK(w, off) ((wlink *)((char *)(w) + (off)))

/* Appends w to l through the link at offset `off` in engine_waiter. */
static inline void wlist_push(wlist *l, engine_waiter *w, size_t off)
{
    WLINK(w, off)->prev = l->tail;
    WLINK(w, off)->next = NULL;
    if (l->tail)
        WLINK(l->tail, off)->next = w;
    else
        l->head = w;
    l->tail = w;
}

static inline void wlist_remove(wlist *l, engine_waiter *w, size_t off)
{
    wlink *k = WLINK(w, off);
    if (k->prev)
        WLINK(k->prev, off)->next = k->next;
    else
        l->head = k->next;
    if (k->next)
        WLINK(k->next, off)->prev = k->prev;
    else
        l->tail = k->prev;
    k->prev = k->next = NULL;
}

/* Tracks a store call in flight in e->calls (see `call`). */
static inline void engine__call_link(baton_engine *e, call *c)
{
    c->e = e;
    c->prev = NULL;
    c->next = e->calls;
    if (e->calls)
        e->calls->prev = c;
    e->calls = c;
}

static inline void engine__call_unlink(baton_engine *e, call *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        e->calls = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

/* engine.c */
void engine__maybe_shutdown_done(baton_engine *e);
const char *engine__refusal_msg(int rc);

/* waiter.c */
void waiter_all_push(wlist *l, engine_waiter *w);
void waiter_all_remove(engine_waiter *w);
void waiter_busy_reason(const engine_waiter *w, char *buf, size_t n);
void waiter_timeout_msg(const engine_waiter *w, char *buf, size_t n);
int waiter_new(baton_engine *e, const engine_acquire_req *req, const engine_acquire_sink *sink, void *ud,
               engine_waiter **out, const char **errmsg);
void waiter_finish(engine_waiter *w, int err, const char *msg);
void waiter_free(engine_waiter *w);

/* target.c */
void target_kick_all_waiters(baton_engine *e);
void target_kick(target *t);
void target_kick_head(const engine_waiter *w, const char *head_token);
void target_kick_name(baton_engine *e, const char *name);
void target_kick_key(baton_engine *e, const char *key);
void target_add(target *t, wlist *l, engine_waiter *w);
void target_each(baton_engine *e, void (*fn)(target *t, void *ud), void *ud);
void target_free_all(baton_engine *e);
void target_arm_retry(target *t, int64_t retry_ms);
target *target_get(baton_engine *e, const char *name);
void target_maybe_free(target *t);
void target_name(const char *key, const char *pool, char *out, size_t n);
target *target_of(baton_engine *e, const char *key, const char *pool);
void target_remove(engine_waiter *w);
engine_waiter *target_waiter_by_token(const target *t, const char *token);
void target_name_of_waiter(const engine_waiter *w, char *out, size_t n);

/* attempt.c */
int attempt_send(engine_waiter *w, int enqueue);
engine_waiter *attempt_call_end(attempt_call *o);
store_acquire_req attempt_request(const engine_waiter *w, int enqueue);
void attempt_started(engine_waiter *w, attempt_call *o, int64_t sent_ms);
void attempt_handle_result(engine_waiter *w, int err, const char *emsg, const store_acquire_res *res);
void attempt_again(engine_waiter *w);

/* handoff.c */
void handoff_done(attempt_call *o, int err, const char *emsg, const store_hold_res *res);
int handoff_send_release(baton_engine *e, const char *key, const char *token, int hand_on, store_hold_cb cb,
                         void *ud, attempt_call **next_attempt);

/* cleanup.c */
void cleanup_for(baton_engine *e, const engine_waiter *w, const char *held_key, int dequeue);
void cleanup_free_pending(baton_engine *e);
void cleanup_flush_pending(baton_engine *e);

/* hold.c */
void hold_event(baton_engine *e, const store_event *ev);
int hold_start(engine_waiter *w, const char *key);
void hold_renew(engine_waiter *w);

/* watch.c */
void watch_end_all(baton_engine *e, int err, const char *msg);
void watch_free_all(baton_engine *e);
void watch_deliver(baton_engine *e, const store_event *ev);

#endif
