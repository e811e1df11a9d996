"""A bug in a handler is a 500 in the error shape, logged once, on a keep-alive connection that stays usable."""

from __future__ import annotations

import http.client
import json
import logging
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from api.main import create_app
from models.settings import Settings
from tests.live_api import running_server
from tests.processes import wait_for


class HandlerBug(Exception):
    pass


def app_with_buggy_routes(settings: Settings) -> FastAPI:
    """The real app plus two test-only routes: one raises before answering, one midway through its body."""
    app = create_app(settings)

    @app.get("/test-only/raises")
    def raises() -> None:
        raise HandlerBug("a bug in a handler")

    @app.get("/test-only/raises-mid-body")
    def raises_mid_body() -> StreamingResponse:
        def pieces() -> Iterator[bytes]:
            yield b"the first half"
            raise HandlerBug("a bug while streaming")

        return StreamingResponse(pieces())

    return app


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.exc_info is not None]


def test_an_unexpected_error_is_a_500_and_the_keep_alive_connection_serves_the_next_request(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with running_server(app_with_buggy_routes(settings), settings) as served:
        connection = http.client.HTTPConnection(served.host, served.port, timeout=10)
        try:
            connection.request("GET", "/test-only/raises")
            failed = connection.getresponse()
            body = failed.read()
            socket_after_the_500 = connection.sock
            connection.request("GET", "/healthz")
            healthy = connection.getresponse()
            healthy.read()
            same_socket = connection.sock is socket_after_the_500
        finally:
            connection.close()

    assert failed.status == 500
    assert json.loads(body) == {
        "error": {
            "message": "The server had an error while processing your request.",
            "type": "server_error",
            "param": None,
            "code": "internal_error",
        }
    }
    assert failed.getheader("connection") is None  # not "close"
    assert healthy.status == 200
    assert same_socket and socket_after_the_500 is not None
    logged = tracebacks(caplog)
    assert [record.getMessage() for record in logged] == ["unhandled error on GET /test-only/raises"]
    assert logged[0].exc_info is not None and logged[0].exc_info[0] is HandlerBug


def test_an_error_after_the_response_started_closes_the_connection_and_is_logged_once(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with running_server(app_with_buggy_routes(settings), settings) as served:
        connection = http.client.HTTPConnection(served.host, served.port, timeout=10)
        try:
            connection.request("GET", "/test-only/raises-mid-body")
            response = connection.getresponse()
            with pytest.raises(http.client.IncompleteRead):
                response.read()  # the only way left to tell the client: the body is cut short
        finally:
            connection.close()
        wait_for(lambda: tracebacks(caplog), timeout=10, what="the error to be logged")

    logged = tracebacks(caplog)
    assert [record.getMessage() for record in logged] == ["unhandled error on GET /test-only/raises-mid-body"]
