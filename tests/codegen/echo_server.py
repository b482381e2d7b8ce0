#!/usr/bin/python3
"""Echo test server (Python grpcio): the independent peer for the grpc_c tests.

Usage: echo_server.py <dir with echo/test/*_pb2*.py>
Binds 127.0.0.1 on a free port, prints "PORT <n>" on stdout, and exits when
its stdin reaches EOF (so it never outlives the test that spawned it).
"""
import sys
import threading
import time
from concurrent import futures

sys.path.insert(0, sys.argv[1])
import grpc  # noqa: E402
from echo.test import echo_pb2, echo_pb2_grpc  # noqa: E402
from echo.test import common_pb2  # noqa: E402

_lock = threading.Lock()
_cancelled = 0


def _nap(context, ms):
    """Sleeps ms, returning early (False) once the client went away."""
    end = time.monotonic() + ms / 1000.0
    while time.monotonic() < end:
        if not context.is_active():
            return False
        time.sleep(min(0.01, max(0.0, end - time.monotonic())))
    return context.is_active()


def _metadata(context):
    return ["%s=%s" % (k, v) for k, v in context.invocation_metadata()
            if k.startswith("x-") or k == "authorization"]


def _code(n):
    for c in grpc.StatusCode:
        if c.value[0] == n:
            return c
    return grpc.StatusCode.UNKNOWN


class Echo(echo_pb2_grpc.EchoServicer):
    def Unary(self, request, context):
        if request.sleep_ms:
            _nap(context, request.sleep_ms)
        if request.code:
            context.abort(_code(request.code), request.text)
        return echo_pb2.EchoReply(text=request.text, metadata=_metadata(context))

    def ServerStream(self, request, context):
        global _cancelled
        try:
            for i in range(request.count):
                if request.sleep_ms and not _nap(context, request.sleep_ms):
                    with _lock:
                        _cancelled += 1
                    return
                yield echo_pb2.EchoReply(text=request.text, index=i,
                                         metadata=_metadata(context) if i == 0 else [])
        except GeneratorExit:
            with _lock:
                _cancelled += 1
            raise
        if request.code:
            context.abort(_code(request.code), request.text)

    def ClientStream(self, request_iterator, context):
        total = 0
        for inner in request_iterator:
            total += inner.value
        return echo_pb2.Outer.Inner(value=total)

    def Bidi(self, request_iterator, context):
        for i, req in enumerate(request_iterator):
            if req.code:
                context.abort(_code(req.code), req.text)
            yield echo_pb2.EchoReply(text=req.text, index=i)


class Admin(echo_pb2_grpc.AdminServicer):
    def Ping(self, request, context):
        if request.text == "cancelled":
            with _lock:
                return common_pb2.Note(text="cancelled", number=_cancelled)
        return common_pb2.Note(text=request.text, number=request.number + 1)


def main():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    echo_pb2_grpc.add_EchoServicer_to_server(Echo(), server)
    echo_pb2_grpc.add_AdminServicer_to_server(Admin(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print("PORT %d" % port, flush=True)
    sys.stdin.read()  # until the test closes our stdin (or dies)
    server.stop(0)


if __name__ == "__main__":
    main()
