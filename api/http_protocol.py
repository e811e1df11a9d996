"""uvicorn's HTTP/1.1 connection protocol held to a header deadline and to the connection cap.

uvicorn times a connection only while it idles between requests (its keep-alive timer, which
any incoming byte cancels), so a client that opens a connection and sends its headers a byte at
a time, or never, holds it forever. Here a connection must complete each request's headers within
the header timeout, counted from when it opened or from the end of the previous response (which
also bounds how long a refused body that uvicorn discards may keep arriving). Past the cap of
concurrent connections or requests, a request is answered 503 in the error shape.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.types import Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from api.errors import error_response
from models.errors import ErrorCode

BUSY_RETRY_AFTER_SECONDS = 1


class DeadlineHttpProtocol(HttpToolsProtocol):
    """Set `header_timeout_seconds` through `protocol_with_header_timeout`; the cap is uvicorn's `limit_concurrency`."""

    header_timeout_seconds: float = 10.0

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        # uvicorn's own check answers a plain-text 503 and lets one connection fewer in than the
        # limit (it counts the new connection itself); this one answers in the error shape.
        self.max_connections = self.limit_concurrency
        self.limit_concurrency = None
        self.service_app = self.app
        self.header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_deadline()
        super().connection_lost(exc)

    def on_headers_complete(self) -> None:
        self._disarm_header_deadline()
        # uvicorn reads self.app when it starts the request's cycle, at the end of this call.
        self.app = self.service_app if not self._over_capacity() else self._answer_busy
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        next_request_ready = bool(self.pipeline)  # a pipelined request's headers are complete already
        super().on_response_complete()
        if not next_request_ready and not self.transport.is_closing():
            self._arm_header_deadline()

    def _arm_header_deadline(self) -> None:
        self._disarm_header_deadline()
        self.header_deadline = self.loop.call_later(self.header_timeout_seconds, self._close_for_slow_headers)

    def _disarm_header_deadline(self) -> None:
        if self.header_deadline is not None:
            self.header_deadline.cancel()
            self.header_deadline = None

    def _close_for_slow_headers(self) -> None:
        self.header_deadline = None
        if not self.transport.is_closing():
            self.logger.debug(
                "%s: no complete request headers within %g s; connection closed",
                self.client,
                self.header_timeout_seconds,
            )
            self.transport.close()

    def _over_capacity(self) -> bool:
        if self.max_connections is None:
            return False
        # connections counts this one; tasks does not count this request yet.
        return len(self.connections) > self.max_connections or len(self.tasks) >= self.max_connections

    async def _answer_busy(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.logger.warning("refused a request: %d connections or requests at once is the limit", self.max_connections)
        response = error_response(
            503,
            f"The server is serving its limit of {self.max_connections} connections at once "
            "(GRAFT_HTTP_MAX_CONNECTIONS); retry shortly.",
            code=ErrorCode.service_unavailable.value,
            error_type="server_error",
        )
        response.headers["Retry-After"] = str(BUSY_RETRY_AFTER_SECONDS)
        response.headers["connection"] = "close"
        await response(scope, receive, send)


def protocol_with_header_timeout(seconds: float) -> type[DeadlineHttpProtocol]:
    """The protocol class uvicorn's `Config(http=…)` takes, with the header deadline set."""
    attributes: dict[str, Any] = {"header_timeout_seconds": seconds}
    return type("GraftHttpProtocol", (DeadlineHttpProtocol,), attributes)
