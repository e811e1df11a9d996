"""Sync handlers hand their database connection back in their own thread, so many clients never stall the API."""

from __future__ import annotations

import anyio
import anyio.to_thread
import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from api.main import create_app
from api.routes import files, jobs, models
from api.routing import SessionReleasingRoute, release_sessions_on_return
from models.settings import Settings
from models.storage import database as db


def test_every_route_of_the_api_releases_its_session() -> None:
    routes = [route for router in (files.router, jobs.router, models.router) for route in router.routes]
    assert len(routes) > 10
    assert all(isinstance(route, SessionReleasingRoute) for route in routes)


def test_the_wrapped_handler_closes_its_session_when_it_returns_and_when_it_raises(settings: Settings) -> None:
    sessions: list[Session] = []

    def handler(session: Session, fail: bool) -> int:
        session.execute(text("SELECT 1"))
        sessions.append(session)
        if fail:
            raise ValueError("domain error")
        return 7

    wrapped = release_sessions_on_return(handler)
    factory = db.session_factory(settings.database_url)
    assert wrapped(session=factory(), fail=False) == 7
    with pytest.raises(ValueError, match="domain error"):
        wrapped(session=factory(), fail=True)
    assert [session.in_transaction() for session in sessions] == [False, False]
    assert db.get_engine(settings.database_url).pool.checkedout() == 0  # type: ignore[attr-defined]


def test_more_clients_than_threads_and_connections_are_all_answered(
    settings: Settings, client: TestClient, auth: dict[str, str], files: tuple[str, str], minilm: str
) -> None:
    """2 threads and 1 connection, 12 clients at once. Without the release, a request holding the
    connection waited for a thread to validate its response while both threads waited for the connection."""
    created = client.post("/v1/fine_tuning/jobs", headers=auth, json={"training_file": files[0]})
    assert created.status_code == 200, created.text
    job_id = created.json()["id"]
    engine = create_engine(settings.database_url, pool_size=1, max_overflow=0, pool_timeout=3)
    db.close_engine(settings.database_url)
    db._make_sqlite_concurrent(engine)
    db._ENGINES[settings.database_url] = engine
    app = create_app(settings)
    statuses: list[int] = []

    async def one_client(http: httpx.AsyncClient) -> None:
        for _ in range(3):
            response = await http.get(f"/v1/fine_tuning/jobs/{job_id}", headers=auth)
            statuses.append(response.status_code)

    async def many_clients() -> None:
        anyio.to_thread.current_default_thread_limiter().total_tokens = 2
        transport = httpx.ASGITransport(app=app)
        with anyio.fail_after(20):
            async with (
                httpx.AsyncClient(transport=transport, base_url="http://graft") as http,
                anyio.create_task_group() as clients,
            ):
                for _ in range(12):
                    clients.start_soon(one_client, http)

    anyio.run(many_clients)
    assert statuses == [200] * 36
