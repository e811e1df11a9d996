"""The request-body guard: no body read without a key, none past its cap, none at a crawl.

A pure ASGI middleware wrapping `receive`, so it acts while the body streams, before anything
parses it. Uploads (POST /v1/files) stream and cap themselves (api/uploads.py); they get the pace
rules only. Whatever the application answers to a body it could not read (FastAPI turns a failed
read into a 400) is dropped for the guard's own answer.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import anyio
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import MISSING_KEY_MESSAGE, bearer_key_of
from api.errors import error_response
from models.errors import ErrorCode
from models.settings import Settings

logger = logging.getLogger(__name__)

# Routes that stream and cap their own bodies (api/uploads.py): (method, path).
SELF_CAPPED_ROUTES = frozenset({("POST", "/v1/files")})
AUTHENTICATED_PREFIX = "/v1/"


@dataclass(frozen=True)
class BodyLimits:
    max_body_bytes: int
    idle_timeout_seconds: float
    min_bytes_per_second: int

    @classmethod
    def from_settings(cls, settings: Settings) -> BodyLimits:
        return cls(
            max_body_bytes=settings.max_request_body_bytes,
            idle_timeout_seconds=settings.http_body_idle_timeout_seconds,
            min_bytes_per_second=settings.http_min_body_bytes_per_second,
        )


@dataclass(frozen=True)
class Refusal:
    """The guard's answer to a request whose body it will not take."""

    status_code: int
    message: str
    code: ErrorCode
    # A slow client's connection is closed; a refused body that is merely too large or unauthenticated
    # is discarded by uvicorn as it arrives, so the client can read the answer before it sends again.
    close_connection: bool = False

    async def answer(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            self.status_code, self.message, code=self.code.value, error_type="invalid_request_error"
        )
        if self.close_connection:
            response.headers["connection"] = "close"
        await response(scope, receive, send)


class BodyRefused(Exception):
    """Raised by the guarded `receive`; the guard answers with the refusal it carries."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal


def missing_key_refusal() -> Refusal:
    return Refusal(401, MISSING_KEY_MESSAGE, ErrorCode.unauthorized)


def too_large_refusal(limits: BodyLimits) -> Refusal:
    return Refusal(
        413,
        f"The request body is larger than {limits.max_body_bytes} bytes (GRAFT_MAX_REQUEST_BODY_BYTES); "
        "send a smaller body.",
        ErrorCode.payload_too_large,
    )


class PacedBody:
    """A request's `receive`, counting bytes against the cap and timing the waits while the body is incomplete.

    Only time spent waiting for the client counts toward its rate: while the application works on
    what it has, uvicorn stops reading and the client is held back by TCP, not by its own slowness.
    """

    def __init__(self, receive: Receive, limits: BodyLimits, *, capped: bool) -> None:
        self._receive = receive
        self._limits = limits
        self._capped = capped
        self.received_bytes = 0
        self.waited_seconds = 0.0
        self.complete = False
        self.disconnected = False
        self.refusal: Refusal | None = None

    async def receive(self) -> Message:
        if self.refusal is not None:
            raise BodyRefused(self.refusal)
        if self.complete:
            # After the body, `receive` only waits for a disconnect (e.g. while a download streams).
            message = await self._receive()
            self.disconnected = self.disconnected or message["type"] == "http.disconnect"
            return message
        allowed_seconds = self._wait_allowance()
        if allowed_seconds <= 0:
            raise self._refuse(self._too_slow_refusal(pause_seconds=0.0))
        started = time.monotonic()
        with anyio.move_on_after(allowed_seconds) as waiting:
            message = await self._receive()
        pause_seconds = time.monotonic() - started
        self.waited_seconds += pause_seconds
        if waiting.cancelled_caught:
            raise self._refuse(self._too_slow_refusal(pause_seconds))
        if message["type"] == "http.disconnect":
            self.disconnected = True
        elif message["type"] == "http.request":
            self.received_bytes += len(message.get("body", b""))
            if self._capped and self.received_bytes > self._limits.max_body_bytes:
                raise self._refuse(too_large_refusal(self._limits))
            self.complete = not message.get("more_body", False)
        return message

    def _wait_allowance(self) -> float:
        """Seconds the next chunk may take: the idle timeout, less once the average rate would fall too low.

        Below the minimum rate means: more time waited than `max(idle, bytes / rate)`, e.g. at the
        defaults 30 s for the first 300 KiB, then 1 s more per 10 KiB received.
        """
        idle = self._limits.idle_timeout_seconds
        if self._limits.min_bytes_per_second == 0:
            return idle
        budget = max(idle, self.received_bytes / self._limits.min_bytes_per_second) - self.waited_seconds
        return min(idle, budget)

    def _refuse(self, refusal: Refusal) -> BodyRefused:
        self.refusal = refusal
        return BodyRefused(refusal)

    def _too_slow_refusal(self, pause_seconds: float) -> Refusal:
        rules = f"the server waits at most {self._limits.idle_timeout_seconds:g} s for each piece of a body "
        rules += "(GRAFT_HTTP_BODY_IDLE_TIMEOUT_SECONDS)"
        if self._limits.min_bytes_per_second:
            rules += (
                f" and, past that time, needs at least {self._limits.min_bytes_per_second} bytes/s on average "
                "(GRAFT_HTTP_MIN_BODY_BYTES_PER_SECOND)"
            )
        return Refusal(
            408,
            f"The request body arrived too slowly ({self.received_bytes} bytes in {self.waited_seconds:.1f} s, "
            f"nothing in the last {pause_seconds:.1f} s): {rules}. Send the body without pauses; nothing of this "
            "request was kept.",
            ErrorCode.request_timeout,
            close_connection=True,
        )


class RequestBodyGuard:
    def __init__(
        self, app: ASGIApp, limits: BodyLimits, self_capped_routes: frozenset[tuple[str, str]] = SELF_CAPPED_ROUTES
    ) -> None:
        self.app = app
        self.limits = limits
        self.self_capped_routes = self_capped_routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        capped = (scope["method"], scope["path"]) not in self.self_capped_routes
        refusal = self._refusal_before_the_body(scope) if capped else None
        if refusal is not None:
            await refusal.answer(scope, receive, send)
            return
        body = PacedBody(receive, self.limits, capped=capped)
        response_started = False

        async def send_unless_refused(message: Message) -> None:
            nonlocal response_started
            if body.refusal is not None and not response_started:
                return  # the application's answer to a body it could not read; the guard answers instead
            response_started = response_started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, body.receive, send_unless_refused)
        except Exception as error:
            # Once the body is refused, what the application raises is a consequence of that; a client
            # that hung up (starlette's ClientDisconnect) is a normal event, logged below.
            if body.refusal is None and not isinstance(error, ClientDisconnect):
                raise
        if body.refusal is not None:
            if not response_started:
                await body.refusal.answer(scope, receive, send)
            # A refusal after the response started leaves it incomplete: uvicorn closes the connection.
        elif body.disconnected and not body.complete:
            # An upload's temporary file is removed by then (api.uploads); a JSON body was never kept.
            logger.info(
                "client closed the connection during %s %s after %d bytes of its body; nothing was kept",
                scope["method"],
                scope["path"],
                body.received_bytes,
            )

    def _refusal_before_the_body(self, scope: Scope) -> Refusal | None:
        headers = Headers(scope=scope)
        if scope["path"].startswith(AUTHENTICATED_PREFIX) and bearer_key_of(headers.get("authorization")) is None:
            return missing_key_refusal()
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.limits.max_body_bytes:
            return too_large_refusal(self.limits)
        return None
