#ifndef BATON_TRANSPORT_INTERNAL_H
#define BATON_TRANSPORT_INTERNAL_H

/*
 * Internals of the gRPC transport shared by its files (transport.c: server,
 * request slots, pump and shutdown; call.c: calls and their outbox;
 * rpc_lock.c, rpc_session.c, rpc_health.c: the methods). Loop thread only,
 * except where a field says otherwise.
 */

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include <grpc/grpc.h>

#include "baton/v1/lock.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"
#include "guard.h"
#include "map.h"
#include "tls.h"
#include "transport.h"

#define SESSION_BUSY_MAX 64     /* Session renewals, releases and unsent grants before reads pause */
#define SESSION_WAIT_MAX 1024   /* Session acquires waiting at once; more are refused */
#define SESSION_OUTBOX_MAX 4096 /* unsent Session responses before the session is cut off */
#define SHUTDOWN_GRACE_MS 2000  /* after the engine is done: time for statuses in flight */
#define SHUTDOWN_FLUSH_MS 20    /* once every call is over: time for their last statuses to leave */
#define ERRBUF 512

#define NMETHODS 11 /* the ten served methods (List: issue #18) and the generic slot */

typedef struct tcall tcall;
struct session_op;
typedef struct session_op session_op;

/*
 * What sets one method apart, in a table next to the method (rpc_lock.c,
 * rpc_session.c, rpc_health.c; the generic slot in transport.c). The
 * generic call code calls these hooks and never asks which method a call
 * is. Paths and request types are taken from `service`'s protobuf-c
 * descriptor (generated from proto/), so the server follows the .proto by
 * construction: a method renamed or dropped there stops batond at start
 * with a clear error instead of leaving it unserved under a stale path.
 */
typedef struct rpc_method {
    const ProtobufCServiceDescriptor *service; /* NULL: the generic slot (any unregistered path) */
    const char *name;
    int client_streams; /* requests arrive one by one (RECV_MESSAGE), none with the call */
    int no_token;        /* needs no bearer token even with auth (Health) */
    /* The call arrived and RECV_CLOSE is armed. req: the decoded request
     * (the caller frees it), NULL for a client-streaming method and the
     * generic slot. */
    void (*start)(tcall *c, ProtobufCMessage *req);
    /* Optional. RECV_CLOSE arrived; clean: after our status, uncancelled.
     * Runs before `release`. */
    void (*closed)(tcall *c, int clean);
    /* A RECV_MESSAGE started by the method completed (client-streaming
     * methods only). */
    void (*received)(tcall *c, int ok);
    /* Optional. The stream is over: let go of the engine's side. Without
     * it, the engine's callback still comes and drops its reference. */
    void (*release)(tcall *c);
    /* Optional. A write completed, the outbox is empty and no status waits. */
    void (*drained)(tcall *c);
    /* Optional. The write of a message queued with `deliver` completed. */
    void (*delivered)(tcall *c, session_op *sop_written);
    /* Optional. The engine has shut down; without it the call ends
     * UNAVAILABLE unless the engine still calls back (call_end_at_shutdown). */
    void (*shutdown)(tcall *c);
} rpc_method;

/* A method as this server registered it. */
typedef struct served_method {
    const rpc_method *rpc;
    char path[128];                        /* "/<package>.<Service>/<Method>" */
    const ProtobufCMessageDescriptor *req; /* NULL: the generic slot */
    const char *req_name;
    void *registered; /* grpc_server_register_method's handle */
} served_method;

enum tag_kind {
    TAG_REQUEST = 0,  /* a request slot: a call arrived (or the request failed) */
    TAG_CLOSE = 1,    /* RECV_CLOSE_ON_SERVER of a call */
    TAG_SEND = 2,     /* SEND_MESSAGE (+ initial metadata) of a call */
    TAG_STATUS = 3,   /* SEND_STATUS_FROM_SERVER of a call */
    TAG_MD = 4,       /* SEND_INITIAL_METADATA alone (Watch) */
    TAG_SHUTDOWN = 5, /* grpc_server_shutdown_and_notify */
    TAG_RECV = 6,     /* RECV_MESSAGE of a Session */
};
#define TAG(p, k) ((void *)((uintptr_t)(p) | (uintptr_t)(k)))
#define TAG_KIND(tag) ((int)((uintptr_t)(tag)&7u))
#define TAG_PTR(tag) ((void *)((uintptr_t)(tag) & ~(uintptr_t)7u))

typedef struct outmsg {
    struct outmsg *next;
    grpc_byte_buffer *bb;
    struct session_op *sop; /* Session: the operation it answers (NULL elsewhere) */
    int queued;             /* a Queued (or health status): a newer one of the same sop replaces it */
    int deliver;            /* Session: a LEASE Granted; the lease stays once it is written */
} outmsg;

/*
 * Where a call stands. Only forward: OPEN -> ENDING -> STATUS, and GONE
 * from any of them (a call ends GONE once RECV_CLOSE arrived).
 */
enum call_phase {
    CALL_OPEN,   /* messages may be queued and the call may be ended */
    CALL_ENDING, /* call_finish ran: the status (pend_*) follows the outbox */
    CALL_STATUS, /* SEND_STATUS_FROM_SERVER started: nothing more goes out */
    CALL_GONE,   /* the stream is over (client gone, or aborted): send nothing more */
};

struct tcall {
    baton_transport *t;
    grpc_call *call;
    struct tcall *prev, *next; /* t->calls */
    union {
        engine_waiter *w;    /* Acquire: until finished / engine_acquire_end */
        engine_watch *watch; /* Watch: until ended / engine_watch_stop */
    } eng;
    outmsg *head, *tail;
    grpc_byte_buffer *sending;      /* message of the batch in flight (TAG_SEND or TAG_STATUS) */
    struct session_op *sending_sop; /* Session: the LEASE grant in flight, kept once written */
    map sops;                       /* Session: operations alive, by id (struct session_op.node) */
    uint32_t nbusy;                 /* ...Renew / Release in flight and LEASE grants not yet written */
    uint32_t nwait;                 /* ...acquires waiting for their grant */
    grpc_byte_buffer *recv_buf;     /* Session: target of the armed RECV_MESSAGE */
    char *pend_msg;                 /* status to send once the outbox is empty */
    int pend_err;
    int cancelled; /* RECV_CLOSE_ON_SERVER result */
    uint32_t nout;
    uint32_t refs;
    guard_caller who; /* token, tenant and what the call counts against the limits (guard.h) */
    const served_method *method;
    uint8_t phase; /* enum call_phase */
    /* Health Watch: HealthCheckResponse statuses (0 = none yet). */
    uint8_t health_last;        /* the newest status queued or sent */
    uint8_t health_wire;        /* the newest status out of the outbox (in flight or sent) */
    unsigned health_known : 1;  /* the watched service is one we serve */
    unsigned md_sent : 1;       /* initial metadata sent (or in flight) */
    unsigned engine_ref : 1;    /* the engine may still call back with this call as ud */
    unsigned lease : 1;         /* Acquire in LEASE mode */
    unsigned granted : 1;       /* Acquire: Granted queued */
    unsigned lease_ok_sent : 1; /* Acquire LEASE: Granted written, status OK started */
    unsigned recv_armed : 1;    /* Session: a RECV_MESSAGE is in flight */
    unsigned recv_closed : 1;   /* Session: the client sends no more (or the read failed) */
    unsigned shut_owed : 1;     /* Session: answered during shutdown (its client is reading) */
};

/*
 * Outstanding requests per method (and for the generic one). Why several: a
 * new call is handed over only against a posted request, and each re-post
 * happens on the loop thread, so with one slot every further call of a busy
 * method waited for a pump -> loop -> re-post round of its own (two thread
 * wake-ups per call, no batching). With many, gRPC hands a burst of calls
 * over in one go.
 */
#define REQ_SLOTS 32

typedef struct req_slot {
    baton_transport *t;
    const served_method *method;
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_call_details details; /* generic slot only */
    grpc_byte_buffer *payload;
} req_slot;

typedef struct completion {
    void *tag;
    int ok;
} completion;

/*
 * Where the transport's shutdown stands. Only forward, one step at a time;
 * gRPC's own shutdown notification (server_notified) arrives independently
 * of these steps and is awaited in SHUT_SERVER.
 */
enum shutdown_phase {
    SHUT_NONE,   /* serving */
    SHUT_ENGINE, /* transport_shutdown ran: the engine ends its waiters and watches */
    SHUT_CALLS,  /* the engine is done: calls end (grace_ev cancels them after SHUTDOWN_GRACE_MS) */
    SHUT_FLUSH,  /* every call is over: grace_ev ends the flush (SHUTDOWN_FLUSH_MS) */
    SHUT_SERVER, /* flushed and connections dropped: wait for gRPC's tag and the posted requests */
    SHUT_QUEUE,  /* the completion queue is shut down: the pump drains it and exits */
    SHUT_DONE,   /* pump joined, server and queue destroyed, `done` called */
};

struct baton_transport {
    struct event_base *base;
    baton_engine *engine;
    validate_limits limits;
    grpc_server *server;
    grpc_completion_queue *cq;
    int port;
    guard *guard;    /* auth, access and limits */
    tls_server *tls; /* NULL: plain text */
    served_method methods[NMETHODS];
    req_slot slots[NMETHODS][REQ_SLOTS];
    size_t nposted; /* request slots waiting for a call */

    /* pump thread -> loop thread */
    pthread_t pump;
    int pump_started;
    pthread_mutex_t mu;
    completion *inbox; /* guarded by mu */
    size_t inbox_len, inbox_cap;
    int pump_exited;  /* guarded by mu: the CQ is shut down and drained */
    completion *work; /* loop thread's copy */
    size_t work_cap;
    int efd;
    struct event *wake_ev;

    tcall *calls;
    size_t ncalls;

    /* shutdown */
    enum shutdown_phase shut;
    int server_notified; /* grpc_server_shutdown_and_notify's tag arrived (any time after SHUT_ENGINE) */
    struct event *grace_ev;
    void (*done)(void *ud);
    void *done_ud;
};

/* transport.c */
/* Shutdown has begun: new calls end UNAVAILABLE. */
static inline int transport__shutting(const baton_transport *t)
{
    return t->shut != SHUT_NONE;
}
/* Moves shutdown on once calls, requests and gRPC allow; called whenever one
 * of them ends. */
void transport__maybe_finish_shutdown(baton_transport *t);

/* call.c */
/* The one answer to "may this call still send?": queue a message, start a
 * read, or begin its end. */
static inline int call_can_send(const tcall *c)
{
    return c->phase == CALL_OPEN;
}
/* The one place where internal errors (baton_err) become gRPC status codes. */
grpc_status_code call_status_of(int err);
/* A call with one reference (the dispatch's), in t->calls. NULL on OOM. */
tcall *call_new(baton_transport *t, grpc_call *call, const served_method *method);
/* Frees the call when the last reference goes (never from a hook that got c
 * from the generic code: that code holds a reference). */
void call_unref(tcall *c);
void call_outbox_clear(tcall *c);
/* Starts a batch whose completion arrives with tag `kind`; takes a reference. */
int call_batch(tcall *c, const grpc_op *batch, size_t n, int kind);
/* Sends the final status now (plus initial metadata if not sent yet, plus bb
 * as the one response of a unary call; bb passes to the call). */
void call_send_status(tcall *c, grpc_status_code code, const char *msg, grpc_byte_buffer *bb);
/* Ends the call with err once the outbox is empty; nothing if it cannot send. */
void call_finish(tcall *c, int err, const char *msg);
/* Queues one stream message (see call.c); call_push_sop for a Session answer. */
void call_push(tcall *c, const ProtobufCMessage *msg, int queued);
void call_push_sop(tcall *c, const ProtobufCMessage *msg, int queued, session_op *sop, int deliver);
/* The one response and OK status of a unary call. */
void call_reply(tcall *c, const ProtobufCMessage *resp);
/* The default of rpc_method.shutdown. */
void call_end_at_shutdown(tcall *c);
/* Completions of the call's batches (TAG_CLOSE, TAG_SEND, TAG_STATUS). */
void call_on_close(tcall *c, int ok);
void call_on_send_done(tcall *c, int ok);
void call_on_status_done(tcall *c, int ok);

/* rpc_lock.c */
extern const rpc_method transport__acquire_rpc, transport__renew_rpc, transport__release_rpc,
    transport__watch_rpc, transport__describe_rpc, transport__force_release_rpc;
/* The Granted message of an engine grant (pointing into g). */
void transport__granted_msg(const validate_limits *lim, const engine_grant *g, Baton__V1__Granted *gr);

/* rpc_session.c */
extern const rpc_method transport__session_rpc;

/* rpc_list.c (issue #18) */
extern const rpc_method transport__list_rpc;

/* rpc_health.c */
extern const rpc_method transport__health_check_rpc, transport__health_watch_rpc;
/* engine_set_serving_cb: tells every health Watch. */
void transport__on_serving(void *ud, int serving);

#endif
