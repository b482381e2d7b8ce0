/*
 * Engine unit tests: the real engine on a real libevent loop against the
 * in-memory fake store. Each test drives the loop until a condition holds
 * (run_until fails the test after a generous hang guard).
 */
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/event.h>

#include "engine.h"
#include "fake_store.h"
#include "log.h"

#define HANG_MS 10000

/* ------------------------------------------------------------ fixture */

typedef struct fx {
    struct event_base *base;
    struct event *wake; /* keeps EVLOOP_ONCE returning */
    baton_store *s;
    baton_engine *e;
} fx;

static void wake_cb(evutil_socket_t fd, short what, void *arg)
{
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

typedef int (*pred_fn)(void *arg);

#define run_until(f, pred, arg) run_until_(f, pred, arg, #pred, __LINE__)
static void run_until_(fx *f, pred_fn pred, void *arg, const char *what, int line)
{
    int64_t deadline = now_ms() + HANG_MS;
    while (!pred(arg)) {
        if (now_ms() > deadline)
            fail_msg("line %d: condition %s did not hold within %d ms", line, what, HANG_MS);
        event_base_loop(f->base, EVLOOP_ONCE);
    }
}

/* Runs the loop for about ms milliseconds. */
static void run_for(fx *f, int64_t ms)
{
    int64_t until = now_ms() + ms;
    while (now_ms() < until)
        event_base_loop(f->base, EVLOOP_ONCE);
}

static int store_idle(void *arg)
{
    return fake_store_pending(((fx *)arg)->s) == 0;
}

static fx *fx_new(int64_t recheck_ms, int64_t liveness_ms)
{
    fx *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->base = event_base_new();
    assert_non_null(f->base);
    f->wake = event_new(f->base, -1, EV_PERSIST, wake_cb, NULL);
    struct timeval tv = {0, 2000};
    evtimer_add(f->wake, &tv);
    f->s = fake_store_new(f->base);
    engine_config cfg = {.recheck_ms = recheck_ms, .liveness_ms = liveness_ms};
    f->e = engine_new(f->base, f->s, &cfg);
    assert_non_null(f->e);
    run_until(f, store_idle, f); /* on_state(1) delivered */
    return f;
}

static void fx_free(fx *f)
{
    assert_int_equal(fake_store_violations(f->s), 0);
    engine_free(f->e);
    f->s->ops->free(f->s);
    event_free(f->wake);
    event_base_free(f->base);
    free(f);
}

static int setup(void **state)
{
    *state = fx_new(30000, 6000);
    return 0;
}

static int teardown(void **state)
{
    fx_free(*state);
    return 0;
}

/* ------------------------------------------------------------ test waiter */

typedef struct tw {
    engine_waiter *w;
    int started;
    int queued;
    int64_t positions[32];
    int64_t last_pos;
    int granted;
    char key[BATON_KEY_MAX + 1];
    char token[BATON_TOKEN_LEN + 1];
    uint64_t fencing;
    int32_t device;
    int32_t ndevices;
    int32_t devices[8];
    char keys[8][BATON_KEY_MAX + 1];
    uint64_t fencings[8];
    int finished;
    int err;
    char msg[1024];
    int ends;           /* finished + engine_acquire_end calls */
    int end_in_granted; /* call engine_acquire_end(w, this - 1) from granted */
    void (*on_granted)(struct tw *t);
    void *ctx;
} tw;

static void tw_queued(void *ud, int64_t pos)
{
    tw *t = ud;
    assert_int_equal(t->ends, 0);
    assert_int_equal(t->granted, 0);
    if (t->queued < 32)
        t->positions[t->queued] = pos;
    t->queued++;
    t->last_pos = pos;
}

static void tw_granted(void *ud, const engine_grant *g)
{
    tw *t = ud;
    assert_int_equal(t->ends, 0);
    assert_int_equal(t->granted, 0);
    t->granted = 1;
    snprintf(t->key, sizeof t->key, "%s", g->key);
    snprintf(t->token, sizeof t->token, "%s", g->token);
    assert_int_equal(strlen(g->token), BATON_TOKEN_LEN);
    t->fencing = g->fencing;
    t->device = g->device;
    t->ndevices = g->ndevices;
    for (int32_t i = 0; i < g->ndevices && i < 8; i++) {
        t->devices[i] = g->devices[i];
        t->fencings[i] = g->fencings[i];
        snprintf(t->keys[i], sizeof t->keys[i], "%s", g->keys[i]);
    }
    if (t->on_granted)
        t->on_granted(t);
    if (t->end_in_granted) {
        t->ends++;
        engine_acquire_end(t->w, t->end_in_granted - 1);
    }
}

static void tw_finished(void *ud, int err, const char *msg)
{
    tw *t = ud;
    assert_int_equal(t->ends, 0);
    t->ends++;
    t->finished = 1;
    t->err = err;
    snprintf(t->msg, sizeof t->msg, "%s", msg ? msg : "");
}

static const engine_acquire_sink SINK = {tw_queued, tw_granted, tw_finished};

static int acq(fx *f, tw *t, const char *key, const char *pool, int32_t devices, const char *owner,
               int64_t ttl, int64_t wait, engine_mode mode)
{
    engine_acquire_req req = {.key = key,
                              .pool = pool,
                              .devices = devices,
                              .owner = owner,
                              .ttl_ms = ttl,
                              .wait_ms = wait,
                              .mode = mode};
    const char *errmsg = NULL;
    int rc = engine_acquire(f->e, &req, &SINK, t, &t->w, &errmsg);
    if (rc == 0)
        t->started = 1;
    else
        assert_non_null(errmsg);
    return rc;
}

static void end(tw *t, int release_lease)
{
    assert_int_equal(t->ends, 0);
    t->ends++;
    engine_acquire_end(t->w, release_lease);
}

static int tw_granted_p(void *arg)
{
    return ((tw *)arg)->granted;
}

static int tw_finished_p(void *arg)
{
    return ((tw *)arg)->finished;
}

static int tw_queued_p(void *arg)
{
    return ((tw *)arg)->queued > 0;
}

/* Grants a lease of key to t and waits for it. */
static void hold_lease(fx *f, tw *t, const char *key, const char *owner)
{
    assert_int_equal(acq(f, t, key, NULL, 0, owner, 600000, 0, ENGINE_MODE_LEASE), 0);
    run_until(f, tw_granted_p, t);
    end(t, 0);
}

typedef struct hold_result {
    int called;
    int err;
    char msg[1024];
    int64_t ttl;
} hold_result;

static void hold_cb(void *ud, int err, const char *msg, int64_t ttl)
{
    hold_result *r = ud;
    r->called++;
    r->err = err;
    snprintf(r->msg, sizeof r->msg, "%s", msg ? msg : "");
    r->ttl = ttl;
}

static int hold_called_p(void *arg)
{
    return ((hold_result *)arg)->called > 0;
}

static void release(fx *f, const tw *t)
{
    hold_result r = {0};
    const char *errmsg = NULL;
    assert_int_equal(engine_release(f->e, t->key, t->token, hold_cb, &r, &errmsg), 0);
    run_until(f, hold_called_p, &r);
    assert_int_equal(r.err, BATON_OK);
}

typedef struct key_state {
    fx *f;
    const char *key;
    int want_held;
} key_state;

static int key_state_p(void *arg)
{
    key_state *k = arg;
    return fake_store_holder(k->f->s, k->key, NULL, NULL, 0) == k->want_held;
}

static void wait_key(fx *f, const char *key, int held)
{
    key_state k = {f, key, held};
    run_until(f, key_state_p, &k);
}

/* ------------------------------------------------------------ tests */

static void test_try_busy_names_holder(void **state)
{
    fx *f = *state;
    tw a = {0}, b = {0};
    hold_lease(f, &a, "video:1", "alice");
    assert_string_equal(a.key, "video:1");
    assert_int_equal(a.device, -1);
    assert_int_equal(acq(f, &b, "video:1", NULL, 0, "bob", 1000, 0, ENGINE_MODE_LEASE), 0);
    run_until(f, tw_finished_p, &b);
    assert_int_equal(b.err, BATON_E_BUSY);
    char want[256];
    snprintf(want, sizeof want, "lock 'video:1' is held by 'alice' (fencing %llu)",
             (unsigned long long)a.fencing);
    assert_string_equal(b.msg, want);
    assert_int_equal(b.queued, 0);
    assert_int_equal(fake_store_queue_len(f->s, "video:1", NULL), 0);
}

static void test_fifo_five_waiters(void **state)
{
    fx *f = *state;
    tw h = {0}, w[5];
    memset(w, 0, sizeof w);
    hold_lease(f, &h, "k", "holder");
    for (int i = 0; i < 5; i++) {
        char owner[16];
        snprintf(owner, sizeof owner, "w%d", i);
        assert_int_equal(acq(f, &w[i], "k", NULL, 0, owner, 600000, 60000, ENGINE_MODE_LEASE), 0);
    }
    for (int i = 0; i < 5; i++)
        run_until(f, tw_queued_p, &w[i]);
    for (int i = 0; i < 5; i++)
        assert_int_equal(w[i].positions[0], i + 1);
    uint64_t last = h.fencing;
    const tw *prev = &h;
    for (int i = 0; i < 5; i++) {
        release(f, prev);
        run_until(f, tw_granted_p, &w[i]);
        for (int j = i + 1; j < 5; j++)
            assert_int_equal(w[j].granted, 0);
        assert_true(w[i].fencing > last);
        last = w[i].fencing;
        end(&w[i], 0);
        prev = &w[i];
    }
    release(f, prev);
    wait_key(f, "k", 0);
    assert_int_equal(fake_store_queue_len(f->s, "k", NULL), 0);
}

static void test_positions_reported(void **state)
{
    fx *f = *state;
    tw h = {0}, w[3];
    memset(w, 0, sizeof w);
    hold_lease(f, &h, "k", "holder");
    for (int i = 0; i < 3; i++)
        assert_int_equal(acq(f, &w[i], "k", NULL, 0, "w", 600000, 60000, ENGINE_MODE_LEASE), 0);
    for (int i = 0; i < 3; i++) {
        run_until(f, tw_queued_p, &w[i]);
        assert_int_equal(w[i].queued, 1);
        assert_int_equal(w[i].last_pos, i + 1);
    }
    release(f, &h);
    run_until(f, tw_granted_p, &w[0]);
    end(&w[0], 0);
    /* A WAKE re-attempts the earliest local waiter: it learns its new place. */
    fake_store_publish(f->s, STORE_EV_WAKE, "k", "", 0);
    run_until(f, store_idle, f);
    assert_int_equal(w[1].queued, 2);
    assert_int_equal(w[1].last_pos, 1);
    assert_int_equal(w[1].granted, 0);
    /* Unchanged position: no second report. */
    fake_store_publish(f->s, STORE_EV_WAKE, "k", "", 0);
    run_until(f, store_idle, f);
    assert_int_equal(w[1].queued, 2);
    end(&w[1], 0);
    end(&w[2], 0);
    run_until(f, store_idle, f);
    assert_int_equal(fake_store_queue_len(f->s, "k", NULL), 0);
}

static void test_cancel_while_queued(void **state)
{
    fx *f = *state;
    tw h = {0}, a = {0}, b = {0};
    hold_lease(f, &h, "k", "holder");
    assert_int_equal(acq(f, &a, "k", NULL, 0, "a", 600000, 60000, ENGINE_MODE_LEASE), 0);
    assert_int_equal(acq(f, &b, "k", NULL, 0, "b", 600000, 60000, ENGINE_MODE_LEASE), 0);
    run_until(f, tw_queued_p, &b);
    assert_int_equal(fake_store_queue_len(f->s, "k", NULL), 2);
    end(&a, 0);
    run_until(f, store_idle, f);
    assert_int_equal(fake_store_queue_len(f->s, "k", NULL), 1);
    release(f, &h);
    run_until(f, tw_granted_p, &b);
    assert_int_equal(a.granted, 0);
    assert_int_equal(a.finished, 0);
    end(&b, 1);
    wait_key(f, "k", 0);
}

static void test_end_during_attempt_that_grants(void **state)
{
    fx *f = *state;
    tw a = {0}, b = {0};
    assert_int_equal(acq(f, &a, "k", NULL, 0, "a", 600000, 0, ENGINE_MODE_STREAM), 0);
    assert_int_equal(fake_store_holder(f->s, "k", NULL, NULL, 0), 1); /* granted in the store */
    end(&a, 0);
    wait_key(f, "k", 0);
    run_until(f, store_idle, f);
    assert_int_equal(a.granted + a.finished, 0);
    assert_int_equal(fake_store_calls(f->s, FAKE_RELEASE), 1);
    /* Same with a waiting waiter. */
    assert_int_equal(acq(f, &b, "k", NULL, 0, "b", 600000, 5000, ENGINE_MODE_LEASE), 0);
    end(&b, 0);
    wait_key(f, "k", 0);
    run_until(f, store_idle, f);
    assert_int_equal(b.granted + b.finished, 0);
    engine_stats st;
    engine_get_stats(f->e, &st);
    assert_int_equal(st.waiting, 0);
}

/* ------------------------------------------------------------ direct handoff */

static uint64_t handoffs(fx *f)
{
    engine_stats st;
    engine_get_stats(f->e, &st);
    assert_int_equal(st.handoffs, fake_store_calls(f->s, FAKE_HANDOFF));
    return st.handoffs;
}

static void noop_acquire_cb(void *ud, int err, const char *msg, const store_acquire_res *res)
{
    (void)ud, (void)err, (void)msg, (void)res;
}

/* A release hands the key to the first local waiter in the same store call:
 * the waiter makes no acquire of its own, FIFO holds, fencing rises. Both a
 * Release by token and the end of a stream hold hand on. */
static void test_handoff_on_release(void **state)
{
    fx *f = *state;
    tw h = {0}, a = {0}, b = {0};
    hold_lease(f, &h, "k", "holder");
    assert_int_equal(acq(f, &a, "k", NULL, 0, "a", 600000, 60000, ENGINE_MODE_STREAM), 0);
    assert_int_equal(acq(f, &b, "k", NULL, 0, "b", 600000, 60000, ENGINE_MODE_LEASE), 0);
    run_until(f, tw_queued_p, &b);
    run_until(f, store_idle, f);
    uint64_t acquires = fake_store_calls(f->s, FAKE_ACQUIRE);

    release(f, &h);
    run_until(f, tw_granted_p, &a);
    run_until(f, store_idle, f);
    assert_int_equal(handoffs(f), 1);
    assert_int_equal(fake_store_calls(f->s, FAKE_ACQUIRE), acquires);
    assert_true(a.fencing > h.fencing);
    assert_int_equal(b.granted, 0);

    end(&a, 0); /* the stream ends: its release hands on to b */
    run_until(f, tw_granted_p, &b);
    run_until(f, store_idle, f);
    assert_int_equal(handoffs(f), 2);
    assert_int_equal(fake_store_calls(f->s, FAKE_ACQUIRE), acquires);
    assert_true(b.fencing > a.fencing);
    uint64_t fencing;
    assert_int_equal(fake_store_holder(f->s, "k", &fencing, NULL, 0), 1);
    assert_int_equal(fencing, b.fencing);
    end(&b, 0);
    release(f, &b);
    wait_key(f, "k", 0);
    assert_int_equal(fake_store_queue_len(f->s, "k", NULL), 0);
    assert_int_equal(handoffs(f), 2);
}

/* The waiter the release names ends while the release is in flight: the
 * grant it was handed is released again and passed to the next waiter. */
static void test_handoff_waiter_ends_in_flight(void **state)
{
    fx *f = *state;
    tw h = {0}, a = {0}, b = {0};
    hold_lease(f, &h, "k", "holder");
    assert_int_equal(acq(f, &a, "k", NULL, 0, "a", 600000, 60000, ENGINE_MODE_LEASE), 0);
    assert_int_equal(acq(f, &b, "k", NULL, 0, "b", 600000, 60000, ENGINE_MODE_LEASE), 0);
    run_until(f, tw_queued_p, &b);
    run_until(f, store_idle, f);
    fake_store_pause(f->s, 1);
    hold_result r = {0};
    const char *errmsg;
    assert_int_equal(engine_release(f->e, h.key, h.token, hold_cb, &r, &errmsg), 0);
    assert_int_equal(fake_store_calls(f->s, FAKE_HANDOFF), 1); /* a holds it in the store */
    end(&a, 0);
    fake_store_pause(f->s, 0);
    run_until(f, tw_granted_p, &b);
    run_until(f, store_idle, f);
    assert_int_equal(r.err, BATON_OK);
    assert_int_equal(a.granted, 0);
    /* a's grant was released again (its RELEASED kicked b, or the release
     * handed it on): b holds, after a's grant. */
    assert_true(handoffs(f) >= 1);
    assert_int_equal(fake_store_calls(f->s, FAKE_RELEASE), 2); /* h, then a's grant */
    uint64_t fencing;
    assert_int_equal(fake_store_holder(f->s, "k", &fencing, NULL, 0), 1);
    assert_int_equal(fencing, b.fencing);
    assert_true(b.fencing > h.fencing + 1); /* a's grant came between */
    end(&b, 1);
    wait_key(f, "k", 0);
}

/* A waiter of another batond heads the queue: the release does not pass it
 * over; the local waiter asks again, stays queued, and is granted after the
 * other one's turn. */
static void test_handoff_skips_remote_head(void **state)
{
    fx *f = *state;
    tw h = {0}, a = {0};
    hold_lease(f, &h, "k", "holder");
    const char *remote = "0123456789abcdef0123456789abcdef";
    store_acquire_req rq = {.target = {.key = "k"},
                            .token = remote,
                            .owner = "remote",
                            .ttl_ms = 600000,
                            .enqueue = 1,
                            .liveness_ms = 600000};
    assert_int_equal(f->s->ops->acquire(f->s, &rq, noop_acquire_cb, NULL), 0);
    assert_int_equal(acq(f, &a, "k", NULL, 0, "a", 600000, 60000, ENGINE_MODE_LEASE), 0);
    run_until(f, tw_queued_p, &a);
    run_until(f, store_idle, f);
    assert_int_equal(a.last_pos, 2);
    uint64_t acquires = fake_store_calls(f->s, FAKE_ACQUIRE);

    release(f, &h);
    run_until(f, store_idle, f);
    assert_int_equal(handoffs(f), 0);
    assert_int_equal(a.granted, 0);
    assert_true(fake_store_calls(f->s, FAKE_ACQUIRE) > acquires); /* a asked where it stands */
    assert_int_equal(fake_store_queue_len(f->s, "k", NULL), 2);

    /* The remote waiter takes its turn and releases; then a is granted. */
    assert_int_equal(f->s->ops->acquire(f->s, &rq, noop_acquire_cb, NULL), 0);
    char tok[BATON_TOKEN_LEN + 1];
    uint64_t rf;
    assert_int_equal(fake_store_holder(f->s, "k", &rf, tok, sizeof tok), 1);
    assert_string_equal(tok, remote);
    run_until(f, store_idle, f);
    assert_int_equal(a.granted, 0);
    assert_int_equal(f->s->ops->release(f->s, "k", remote, NULL, NULL, NULL), 0);
    run_until(f, tw_granted_p, &a);
    assert_true(a.fencing > rf);
    end(&a, 1);
    wait_key(f, "k", 0);
}

/* h holds "k" (lease) with a queued behind it; then h's Release runs in the
 * store (handing the key to a) but its reply carries `err`. Returns the
 * fencing the store's holder has. */
static uint64_t handoff_with_failed_reply(fx *f, tw *h, tw *a, int err, hold_result *r)
{
    hold_lease(f, h, "k", "holder");
    assert_int_equal(acq(f, a, "k", NULL, 0, "a", 600000, 60000, ENGINE_MODE_LEASE), 0);
    run_until(f, tw_queued_p, a);
    run_until(f, store_idle, f);
    fake_store_fail_next(f->s, FAKE_RELEASE, err);
    const char *errmsg;
    assert_int_equal(engine_release(f->e, h->key, h->token, hold_cb, r, &errmsg), 0);
    run_until(f, hold_called_p, r);
    assert_int_equal(r->err, err);
    uint64_t held;
    assert_int_equal(fake_store_holder(f->s, "k", &held, NULL, 0), 1);
    return held;
}

/* The release ran (and handed the key to a) but its reply was lost: a does
 * not know yet, stays in line, and learns of the same grant from its next
 * attempt after the reconnect; the key is never given to anyone else. */
static void test_handoff_reply_lost(void **state)
{
    fx *f = *state;
    tw h = {0}, a = {0};
    hold_result r = {0};
    uint64_t held = handoff_with_failed_reply(f, &h, &a, BATON_E_UNAVAILABLE, &r);
    run_until(f, store_idle, f);
    assert_int_equal(a.granted + a.finished, 0);
    fake_store_set_down(f->s, 1);
    run_until(f, store_idle, f);
    fake_store_set_down(f->s, 0);
    run_until(f, tw_granted_p, &a);
    assert_int_equal(a.fencing, held);
    end(&a, 1);
    wait_key(f, "k", 0);
}

/* The release ran (and handed the key to a) but failed as a whole in the
 * store's eyes (a script error, a malformed reply): that was the releaser's
 * request, so a is not failed with it; its own attempt, at once, finds the
 * grant the script made. */
static void test_handoff_release_error(void **state)
{
    fx *f = *state;
    tw h = {0}, a = {0};
    hold_result r = {0};
    uint64_t held = handoff_with_failed_reply(f, &h, &a, BATON_E_INTERNAL, &r);
    run_until(f, tw_granted_p, &a);
    assert_int_equal(a.finished, 0);
    assert_int_equal(a.fencing, held);
    end(&a, 1);
    wait_key(f, "k", 0);
}

static int queue_len_is_2(void *arg)
{
    return fake_store_queue_len(((fx *)arg)->s, "k", NULL) == 2;
}

/* A queued waiter whose entry vanished (purged by another batond while this
 * one stalled) is named by the next liveness refresh and queues again, even
 * when it is not the first local waiter (the re-check only kicks that one). */
static void test_refresh_requeues_missing_entry(void **state)
{
    (void)state;
    fx *f = fx_new(30000, 300); /* refresh every 100 ms */
    tw h = {0}, a = {0}, b = {0};
    hold_lease(f, &h, "k", "holder");
    assert_int_equal(acq(f, &a, "k", NULL, 0, "a", 600000, 60000, ENGINE_MODE_LEASE), 0);
    assert_int_equal(acq(f, &b, "k", NULL, 0, "b", 600000, 60000, ENGINE_MODE_LEASE), 0);
    run_until(f, tw_queued_p, &b);
    run_until(f, store_idle, f);
    fake_store_drop_entry(f->s, "k", NULL, 2); /* b's entry */
    assert_int_equal(fake_store_queue_len(f->s, "k", NULL), 1);
    run_until(f, queue_len_is_2, f);
    engine_stats st;
    engine_get_stats(f->e, &st);
    assert_int_equal(st.requeued, 1);
    /* FIFO among what is left: a, then b. */
    release(f, &h);
    run_until(f, tw_granted_p, &a);
    assert_int_equal(b.granted, 0);
    end(&a, 0);
    release(f, &a);
    run_until(f, tw_granted_p, &b);
    end(&b, 1);
    run_until(f, store_idle, f);
    fx_free(f);
}

/* The safety re-check attempts each target's first waiter only, and that is
 * enough to recover a missed wake-up (here the lock vanished silently). */
static void test_recheck_kicks_heads_only(void **state)
{
    (void)state;
    fx *f = fx_new(100, 600000);
    tw h = {0}, w[5];
    memset(w, 0, sizeof w);
    hold_lease(f, &h, "k", "holder");
    for (int i = 0; i < 5; i++)
        assert_int_equal(acq(f, &w[i], "k", NULL, 0, "w", 600000, 60000, ENGINE_MODE_LEASE), 0);
    for (int i = 0; i < 5; i++)
        run_until(f, tw_queued_p, &w[i]);
    uint64_t before = fake_store_calls(f->s, FAKE_ACQUIRE);
    run_for(f, 450); /* four re-checks */
    uint64_t made = fake_store_calls(f->s, FAKE_ACQUIRE) - before;
    assert_true(made >= 2 && made <= 6); /* about one per re-check, not five */
    fake_store_lose_data(f->s);          /* the lock and queue vanish; no event */
    run_until(f, tw_granted_p, &w[0]);
    for (int i = 1; i < 5; i++)
        assert_int_equal(w[i].granted, 0);
    for (int i = 0; i < 5; i++)
        end(&w[i], 1);
    run_until(f, store_idle, f);
    fx_free(f);
}

/* An event that arrives while the head waiter's attempt is in flight makes
 * it attempt again after the (not granted) reply; otherwise it would sleep
 * until the 30 s re-check. */
static void test_event_during_attempt(void **state)
{
    fx *f = *state;
    tw h = {0}, a = {0};
    hold_lease(f, &h, "k", "holder");
    assert_int_equal(acq(f, &a, "k", NULL, 0, "a", 600000, 60000, ENGINE_MODE_LEASE), 0);
    run_until(f, tw_queued_p, &a);
    run_until(f, store_idle, f);
    uint64_t attempts = fake_store_calls(f->s, FAKE_ACQUIRE);
    fake_store_pause(f->s, 1);
    fake_store_publish(f->s, STORE_EV_WAKE, "k", "", 0);
    assert_int_equal(fake_store_step(f->s), 1); /* WAKE: a attempts, reply held back */
    assert_int_equal(fake_store_calls(f->s, FAKE_ACQUIRE), attempts + 1);
    hold_result r = {0};
    const char *errmsg;
    assert_int_equal(engine_release(f->e, h.key, h.token, hold_cb, &r, &errmsg), 0);
    assert_int_equal(fake_store_step(f->s), 1); /* RELEASED while a attempts */
    assert_int_equal(fake_store_calls(f->s, FAKE_ACQUIRE), attempts + 1);
    fake_store_pause(f->s, 0);
    run_until(f, tw_granted_p, &a);
    end(&a, 0);
}

static void test_wait_timeout_names_holder(void **state)
{
    fx *f = *state;
    tw h = {0}, a = {0};
    hold_lease(f, &h, "k", "holder-x");
    assert_int_equal(acq(f, &a, "k", NULL, 0, "a", 1000, 100, ENGINE_MODE_LEASE), 0);
    run_until(f, tw_finished_p, &a);
    assert_int_equal(a.err, BATON_E_BUSY);
    char want[256];
    snprintf(want, sizeof want, "not acquired within 100 ms: lock 'k' is held by 'holder-x' (fencing %llu)",
             (unsigned long long)h.fencing);
    assert_string_equal(a.msg, want);
    run_until(f, store_idle, f);
    assert_int_equal(fake_store_queue_len(f->s, "k", NULL), 0);
}

static void test_stream_released_on_end(void **state)
{
    fx *f = *state;
    tw a = {0};
    assert_int_equal(acq(f, &a, "k", NULL, 0, "a", 600000, 0, ENGINE_MODE_STREAM), 0);
    run_until(f, tw_granted_p, &a);
    engine_stats st;
    engine_get_stats(f->e, &st);
    assert_int_equal(st.stream_holds, 1);
    end(&a, 0);
    wait_key(f, "k", 0);
    engine_get_stats(f->e, &st);
    assert_int_equal(st.stream_holds, 0);
    assert_int_equal(a.finished, 0);
}

static void test_stream_renews(void **state)
{
    fx *f = *state;
    tw a = {0};
    assert_int_equal(acq(f, &a, "k", NULL, 0, "a", 150, 0, ENGINE_MODE_STREAM), 0);
    run_until(f, tw_granted_p, &a);
    run_for(f, 600); /* four TTLs: only renewals keep it */
    assert_int_equal(a.finished, 0);
    assert_int_equal(fake_store_holder(f->s, "k", NULL, NULL, 0), 1);
    assert_true(fake_store_calls(f->s, FAKE_RENEW) >= 4);
    end(&a, 0);
    wait_key(f, "k", 0);
}

static void test_renew_not_holder_lost(void **state)
{
    fx *f = *state;
    tw a = {0}, b = {0};
    assert_int_equal(acq(f, &a, "k", NULL, 0, "a", 600, 0, ENGINE_MODE_STREAM), 0);
    run_until(f, tw_granted_p, &a);
    fake_store_lose_data(f->s); /* silently: no event */
    hold_lease(f, &b, "k", "bob");
    run_until(f, tw_finished_p, &a);
    assert_int_equal(a.err, BATON_E_LOST);
    char want[256];
    snprintf(want, sizeof want, "lock 'k' lost: now held by 'bob' (fencing %llu)",
             (unsigned long long)b.fencing);
    assert_string_equal(a.msg, want);
    uint64_t fen = 0;
    assert_int_equal(fake_store_holder(f->s, "k", &fen, NULL, 0), 1);
    assert_int_equal(fen, b.fencing);
}

/* A failover to a replica that missed the hold: the stream holder is alive,
 * so its hold is re-asserted with its own fencing, before this batond's
 * waiter of the key attempts it; it is not reported lost. */
static void test_hold_reasserted_after_new_primary(void **state)
{
    fx *f = *state;
    tw a = {0}, w = {0};
    assert_int_equal(acq(f, &a, "k", NULL, 0, "a", 300, 0, ENGINE_MODE_STREAM), 0);
    run_until(f, tw_granted_p, &a);
    assert_int_equal(acq(f, &w, "k", NULL, 0, "w", 600000, 60000, ENGINE_MODE_LEASE), 0);
    run_until(f, tw_queued_p, &w);
    fake_store_new_primary(f->s, 1); /* the lock, its hold record and the queue are gone */
    run_for(f, 400);                 /* past the hold's TTL: only a re-assertion keeps it */
    assert_int_equal(a.finished, 0);
    assert_int_equal(w.granted + w.finished, 0);
    uint64_t fen = 0;
    assert_int_equal(fake_store_holder(f->s, "k", &fen, NULL, 0), 1);
    assert_int_equal(fen, a.fencing);
    assert_int_equal(fake_store_calls(f->s, FAKE_REASSERT), 1);
    assert_true(fake_store_fence(f->s, "k") >= a.fencing);
    end(&a, 0);
    run_until(f, tw_granted_p, &w);
    assert_true(w.fencing > a.fencing);
    end(&w, 0);
}

/* A 2-device STREAM hold is not re-asserted after a failover: one key's
 * re-assertion would bring back the first device alone. Data kept: its next
 * renewal (an ordinary one) keeps both; data lost: it ends LOST, both free. */
static void test_multi_device_hold_not_reasserted(void **state)
{
    fx *f = *state;
    tw a = {0}, b = {0};
    engine_acquire_req req = {.pool = "gpu", .devices = 2, .count = 2, .owner = "a", .ttl_ms = 300,
                              .wait_ms = 0, .mode = ENGINE_MODE_STREAM};
    const char *errmsg = NULL;
    assert_int_equal(engine_acquire(f->e, &req, &SINK, &a, &a.w, &errmsg), 0);
    run_until(f, tw_granted_p, &a);
    fake_store_new_primary(f->s, 0);
    run_for(f, 400); /* past the TTL: kept by ordinary renewals of both devices */
    assert_int_equal(a.finished, 0);
    assert_int_equal(fake_store_holder(f->s, "gpu/1", NULL, NULL, 0), 1);
    fake_store_new_primary(f->s, 1); /* both devices lost with the writes */
    run_until(f, tw_finished_p, &a);
    assert_int_equal(a.err, BATON_E_LOST);
    assert_int_equal(fake_store_calls(f->s, FAKE_REASSERT), 0);
    assert_int_equal(fake_store_holder(f->s, "gpu/0", NULL, NULL, 0), 0);
    req.owner = "b";
    assert_int_equal(engine_acquire(f->e, &req, &SINK, &b, &b.w, &errmsg), 0);
    run_until(f, tw_granted_p, &b);
    assert_int_equal(b.ndevices, 2);
    end(&b, 0);
    assert_int_equal(fake_store_violations(f->s), 0);
}

/* Without a change of primary a free key still means the hold is gone. */
static void test_no_reassert_without_new_primary(void **state)
{
    fx *f = *state;
    tw a = {0};
    assert_int_equal(acq(f, &a, "k", NULL, 0, "a", 600, 0, ENGINE_MODE_STREAM), 0);
    run_until(f, tw_granted_p, &a);
    fake_store_set_down(f->s, 1);
    run_until(f, store_idle, f);
    fake_store_lose_data(f->s);
    fake_store_set_down(f->s, 0);
    run_until(f, tw_finished_p, &a);
    assert_int_equal(a.err, BATON_E_LOST);
    assert_int_equal(fake_store_calls(f->s, FAKE_REASSERT), 0);
}

static void test_expiry_event_lost(void **state)
{
    fx *f = *state;
    tw a = {0};
    assert_int_equal(acq(f, &a, "k", NULL, 0, "a", 600000, 0, ENGINE_MODE_STREAM), 0);
    run_until(f, tw_granted_p, &a);
    fake_store_expire(f->s, "k");
    run_until(f, tw_finished_p, &a);
    assert_int_equal(a.err, BATON_E_LOST);
    assert_non_null(strstr(a.msg, "lock 'k' lost"));
}

static void test_force_release_lost(void **state)
{
    fx *f = *state;
    tw a = {0};
    hold_result r = {0};
    const char *errmsg;
    assert_int_equal(acq(f, &a, "k", NULL, 0, "a", 600000, 0, ENGINE_MODE_STREAM), 0);
    run_until(f, tw_granted_p, &a);
    assert_int_equal(engine_force_release(f->e, "k", a.fencing + 1, hold_cb, &r, &errmsg), 0);
    run_until(f, hold_called_p, &r);
    assert_int_equal(r.err, BATON_E_NOT_HOLDER);
    char want[256];
    snprintf(want, sizeof want, "lock 'k' is not held with fencing %llu (held by 'a', fencing %llu)",
             (unsigned long long)a.fencing + 1, (unsigned long long)a.fencing);
    assert_string_equal(r.msg, want);
    assert_int_equal(a.finished, 0);
    memset(&r, 0, sizeof r);
    assert_int_equal(engine_force_release(f->e, "k", a.fencing, hold_cb, &r, &errmsg), 0);
    run_until(f, tw_finished_p, &a);
    assert_int_equal(a.err, BATON_E_LOST);
    assert_non_null(strstr(a.msg, "force-released"));
    run_until(f, hold_called_p, &r);
    assert_int_equal(r.err, BATON_OK);
}

static void test_release_by_token_finishes_ok(void **state)
{
    fx *f = *state;
    tw a = {0}, b = {0};
    assert_int_equal(acq(f, &a, "k", NULL, 0, "a", 600000, 0, ENGINE_MODE_STREAM), 0);
    assert_int_equal(acq(f, &b, "k", NULL, 0, "b", 600000, 60000, ENGINE_MODE_STREAM), 0);
    run_until(f, tw_granted_p, &a);
    release(f, &a);
    run_until(f, tw_finished_p, &a);
    assert_int_equal(a.err, BATON_OK);
    assert_string_equal(a.msg, "released");
    run_until(f, tw_granted_p, &b);
    end(&b, 0);
    wait_key(f, "k", 0);
}

static void test_lease_undeliverable_released(void **state)
{
    fx *f = *state;
    tw a = {0}, b = {0};
    a.end_in_granted = 2; /* engine_acquire_end(w, 1) from inside granted */
    assert_int_equal(acq(f, &a, "k", NULL, 0, "a", 600000, 0, ENGINE_MODE_LEASE), 0);
    run_until(f, tw_granted_p, &a);
    wait_key(f, "k", 0);
    /* Delivered lease (release_lease = 0) stays. */
    b.end_in_granted = 1;
    assert_int_equal(acq(f, &b, "k", NULL, 0, "b", 600000, 0, ENGINE_MODE_LEASE), 0);
    run_until(f, tw_granted_p, &b);
    run_until(f, store_idle, f);
    assert_int_equal(fake_store_holder(f->s, "k", NULL, NULL, 0), 1);
}

typedef struct pool_ctx {
    tw w[5];
} pool_ctx;

static int count_granted(tw *w, int n)
{
    int c = 0;
    for (int i = 0; i < n; i++)
        c += w[i].granted;
    return c;
}

static int three_granted_p(void *arg)
{
    return count_granted(arg, 5) >= 3;
}

static int four_granted_p(void *arg)
{
    return count_granted(arg, 5) >= 4;
}

static int five_granted_p(void *arg)
{
    return count_granted(arg, 5) >= 5;
}

static void test_pool_three_devices_five_waiters(void **state)
{
    fx *f = *state;
    tw w[5];
    memset(w, 0, sizeof w);
    for (int i = 0; i < 5; i++)
        assert_int_equal(acq(f, &w[i], NULL, "gpu", 3, "p", 600000, 60000, ENGINE_MODE_LEASE), 0);
    run_until(f, three_granted_p, w);
    run_until(f, store_idle, f);
    assert_int_equal(count_granted(w, 5), 3);
    int seen = 0;
    for (int i = 0; i < 3; i++) {
        assert_true(w[i].granted); /* FIFO: the first three */
        assert_true(w[i].device >= 0 && w[i].device < 3);
        char want[32];
        snprintf(want, sizeof want, "gpu/%d", (int)w[i].device);
        assert_string_equal(w[i].key, want);
        assert_false(seen & (1 << w[i].device));
        seen |= 1 << w[i].device;
        end(&w[i], 0);
    }
    assert_true(w[3].queued > 0 && w[4].queued > 0);
    release(f, &w[1]);
    run_until(f, four_granted_p, w);
    assert_true(w[3].granted);
    assert_int_equal(w[3].device, w[1].device);
    end(&w[3], 0);
    release(f, &w[0]);
    run_until(f, five_granted_p, w);
    assert_int_equal(w[4].device, w[0].device);
    end(&w[4], 0);
    assert_int_equal(fake_store_queue_len(f->s, NULL, "gpu"), 0);
}

/* Pool.count through the engine: the grant reports every device with its
 * key and fencing; a STREAM hold's end releases all of them in one step, and
 * a 2-device waiter queued behind it is granted both. */
static void test_pool_count_stream_hold_frees_every_device(void **state)
{
    fx *f = *state;
    tw a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    engine_acquire_req req = {.pool = "gpu",
                              .devices = 3,
                              .count = 2,
                              .owner = "a",
                              .ttl_ms = 600000,
                              .wait_ms = 60000,
                              .mode = ENGINE_MODE_STREAM};
    const char *errmsg = NULL;
    assert_int_equal(engine_acquire(f->e, &req, &SINK, &a, &a.w, &errmsg), 0);
    run_until(f, tw_granted_p, &a);
    assert_int_equal(a.ndevices, 2);
    assert_int_equal(a.devices[0], 0);
    assert_int_equal(a.devices[1], 1);
    assert_string_equal(a.keys[1], "gpu/1");
    assert_true(a.fencings[0] == a.fencing);
    uint64_t fencing;
    assert_int_equal(fake_store_holder(f->s, "gpu/1", &fencing, NULL, 0), 1);
    assert_true(fencing == a.fencings[1]);
    req.owner = "b";
    assert_int_equal(engine_acquire(f->e, &req, &SINK, &b, &b.w, &errmsg), 0);
    run_until(f, tw_queued_p, &b); /* one device free, two wanted */
    end(&a, 0);                    /* the stream ends: both devices go */
    run_until(f, tw_granted_p, &b);
    assert_int_equal(b.ndevices, 2);
    assert_true(b.fencings[0] > a.fencings[0] && b.fencings[1] > a.fencings[1]);
    end(&b, 0);
    run_until(f, store_idle, f);
    assert_int_equal(fake_store_holder(f->s, "gpu/0", NULL, NULL, 0), 0);
    assert_int_equal(fake_store_holder(f->s, "gpu/1", NULL, NULL, 0), 0);
    assert_int_equal(fake_store_violations(f->s), 0);
}

/*
 * The local order of waiters differs from the Redis queue (here: the first
 * waiter's entry moved to the tail, as when it is purged as dead while the
 * loop stalls and re-added by its next attempt). A release kicks the earliest
 * local waiter, which is not the head; its reply names the head, which must
 * be attempted at once. The re-check is an hour and the liveness window ten
 * minutes, so neither can rescue a stall within the hang guard.
 */
static void test_diverged_order_head_attempted(void **state)
{
    (void)state;
    fx *f = fx_new(3600000, 600000);
    tw h = {0}, a = {0}, b = {0}, c = {0};
    hold_lease(f, &h, "k", "holder");
    assert_int_equal(acq(f, &a, "k", NULL, 0, "a", 600000, 600000, ENGINE_MODE_LEASE), 0);
    assert_int_equal(acq(f, &b, "k", NULL, 0, "b", 600000, 600000, ENGINE_MODE_LEASE), 0);
    assert_int_equal(acq(f, &c, "k", NULL, 0, "c", 600000, 600000, ENGINE_MODE_LEASE), 0);
    run_until(f, tw_queued_p, &c);
    run_until(f, store_idle, f);
    fake_store_requeue_tail(f->s, "k", NULL, 1); /* Redis: b c a; local: a b c */
    uint64_t calls = fake_store_calls(f->s, FAKE_ACQUIRE);

    release(f, &h);
    run_until(f, tw_granted_p, &b);
    run_until(f, store_idle, f);
    assert_int_equal(a.granted + c.granted, 0);
    /* a's attempt, then b's: no storm. */
    assert_int_equal(fake_store_calls(f->s, FAKE_ACQUIRE) - calls, 2);
    end(&b, 0);

    release(f, &b); /* Redis: c a */
    run_until(f, tw_granted_p, &c);
    assert_int_equal(a.granted, 0);
    end(&c, 0);

    release(f, &c); /* Redis: a */
    run_until(f, tw_granted_p, &a);
    assert_true(b.fencing > h.fencing && c.fencing > b.fencing && a.fencing > c.fencing);
    end(&a, 1);
    wait_key(f, "k", 0);
    assert_int_equal(fake_store_queue_len(f->s, "k", NULL), 0);
    fx_free(f);
}

/* The same for a pool: its queue head is attempted when a device frees. */
static void test_diverged_order_pool_head_attempted(void **state)
{
    (void)state;
    fx *f = fx_new(3600000, 600000);
    tw h = {0}, a = {0}, b = {0};
    assert_int_equal(acq(f, &h, NULL, "gpu", 1, "holder", 600000, 0, ENGINE_MODE_LEASE), 0);
    run_until(f, tw_granted_p, &h);
    end(&h, 0);
    assert_int_equal(acq(f, &a, NULL, "gpu", 1, "a", 600000, 600000, ENGINE_MODE_LEASE), 0);
    assert_int_equal(acq(f, &b, NULL, "gpu", 1, "b", 600000, 600000, ENGINE_MODE_LEASE), 0);
    run_until(f, tw_queued_p, &b);
    run_until(f, store_idle, f);
    fake_store_requeue_tail(f->s, NULL, "gpu", 1); /* Redis: b a; local: a b */

    release(f, &h);
    run_until(f, tw_granted_p, &b);
    assert_string_equal(b.key, "gpu/0");
    assert_int_equal(a.granted, 0);
    end(&b, 0);
    release(f, &b);
    run_until(f, tw_granted_p, &a);
    end(&a, 1);
    wait_key(f, "gpu/0", 0);
    assert_int_equal(fake_store_queue_len(f->s, NULL, "gpu"), 0);
    fx_free(f);
}

static void test_down_refuses_acquire(void **state)
{
    fx *f = *state;
    tw a = {0};
    fake_store_set_down(f->s, 1);
    run_until(f, store_idle, f);
    assert_int_equal(acq(f, &a, "k", NULL, 0, "a", 1000, 1000, ENGINE_MODE_LEASE), BATON_E_UNAVAILABLE);
    assert_int_equal(a.started, 0);
    hold_result r = {0};
    const char *errmsg = NULL;
    assert_int_equal(engine_release(f->e, "k", "00000000000000000000000000000000", hold_cb, &r, &errmsg),
                     BATON_E_UNAVAILABLE);
    assert_non_null(errmsg);
    run_for(f, 20);
    assert_int_equal(a.queued + a.granted + a.finished + r.called, 0);
}

static void test_waiter_survives_down_up(void **state)
{
    fx *f = *state;
    tw h = {0}, a = {0}, b = {0};
    hold_lease(f, &h, "k", "holder");
    assert_int_equal(acq(f, &a, "k", NULL, 0, "a", 600000, 60000, ENGINE_MODE_LEASE), 0);
    run_until(f, tw_queued_p, &a);
    fake_store_set_down(f->s, 1);
    run_until(f, store_idle, f);
    fake_store_set_down(f->s, 0);
    run_until(f, store_idle, f);
    assert_int_equal(a.granted + a.finished, 0);
    release(f, &h);
    run_until(f, tw_granted_p, &a);
    end(&a, 0);

    /* Redis lost everything while down: the waiter joins again and gets it. */
    assert_int_equal(acq(f, &b, "k", NULL, 0, "b", 600000, 60000, ENGINE_MODE_LEASE), 0);
    run_until(f, tw_queued_p, &b);
    fake_store_set_down(f->s, 1);
    run_until(f, store_idle, f);
    fake_store_lose_data(f->s);
    fake_store_set_down(f->s, 0);
    run_until(f, tw_granted_p, &b);
    assert_true(b.fencing > a.fencing);
    end(&b, 0);
}

static void test_try_unavailable_cleanup_after_reconnect(void **state)
{
    fx *f = *state;
    tw a = {0};
    assert_int_equal(acq(f, &a, "k", NULL, 0, "a", 600000, 0, ENGINE_MODE_LEASE), 0);
    /* The script ran (the token holds k) but the reply is lost. */
    fake_store_set_down(f->s, 1);
    run_until(f, tw_finished_p, &a);
    assert_int_equal(a.err, BATON_E_UNAVAILABLE);
    assert_int_equal(a.granted, 0);
    run_until(f, store_idle, f);
    assert_int_equal(fake_store_holder(f->s, "k", NULL, NULL, 0), 1);
    fake_store_set_down(f->s, 0);
    wait_key(f, "k", 0);

    /* Same for a pool: the device is unknown, every device is released. */
    tw p = {0};
    assert_int_equal(acq(f, &p, NULL, "gpu", 2, "p", 600000, 0, ENGINE_MODE_LEASE), 0);
    fake_store_set_down(f->s, 1);
    run_until(f, tw_finished_p, &p);
    assert_int_equal(fake_store_holder(f->s, "gpu/0", NULL, NULL, 0), 1);
    fake_store_set_down(f->s, 0);
    wait_key(f, "gpu/0", 0);
}

static void test_reply_unavailable_while_up_cleans_up(void **state)
{
    fx *f = *state;
    tw a = {0}, b = {0};
    fake_store_fail_next(f->s, FAKE_ACQUIRE, BATON_E_UNAVAILABLE);
    assert_int_equal(acq(f, &a, "k", NULL, 0, "a", 600000, 0, ENGINE_MODE_LEASE), 0);
    run_until(f, tw_finished_p, &a);
    assert_int_equal(a.err, BATON_E_UNAVAILABLE);
    wait_key(f, "k", 0);
    fake_store_fail_next(f->s, FAKE_ACQUIRE, BATON_E_INTERNAL);
    assert_int_equal(acq(f, &b, "k", NULL, 0, "b", 600000, 1000, ENGINE_MODE_LEASE), 0);
    run_until(f, tw_finished_p, &b);
    assert_int_equal(b.err, BATON_E_INTERNAL);
    wait_key(f, "k", 0);
    run_until(f, store_idle, f);
    assert_int_equal(fake_store_queue_len(f->s, "k", NULL), 0);
}

static void test_renew_unavailable_lost_at_deadline(void **state)
{
    fx *f = *state;
    tw a = {0};
    int64_t t0 = now_ms(); /* before the acquire: the TTL cannot start earlier */
    assert_int_equal(acq(f, &a, "k", NULL, 0, "a", 1000, 0, ENGINE_MODE_STREAM), 0);
    run_until(f, tw_granted_p, &a);
    fake_store_set_down(f->s, 1);
    run_until(f, tw_finished_p, &a);
    /* LOST must come before the 1000 ms TTL can run out in Redis (the engine
     * gives up a fifth early, at ~800 ms), never at or after it. */
    assert_true(now_ms() - t0 < 1000 - 50);
    assert_int_equal(a.err, BATON_E_LOST);
    assert_string_equal(a.msg, "could not renew lock 'k' before its TTL ran out: Redis unavailable");
    fake_store_set_down(f->s, 0);
    run_until(f, store_idle, f);
}

typedef struct watch_log {
    int n;
    store_event_type types[16];
    char keys[16][64];
    int ended;
    int ended_err;
    engine_watch *stop_self;
} watch_log;

static void watch_cb(void *ud, const store_event *ev)
{
    watch_log *l = ud;
    if (l->n < 16) {
        l->types[l->n] = ev->type;
        snprintf(l->keys[l->n], sizeof l->keys[0], "%s", ev->key);
    }
    l->n++;
    if (l->stop_self) {
        engine_watch_stop(l->stop_self);
        l->stop_self = NULL;
    }
}

static void watch_ended(void *ud, int err, const char *msg)
{
    watch_log *l = ud;
    l->ended++;
    l->ended_err = err;
}

static void test_watch(void **state)
{
    fx *f = *state;
    watch_log byk = {0}, byp = {0}, once = {0};
    engine_watch *wk = engine_watch_start(f->e, "gpu/1", NULL, watch_cb, watch_ended, &byk);
    engine_watch *wp = engine_watch_start(f->e, NULL, "gpu/", watch_cb, watch_ended, &byp);
    engine_watch *wo = engine_watch_start(f->e, NULL, "", watch_cb, watch_ended, &once);
    assert_non_null(wk);
    assert_non_null(wp);
    assert_non_null(wo);
    once.stop_self = wo;
    tw a = {0}, b = {0};
    hold_lease(f, &a, "gpu/1", "a");
    hold_lease(f, &b, "gpu/2", "b");
    release(f, &a);
    fake_store_publish(f->s, STORE_EV_WAKE, "gpu/1", "", 0);
    run_until(f, store_idle, f);
    assert_int_equal(byk.n, 2);
    assert_int_equal(byk.types[0], STORE_EV_ACQUIRED);
    assert_int_equal(byk.types[1], STORE_EV_RELEASED);
    assert_int_equal(byp.n, 3);
    assert_string_equal(byp.keys[1], "gpu/2");
    assert_int_equal(once.n, 1);
    engine_stats st;
    engine_get_stats(f->e, &st);
    assert_int_equal(st.watches, 2);
    engine_watch_stop(wk);
    engine_watch_stop(wp);
    assert_int_equal(byk.ended + byp.ended, 0);
}

static void test_unary_messages(void **state)
{
    fx *f = *state;
    tw a = {0};
    hold_result r = {0};
    const char *errmsg;
    hold_lease(f, &a, "k", "alice");
    assert_int_equal(engine_renew(f->e, "k", "ffffffffffffffffffffffffffffffff", 5000, hold_cb, &r, &errmsg),
                     0);
    run_until(f, hold_called_p, &r);
    assert_int_equal(r.err, BATON_E_NOT_HOLDER);
    char want[256];
    snprintf(want, sizeof want, "lock 'k' is not held by this token (held by 'alice', fencing %llu)",
             (unsigned long long)a.fencing);
    assert_string_equal(r.msg, want);
    memset(&r, 0, sizeof r);
    assert_int_equal(engine_renew(f->e, "k", a.token, 5000, hold_cb, &r, &errmsg), 0);
    run_until(f, hold_called_p, &r);
    assert_int_equal(r.err, BATON_OK);
    assert_int_equal(r.ttl, 5000);
    release(f, &a);
    memset(&r, 0, sizeof r);
    assert_int_equal(engine_release(f->e, "k", a.token, hold_cb, &r, &errmsg), 0);
    run_until(f, hold_called_p, &r);
    assert_int_equal(r.err, BATON_E_NOT_HOLDER);
    assert_string_equal(r.msg, "lock 'k' is not held by anyone");
}

typedef struct describe_result {
    int called;
    int err;
    int held;
    char owner[64];
    int64_t waiters;
} describe_result;

static void describe_cb(void *ud, int err, const char *msg, const store_describe_res *res)
{
    describe_result *d = ud;
    d->called++;
    d->err = err;
    if (res) {
        d->held = res->held;
        snprintf(d->owner, sizeof d->owner, "%s", res->owner);
        d->waiters = res->waiters;
    }
}

static int describe_called_p(void *arg)
{
    return ((describe_result *)arg)->called > 0;
}

static void test_describe(void **state)
{
    fx *f = *state;
    tw a = {0}, b = {0};
    describe_result d = {0};
    const char *errmsg;
    hold_lease(f, &a, "k", "alice");
    assert_int_equal(acq(f, &b, "k", NULL, 0, "b", 1000, 60000, ENGINE_MODE_LEASE), 0);
    run_until(f, tw_queued_p, &b);
    assert_int_equal(engine_describe(f->e, "k", describe_cb, &d, &errmsg), 0);
    run_until(f, describe_called_p, &d);
    assert_int_equal(d.err, BATON_OK);
    assert_int_equal(d.held, 1);
    assert_string_equal(d.owner, "alice");
    assert_int_equal(d.waiters, 1);
    end(&b, 0);
}

static int done_calls;
static void on_done(void *ud)
{
    done_calls++;
}

static int done_p(void *arg)
{
    return done_calls > 0;
}

static void test_shutdown(void **state)
{
    fx *f = *state;
    tw h = {0}, q = {0}, s = {0}, l = {0}, t = {0}, x = {0};
    watch_log wl = {0};
    done_calls = 0;
    hold_lease(f, &h, "busy", "holder");
    assert_int_equal(acq(f, &q, "busy", NULL, 0, "q", 600000, 60000, ENGINE_MODE_STREAM), 0);
    assert_int_equal(acq(f, &s, "held", NULL, 0, "s", 600000, 0, ENGINE_MODE_STREAM), 0);
    assert_int_equal(acq(f, &l, "lease", NULL, 0, "l", 600000, 0, ENGINE_MODE_LEASE), 0);
    assert_non_null(engine_watch_start(f->e, "busy", NULL, watch_cb, watch_ended, &wl));
    run_until(f, tw_queued_p, &q);
    run_until(f, tw_granted_p, &s);
    run_until(f, tw_granted_p, &l);
    /* One attempt still in flight at shutdown, and it will grant. */
    assert_int_equal(acq(f, &t, "free", NULL, 0, "t", 600000, 5000, ENGINE_MODE_STREAM), 0);
    engine_shutdown(f->e, on_done, NULL);
    assert_int_equal(q.err, BATON_E_UNAVAILABLE);
    assert_string_equal(q.msg, "server shutting down");
    assert_int_equal(s.err, BATON_E_UNAVAILABLE);
    assert_int_equal(t.err, BATON_E_UNAVAILABLE);
    assert_int_equal(q.ends + s.ends + t.ends, 3);
    assert_int_equal(l.ends, 0); /* the transport still owns the lease waiter */
    assert_int_equal(wl.ended, 1);
    assert_int_equal(wl.ended_err, BATON_E_UNAVAILABLE);
    assert_int_equal(acq(f, &x, "other", NULL, 0, "x", 1000, 0, ENGINE_MODE_LEASE), BATON_E_UNAVAILABLE);
    run_until(f, done_p, NULL);
    assert_int_equal(fake_store_holder(f->s, "held", NULL, NULL, 0), 0);
    assert_int_equal(fake_store_holder(f->s, "free", NULL, NULL, 0), 0);
    assert_int_equal(fake_store_queue_len(f->s, "busy", NULL), 0);
    assert_int_equal(t.granted, 0);
    end(&l, 0);
    run_for(f, 10);
    assert_int_equal(done_calls, 1);
}

static void test_shutdown_while_down(void **state)
{
    fx *f = *state;
    tw a = {0};
    done_calls = 0;
    assert_int_equal(acq(f, &a, "k", NULL, 0, "a", 600000, 0, ENGINE_MODE_STREAM), 0);
    run_until(f, tw_granted_p, &a);
    fake_store_set_down(f->s, 1);
    run_until(f, store_idle, f);
    engine_shutdown(f->e, on_done, NULL);
    assert_int_equal(a.err, BATON_E_UNAVAILABLE);
    run_until(f, done_p, NULL);
}

/* ------------------------------------------------------------ randomized */

#define R_WAITERS 100
#define R_KEYS 3
#define R_SLOTS (R_KEYS + 3)

typedef struct rnd {
    fx *f;
    tw w[R_WAITERS];
    int n;
    tw *holder[R_SLOTS]; /* engine-reported holder per key ("k0".."k2", "pool/0..2") */
    uint64_t last_fencing[R_SLOTS];
    uint64_t stale_upto[R_SLOTS]; /* grants up to this fencing were voided by expire / data loss */
    unsigned seed;
    int violations;
    int grants;
} rnd;

static rnd *g_rnd;
static hold_result g_ignored;

static int rnd_slot(const char *key)
{
    if (key[0] == 'k')
        return key[1] - '0';
    return R_KEYS + (key[5] - '0'); /* "pool/i" */
}

static const char *slot_key(int slot, char *buf, size_t n)
{
    if (slot < R_KEYS)
        snprintf(buf, n, "k%d", slot);
    else
        snprintf(buf, n, "pool/%d", slot - R_KEYS);
    return buf;
}

static void rnd_violation(rnd *r, const char *what, const tw *t)
{
    r->violations++;
    print_error("violation: %s (key %s fencing %llu)\n", what, t->key, (unsigned long long)t->fencing);
}

static void rnd_on_granted(tw *t)
{
    rnd *r = g_rnd;
    int slot = rnd_slot(t->key);
    r->grants++;
    if (t->fencing <= r->last_fencing[slot])
        rnd_violation(r, "fencing not increasing", t);
    r->last_fencing[slot] = t->fencing;
    if (t->fencing > r->stale_upto[slot]) {
        if (r->holder[slot] != NULL)
            rnd_violation(r, "two holders reported at once", t);
        r->holder[slot] = t;
        char tok[BATON_TOKEN_LEN + 1];
        if (fake_store_holder(r->f->s, t->key, NULL, tok, sizeof tok) && strcmp(tok, t->token) != 0)
            rnd_violation(r, "store names another holder", t);
    }
    if (t->end_in_granted == 2 && r->holder[slot] == t)
        r->holder[slot] = NULL; /* undeliverable lease: released at once */
}

/* The test learned t no longer holds its key. */
static void rnd_drop(rnd *r, tw *t)
{
    if (!t->granted)
        return;
    int slot = rnd_slot(t->key);
    if (r->holder[slot] == t)
        r->holder[slot] = NULL;
}

/* Grants made so far on slot no longer count (their lock vanished). */
static void rnd_void(rnd *r, int slot)
{
    char key[16];
    r->stale_upto[slot] = fake_store_fence(r->f->s, slot_key(slot, key, sizeof key));
    r->holder[slot] = NULL;
}

static int rnd_idle_p(void *arg)
{
    rnd *r = arg;
    return fake_store_pending(r->f->s) == 0;
}

static void rnd_step(rnd *r)
{
    fx *f = r->f;
    unsigned x = (unsigned)rand_r(&r->seed) % 100;
    /* Streams the engine finished (LOST / OK) no longer hold. */
    for (int i = 0; i < r->n; i++)
        if (r->w[i].finished)
            rnd_drop(r, &r->w[i]);
    if (x < 35 && r->n < R_WAITERS) {
        tw *t = &r->w[r->n++];
        t->on_granted = rnd_on_granted;
        unsigned y = (unsigned)rand_r(&r->seed);
        int64_t wait = (y & 3) == 0 ? 0 : 20 + (int64_t)(y % 400);
        engine_mode mode = (y >> 3) & 1 ? ENGINE_MODE_STREAM : ENGINE_MODE_LEASE;
        if (mode == ENGINE_MODE_LEASE)
            t->end_in_granted = (y >> 9) % 4 == 0 ? 2 : 1;
        char key[8];
        int pool = (y >> 4) % 4 == 0;
        snprintf(key, sizeof key, "k%u", (y >> 6) % R_KEYS);
        int rc = acq(f, t, pool ? NULL : key, pool ? "pool" : NULL, 3, "r", 600000, wait, mode);
        if (rc != 0) {
            assert_int_equal(rc, BATON_E_UNAVAILABLE);
            t->ends = 1; /* never started */
        }
    } else if (x < 55 && r->n > 0) {
        /* Cancel a waiter, or close the stream of a holder. */
        tw *t = &r->w[(unsigned)rand_r(&r->seed) % (unsigned)r->n];
        if (t->started && t->ends == 0) {
            rnd_drop(r, t);
            end(t, 0);
        }
    } else if (x < 75) {
        /* A client releases its lock by token (lease, or a stream's token). */
        for (int i = 0; i < r->n; i++) {
            tw *t = &r->w[i];
            if (t->granted && t->ctx == NULL && !t->finished && r->holder[rnd_slot(t->key)] == t) {
                const char *errmsg;
                t->ctx = t;
                if (engine_release(f->e, t->key, t->token, hold_cb, &g_ignored, &errmsg) == 0)
                    rnd_drop(r, t);
                break;
            }
        }
    } else if (x < 78) {
        int slot = (int)((unsigned)rand_r(&r->seed) % R_KEYS);
        char key[16];
        rnd_void(r, slot);
        fake_store_expire(f->s, slot_key(slot, key, sizeof key));
    } else if (x < 80) {
        fake_store_set_down(f->s, 1);
        run_for(f, 5 + (unsigned)rand_r(&r->seed) % 40);
        if ((unsigned)rand_r(&r->seed) % 3 == 0) {
            fake_store_lose_data(f->s);
            for (int i = 0; i < R_SLOTS; i++)
                rnd_void(r, i);
        }
        fake_store_set_down(f->s, 0);
    }
    run_for(f, (unsigned)rand_r(&r->seed) % 8);
}

static uint64_t g_rnd_handoffs;

static void run_random(unsigned seed)
{
    fx *f = fx_new(200, 300);
    rnd *r = calloc(1, sizeof *r);
    assert_non_null(r);
    g_rnd = r;
    r->f = f;
    r->seed = seed;
    fake_store_set_shuffle(f->s, seed);
    for (int step = 0; step < 400; step++) {
        rnd_step(r);
        if (r->violations)
            fail_msg("seed %u step %d: safety violation", seed, step);
    }
    /* Let everything that can settle settle; lease holders release. */
    run_for(f, 50);
    done_calls = 0;
    engine_shutdown(f->e, on_done, NULL);
    run_until(f, done_p, NULL);
    for (int i = 0; i < r->n; i++) {
        tw *t = &r->w[i];
        if (t->started && t->ends == 0) {
            /* Only delivered leases may still be open after shutdown. */
            assert_true(t->granted);
            end(t, 0);
        }
    }
    run_until(f, rnd_idle_p, r);
    for (int i = 0; i < r->n; i++)
        assert_int_equal(r->w[i].ends, 1);
    engine_stats st;
    engine_get_stats(f->e, &st);
    assert_int_equal(st.waiting + st.stream_holds, 0);
    assert_int_equal(r->violations, 0);
    assert_true(r->grants > 10); /* the run exercised something */
    g_rnd_handoffs += st.handoffs;
    if (getenv("ENGINE_TEST_VERBOSE")) {
        int by_err[16] = {0};
        for (int i = 0; i < r->n; i++)
            if (r->w[i].finished)
                by_err[-r->w[i].err]++;
        print_message("seed %u: %" PRIu64 " handoffs\n", seed, st.handoffs);
        print_message("seed %u: %d waiters, %d grants, finished OK %d BUSY %d UNAVAILABLE %d LOST %d "
                      "INTERNAL %d\n",
                      seed, r->n, r->grants, by_err[0], by_err[-BATON_E_BUSY], by_err[-BATON_E_UNAVAILABLE],
                      by_err[-BATON_E_LOST], by_err[-BATON_E_INTERNAL]);
    }
    free(r);
    g_rnd = NULL;
    fx_free(f);
}

static void test_randomized(void **state)
{
    (void)state;
    const char *env = getenv("ENGINE_TEST_SEED");
    if (env) {
        run_random((unsigned)strtoul(env, NULL, 10));
        return;
    }
    g_rnd_handoffs = 0;
    for (unsigned seed = 1; seed <= 3; seed++)
        run_random(seed);
    assert_true(g_rnd_handoffs > 0); /* releases handed keys on, under the same checks */
}

/* ------------------------------------------------------------ serving */

typedef struct serving_log {
    int calls;
    int values[16];
} serving_log;

static void serving_cb(void *ud, int serving)
{
    serving_log *l = ud;
    if (l->calls < 16)
        l->values[l->calls] = serving;
    l->calls++;
}

static int serving_p(void *arg)
{
    return engine_serving(arg) == 1;
}

static int not_serving_p(void *arg)
{
    return engine_serving(arg) == 0;
}

/* Serving follows the store's up/down, each change reported once. */
static void test_serving_follows_store(void **state)
{
    fx *f = *state;
    serving_log l = {0};
    assert_int_equal(engine_serving(f->e), 1); /* the fixture waited for on_state(1) */
    engine_set_serving_cb(f->e, serving_cb, &l);
    assert_int_equal(l.calls, 0); /* no report from inside the setter */
    fake_store_set_down(f->s, 1);
    run_until(f, not_serving_p, f->e);
    run_until(f, store_idle, f);
    fake_store_set_down(f->s, 1); /* down again: not a change */
    run_until(f, store_idle, f);
    fake_store_set_down(f->s, 0);
    run_until(f, serving_p, f->e);
    run_until(f, store_idle, f);
    fake_store_set_down(f->s, 0);
    run_for(f, 10);
    assert_int_equal(l.calls, 2);
    assert_int_equal(l.values[0], 0);
    assert_int_equal(l.values[1], 1);
    engine_set_serving_cb(f->e, NULL, NULL);
    fake_store_set_down(f->s, 1);
    run_until(f, not_serving_p, f->e);
    assert_int_equal(l.calls, 2);
}

/* Shutdown stops serving at once, and a store coming back does not revive it. */
static void test_serving_ends_at_shutdown(void **state)
{
    fx *f = *state;
    serving_log l = {0};
    done_calls = 0;
    engine_set_serving_cb(f->e, serving_cb, &l);
    engine_shutdown(f->e, on_done, NULL);
    assert_int_equal(l.calls, 1);
    assert_int_equal(l.values[0], 0);
    assert_int_equal(engine_serving(f->e), 0);
    fake_store_set_down(f->s, 1);
    run_until(f, store_idle, f);
    fake_store_set_down(f->s, 0);
    run_until(f, store_idle, f);
    run_until(f, done_p, NULL);
    assert_int_equal(engine_serving(f->e), 0);
    assert_int_equal(l.calls, 1);
}

int main(void)
{
    log_set_level(LOG_LEVEL_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_try_busy_names_holder, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fifo_five_waiters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_positions_reported, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_while_queued, setup, teardown),
        cmocka_unit_test_setup_teardown(test_end_during_attempt_that_grants, setup, teardown),
        cmocka_unit_test_setup_teardown(test_handoff_on_release, setup, teardown),
        cmocka_unit_test_setup_teardown(test_handoff_waiter_ends_in_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_handoff_skips_remote_head, setup, teardown),
        cmocka_unit_test_setup_teardown(test_handoff_reply_lost, setup, teardown),
        cmocka_unit_test_setup_teardown(test_handoff_release_error, setup, teardown),
        cmocka_unit_test(test_recheck_kicks_heads_only),
        cmocka_unit_test(test_refresh_requeues_missing_entry),
        cmocka_unit_test_setup_teardown(test_event_during_attempt, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wait_timeout_names_holder, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_released_on_end, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_renews, setup, teardown),
        cmocka_unit_test_setup_teardown(test_renew_not_holder_lost, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hold_reasserted_after_new_primary, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_reassert_without_new_primary, setup, teardown),
        cmocka_unit_test_setup_teardown(test_multi_device_hold_not_reasserted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expiry_event_lost, setup, teardown),
        cmocka_unit_test_setup_teardown(test_force_release_lost, setup, teardown),
        cmocka_unit_test_setup_teardown(test_release_by_token_finishes_ok, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lease_undeliverable_released, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pool_three_devices_five_waiters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pool_count_stream_hold_frees_every_device, setup, teardown),
        cmocka_unit_test(test_diverged_order_head_attempted),
        cmocka_unit_test(test_diverged_order_pool_head_attempted),
        cmocka_unit_test_setup_teardown(test_down_refuses_acquire, setup, teardown),
        cmocka_unit_test_setup_teardown(test_waiter_survives_down_up, setup, teardown),
        cmocka_unit_test_setup_teardown(test_try_unavailable_cleanup_after_reconnect, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reply_unavailable_while_up_cleans_up, setup, teardown),
        cmocka_unit_test_setup_teardown(test_renew_unavailable_lost_at_deadline, setup, teardown),
        cmocka_unit_test_setup_teardown(test_watch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unary_messages, setup, teardown),
        cmocka_unit_test_setup_teardown(test_describe, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shutdown, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shutdown_while_down, setup, teardown),
        cmocka_unit_test(test_randomized),
        cmocka_unit_test_setup_teardown(test_serving_follows_store, setup, teardown),
        cmocka_unit_test_setup_teardown(test_serving_ends_at_shutdown, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
