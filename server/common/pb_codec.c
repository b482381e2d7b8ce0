#include "pb_codec.h"

#include <stdio.h>
#include <string.h>

#include <grpc/byte_buffer_reader.h>
#include <grpc/slice.h>

grpc_byte_buffer *pb_encode(const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    grpc_slice s = grpc_slice_malloc(n);
    protobuf_c_message_pack(m, GRPC_SLICE_START_PTR(s));
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return bb;
}

ProtobufCMessage *pb_decode_bytes(const ProtobufCMessageDescriptor *d, const uint8_t *p, size_t len,
                                  const char *name, char *err, size_t errlen)
{
    ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, len, p);
    char path[160];
    if (m == NULL) {
        snprintf(err, errlen, "cannot decode %s", name);
        /* A message without a zero byte has no string holding one. */
    } else if (len && memchr(p, 0, len) && pb_find_nul_string(d, p, len, path, sizeof path)) {
        snprintf(err, errlen, "%s: must not contain a NUL byte", path);
        protobuf_c_message_free_unpacked(m, NULL);
        m = NULL;
    }
    return m;
}

ProtobufCMessage *pb_decode(grpc_byte_buffer *bb, const ProtobufCMessageDescriptor *d, const char *name,
                            char *err, size_t errlen)
{
    grpc_byte_buffer_reader r;
    if (bb == NULL || !grpc_byte_buffer_reader_init(&r, bb)) {
        snprintf(err, errlen, "cannot decode %s", name);
        return NULL;
    }
    grpc_slice s = grpc_byte_buffer_reader_readall(&r);
    grpc_byte_buffer_reader_destroy(&r);
    ProtobufCMessage *m =
        pb_decode_bytes(d, GRPC_SLICE_START_PTR(s), GRPC_SLICE_LENGTH(s), name, err, errlen);
    grpc_slice_unref(s);
    return m;
}

static int wire_varint(const uint8_t *p, size_t len, size_t *i, uint64_t *out)
{
    uint64_t v = 0;
    for (int shift = 0; shift < 64 && *i < len; shift += 7) {
        uint8_t b = p[(*i)++];
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = v;
            return 1;
        }
    }
    return 0;
}

static int find_nul(const ProtobufCMessageDescriptor *d, const uint8_t *p, size_t len, int depth, char *path,
                    size_t pathlen)
{
    size_t i = 0;
    while (i < len) {
        uint64_t key, v;
        if (!wire_varint(p, len, &i, &key))
            return 0;
        switch (key & 7) {
        case 0:
            if (!wire_varint(p, len, &i, &v))
                return 0;
            break;
        case 1: i += 8; break;
        case 5: i += 4; break;
        case 2: {
            if (!wire_varint(p, len, &i, &v) || v > len - i)
                return 0;
            const ProtobufCFieldDescriptor *f =
                protobuf_c_message_descriptor_get_field(d, (unsigned)(key >> 3));
            if (f && f->type == PROTOBUF_C_TYPE_STRING && memchr(p + i, 0, (size_t)v)) {
                snprintf(path, pathlen, "%s", f->name);
                return 1;
            }
            if (f && f->type == PROTOBUF_C_TYPE_MESSAGE && depth < 8) {
                char sub[128];
                if (find_nul(f->descriptor, p + i, (size_t)v, depth + 1, sub, sizeof sub)) {
                    snprintf(path, pathlen, "%s.%s", f->name, sub);
                    return 1;
                }
            }
            i += (size_t)v;
            break;
        }
        default: return 0; /* groups: not in our protos */
        }
    }
    return 0;
}

int pb_find_nul_string(const ProtobufCMessageDescriptor *d, const uint8_t *p, size_t len, char *path,
                       size_t pathlen)
{
    return find_nul(d, p, len, 0, path, pathlen);
}
