"""The FastAPI application: routes, error rendering and settings wired together."""

from __future__ import annotations

from fastapi import FastAPI

from api.errors import install_error_handlers
from api.routes import files, jobs, models
from models.settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app. Tests pass their own settings; production reads GRAFT_* from the environment."""
    app = FastAPI(
        title="Graft",
        version="0.1.0",
        summary="Fine-tuning jobs for Hugging Face models, OpenAI-compatible.",
    )
    if settings is not None:
        app.dependency_overrides[get_settings] = lambda: settings
    install_error_handlers(app)
    app.include_router(files.router)
    app.include_router(jobs.router)
    app.include_router(models.router)

    @app.get("/healthz", include_in_schema=False)
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return app
