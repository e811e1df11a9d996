"""POST /v1/fine_tuning/jobs/preview resolves a create body exactly as creation would, and creates nothing."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.conftest import jsonl_bytes, upload_file


def body(file_id: str, **extra: Any) -> dict[str, Any]:
    return {"training_file": file_id, "strategy": {"type": "partial"}, **extra}


def test_the_preview_shows_the_settings_the_created_job_then_records(
    client: TestClient, auth: dict[str, str], minilm: str
) -> None:
    rows: list[dict[str, object]] = [{"text": f"t{i}", "label": "a" if i % 2 else "b"} for i in range(40)]
    file_id = upload_file(client, auth, jsonl_bytes(rows))

    preview = client.post("/v1/fine_tuning/jobs/preview", headers=auth, json=body(file_id, suffix="x"))
    assert preview.status_code == 200, preview.text
    assert client.get("/v1/fine_tuning/jobs", headers=auth).json()["data"] == []
    created = client.post("/v1/fine_tuning/jobs", headers=auth, json=body(file_id, suffix="x")).json()

    shown = preview.json()
    assert shown["object"] == "fine_tuning.job.preview"
    assert (shown["hyperparameters"], shown["strategy"]) == (created["hyperparameters"], created["strategy"])
    assert (shown["labels"], shown["model"], shown["training_file"]) == (["a", "b"], minilm, file_id)
    assert 0 < shown["trainable_parameters"] < shown["total_parameters"]
    assert shown["estimated_stored_bytes"] > 0


def test_a_preview_of_a_bad_body_is_refused_with_the_errors_creation_gives(
    client: TestClient, auth: dict[str, str], minilm: str
) -> None:
    for bad in ({"training_file": "file-missing"}, {"training_file": "x", "hyperparameters": {"n_epochs": 0}}):
        previewed = client.post("/v1/fine_tuning/jobs/preview", headers=auth, json=bad)
        created = client.post("/v1/fine_tuning/jobs", headers=auth, json=bad)
        assert previewed.status_code == created.status_code == 400
        assert previewed.json()["error"] == created.json()["error"]


def test_jobs_can_be_listed_by_status(client: TestClient, auth: dict[str, str], minilm: str) -> None:
    rows: list[dict[str, object]] = [{"text": f"t{i}", "label": "a" if i % 2 else "b"} for i in range(8)]
    file_id = upload_file(client, auth, jsonl_bytes(rows))
    queued, paused, cancelled = (
        client.post("/v1/fine_tuning/jobs", headers=auth, json={"training_file": file_id}).json()["id"]
        for _ in range(3)
    )
    client.post(f"/v1/fine_tuning/jobs/{paused}/pause", headers=auth)
    client.post(f"/v1/fine_tuning/jobs/{cancelled}/cancel", headers=auth)

    def listed(query: str) -> list[str]:
        return [job["id"] for job in client.get(f"/v1/fine_tuning/jobs?{query}", headers=auth).json()["data"]]

    assert listed("status=paused") == [paused]
    assert listed("status=cancelled&status=queued") == [cancelled, queued]
    assert listed("") == [cancelled, paused, queued]
    refused = client.get("/v1/fine_tuning/jobs?status=sleeping", headers=auth)
    assert refused.status_code == 400 and refused.json()["error"]["param"].startswith("status")
