"""Rendering every failure as OpenAI's error object: {"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.validation_messages import body_model_of, describe_validation_error
from models.errors import ErrorCode, GraftError, QuotaExceeded
from models.storage.database import is_transient_database_error
from models.unicode_text import escape_surrogates

logger = logging.getLogger(__name__)

# The openai SDK retries 408/409/429/5xx by default; a definite "no" must not be retried.
_NO_RETRY = {"x-should-retry": "false"}
DATABASE_RETRY_AFTER_SECONDS = 1


def error_response(
    status_code: int, message: str, *, code: str, error_type: str, param: str | None = None
) -> JSONResponse:
    """OpenAI's error object. Message and param may echo a user's text: an unpaired surrogate in it is
    written out as its escape (`\\ud800`), so rendering the error can never fail."""
    headers = _NO_RETRY if 400 <= status_code < 500 and status_code != 429 else None
    body = {
        "error": {
            "message": escape_surrogates(message),
            "type": error_type,
            "param": None if param is None else escape_surrogates(param),
            "code": code,
        }
    }
    return JSONResponse(status_code=status_code, content=body, headers=headers)


def _http_error_message(request: Request, error: StarletteHTTPException) -> str:
    """The error's detail; Starlette's bare "Not Found" and "Method Not Allowed" say which URL and what to use."""
    detail, route = str(error.detail), f"{request.method} {request.url.path}"
    if error.status_code == 404 and detail == "Not Found":
        return f"Invalid URL ({route}); the routes this API serves are listed at /docs"
    if error.status_code == 405 and detail == "Method Not Allowed":
        # Not the Allow header's methods: Starlette lists only the first route matching the path.
        return f"Method not allowed ({route}); the methods each route takes are listed at /docs"
    return detail


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(GraftError)
    async def _domain_error(_request: Request, error: GraftError) -> JSONResponse:
        response = error_response(
            error.status_code,
            error.message,
            code=error.code.value,
            error_type=error.error_type,
            param=error.param,
        )
        if isinstance(error, QuotaExceeded):
            # Retry-After tells a client when; the SDK's own retries (seconds apart) would only spin.
            response.headers["Retry-After"] = str(error.retry_after_seconds)
            response.headers.update(_NO_RETRY)
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        param, message = describe_validation_error(error.errors(), body_model_of(request))
        return error_response(
            400,
            message,
            code=ErrorCode.invalid_request.value,
            error_type="invalid_request_error",
            param=param,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = ErrorCode.not_found if error.status_code == 404 else ErrorCode.invalid_request
        response = error_response(
            error.status_code, _http_error_message(request, error), code=code.value, error_type="invalid_request_error"
        )
        # Headers the status needs, such as a 416's Content-Range or a 405's Allow.
        response.headers.update(error.headers or {})
        return response

    @app.exception_handler(DBAPIError)
    async def _database_error(request: Request, error: DBAPIError) -> JSONResponse:
        if not is_transient_database_error(error):
            logger.exception("unhandled error on %s %s", request.method, request.url.path)
            return internal_error_response()
        # A dropped connection or a restarting server: say so, and let clients retry (the openai
        # SDK retries a 503 on its own, honouring Retry-After).
        logger.warning("transient database error on %s %s: %s", request.method, request.url.path, type(error).__name__)
        response = error_response(
            503,
            "The database is briefly unavailable; retry the request.",
            code=ErrorCode.service_unavailable.value,
            error_type="server_error",
        )
        response.headers["Retry-After"] = str(DATABASE_RETRY_AFTER_SECONDS)
        return response

    # Any other exception is a bug, answered by api.unexpected_errors (which keeps the connection usable).


def internal_error_response() -> JSONResponse:
    """The 500 of a bug: the request was valid, and the log has the traceback."""
    return error_response(
        500,
        "The server had an error while processing your request.",
        code=ErrorCode.internal_error.value,
        error_type="server_error",
    )
