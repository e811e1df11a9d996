"""Slow clients against a real uvicorn configured by api.server: header deadline, body pace, connection cap."""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from api.main import create_app
from models.settings import Settings
from tests.live_api import (
    BOUNDARY,
    ServedApp,
    closed_by_server,
    multipart_head,
    read_http_response,
    running_api,
    running_server,
)
from tests.processes import wait_for

HEADER_TIMEOUT_SECONDS = 0.5
BODY_IDLE_TIMEOUT_SECONDS = 0.5
MIN_BODY_BYTES_PER_SECOND = 1000
MAX_CONNECTIONS = 2
CLOSE_DEADLINE_SECONDS = 10.0  # generous for a loaded CI machine; the timeouts under test are 0.5 s
PARTIAL_HEADERS = b"GET /healthz HTTP/1.1\r\nHost: graft\r\nUser-Agent: slow"
HEALTH_REQUEST = b"GET /healthz HTTP/1.1\r\nHost: graft\r\n\r\n"


@pytest.fixture
def slow_client_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "http_header_timeout_seconds": HEADER_TIMEOUT_SECONDS,
            "http_body_idle_timeout_seconds": BODY_IDLE_TIMEOUT_SECONDS,
            "http_min_body_bytes_per_second": MIN_BODY_BYTES_PER_SECOND,
            "http_max_connections": MAX_CONNECTIONS,
        }
    )


@pytest.fixture
def served(slow_client_settings: Settings) -> Iterator[ServedApp]:
    with running_server(create_app(slow_client_settings), slow_client_settings) as server:
        yield server


def server_closes_within(connection: socket.socket, seconds: float) -> bool:
    """Whether the server closes the connection within `seconds`: waits on the socket, never sleeps blindly."""
    readable, _, _ = select.select([connection], [], [], seconds)
    if not readable:
        return False
    try:
        return connection.recv(65536) == b""
    except ConnectionResetError:
        return True


def served_connection(served: ServedApp) -> socket.socket:
    """A connection that has had one request answered 200 (so the server counts it), kept open."""

    def answered() -> socket.socket | None:
        connection = served.connect()
        connection.sendall(HEALTH_REQUEST)
        status, _, _ = read_http_response(connection)
        if status == 200:
            return connection
        connection.close()  # a connection of an earlier poll was still being torn down
        return None

    return wait_for(answered, timeout=CLOSE_DEADLINE_SECONDS, what="a connection served 200")


# ---------------------------------------------------------------------------------------------
# Header deadline: uvicorn times only idle keep-alive connections; ours times each request's headers.
# ---------------------------------------------------------------------------------------------


def test_connections_that_never_finish_their_headers_are_closed_at_the_header_timeout(served: ServedApp) -> None:
    connections = [served.connect() for _ in range(30)]
    opened_at = time.monotonic()
    try:
        for index, connection in enumerate(connections):
            if index % 2:
                connection.sendall(PARTIAL_HEADERS)  # half send a request line and part of the headers
        assert all(closed_by_server(connection, CLOSE_DEADLINE_SECONDS) for connection in connections)
        assert time.monotonic() - opened_at >= HEADER_TIMEOUT_SECONDS
    finally:
        for connection in connections:
            connection.close()
    with httpx.Client(base_url=served.base_url) as http:
        assert http.get("/healthz").status_code == 200


def test_headers_trickled_a_byte_at_a_time_are_cut_off_at_the_header_timeout(served: ServedApp) -> None:
    with served.connect() as connection:
        started = time.monotonic()
        closed = False
        for byte in PARTIAL_HEADERS * 20:
            try:
                connection.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            # One byte per 50 ms (each gap short of any idle timeout), until the server hangs up.
            if server_closes_within(connection, 0.05):
                closed = True
                break
        elapsed = time.monotonic() - started
    assert closed, "the server kept a connection whose headers never ended"
    assert HEADER_TIMEOUT_SECONDS <= elapsed < CLOSE_DEADLINE_SECONDS


def test_a_keep_alive_connection_gets_the_header_timeout_anew_for_each_request(served: ServedApp) -> None:
    with served.connect() as connection:
        for _ in range(3):
            connection.sendall(HEALTH_REQUEST)
            assert read_http_response(connection)[0] == 200
        connection.sendall(PARTIAL_HEADERS)
        assert server_closes_within(connection, CLOSE_DEADLINE_SECONDS)


def test_a_request_whose_body_outlasts_the_header_timeout_is_still_answered(
    served: ServedApp, auth: dict[str, str]
) -> None:
    body = b"{" + b" " * 3000 + b"}"  # an object without its required field: a 400 once read whole
    head = (
        b"POST /v1/fine_tuning/jobs HTTP/1.1\r\nHost: graft\r\nContent-Type: application/json\r\n"
        b"Authorization: " + auth["Authorization"].encode() + b"\r\nContent-Length: " + str(len(body)).encode()
    )
    with served.connect() as connection:
        connection.sendall(head + b"\r\n\r\n")
        for piece in (body[:1000], body[1000:2000], body[2000:]):
            # 0.3 s between pieces: under the idle timeout, and 1000 bytes a piece keeps the average
            # rate up; 0.9 s in all: past the header timeout, which no longer applies.
            assert not server_closes_within(connection, 0.3)
            connection.sendall(piece)
        status, _, answer = read_http_response(connection)
    assert status == 400, answer
    error = json.loads(answer)["error"]
    assert (error["code"], error["param"]) == ("invalid_request_error", "training_file")


# ---------------------------------------------------------------------------------------------
# Body pace: a stalled or crawling body is a 408 in the error shape, and nothing of it is kept.
# ---------------------------------------------------------------------------------------------


def test_a_body_that_stalls_past_the_idle_timeout_is_answered_408_and_the_connection_closed(
    served: ServedApp, auth: dict[str, str]
) -> None:
    with served.connect() as connection:
        started = time.monotonic()
        connection.sendall(
            b"POST /v1/fine_tuning/jobs HTTP/1.1\r\nHost: graft\r\nContent-Type: application/json\r\n"
            b"Authorization: " + auth["Authorization"].encode() + b"\r\nContent-Length: 100\r\n\r\n"
            b'{"training'
        )
        status, headers, answer = read_http_response(connection)
        elapsed = time.monotonic() - started
        assert server_closes_within(connection, CLOSE_DEADLINE_SECONDS)
    assert status == 408, answer
    error = json.loads(answer)["error"]
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "request_timeout", None)
    assert "GRAFT_HTTP_BODY_IDLE_TIMEOUT_SECONDS" in error["message"]
    assert headers["connection"] == "close"
    assert BODY_IDLE_TIMEOUT_SECONDS <= elapsed < CLOSE_DEADLINE_SECONDS


def files_under(root: Path) -> set[Path]:
    return {path for path in root.rglob("*") if path.is_file()}


def upload_head(authorization: str) -> bytes:
    return (
        b"POST /v1/files HTTP/1.1\r\nHost: graft\r\nAuthorization: " + authorization.encode() + b"\r\n"
        b"Content-Type: multipart/form-data; boundary=" + BOUNDARY.encode() + b"\r\n"
        b"Content-Length: 100000\r\n\r\n" + multipart_head()
    )


def json_head(authorization: str) -> bytes:
    return (
        b"POST /v1/fine_tuning/jobs HTTP/1.1\r\nHost: graft\r\nContent-Type: application/json\r\n"
        b"Authorization: " + authorization.encode() + b"\r\nContent-Length: 100000\r\n\r\n"
        b'{"training_file": "'
    )


@pytest.mark.parametrize("head", [pytest.param(upload_head, id="upload"), pytest.param(json_head, id="json-body")])
def test_a_body_trickling_below_the_minimum_rate_is_answered_408_and_nothing_is_kept(
    served: ServedApp, slow_client_settings: Settings, auth: dict[str, str], head: Callable[[str], bytes]
) -> None:
    artifacts = slow_client_settings.artifacts
    files_seen_while_streaming: set[Path] = set()
    with served.connect() as connection:
        connection.sendall(head(auth["Authorization"]))
        started = time.monotonic()
        answered = False
        while time.monotonic() - started < CLOSE_DEADLINE_SECONDS:
            files_seen_while_streaming |= files_under(artifacts)
            # 1 byte per 20 ms: 50 bytes/s, each gap far under the idle timeout, the rate far under 1000 bytes/s.
            readable, _, _ = select.select([connection], [], [], 0.02)
            if readable:
                answered = True
                break
            connection.sendall(b"y")
        assert answered, "the server kept taking a body at 50 bytes/s"
        status, headers, answer = read_http_response(connection)
        elapsed = time.monotonic() - started
    assert status == 408, answer
    error = json.loads(answer)["error"]
    assert (error["code"], error["param"]) == ("request_timeout", None)
    assert f"at least {MIN_BODY_BYTES_PER_SECOND} bytes/s" in error["message"]
    assert headers["connection"] == "close"
    # Past the idle time (the rate is judged from then on), but long before a stall would be.
    assert BODY_IDLE_TIMEOUT_SECONDS <= elapsed < CLOSE_DEADLINE_SECONDS
    if head is upload_head:
        assert files_seen_while_streaming, "the upload's temporary file never appeared"
    assert files_under(artifacts) == set()  # the upload's temporary file is gone
    with httpx.Client(base_url=served.base_url, headers=auth) as http:
        assert http.get("/v1/files").json()["data"] == []


# ---------------------------------------------------------------------------------------------
# Connection cap: past GRAFT_HTTP_MAX_CONNECTIONS, a request is a 503 in the error shape.
# ---------------------------------------------------------------------------------------------


def test_a_connection_past_the_cap_is_answered_503_and_served_once_one_closes(served: ServedApp) -> None:
    first, second = served_connection(served), served_connection(served)
    with first, second, served.connect() as third:
        third.sendall(HEALTH_REQUEST)
        status, headers, answer = read_http_response(third)
        assert status == 503, answer
        assert json.loads(answer)["error"] == {
            "message": "The server is serving its limit of 2 connections at once (GRAFT_HTTP_MAX_CONNECTIONS); "
            "retry shortly.",
            "type": "server_error",
            "param": None,
            "code": "service_unavailable",
        }
        assert (headers["retry-after"], headers["connection"]) == ("1", "close")
        assert server_closes_within(third, CLOSE_DEADLINE_SECONDS)
        first.close()
        served_connection(served).close()  # a place is free again


# ---------------------------------------------------------------------------------------------
# `graft api` itself reads these settings from its environment.
# ---------------------------------------------------------------------------------------------


def test_graft_api_applies_the_header_timeout_and_connection_cap_from_its_environment(
    settings: Settings, tmp_path: Path
) -> None:
    environment = {
        "GRAFT_HTTP_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT_SECONDS),
        "GRAFT_HTTP_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
    }
    with running_api(settings, tmp_path / "api.log", **environment) as api:
        served = ServedApp.at(api.base_url)
        with served.connect() as slow:
            slow.sendall(PARTIAL_HEADERS)
            assert server_closes_within(slow, CLOSE_DEADLINE_SECONDS)
        first, second = served_connection(served), served_connection(served)
        with first, second, served.connect() as third:
            third.sendall(HEALTH_REQUEST)
            assert read_http_response(third)[0] == 503
