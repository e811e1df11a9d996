"""A loopback TCP proxy for fault tests: it can cut every open connection or refuse new ones."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable
from types import TracebackType

_ABORT = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST instead of FIN


class TcpProxy:
    """Forwards 127.0.0.1:`port` to `target_host`:`target_port`, one thread per direction per connection.

    `drop_connections()` resets every open connection, as a server crash or a dead NAT entry would.
    `refuse_connections()` also closes the listening socket, so connecting fails with ECONNREFUSED
    (as against a restarting server) until `accept_connections()` listens on the same port again.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self.accepted = 0  # connections forwarded so far
        self._listener: socket.socket | None = self._listen(0)
        self.port: int = self._listener.getsockname()[1]
        self._start(self._accept_loop, self._listener)

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def drop_connections(self) -> None:
        with self._lock:
            sockets, self._open = self._open, set()
        for connection in sockets:
            _abort(connection)

    def refuse_connections(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            _abort(listener)
        self.drop_connections()

    def accept_connections(self) -> None:
        with self._lock:
            if self._listener is not None:
                return
            self._listener = listener = self._listen(self.port)
        self._start(self._accept_loop, listener)

    def close(self) -> None:
        self.refuse_connections()
        for thread in self._threads:
            thread.join(timeout=5)

    @staticmethod
    def _listen(port: int) -> socket.socket:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(64)
        return listener

    def _start(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # the listener was closed: refusing, or closing
            try:
                upstream = socket.create_connection(self._target)
            except OSError:
                _abort(client)
                continue
            with self._lock:
                if self._listener is not listener:  # refusing began while this one was accepted
                    _abort(client)
                    _abort(upstream)
                    return
                self._open.update((client, upstream))
                self.accepted += 1
            self._start(self._pump, client, upstream)
            self._start(self._pump, upstream, client)

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass  # the proxy dropped the connection, or the other side did
        with self._lock:
            self._open.discard(source)
            self._open.discard(sink)
        _abort(sink)


def _abort(connection: socket.socket) -> None:
    """Reset the connection and wake any thread blocked on it (close() alone wakes nobody)."""
    try:
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _ABORT)
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed or never connected
    connection.close()
