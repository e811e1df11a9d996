"""The FastAPI application: routes, error rendering and settings wired together."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from anyio import CapacityLimiter
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi_offline import FastAPIOffline

from api.errors import install_error_handlers
from api.event_feed import JobEventFeed
from api.metrics import install_metrics
from api.request_bodies import BodyLimits, RequestBodyGuard
from api.request_ids import RequestIds
from api.routes import files, jobs, models, webhooks
from api.routes.dashboard import mount_dashboard
from api.unexpected_errors import UnexpectedErrorGuard
from models.settings import Settings, get_settings
from models.storage.database import READ_POOL_SIZE
from models.storage.read_pool import AsyncReadPool
from models.wire.common import ErrorResponse

# Every operation may answer these; route-specific ones (409, 413, 429, …) are declared on the routes.
COMMON_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Invalid request; `param` names the field or file line"},
    401: {"model": ErrorResponse, "description": "Missing, malformed or revoked API key"},
    404: {"model": ErrorResponse, "description": "No such object for this tenant"},
    500: {"model": ErrorResponse, "description": "A bug: the request was valid"},
    503: {"model": ErrorResponse, "description": "Briefly unavailable (e.g. the database); retry after Retry-After"},
}
# Every documented operation takes the tenant's key; Swagger's Authorize button sends it.
BEARER_SCHEME = "bearerAuth"
SECURITY_SCHEMES = {
    BEARER_SCHEME: {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key from `graft keys create`, sent as `Authorization: Bearer YOUR_KEY`.",
    }
}
# Swagger UI shows a badge fetched from validator.swagger.io unless told not to; the docs stay offline.
SWAGGER_UI_PARAMETERS = {"validatorUrl": None, "persistAuthorization": True}


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app. Tests pass their own settings; production reads GRAFT_* from the environment."""
    # /docs and /redoc load Swagger UI and ReDoc from the fastapi-offline package, served by the app itself.
    app = FastAPIOffline(
        title="Graft",
        version="0.1.0",
        summary="Fine-tuning jobs for Hugging Face models, OpenAI-compatible.",
        lifespan=_lifespan,
        swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
    )
    # Read once here, at the edge; requests get it from app.state (api.deps.get_app_settings).
    app.state.settings = settings if settings is not None else get_settings()
    # Threads for models.storage.database.run_read, no more than its pool has connections (one per app: a limiter
    # belongs to the event loop that first waits on it).
    app.state.read_limiter = CapacityLimiter(READ_POOL_SIZE)
    # On PostgreSQL the lifespan opens an asyncio read pool (models.storage.read_pool); until then, and on
    # SQLite, reads take the threadpool.
    app.state.read_pool = None
    # Every event stream of this process is fed by one poller (api.event_feed), run by the lifespan.
    app.state.event_feed = JobEventFeed(
        app.state.settings.database_url,
        poll_seconds=app.state.settings.event_stream_poll_seconds,
        limiter=app.state.read_limiter,
    )
    install_error_handlers(app)
    # Added last, runs first: the error guard wraps the body guard, which wraps the routes.
    app.add_middleware(RequestBodyGuard, limits=BodyLimits.from_settings(app.state.settings))
    app.add_middleware(UnexpectedErrorGuard)
    app.add_middleware(RequestIds)  # outside the guards: their answers and logs carry the id too
    if app.state.settings.metrics_enabled:
        # Outermost, so a request refused by the guards is timed too.
        install_metrics(
            app,
            app.state.settings.database_url,
            worker_heartbeat_seconds=app.state.settings.worker_heartbeat_seconds,
        )
    for router in (files.router, jobs.router, models.router, webhooks.router):
        app.include_router(router, responses=COMMON_ERRORS)
    mount_dashboard(app)
    app.openapi = lambda: _openapi_without_422(app)  # type: ignore[method-assign]

    @app.get("/healthz", include_in_schema=False)
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """What lives as long as the server's event loop: the event feed, and the asyncio read pool on PostgreSQL."""
    async with anyio.create_task_group() as background, _read_pool(app):
        background.start_soon(app.state.event_feed.run)
        try:
            yield
        finally:
            background.cancel_scope.cancel()


@asynccontextmanager
async def _read_pool(app: FastAPI) -> AsyncIterator[None]:
    """The asyncio read pool: opened at start-up, closed at shutdown; none on SQLite."""
    pool = AsyncReadPool.for_database(app.state.settings.database_url)
    if pool is None:
        yield
        return
    await pool.open()
    app.state.read_pool = pool
    try:
        yield
    finally:
        app.state.read_pool = None
        await pool.close()


def _openapi_without_422(app: FastAPI) -> dict[str, Any]:
    """FastAPI documents 422 for validation errors; this API answers them with OpenAI's 400.

    The bearer key is declared once for every operation (/healthz is not documented).
    """
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
        schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
        schema["security"] = [{BEARER_SCHEME: []}]
        for path in schema["paths"].values():
            for operation in path.values():
                operation.get("responses", {}).pop("422", None)
        for name in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(name, None)
        app.openapi_schema = schema
    return app.openapi_schema
