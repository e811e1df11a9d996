"""Every response carries an x-request-id, and with JSON logs every line names its request and job."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from models.log_context import configure_json_logging, job_log_context
from models.settings import Settings


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    configure_json_logging(level="INFO", process="api")
    buffer = io.StringIO()
    root.handlers[0].setStream(buffer)  # type: ignore[attr-defined]
    yield buffer
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)


def test_a_response_carries_the_clients_request_id_or_a_new_one(client: TestClient) -> None:
    assert client.get("/healthz", headers={"X-Request-Id": "abc-123"}).headers["x-request-id"] == "abc-123"
    invented = client.get("/healthz", headers={"X-Request-Id": "no spaces allowed"}).headers["x-request-id"]
    assert invented != "no spaces allowed" and len(invented) == 32


def test_json_log_lines_name_the_request_and_the_job_of_the_path(settings: Settings, json_log: io.StringIO) -> None:
    app = create_app(settings)

    def note(job_id: str) -> dict[str, str]:
        logging.getLogger("api.routes.jobs").info("looked at the job")
        return {}

    app.add_api_route("/v1/fine_tuning/jobs/{job_id}/note", note)  # a route that logs, in the threadpool
    with TestClient(app) as client:
        client.get(
            "/v1/fine_tuning/jobs/ftjob-abc123/note", headers={"Authorization": "Bearer x", "X-Request-Id": "req-7"}
        )
        client.get("/healthz", headers={"X-Request-Id": "req-8"})
    with job_log_context("ftjob-from-a-run"):
        logging.getLogger("worker.runner").info("step written")
    logging.getLogger("worker.runner").info("between jobs")

    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    by_message = {line["message"]: line for line in lines}
    looked = by_message["looked at the job"]
    assert (looked["request_id"], looked["job_id"], looked["process"]) == ("req-7", "ftjob-abc123", "api")
    assert by_message["step written"]["job_id"] == "ftjob-from-a-run"
    assert (by_message["between jobs"]["job_id"], by_message["between jobs"]["request_id"]) == (None, None)
    assert all({"time", "level", "logger", "message", "request_id", "job_id", "process"} <= set(line) for line in lines)
