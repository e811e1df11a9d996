"""One job all the way: HTTP upload → PostgreSQL → Redis → a real Celery worker → MiniLM → weights."""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from transformers import pipeline

from api.main import create_app
from models.services import catalog
from models.settings import Settings
from models.storage.database import session_scope
from tests.conftest import jsonl_bytes, make_tenant_key, sample_rows
from tests.processes import running_worker, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def api(production_settings: Settings) -> Iterator[TestClient]:
    with session_scope(production_settings.database_url) as session:
        catalog.ensure_default_base_model(session)
    with TestClient(create_app(production_settings)) as client:
        yield client


def upload(client: TestClient, headers: dict[str, str], rows: list[dict[str, object]], name: str) -> str:
    response = client.post(
        "/v1/files", headers=headers, files={"file": (name, jsonl_bytes(rows))}, data={"purpose": "fine-tune"}
    )
    assert response.status_code == 200, response.text
    file_id: str = response.json()["id"]
    return file_id


def test_minilm_fine_tuned_through_redis_and_postgresql_beats_chance(
    api: TestClient, production_settings: Settings, tmp_path: Path
) -> None:
    headers = {"Authorization": f"Bearer {make_tenant_key(production_settings, 'e2e')}"}
    validation_rows = sample_rows("sst2", "validation", 200)
    training = upload(api, headers, sample_rows("sst2", "train", 800), "sst2-train.jsonl")
    validation = upload(api, headers, validation_rows, "sst2-validation.jsonl")
    with running_worker(production_settings, tmp_path / "worker.log"):
        created = api.post(
            "/v1/fine_tuning/jobs",
            headers=headers,
            json={
                "training_file": training,
                "validation_file": validation,
                "strategy": {"type": "partial"},
                "hyperparameters": {"n_epochs": 2},
                "seed": 0,
            },
        )
        assert created.status_code == 200, created.text
        job_id = created.json()["id"]

        def finished() -> dict[str, Any] | None:
            job: dict[str, Any] = api.get(f"/v1/fine_tuning/jobs/{job_id}", headers=headers).json()
            return job if job["status"] in ("succeeded", "failed", "cancelled") else None

        job = wait_for(finished, timeout=420, interval=1.0, what="the MiniLM job to finish")
    assert job["status"] == "succeeded", (job, (tmp_path / "worker.log").read_text(errors="replace")[-3000:])
    assert job["strategy"] == {"type": "partial", "trainable_layers": 2, "regularization": None}
    assert job["trainable_parameters"] < job["total_parameters"]

    weights = api.get(f"/v1/fine_tuning/jobs/{job_id}/weights", headers=headers)
    assert weights.headers["etag"] == f'"{hashlib.sha256(weights.content).hexdigest()}"'
    ranged = api.get(f"/v1/fine_tuning/jobs/{job_id}/weights", headers={**headers, "Range": "bytes=0-1023"})
    assert ranged.status_code == 206
    assert ranged.content == weights.content[:1024]
    with tarfile.open(fileobj=BytesIO(weights.content)) as archive:
        archive.extractall(tmp_path / "model", filter="data")
    classify = pipeline("text-classification", model=str(tmp_path / "model"))
    predictions = classify([str(row["text"]) for row in validation_rows], batch_size=64)
    accuracy = sum(p["label"] == row["label"] for p, row in zip(predictions, validation_rows, strict=True)) / len(
        validation_rows
    )
    assert accuracy > 0.7, accuracy
