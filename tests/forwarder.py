"""A TCP forwarder: a server's second address, which a test can take away (nothing
listens there, open connections are cut) and bring back, while the server itself
stays up for everyone else sharing it (the suite's Prefect server, the run's registry)."""

import socket
import socketserver
import threading


class _Pipe(socketserver.BaseRequestHandler):
    def handle(self):
        try:
            upstream = socket.create_connection(self.server.upstream, timeout=10)
        except OSError:
            return
        upstream.settimeout(None)
        self.server.open.update({self.request, upstream})

        def pump(src: socket.socket, dst: socket.socket) -> None:
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                _cut(dst)

        back = threading.Thread(target=pump, args=(upstream, self.request), daemon=True)
        back.start()
        pump(self.request, upstream)
        back.join()
        self.server.open.difference_update({self.request, upstream})


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def _cut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class Forwarder:
    """127.0.0.1:`port` forwarded to `upstream` (host, port) while started."""

    def __init__(self, port: int, upstream: tuple[str, int]):
        self.port, self.upstream = port, upstream
        self._server: _Server | None = None

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "Forwarder":
        server = _Server(("127.0.0.1", self.port), _Pipe)
        server.upstream, server.open = self.upstream, set()
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self._server = server
        return self

    def stop(self) -> None:
        """Nothing listens any more, and the connections open through it are cut."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        for sock in list(server.open):
            _cut(sock)
