/*
 * grpc_c.h - a small blocking gRPC client runtime over the gRPC C core,
 * used by the stubs that protoc-gen-grpc-c generates (NAME.grpc-c.h/.c).
 *
 * Messages are protobuf-c messages; the runtime packs and unpacks them with
 * their ProtobufCMessageDescriptor. Callers never need gRPC headers: the only
 * gRPC type in this API is `grpc_channel *`, forward-declared here, and
 * grpc_c_channel_create_insecure() makes one for the common case.
 *
 * Call shapes (generated stubs are thin typed wrappers over these):
 *   unary             grpc_c_unary()
 *   server-streaming  grpc_c_call_start(req) -> read... (END) -> finish -> destroy
 *   client-streaming  grpc_c_call_start(NULL) -> write... -> finish(&resp) -> destroy
 *   bidi              grpc_c_call_start(NULL) -> write/read... -> close_send
 *                     -> read until END -> finish -> destroy
 *
 * Generated stubs (protoc-gen-grpc-c, NAME.grpc-c.h next to NAME.pb-c.h):
 * with S = protobuf-c's lower-case service name (baton.v1.LockService ->
 * baton__v1__lock_service) and m = the lower-case method (ForceRelease ->
 * force_release):
 *   unary       S__grpc__m(channel, req, &resp, &status, opts)
 *   streaming   S__grpc__m_start, _write, _close_send, _read, _read_timeout,
 *               _cancel, _finish, _destroy (only those that fit the shape)
 *   tables      S__grpc__m_method (grpc_c_method), S__grpc_methods[],
 *               S__grpc_service; macros S__GRPC__M_PATH / _INDEX (upper case)
 * The "__grpc__" infix keeps them apart from protobuf-c's own service stubs
 * (S__m). Messages of nested types have no typed __free_unpacked in
 * protobuf-c: free them with protobuf_c_message_free_unpacked(&m->base, NULL).
 *
 * Threads: every call handle has its own completion queue and each blocking
 * operation plucks only its own tag, so different handles may be used from
 * different threads at the same time. ONE handle must be used by one thread
 * at a time, with two exceptions: grpc_c_call_cancel() may be called from any
 * thread at any time (until grpc_c_call_destroy) and wakes a blocked read,
 * write or finish on that handle; and on a bidi stream one thread may read
 * (grpc_c_call_read*) while another writes (grpc_c_call_write), since the
 * two touch disjoint state and pluck different tags. finish and destroy
 * still need both to be over.
 *
 * Return values: functions returning `int` on a call handle return one of
 * enum grpc_c_result (0 = done, >0 = a normal non-message outcome, <0 = error).
 * Functions that end an RPC (grpc_c_unary, grpc_c_call_finish) return the
 * gRPC status code (enum grpc_c_code, 0 = OK) and fill a grpc_c_status.
 * Local failures are reported as status codes too (as gRPC itself does for
 * DEADLINE_EXCEEDED): out of memory -> RESOURCE_EXHAUSTED, undecodable
 * response -> INTERNAL, bad argument -> INVALID_ARGUMENT; the message then
 * starts with "grpc_c: ".
 */
#ifndef GRPC_C_H
#define GRPC_C_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#ifdef __cplusplus
extern "C" {
#endif

/* From <grpc/grpc.h>; repeating an identical typedef is valid C11. */
typedef struct grpc_channel grpc_channel;

/* gRPC status codes (same values as grpc_status_code in <grpc/status.h>). */
enum grpc_c_code {
    GRPC_C_CODE_OK = 0,
    GRPC_C_CODE_CANCELLED = 1,
    GRPC_C_CODE_UNKNOWN = 2,
    GRPC_C_CODE_INVALID_ARGUMENT = 3,
    GRPC_C_CODE_DEADLINE_EXCEEDED = 4,
    GRPC_C_CODE_NOT_FOUND = 5,
    GRPC_C_CODE_ALREADY_EXISTS = 6,
    GRPC_C_CODE_PERMISSION_DENIED = 7,
    GRPC_C_CODE_RESOURCE_EXHAUSTED = 8,
    GRPC_C_CODE_FAILED_PRECONDITION = 9,
    GRPC_C_CODE_ABORTED = 10,
    GRPC_C_CODE_OUT_OF_RANGE = 11,
    GRPC_C_CODE_UNIMPLEMENTED = 12,
    GRPC_C_CODE_INTERNAL = 13,
    GRPC_C_CODE_UNAVAILABLE = 14,
    GRPC_C_CODE_DATA_LOSS = 15,
    GRPC_C_CODE_UNAUTHENTICATED = 16
};

/* Static name of a status code ("OK", "INVALID_ARGUMENT", ...; "?" if unknown). */
const char *grpc_c_code_name(int code);

/* Results of the operations on a call handle. */
enum grpc_c_result {
    GRPC_C_OK = 0,          /* done; for reads a message was returned */
    GRPC_C_END = 1,         /* read: no more messages (server finished, call
                               failed or was cancelled); call grpc_c_call_finish */
    GRPC_C_TIMEOUT = 2,     /* read_timeout: nothing arrived in time; the call is
                               still alive and the read stays armed: the next
                               read/read_timeout continues waiting for it */
    GRPC_C_ERR_CALL = -1,   /* the call is over (peer gone, cancelled, deadline,
                               server finished); call grpc_c_call_finish */
    GRPC_C_ERR_NOMEM = -2,  /* out of memory; the call state is unchanged */
    GRPC_C_ERR_DECODE = -3, /* a received message did not parse; the runtime
                               cancelled the call, finish reports INTERNAL */
    GRPC_C_ERR_STATE = -4,  /* misuse: wrong call shape for the operation, write
                               after close_send, anything after finish, ... */
    GRPC_C_ERR_INVALID = -5 /* bad argument (NULL, message of the wrong type) */
};

/* Static description of a grpc_c_result value. */
const char *grpc_c_result_str(int result);

/* Streaming shape of a method, from MethodDescriptorProto's two flags. */
typedef enum grpc_c_kind {
    GRPC_C_KIND_UNARY = 0,
    GRPC_C_KIND_SERVER_STREAMING = 1, /* rpc M(Req) returns (stream Resp) */
    GRPC_C_KIND_CLIENT_STREAMING = 2, /* rpc M(stream Req) returns (Resp) */
    GRPC_C_KIND_BIDI_STREAMING = 3    /* rpc M(stream Req) returns (stream Resp) */
} grpc_c_kind;

/* One RPC method. Generated code defines one constant per method; a server
 * can dispatch on `path` and decode with `input`. All fields are static. */
typedef struct grpc_c_method {
    const char *path; /* "/pkg.Service/Method" */
    const char *name; /* "Method" */
    grpc_c_kind kind;
    const ProtobufCMessageDescriptor *input;  /* request message type */
    const ProtobufCMessageDescriptor *output; /* response message type */
} grpc_c_method;

/* The method table of one service (generated, static). */
typedef struct grpc_c_service {
    const char *name; /* full name "pkg.Service" */
    size_t n_methods;
    const grpc_c_method *methods; /* in .proto declaration order */
} grpc_c_service;

/* Final status of an RPC. `message` is owned by the struct (malloc'd,
 * NUL-terminated, "" when the server sent none; NULL only if that copy ran
 * out of memory).
 * Initialise with GRPC_C_STATUS_INIT (or zero it); release with
 * grpc_c_status_clear(). Functions that fill a status clear it first, so one
 * struct can be reused across calls without leaking. */
typedef struct grpc_c_status {
    int code; /* enum grpc_c_code */
    char *message;
} grpc_c_status;
#define GRPC_C_STATUS_INIT                                                                                   \
    {                                                                                                        \
        0, NULL                                                                                              \
    }

/* Frees status->message and resets the struct to code OK, message NULL. */
void grpc_c_status_clear(grpc_c_status *status);

/* One request metadata entry. Keys must be lowercase ASCII (gRPC rejects
 * others); binary values need a key ending in "-bin". */
typedef struct grpc_c_metadata {
    const char *key;
    const char *value;
    size_t value_len; /* 0 = strlen(value) */
} grpc_c_metadata;

/* Per-call options; pass NULL for defaults (no deadline, no metadata).
 * Zero-initialise and set what you need. Everything is copied when the call
 * starts: the struct and the strings it points to may be freed afterwards. */
typedef struct grpc_c_call_options {
    /* > 0: the call's deadline is now + timeout_ms (monotonic clock). */
    int64_t timeout_ms;
    /* > 0: absolute deadline in milliseconds since the Unix epoch (realtime
     * clock). If both are set, the earlier deadline applies. */
    int64_t deadline_unix_ms;
    /* Request metadata sent with the call, e.g. {"authorization", "Bearer x"}. */
    const grpc_c_metadata *metadata;
    size_t metadata_count;
    /* Non-zero: wait for the channel to become ready instead of failing at
     * once with UNAVAILABLE when the server is unreachable (bounded by the
     * deadline, if any). */
    int wait_for_ready;
    /* Streaming calls, > 0: if the start (see grpc_c_call_start) is not
     * handed to the transport within start_timeout_ms, the call is cancelled
     * with DEADLINE_EXCEEDED. Bounds the start of a call that must not have
     * a deadline of its own (a stream that holds something), e.g. on a
     * channel still connecting to a server that accepts TCP but never
     * answers (gRPC then waits 20 s for the connection). */
    int64_t start_timeout_ms;
} grpc_c_call_options;

/* ---- Channels -------------------------------------------------------- */

/* Optional channel settings; NULL or zero fields keep gRPC's defaults. */
typedef struct grpc_c_channel_options {
    /* > 0: ping the server this often while a call is open (or always, with
     * keepalive_permit_without_calls), however long no data was sent. The
     * server must permit it (a gRPC server's default minimum interval is
     * 5 minutes; batond's is 1 s) or it ends the connection. */
    int64_t keepalive_time_ms;
    int64_t keepalive_timeout_ms;       /* > 0: drop the connection if a ping is unanswered */
    int keepalive_permit_without_calls; /* non-zero: ping even with no call open */
    int max_receive_message_bytes;      /* > 0: limit, -1: unlimited, 0: default 4 MiB */
    /* > 0: wait this long before the first reconnection attempt after a
     * connection fails (gRPC's default: 1000 ms); each further wait is 1.6
     * times the last, +-20% jitter, up to max_reconnect_backoff_ms. */
    int initial_reconnect_backoff_ms;
    int max_reconnect_backoff_ms; /* > 0: longest wait between attempts (gRPC's default: 120000 ms) */
} grpc_c_channel_options;

/* Creates a plaintext (insecure) channel to `target` ("host:port",
 * "unix:/path", "dns:///name:port"). Initialises the gRPC library (grpc_init;
 * reference-counted). Connecting is lazy: this never blocks and only fails
 * when out of memory or on bad arguments (returns NULL).
 * The caller owns the channel: grpc_c_channel_destroy() it after every call
 * handle on it was destroyed. `opts` may be NULL. */
grpc_channel *grpc_c_channel_create_insecure(const char *target, const grpc_c_channel_options *opts);

/* TLS settings of a channel; the strings are read during the call only. */
typedef struct grpc_c_tls_options {
    const char *root_pem;    /* PEM CA bundle the server must chain to; NULL = gRPC's default roots */
    const char *key_pem;     /* client certificate's private key (PEM), with cert_pem; NULL = none */
    const char *cert_pem;    /* client certificate chain (PEM) */
    const char *server_name; /* name to expect in the server's certificate instead of the target's host */
} grpc_c_tls_options;

/* As grpc_c_channel_create_insecure, over TLS. NULL on bad arguments or OOM
 * (a bad certificate shows later, as UNAVAILABLE calls). */
grpc_channel *grpc_c_channel_create_tls(const char *target, const grpc_c_tls_options *tls,
                                        const grpc_c_channel_options *opts);

/* Destroys a channel made by grpc_c_channel_create_insecure() and drops the
 * grpc_init reference it took. NULL is ignored. */
void grpc_c_channel_destroy(grpc_channel *channel);

/* For callers that create channels themselves with gRPC's own API (TLS etc.):
 * the runtime needs gRPC initialised; these are grpc_init()/grpc_shutdown(). */
void grpc_c_init(void);
void grpc_c_shutdown(void);

/* ---- Unary ------------------------------------------------------------ */

/* Blocking unary call of `method` (must be GRPC_C_KIND_UNARY) with `request`
 * (its descriptor must be method->input).
 * On status OK, *response is set to a new message of type method->output that
 * the CALLER frees with protobuf_c_message_free_unpacked(msg, NULL) (or the
 * type's generated __free_unpacked(msg, NULL)); otherwise *response is NULL.
 * `status` (may be NULL) receives code and message (clear it afterwards).
 * Returns the status code (GRPC_C_CODE_OK = 0 on success).
 * `channel` is borrowed; `opts` may be NULL. Thread-safe: any number of
 * threads may call this concurrently on one channel. */
int grpc_c_unary(grpc_channel *channel, const grpc_c_method *method, const ProtobufCMessage *request,
                 ProtobufCMessage **response, grpc_c_status *status, const grpc_c_call_options *opts);

/* ---- Streaming call handle ----------------------------------------------- */

/* Opaque handle of one streaming call; owned by the caller until
 * grpc_c_call_destroy(). Lifetime: the channel must outlive the handle. */
typedef struct grpc_c_call grpc_c_call;

/* Starts a call of a streaming `method` and sends the request metadata.
 * For GRPC_C_KIND_SERVER_STREAMING pass the single `request` (it is sent and
 * the sending side is half-closed at once); for client-streaming and bidi pass
 * NULL and use grpc_c_call_write(). Blocks only until the start is handed to
 * the transport (with wait_for_ready: until the channel is ready or the
 * deadline passes; on a channel still connecting, until it connects or fails;
 * opts->start_timeout_ms bounds all of these).
 * Returns a new handle (caller destroys it with grpc_c_call_destroy), or NULL
 * on bad arguments or out of memory. A call that fails after starting (server
 * down, deadline) still returns a handle: reads then return GRPC_C_END and
 * grpc_c_call_finish() reports the status.
 * `channel` and `request` are borrowed (request may be freed on return). */
grpc_c_call *grpc_c_call_start(grpc_channel *channel, const grpc_c_method *method,
                               const ProtobufCMessage *request, const grpc_c_call_options *opts);

/* Sends one message (client-streaming and bidi only; type method->input).
 * Blocks until the message is handed to the transport (flow control).
 * Returns GRPC_C_OK, GRPC_C_ERR_CALL (call is over: stop writing, read to END
 * and/or finish for the status), GRPC_C_ERR_STATE (after close_send/finish or
 * wrong shape), GRPC_C_ERR_INVALID, GRPC_C_ERR_NOMEM. `msg` is borrowed. */
int grpc_c_call_write(grpc_c_call *call, const ProtobufCMessage *msg);

/* Half-closes: tells the server no more messages will be written.
 * Client-streaming and bidi only; idempotent (a second call returns OK).
 * Returns GRPC_C_OK, GRPC_C_ERR_CALL or GRPC_C_ERR_STATE. */
int grpc_c_call_close_send(grpc_c_call *call);

/* Reads the next message (server-streaming and bidi only); blocks until one
 * arrives or the stream ends. On GRPC_C_OK *msg is a new message of type
 * method->output that the CALLER frees (protobuf_c_message_free_unpacked(msg,
 * NULL)); on any other result *msg is NULL.
 * Returns GRPC_C_OK, GRPC_C_END (no more messages: finish for the status),
 * GRPC_C_ERR_DECODE, GRPC_C_ERR_STATE, GRPC_C_ERR_NOMEM. */
int grpc_c_call_read(grpc_c_call *call, ProtobufCMessage **msg);

/* Like grpc_c_call_read() but waits at most timeout_ms (>= 0) and then
 * returns GRPC_C_TIMEOUT: the call is still alive and the read stays armed,
 * so no message is lost; the next read or read_timeout resumes waiting for
 * it. Use it to wake periodically (e.g. to check a stop flag) while waiting
 * for the next event. A write or close_send between two reads is allowed
 * while a read is armed. */
int grpc_c_call_read_timeout(grpc_c_call *call, ProtobufCMessage **msg, int64_t timeout_ms);

/* Cancels the call (status CANCELLED, locally and at the server) unless it
 * already finished. Thread-safe: may be called from ANY thread while another
 * thread is blocked in read/write/finish on the same handle, which then
 * returns promptly (GRPC_C_END / GRPC_C_ERR_CALL / status CANCELLED).
 * Idempotent. Still call finish (optional) and destroy afterwards. */
void grpc_c_call_cancel(grpc_c_call *call);

/* Ends the call and returns its status code (0 = OK), filling `status` (may be
 * NULL; clear it afterwards).
 * It half-closes if close_send was not called, then - for server-streaming
 * and bidi - reads and DISCARDS messages not read yet until the server ends
 * the stream (cancel first if you do not want to wait for that), and waits
 * for the server's status. For client-streaming, on status OK *response is
 * set to the server's reply (CALLER frees it); pass NULL for other shapes.
 * A second finish returns the same status again. Does not free the handle. */
int grpc_c_call_finish(grpc_c_call *call, ProtobufCMessage **response, grpc_c_status *status);

/* The method this call was started with (static). */
const grpc_c_method *grpc_c_call_method(const grpc_c_call *call);

/* Frees the handle. If the call is still running it is cancelled first and
 * pending operations are drained (never blocks for long). NULL is ignored.
 * No other thread may use the handle (not even cancel) during or after this. */
void grpc_c_call_destroy(grpc_c_call *call);

#ifdef __cplusplus
}
#endif

#endif /* GRPC_C_H */
