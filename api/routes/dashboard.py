"""The dashboard: a page and its scripts, served by the API itself (no build step, nothing from a CDN).

The page signs in with an API key and then calls the same /v1 routes as the SDK; it has no access
of its own. Its policy lets it load and call nothing but this origin.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from starlette.staticfiles import StaticFiles

DASHBOARD_FILES = Path(__file__).resolve().parents[1] / "dashboard"
ASSETS_PATH = "/dashboard"
PAGE_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
    "cache-control": "no-cache",
}

router = APIRouter(include_in_schema=False)


@router.get("/")
def dashboard_page() -> FileResponse:
    return FileResponse(DASHBOARD_FILES / "index.html", media_type="text/html", headers=PAGE_HEADERS)


def mount_dashboard(app: FastAPI) -> None:
    """The page at `/`, its scripts and styles under /dashboard."""
    app.include_router(router)
    app.mount(ASSETS_PATH, StaticFiles(directory=DASHBOARD_FILES), name="dashboard")
