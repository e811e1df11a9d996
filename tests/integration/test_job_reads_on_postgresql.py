"""The job GET on PostgreSQL, where it is awaited on the event loop through models.storage.read_pool.

The route's tests from tests/api run here again against PostgreSQL, and the pool's own behaviour is
pinned down: the same body as a session's read, a dropped connection read again, an outage a 503.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.engine import make_url

from api.main import create_app
from api.routes import jobs as job_routes
from models.services import tenants
from models.settings import Settings
from models.storage import read_pool
from models.storage.database import READ_POOL_SIZE, session_scope
from models.storage.read_pool import READ_POOL_APPLICATION_NAME
from models.storage.tables import Job, utc_now
from models.wire.jobs import JobRead
from tests.api.test_auth import (  # noqa: F401 - collected here again, against PostgreSQL
    test_a_job_get_records_the_keys_last_use_at_most_once_a_minute,
    test_a_revoked_key_stops_reading_jobs_at_once,
    test_job_get_checks_the_key_before_the_job,
)
from tests.api.test_jobs import (  # noqa: F401 - collected here again, against PostgreSQL
    test_job_get_answers_the_job_exactly_as_the_list_shows_it,
    test_job_get_of_a_malformed_or_missing_id_is_404,
    training_file,
)
from tests.conftest import jsonl_bytes, upload_file
from tests.processes import wait_for
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration

OUTAGE_SECONDS = 10
RECOVERY_SECONDS = 1.5
ROWS = [{"text": f"row {i}", "label": i % 2} for i in range(8)]


@pytest.fixture
def settings(production_settings: Settings) -> Settings:
    production_settings.data_dir.mkdir(parents=True, exist_ok=True)
    return production_settings


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """The API with its lifespan run, so the read pool is open; the threaded read fails the test if taken."""
    app = create_app(settings)
    with TestClient(app) as test_client:
        assert app.state.read_pool is not None
        yield test_client


@pytest.fixture(autouse=True)
def no_threaded_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    def threaded_read(*_: object) -> None:
        raise AssertionError("a job GET on PostgreSQL took the threadpool path")

    monkeypatch.setattr(job_routes, "run_read", threaded_read)


def finished_job(client: TestClient, settings: Settings, auth: dict[str, str], minilm: str) -> str:
    """A job with every optional column set, as a failed run after some progress leaves it."""
    file_id = upload_file(client, auth, jsonl_bytes(ROWS))
    job_id: str = client.post("/v1/fine_tuning/jobs", headers=auth, json={"training_file": file_id}).json()["id"]
    with session_scope(settings.database_url) as session:
        job = session.get_one(Job, job_id)
        job.status = "failed"
        job.started_at = utc_now() - timedelta(minutes=3)
        job.finished_at = utc_now()
        job.error_code, job.error_message, job.error_param = "out_of_memory", "CUDA out of memory", "batch_size"
        job.trained_tokens, job.trainable_parameters, job.total_parameters = 1234, 77, 22_000_000
        job.progress = {"step": 3, "total_steps": 6, "epoch": 1, "percent": 50.0}
        job.performance = {
            "samples_per_second": 210.5,
            "tokens_per_second": 4000.0,
            "seconds_to_first_step": 0.4,
            "peak_memory_bytes": 10**9,
            "frozen_features": "cached",
        }
    return job_id


def test_the_pool_answers_exactly_what_a_session_reads(
    client: TestClient, settings: Settings, auth: dict[str, str], minilm: str
) -> None:
    job_id = finished_job(client, settings, auth, minilm)
    response = client.get(f"/v1/fine_tuning/jobs/{job_id}", headers=auth)
    assert response.status_code == 200
    with session_scope(settings.database_url) as session:
        expected = JobRead.from_row(session.get_one(Job, job_id)).model_dump(mode="json")
    assert response.json() == expected
    assert response.json()["finished_at"] - response.json()["created_at"] < 60  # UTC on both sides


def test_another_tenants_job_is_404_through_the_pool(
    client: TestClient, settings: Settings, auth: dict[str, str], other_auth: dict[str, str], minilm: str
) -> None:
    job_id = finished_job(client, settings, auth, minilm)
    response = client.get(f"/v1/fine_tuning/jobs/{job_id}", headers=other_auth)
    assert response.status_code == 404
    assert response.json()["error"]["param"] == "fine_tuning_job_id"


def test_reads_whose_connections_the_server_dropped_are_answered(
    client: TestClient, settings: Settings, auth: dict[str, str], minilm: str, caplog: pytest.LogCaptureFixture
) -> None:
    job_id = finished_job(client, settings, auth, minilm)
    assert client.get(f"/v1/fine_tuning/jobs/{job_id}", headers=auth).status_code == 200
    wait_for(lambda: len(pool_backends(settings, "pid")) == READ_POOL_SIZE, timeout=10, what="the pool to fill")
    terminated = pool_backends(settings, "pg_terminate_backend(pid)")
    assert len(terminated) == READ_POOL_SIZE  # the pool's connections, killed as a server restart would
    with caplog.at_level(logging.WARNING, logger="models.storage.blobs.read_pool"):
        responses = [client.get(f"/v1/fine_tuning/jobs/{job_id}", headers=auth) for _ in range(3)]
    assert [response.status_code for response in responses] == [200, 200, 200]
    assert any("dropped" in record.getMessage() for record in caplog.records)


def pool_backends(settings: Settings, column: str) -> list[object]:
    """`column` for each idle connection of the API's read pool, as pg_stat_activity lists them."""
    with session_scope(settings.database_url) as session:
        return list(
            session.scalars(
                text(
                    f"SELECT {column} FROM pg_stat_activity "  # noqa: S608 - a column of this test's own choosing
                    "WHERE datname = :name AND application_name = :pool AND state = 'idle'"
                ),
                {"name": make_url(settings.database_url).database, "pool": READ_POOL_APPLICATION_NAME},
            )
        )


def test_an_unreachable_database_is_a_503_and_reads_recover_promptly_once_it_is_back(
    settings: Settings, minilm: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An outage longer than the pool's reconnect window: once the server is back, the next reads get through."""
    monkeypatch.setattr(read_pool, "READ_POOL_RECONNECT_SECONDS", 1.0)
    server = make_url(settings.database_url)
    assert server.host is not None and server.port is not None
    with session_scope(settings.database_url) as session:
        _, key = tenants.create_api_key(session, tenants.create_tenant(session, "acme"))
    with TcpProxy(server.host, server.port) as proxy:
        proxied = server.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        app = create_app(settings.model_copy(update={"database_url": proxied}))
        with TestClient(app) as client:
            headers = {"Authorization": f"Bearer {key}"}
            missing = "/v1/fine_tuning/jobs/ftjob-" + "a" * 24
            assert client.get(missing, headers=headers).status_code == 404
            proxy.drop_connections()
            proxy.refuse_connections()
            response = client.get(missing, headers=headers)
            assert response.status_code == 503
            assert response.headers["retry-after"] == "1"
            assert response.json()["error"]["code"] == "service_unavailable"
            time.sleep(OUTAGE_SECONDS)  # no reads meanwhile: only the pool's own attempts to reconnect
            proxy.accept_connections()
            # The pool opens connections again by itself, at once: the API answers without a restart.
            deadline = time.monotonic() + RECOVERY_SECONDS
            while (status := client.get(missing, headers=headers).status_code) == 503 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert status == 404
