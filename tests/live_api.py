"""A real API process for tests (`python -m cli.main api`), plus byte-level multipart bodies to stream into it."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

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
