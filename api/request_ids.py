"""Every request gets an id (the client's `X-Request-Id` when it is sane), answered in `x-request-id` and put
on every log line of the request, with the job id its path names."""

from __future__ import annotations

import re
import uuid

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from models.log_context import job_id_var, request_id_var

_SANE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_JOB_IN_PATH = re.compile(r"^/v1/fine_tuning/jobs/(ftjob-[A-Za-z0-9]{1,64})")


class RequestIds:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        offered = Headers(scope=scope).get("x-request-id", "")
        request_id = offered if _SANE_ID.fullmatch(offered) else uuid.uuid4().hex
        job = _JOB_IN_PATH.match(scope["path"])
        request_token = request_id_var.set(request_id)
        job_token = job_id_var.set(job.group(1) if job else None)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(request_token)
            job_id_var.reset(job_token)
