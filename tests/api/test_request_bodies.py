"""The request-body guard: a /v1 body is never read without a key, nor past GRAFT_MAX_REQUEST_BODY_BYTES."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import httpx
import pytest
from fastapi import FastAPI
from starlette.types import Message

from api.main import create_app
from models.settings import Settings
from tests.conftest import make_tenant_key
from tests.live_api import running_api

MIB = 1024 * 1024
SMALL_CAP_BYTES = 1000


@dataclass
class Exchange:
    """One request played straight into the ASGI app, and what came back."""

    chunks: list[bytes]
    chunks_read: int = 0
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    @property
    def error(self) -> dict[str, object]:
        error: dict[str, object] = json.loads(self.body)["error"]
        return error


def exchange(
    app: FastAPI, method: str, path: str, headers: dict[str, str], chunks: list[bytes], *, hang_up: bool = False
) -> Exchange:
    """Call `app` with a body of `chunks`, counting how many of them it asked for; `hang_up`: the client
    disconnects after the last chunk instead of ending the body."""
    played = Exchange(chunks)

    async def receive() -> Message:
        if played.chunks_read < len(chunks):
            played.chunks_read += 1
            return {
                "type": "http.request",
                "body": chunks[played.chunks_read - 1],
                "more_body": hang_up or played.chunks_read < len(chunks),
            }
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            played.status = message["status"]
            played.headers = {name.decode(): value.decode() for name, value in message["headers"]}
        elif message["type"] == "http.response.body":
            played.body += message.get("body", b"")

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(name.lower().encode(), value.encode()) for name, value in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "state": {},
    }
    anyio.run(app, scope, receive, send)
    return played


def json_chunks(total_bytes: int, chunk_bytes: int = 64 * 1024) -> list[bytes]:
    """A JSON object of `total_bytes`, in chunks: valid once whole, so only its size can refuse it."""
    head, tail = b'{"training_file": "', b'"}'
    body = head + b"x" * (total_bytes - len(head) - len(tail)) + tail
    return [body[start : start + chunk_bytes] for start in range(0, len(body), chunk_bytes)]


@pytest.mark.parametrize(
    ("method", "path", "authorization"),
    [
        pytest.param("POST", "/v1/fine_tuning/jobs", None, id="create-job-no-header"),
        pytest.param("POST", "/v1/fine_tuning/jobs", "Basic dXNlcjpwYXNz", id="create-job-basic-auth"),
        pytest.param("POST", "/v1/fine_tuning/jobs", "Bearer   ", id="create-job-empty-bearer"),
        pytest.param("POST", "/v1/fine_tuning/jobs/ftjob-abc/cancel", None, id="cancel"),
        pytest.param("POST", "/v1/files", None, id="upload"),
        pytest.param("POST", "/v1/no-such-route", None, id="unknown-route"),
    ],
)
def test_a_v1_request_without_a_bearer_key_is_refused_401_before_its_body_is_read(
    settings: Settings, method: str, path: str, authorization: str | None
) -> None:
    headers = {"content-type": "application/json"}
    if authorization is not None:
        headers["authorization"] = authorization
    played = exchange(create_app(settings), method, path, headers, json_chunks(8 * MIB))

    assert played.status == 401, played.body
    assert (played.error["code"], played.error["param"]) == ("invalid_api_key", None)
    assert "Authorization: Bearer" in str(played.error["message"])
    assert played.chunks_read == 0


def test_a_declared_content_length_over_the_cap_is_refused_413_before_the_body_is_read(settings: Settings) -> None:
    chunks = json_chunks(settings.max_request_body_bytes + 1)
    headers = {"authorization": "Bearer some-key", "content-length": str(sum(map(len, chunks)))}
    played = exchange(create_app(settings), "POST", "/v1/fine_tuning/jobs", headers, chunks)

    assert played.status == 413, played.body
    assert played.error == {
        "message": "The request body is larger than 1048576 bytes (GRAFT_MAX_REQUEST_BODY_BYTES); send a smaller body.",
        "type": "invalid_request_error",
        "param": None,
        "code": "file_too_large",
    }
    assert played.chunks_read == 0


def test_a_chunked_body_is_refused_413_as_soon_as_its_count_passes_the_cap(
    settings: Settings, auth: dict[str, str]
) -> None:
    capped = settings.model_copy(update={"max_request_body_bytes": SMALL_CAP_BYTES})
    chunks = [b" " * 300] * 10  # no Content-Length: 1200 bytes counted at the 4th chunk
    played = exchange(create_app(capped), "POST", "/v1/fine_tuning/jobs", auth, chunks)

    assert played.status == 413, played.body
    assert (played.error["code"], played.error["param"]) == ("file_too_large", None)
    assert f"larger than {SMALL_CAP_BYTES} bytes" in str(played.error["message"])
    assert played.chunks_read == 4


@pytest.mark.parametrize(("body_bytes", "status"), [(SMALL_CAP_BYTES, 400), (SMALL_CAP_BYTES + 1, 413)])
def test_a_body_of_exactly_the_cap_is_read_and_one_byte_more_is_not(
    settings: Settings, auth: dict[str, str], body_bytes: int, status: int
) -> None:
    capped = settings.model_copy(update={"max_request_body_bytes": SMALL_CAP_BYTES})
    chunks = json_chunks(body_bytes, chunk_bytes=100)
    played = exchange(create_app(capped), "POST", "/v1/fine_tuning/jobs", auth, chunks)

    assert played.status == status, played.body
    # 400: the whole body was read and validated (the file id names no file); 413: it never got that far.
    assert played.error["code"] == ("invalid_request_error" if status == 400 else "file_too_large")


def test_a_client_hanging_up_mid_body_is_one_info_line_without_a_traceback(
    settings: Settings, auth: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    played = exchange(
        create_app(settings), "POST", "/v1/fine_tuning/jobs", auth, [b'{"training', b"_file"], hang_up=True
    )

    assert played.chunks_read == 2
    assert [(record.name, record.levelno, record.getMessage()) for record in caplog.records] == [
        (
            "api.request_bodies",
            logging.INFO,
            "client closed the connection during POST /v1/fine_tuning/jobs after 15 bytes of its body; "
            "nothing was kept",
        )
    ]


# ---------------------------------------------------------------------------------------------
# Against a real `graft api` process: 200 MiB bodies leave its memory flat.
# ---------------------------------------------------------------------------------------------

HUGE_BODY_BYTES = 200 * MIB
MEMORY_GROWTH_ALLOWANCE_BYTES = 16 * MIB  # buffers and allocator slack; the body is 200 MiB


def huge_json_body() -> Iterator[bytes]:
    block = b"x" * MIB
    yield b'{"training_file": "'
    for _ in range(HUGE_BODY_BYTES // MIB):
        yield block
    yield b'"}'


def test_a_200_mib_body_leaves_the_api_memory_flat_with_or_without_a_key(settings: Settings, tmp_path: Path) -> None:
    key = make_tenant_key(settings, "acme")
    declared_length = str(sum(map(len, huge_json_body())))
    cases = [
        ({}, None, 401, "invalid_api_key"),
        ({}, declared_length, 401, "invalid_api_key"),
        ({"authorization": f"Bearer {key}"}, None, 413, "file_too_large"),
        ({"authorization": f"Bearer {key}"}, declared_length, 413, "file_too_large"),
    ]
    with running_api(settings, tmp_path / "api.log") as api, httpx.Client(base_url=api.base_url, timeout=60) as http:
        warm_up = http.post("/v1/fine_tuning/jobs", headers={"authorization": f"Bearer {key}"}, json={})
        assert warm_up.status_code == 400, warm_up.text
        baseline = api.peak_rss_bytes()
        for headers, content_length, status, code in cases:
            if content_length is not None:
                headers = {**headers, "content-length": content_length}
            response = http.post("/v1/fine_tuning/jobs", headers=headers, content=huge_json_body())
            assert response.status_code == status, (headers.keys(), response.text)
            assert (response.json()["error"]["code"], response.json()["error"]["param"]) == (code, None)
        growth = api.peak_rss_bytes() - baseline
        # The connection survived the refusals: uvicorn dropped each unread body as it arrived.
        assert http.get("/healthz").status_code == 200

    assert growth < MEMORY_GROWTH_ALLOWANCE_BYTES, f"peak RSS grew by {growth / MIB:.1f} MiB"
