"""Rendering every failure as OpenAI's error object: {"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from models.db import is_transient_database_error
from models.errors import ErrorCode, GraftError, QuotaExceeded

logger = logging.getLogger(__name__)

# The openai SDK retries 408/409/429/5xx by default; a definite "no" must not be retried.
_NO_RETRY = {"x-should-retry": "false"}
DATABASE_RETRY_AFTER_SECONDS = 1


def error_response(
    status_code: int, message: str, *, code: str, error_type: str, param: str | None = None
) -> JSONResponse:
    headers = _NO_RETRY if 400 <= status_code < 500 and status_code != 429 else None
    body = {"error": {"message": message, "type": error_type, "param": param, "code": code}}
    return JSONResponse(status_code=status_code, content=body, headers=headers)


_LOCATION_ROOTS = {"body", "query", "path", "header"}
_TYPE_TAGS = {"int", "float", "str", "bool", "dict", "list", "none"}


def field_path(location: tuple[int | str, ...] | list[int | str]) -> str | None:
    """`hyperparameters.n_epochs` from pydantic's location, without its request part and union-member tags.

    Pydantic adds the member type it tried (`int`, `literal['auto']`, `function-after[...]`) to a
    union field's location; the user's field is what precedes it.
    """
    parts = []
    for part in location:
        if isinstance(part, int) or part in _LOCATION_ROOTS:
            continue
        if part in _TYPE_TAGS or "[" in part or "(" in part:
            break
        parts.append(part)
    return ".".join(parts) or None


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
    async def _validation_error(_request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0]
        param = field_path(first.get("loc", ()))
        message = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
        if first.get("type") == "json_invalid":
            param, message = None, f"the request body is not valid JSON ({first.get('ctx', {}).get('error', message)})"
        return error_response(
            400,
            f"{param}: {message}" if param else message,
            code=ErrorCode.invalid_request.value,
            error_type="invalid_request_error",
            param=param,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = ErrorCode.not_found if error.status_code == 404 else ErrorCode.invalid_request
        response = error_response(
            error.status_code, str(error.detail), code=code.value, error_type="invalid_request_error"
        )
        # Headers the status needs, such as a 416's Content-Range or a 405's Allow.
        response.headers.update(error.headers or {})
        return response

    @app.exception_handler(DBAPIError)
    async def _database_error(request: Request, error: DBAPIError) -> JSONResponse:
        if not is_transient_database_error(error):
            return await _unexpected_error(request, error)
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

    @app.exception_handler(Exception)
    async def _unexpected_error(request: Request, error: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(
            500,
            "The server had an error while processing your request.",
            code=ErrorCode.internal_error.value,
            error_type="server_error",
        )
