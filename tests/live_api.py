"""A real API for tests, as a process (`python -m cli.main api`) or a uvicorn thread, and raw bodies to send it."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn
from starlette.types import ASGIApp

from api.server import server_config
from models.settings import Settings
from tests.processes import REPO_ROOT, service_environment, stop_process, wait_for

BOUNDARY = "graftlivetestboundary"
MULTIPART_CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


@dataclass
class LiveApi:
    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path

    def peak_rss_bytes(self) -> int:
        """The process's high-water resident set (VmHWM): what it ever held in memory at once."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmHWM in /proc status")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def api_environment(settings: Settings, **overrides: str) -> dict[str, str]:
    """The service environment, plus the upload limit the `settings` fixture sets (5 MiB)."""
    return {**service_environment(settings), "GRAFT_MAX_UPLOAD_BYTES": str(settings.max_upload_bytes), **overrides}


@contextmanager
def running_api(settings: Settings, log_path: Path, **environment: str) -> Iterator[LiveApi]:
    """`graft api` on a free loopback port; yields once /healthz answers, stops the process on exit."""
    port = free_port()
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "api", "--host", "127.0.0.1", "--port", str(port)],
            env=api_environment(settings, **environment),
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    live = LiveApi(process, f"http://127.0.0.1:{port}", log_path)

    def healthy() -> bool:
        assert process.poll() is None, log_path.read_text(errors="replace")
        try:
            return httpx.get(f"{live.base_url}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(healthy, timeout=60, what="the API process to answer /healthz")
        yield live
    finally:
        stop_process(process)


@dataclass
class ServedApp:
    host: str
    port: int

    @classmethod
    def at(cls, base_url: str) -> ServedApp:
        host, _, port = base_url.removeprefix("http://").partition(":")
        return cls(host, int(port))

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def connect(self) -> socket.socket:
        """A raw TCP connection to the server, for clients no HTTP library would imitate."""
        return socket.create_connection((self.host, self.port), timeout=10)


@contextmanager
def running_server(app: ASGIApp, settings: Settings) -> Iterator[ServedApp]:
    """`app` served by uvicorn on a free loopback port, configured as `graft api` configures it
    (api.server), in a thread of the test process, so a test can add routes and read its logs."""
    port = free_port()
    server = uvicorn.Server(server_config(app, settings, "127.0.0.1", port, log_config=None))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started or not thread.is_alive(), timeout=30, what="uvicorn to start")
        assert server.started, "uvicorn did not start"
        yield ServedApp("127.0.0.1", port)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        if thread.is_alive():  # a connection a test left open: stop waiting for it
            server.force_exit = True
            thread.join(timeout=10)


def read_http_response(connection: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and body of one response with a Content-Length, read off a raw socket."""
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        chunk = connection.recv(65536)
        assert chunk, f"the server closed the connection mid-response: {buffer!r}"
        buffer += chunk
    head, _, body = buffer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in header_lines)}
    while len(body) < int(headers["content-length"]):
        chunk = connection.recv(65536)
        assert chunk, "the server closed the connection mid-body"
        body += chunk
    return int(status_line.split()[1]), headers, body


def closed_by_server(connection: socket.socket, timeout: float) -> bool:
    """Whether the server closes `connection` within `timeout` seconds (reading and dropping what it sends)."""
    connection.settimeout(timeout)
    try:
        while connection.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return True


def multipart_head(filename: bytes = b"train.jsonl", purpose: bytes = b"fine-tune") -> bytes:
    """The purpose part and the file part's headers; the file's bytes follow, then `multipart_tail()`."""
    return (
        b"--" + BOUNDARY.encode() + b'\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n' + purpose + b"\r\n"
        b"--" + BOUNDARY.encode() + b'\r\nContent-Disposition: form-data; name="file"; filename="' + filename + b'"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n"
    )


def multipart_tail() -> bytes:
    return b"\r\n--" + BOUNDARY.encode() + b"--\r\n"


def tree_size_bytes(root: Path) -> int:
    """Bytes of every file under `root`, tolerating files that vanish while it walks."""
    total = 0
    for path in root.rglob("*"):
        try:
            if path.is_file():
                total += path.stat().st_size
        except FileNotFoundError:
            continue
    return total
