"""A real webhook receiver on loopback for tests: it records each request and answers as scripted."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class ReceivedRequest:
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    received_at: float


@dataclass
class WebhookReceiver:
    """Answers the n-th request with `statuses[n]` (the last one from then on), after `delay_seconds`."""

    statuses: list[int] = field(default_factory=lambda: [200])
    delay_seconds: float = 0.0
    requests: list[ReceivedRequest] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def answer_for(self, index: int) -> int:
        return self.statuses[min(index, len(self.statuses) - 1)]


@contextmanager
def running_receiver(statuses: list[int] | None = None, delay_seconds: float = 0.0) -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(statuses=statuses or [200], delay_seconds=delay_seconds)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            with lock:
                index = len(receiver.requests)
                receiver.requests.append(
                    ReceivedRequest(self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.monotonic())
                )
            time.sleep(receiver.delay_seconds)
            self.send_response(receiver.answer_for(index))
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *_: object) -> None: ...

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
