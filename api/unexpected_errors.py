"""The last resort for a bug: a 500 in the error shape, logged once, on a connection that stays usable.

Starlette's ServerErrorMiddleware answers an unhandled exception and then re-raises it, so uvicorn
logs it a second time and closes the keep-alive connection: the client's next pooled request
fails with a reset. This pure ASGI middleware sits just inside it and ends the exception there.
"""

from __future__ import annotations

import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import internal_error_response

logger = logging.getLogger(__name__)


class UnexpectedErrorGuard:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        response_started = False

        async def send_noting_start(message: Message) -> None:
            nonlocal response_started
            response_started = response_started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_noting_start)
        except Exception:
            logger.exception("unhandled error on %s %s", scope["method"], scope["path"])
            if response_started:
                # Part of a response is out: returning leaves it incomplete, and uvicorn closes the
                # connection, the only way left to tell the client.
                return
            await internal_error_response()(scope, receive, send)
