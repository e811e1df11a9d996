"""/metrics: off by default; when enabled, the service's state from the database and the API's latency by route."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api.main import create_app
from models.services import workers
from models.settings import Settings
from models.storage.database import session_scope
from tests.conftest import REPO_ROOT


@pytest.fixture
def metrics_client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings.model_copy(update={"metrics_enabled": True}))) as test_client:
        yield test_client


def samples(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_metrics_are_off_unless_enabled(client: TestClient) -> None:
    assert client.get("/metrics").status_code == 404


def test_jobs_queue_uploads_and_workers_are_read_from_the_database(
    metrics_client: TestClient, auth: dict[str, str], new_job: Callable[[], str], settings: Settings
) -> None:
    new_job()
    paused = new_job()
    metrics_client.post(f"/v1/fine_tuning/jobs/{paused}/pause", headers=auth)
    with session_scope(settings.database_url) as session:
        workers.record_heartbeat(
            session, "gpu-host:41", hostname="gpu-host", gpus=[{"index": 0, "used_bytes": 5, "total_bytes": 80}]
        )

    found = samples(metrics_client)

    assert found[("graft_jobs", (("status", "queued"),))] == 1
    assert found[("graft_jobs", (("status", "paused"),))] == 1
    assert found[("graft_jobs", (("status", "running"),))] == 0
    assert found[("graft_queue_depth", ())] == 1
    assert found[("graft_queue_oldest_job_age_seconds", ())] >= 0
    assert found[("graft_uploads_total", ())] == 1  # new_job's one training file
    assert found[("graft_upload_bytes_total", ())] > 0
    assert found[("graft_worker_up", (("worker", "gpu-host:41"),))] == 1
    assert found[("graft_gpu_memory_used_bytes", (("gpu", "0"), ("worker", "gpu-host:41")))] == 5
    assert found[("graft_job_queue_wait_seconds_count", ())] == 0  # none has started


def test_request_latency_is_counted_by_route_template_and_status(
    metrics_client: TestClient, auth: dict[str, str], new_job: Callable[[], str]
) -> None:
    job_id = new_job()
    metrics_client.get(f"/v1/fine_tuning/jobs/{job_id}", headers=auth)
    metrics_client.get("/v1/fine_tuning/jobs/ftjob-missing", headers=auth)

    found = samples(metrics_client)

    route = "/v1/fine_tuning/jobs/{job_id}"
    ok = (("method", "GET"), ("route", route), ("status", "200"))
    missing = (("method", "GET"), ("route", route), ("status", "404"))
    assert found[("graft_http_request_duration_seconds_count", ok)] == 1
    assert found[("graft_http_request_duration_seconds_count", missing)] == 1
    assert not any(job_id in str(labels) for _, labels in found), "a job id must never become a label"


def test_the_grafana_dashboard_reads_only_metrics_the_service_exposes(
    metrics_client: TestClient, auth: dict[str, str], new_job: Callable[[], str], settings: Settings
) -> None:
    new_job()
    with session_scope(settings.database_url) as session:
        workers.record_heartbeat(session, "w:1", hostname="w", gpus=[{"index": 0, "used_bytes": 1, "total_bytes": 2}])
    exposed = {family.name for family in text_string_to_metric_families(metrics_client.get("/metrics").text)}
    dashboard = json.loads((REPO_ROOT / "deploy" / "grafana-dashboard.json").read_text(encoding="utf-8"))
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]

    read = {
        re.sub(r"_(bucket|count|sum|total)$", "", name)
        for expression in expressions
        for name in re.findall(r"\bgraft_[a-z_]+", expression)
    }

    assert read and read <= exposed, f"the dashboard reads metrics the service does not expose: {read - exposed}"
