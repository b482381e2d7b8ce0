#ifndef BATON_PB_CODEC_H
#define BATON_PB_CODEC_H

/*
 * The one protobuf <-> gRPC byte buffer codec of batond and libbaton's gRPC
 * runtime (client/grpc_c). pb_decode_bytes and pb_find_nul_string are pure
 * (bytes in, message out) so unit tests and the fuzzer reach them without gRPC.
 */

#include <stddef.h>
#include <stdint.h>

#include <grpc/byte_buffer.h>
#include <protobuf-c/protobuf-c.h>

/* A new byte buffer holding m (the caller destroys it). gRPC's allocator
 * aborts on OOM, so this never fails. */
grpc_byte_buffer *pb_encode(const ProtobufCMessage *m);

/* Decodes a message of type d from len bytes at p. Returns it (free with
 * protobuf_c_message_free_unpacked), or NULL with a reason in err ("cannot
 * decode <name>", or "<field path>: must not contain a NUL byte"). */
ProtobufCMessage *pb_decode_bytes(const ProtobufCMessageDescriptor *d, const uint8_t *p, size_t len,
                                  const char *name, char *err, size_t errlen);

/* pb_decode_bytes over a byte buffer (NULL bb: an error). bb stays the caller's. */
ProtobufCMessage *pb_decode(grpc_byte_buffer *bb, const ProtobufCMessageDescriptor *d, const char *name,
                            char *err, size_t errlen);

/*
 * protobuf-c ends C strings at their first NUL byte, so a key "k\0x" would
 * arrive as "k" and pass validation. Walks the raw message (of type d) and
 * writes the path of the first string field holding a NUL byte to `path`;
 * returns 1 if there is one, 0 if none (or the bytes are not a message).
 */
int pb_find_nul_string(const ProtobufCMessageDescriptor *d, const uint8_t *p, size_t len, char *path,
                       size_t pathlen);

#endif
