"""Serving the API with uvicorn: the HTTP server's limits and timeouts, all read from Settings here."""

from __future__ import annotations

from typing import Any

import uvicorn
from starlette.types import ASGIApp
from uvicorn.config import LOGGING_CONFIG

from api.http_protocol import protocol_with_header_timeout
from api.main import create_app
from models.log_context import LogFormat, configure_json_logging
from models.settings import Settings


def server_config(
    app: ASGIApp,
    settings: Settings,
    host: str,
    port: int,
    *,
    log_config: dict[str, Any] | None = LOGGING_CONFIG,
) -> uvicorn.Config:
    """uvicorn's configuration for `app`. Tests pass `log_config=None` to keep their own logging.

    The body timeouts live in the app (api.request_bodies), where a 408 can be answered in the error shape.
    """
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=protocol_with_header_timeout(settings.http_header_timeout_seconds),
        limit_concurrency=settings.http_max_connections,
        log_config=log_config,
        log_level=settings.log_level.lower(),
    )


def serve(settings: Settings, host: str, port: int) -> None:
    """Serve the API on host:port until SIGINT or SIGTERM."""
    log_config: dict[str, Any] | None = LOGGING_CONFIG
    if settings.log_format is LogFormat.json:
        configure_json_logging(level=settings.log_level, process="api")
        log_config = None  # uvicorn's loggers go through the root logger's JSON handler
    uvicorn.Server(server_config(create_app(settings), settings, host, port, log_config=log_config)).run()
