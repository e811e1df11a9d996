"""Rendering every failure as OpenAI's error object: {"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from models.errors import ErrorCode, GraftError

logger = logging.getLogger(__name__)

# The openai SDK retries 408/409/429/5xx by default; a definite "no" must not be retried.
_NO_RETRY = {"x-should-retry": "false"}


def error_response(
    status_code: int, message: str, *, code: str, error_type: str, param: str | None = None
) -> JSONResponse:
    headers = _NO_RETRY if 400 <= status_code < 500 and status_code != 429 else None
    body = {"error": {"message": message, "type": error_type, "param": param, "code": code}}
    return JSONResponse(status_code=status_code, content=body, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(GraftError)
    async def _domain_error(_request: Request, error: GraftError) -> JSONResponse:
        return error_response(
            error.status_code,
            error.message,
            code=error.code.value,
            error_type=error.error_type,
            param=error.param,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0]
        location = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path", "header")]
        param = ".".join(location) or None
        message = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
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
        return error_response(error.status_code, str(error.detail), code=code.value, error_type="invalid_request_error")

    @app.exception_handler(Exception)
    async def _unexpected_error(request: Request, error: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(
            500,
            "The server had an error while processing your request.",
            code=ErrorCode.internal_error.value,
            error_type="server_error",
        )
