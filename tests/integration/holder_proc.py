"""Holds one lock in STREAM mode until killed (used by test_stream_mode.py).

usage: holder_proc.py TARGET KEY OWNER [TTL_MS]
Prints "GRANTED <fencing> <token>" once granted, then "END <code> <details>"
if the stream ever ends. Needs the generated stubs on PYTHONPATH.
"""
import sys

import grpc
from baton.v1 import lock_pb2, lock_pb2_grpc


def main():
    target, key, owner = sys.argv[1:4]
    ttl_ms = int(sys.argv[4]) if len(sys.argv) > 4 else 600000
    with grpc.insecure_channel(target) as channel:
        stub = lock_pb2_grpc.LockServiceStub(channel)
        req = lock_pb2.AcquireRequest(key=key, owner=owner, ttl_ms=ttl_ms, wait_ms=30000,
                                      mode=lock_pb2.HOLD_MODE_STREAM)
        try:
            for ev in stub.Acquire(req):
                if ev.WhichOneof("event") == "granted":
                    print("GRANTED %d %s" % (ev.granted.fencing, ev.granted.token), flush=True)
            print("END OK", flush=True)
        except grpc.RpcError as e:
            print("END %s %s" % (e.code(), e.details()), flush=True)


if __name__ == "__main__":
    main()
