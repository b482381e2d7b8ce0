"""A TCP relay to batond, for tests that need a bad network between a client and batond.

`silent = True` stops it moving bytes while every socket stays open, as a network that drops
packets does (no FIN, no RST). `delay` holds every other client-to-server write back that many
seconds, keeping the byte order, as a jittery network does."""
import socket
import threading
import time


class Relay:
    def __init__(self, target, delay=0.0):
        host, port = target.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.delay = delay
        self.silent = False
        self.closed = False
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.address = "127.0.0.1:%d" % self.lsock.getsockname()[1]
        self.socks = [self.lsock]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.lsock.accept()
                u = socket.create_connection(self.upstream)
            except OSError:
                return
            self.socks += [c, u]
            threading.Thread(target=self._pump, args=(c, u, self.delay), daemon=True).start()
            threading.Thread(target=self._pump, args=(u, c, 0.0), daemon=True).start()

    def _pump(self, src, dst, delay):
        n, last = 0, 0.0
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                n += 1
                at = max(time.monotonic() + (delay if n % 2 else 0.0), last)
                while (self.silent or time.monotonic() < at) and not self.closed:
                    time.sleep(0.01)
                last = at
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        self.closed = True
        for s in self.socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
