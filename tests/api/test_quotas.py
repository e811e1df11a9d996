"""Per-tenant quotas over HTTP: job slots (429), upload size and stored bytes (413), each tenant on its own.

Stored bytes hold files, fine-tuned weights and the checkpoints of unfinished jobs; a job whose
estimated storage does not fit is refused when it is created.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from fastapi.testclient import TestClient

from models.services import artifacts, checkpoints, quotas, runs, tenants
from models.services.artifacts import ArtifactKind
from models.services.quotas import Quota
from models.settings import Settings
from models.storage.database import session_scope
from models.storage.tables import BaseModel
from tests.conftest import jsonl_bytes, upload_file

SERVICE_MAX_ACTIVE_JOBS = 2
ROWS: list[dict[str, object]] = [
    {"text": f"sample {i}", "label": "positive" if i % 2 else "negative"} for i in range(20)
]
BOUNDARY = "graftquotaboundary"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The shared settings with a service-wide job-slot default small enough to reach."""
    return settings.model_copy(update={"tenant_max_active_jobs": SERVICE_MAX_ACTIVE_JOBS})


@pytest.fixture
def training_file(client: TestClient, auth: dict[str, str]) -> str:
    return upload_file(client, auth, jsonl_bytes(ROWS))


def set_quota(settings: Settings, tenant_name: str, quota: Quota, limit: int | None) -> None:
    with session_scope(settings.database_url) as session:
        quotas.set_tenant_quota(session, tenants.find_tenant(session, tenant_name), quota, limit)


def create_job(client: TestClient, headers: dict[str, str], training_file: str) -> Any:
    return client.post("/v1/fine_tuning/jobs", headers=headers, json={"training_file": training_file})


def post_upload(client: TestClient, headers: dict[str, str], content: bytes, *, sent: str) -> Any:
    """POST /v1/files with a Content-Length (`sent="content-length"`) or chunked, with none."""
    if sent == "content-length":
        return client.post(
            "/v1/files", headers=headers, files={"file": ("t.jsonl", content)}, data={"purpose": "fine-tune"}
        )
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="t.jsonl"\r\n\r\n'
    ).encode()

    def body() -> Iterator[bytes]:
        yield head
        for start in range(0, len(content), 64 * 1024):
            yield content[start : start + 64 * 1024]
        yield f"\r\n--{BOUNDARY}--\r\n".encode()

    return client.post(
        "/v1/files",
        headers={**headers, "content-type": f"multipart/form-data; boundary={BOUNDARY}"},
        content=body(),  # a generator: sent chunked, with no Content-Length
    )


def stored_blobs(settings: Settings) -> list[Path]:
    return sorted(path for path in settings.artifacts.rglob("*") if path.is_file())


def temporary_area(settings: Settings) -> list[Path]:
    tmp = settings.artifacts / ".tmp"
    return list(tmp.iterdir()) if tmp.is_dir() else []


def error(response: Any) -> dict[str, Any]:
    payload: dict[str, Any] = response.json()["error"]
    return payload


# Job slots: max_active_jobs → 429


def test_job_creation_at_max_active_jobs_is_a_429_naming_the_limit_with_retry_after(
    client: TestClient, auth: dict[str, str], training_file: str, minilm: str
) -> None:
    for _ in range(SERVICE_MAX_ACTIVE_JOBS):
        assert create_job(client, auth, training_file).status_code == 200
    response = create_job(client, auth, training_file)
    assert response.status_code == 429
    assert response.headers["retry-after"] == str(quotas.JOB_SLOT_RETRY_AFTER_SECONDS)
    assert response.headers["x-should-retry"] == "false"
    assert error(response) == {
        "message": "You have 2 queued or running fine-tuning jobs, the most your quota allows "
        "(max_active_jobs=2); retry when one of them ends.",
        "type": "rate_limit_error",
        "param": "max_active_jobs",
        "code": "quota_exceeded",
    }
    assert len(client.get("/v1/fine_tuning/jobs", headers=auth).json()["data"]) == SERVICE_MAX_ACTIVE_JOBS


def test_another_tenant_creates_jobs_while_one_is_at_its_limit(
    client: TestClient, auth: dict[str, str], other_auth: dict[str, str], training_file: str, minilm: str
) -> None:
    for _ in range(SERVICE_MAX_ACTIVE_JOBS):
        create_job(client, auth, training_file)
    assert create_job(client, auth, training_file).status_code == 429
    other_file = upload_file(client, other_auth, jsonl_bytes(ROWS))
    assert create_job(client, other_auth, other_file).status_code == 200
    assert create_job(client, auth, training_file).status_code == 429


def test_cancelling_a_job_frees_its_slot(
    client: TestClient, auth: dict[str, str], training_file: str, minilm: str
) -> None:
    job_ids = [create_job(client, auth, training_file).json()["id"] for _ in range(SERVICE_MAX_ACTIVE_JOBS)]
    assert create_job(client, auth, training_file).status_code == 429
    assert client.post(f"/v1/fine_tuning/jobs/{job_ids[0]}/cancel", headers=auth).json()["status"] == "cancelled"
    assert create_job(client, auth, training_file).status_code == 200
    assert create_job(client, auth, training_file).status_code == 429


def test_a_tenants_own_max_active_jobs_overrides_the_service_default(
    client: TestClient,
    auth: dict[str, str],
    other_auth: dict[str, str],
    settings: Settings,
    training_file: str,
    minilm: str,
) -> None:
    set_quota(settings, "acme", Quota.max_active_jobs, 3)
    for _ in range(3):
        assert create_job(client, auth, training_file).status_code == 200
    refused = create_job(client, auth, training_file)
    assert refused.status_code == 429
    assert "(max_active_jobs=3)" in error(refused)["message"]
    other_file = upload_file(client, other_auth, jsonl_bytes(ROWS))
    for _ in range(SERVICE_MAX_ACTIVE_JOBS):
        assert create_job(client, other_auth, other_file).status_code == 200
    assert create_job(client, other_auth, other_file).status_code == 429


def test_resetting_a_tenants_max_active_jobs_returns_it_to_the_default(
    client: TestClient, auth: dict[str, str], settings: Settings, training_file: str, minilm: str
) -> None:
    set_quota(settings, "acme", Quota.max_active_jobs, 1)
    assert create_job(client, auth, training_file).status_code == 200
    assert create_job(client, auth, training_file).status_code == 429
    set_quota(settings, "acme", Quota.max_active_jobs, None)
    assert create_job(client, auth, training_file).status_code == 200
    assert "(max_active_jobs=2)" in error(create_job(client, auth, training_file))["message"]


def test_openai_sdk_raises_rate_limit_error_at_the_job_limit_without_retrying(
    client: TestClient, auth: dict[str, str], settings: Settings, minilm: str
) -> None:
    set_quota(settings, "acme", Quota.max_active_jobs, 1)
    job_requests: list[Any] = []

    def count_job_creations(request: Any) -> None:
        if request.method == "POST" and request.url.path == "/v1/fine_tuning/jobs":
            job_requests.append(request)

    client.event_hooks["request"].append(count_job_creations)
    key = auth["Authorization"].removeprefix("Bearer ")
    with openai.OpenAI(
        api_key=key, base_url="http://testserver/v1", http_client=client, _strict_response_validation=True
    ) as sdk:
        uploaded = sdk.files.create(file=("train.jsonl", jsonl_bytes(ROWS)), purpose="fine-tune")
        sdk.fine_tuning.jobs.create(model=minilm, training_file=uploaded.id)
        started = time.monotonic()
        with pytest.raises(openai.RateLimitError) as refused:
            sdk.fine_tuning.jobs.create(model=minilm, training_file=uploaded.id)
        elapsed = time.monotonic() - started
    assert refused.value.status_code == 429
    assert refused.value.code == "quota_exceeded"
    assert refused.value.param == "max_active_jobs"
    assert len(job_requests) == 2  # the job that fits, then one refused request: no retries
    assert elapsed < 0.5  # the SDK's first retry would wait at least 0.5 s


def test_openapi_documents_the_429_of_job_creation(client: TestClient) -> None:
    responses = client.get("/openapi.json").json()["paths"]["/v1/fine_tuning/jobs"]["post"]["responses"]
    assert responses["429"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorResponse"}
    assert "Retry-After" in responses["429"]["headers"]


# Upload size: max_upload_bytes → 413


@pytest.mark.parametrize("sent", ["content-length", "chunked"])
@pytest.mark.parametrize("size_bytes", [101, 2 * 1024 * 1024], ids=["just-over", "far-over"])
def test_upload_over_the_tenants_max_upload_bytes_is_a_413_naming_it(
    client: TestClient, auth: dict[str, str], settings: Settings, sent: str, size_bytes: int
) -> None:
    set_quota(settings, "acme", Quota.max_upload_bytes, 100)
    response = post_upload(client, auth, b"x" * size_bytes, sent=sent)
    assert response.status_code == 413
    assert response.headers["x-should-retry"] == "false"
    assert error(response) == {
        "message": "file: larger than the upload limit of 100 bytes (max_upload_bytes)",
        "type": "invalid_request_error",
        "param": "file",
        "code": "file_too_large",
    }
    assert stored_blobs(settings) == []


def test_upload_at_the_tenants_max_upload_bytes_is_accepted_and_other_tenants_keep_the_service_limit(
    client: TestClient, auth: dict[str, str], other_auth: dict[str, str], settings: Settings
) -> None:
    content = jsonl_bytes(ROWS)
    set_quota(settings, "acme", Quota.max_upload_bytes, len(content))
    assert post_upload(client, auth, content, sent="chunked").status_code == 200
    assert post_upload(client, auth, content + b"\n", sent="chunked").status_code == 413
    assert post_upload(client, other_auth, content + b"\n", sent="chunked").status_code == 200


def test_a_tenants_max_upload_bytes_cannot_raise_the_service_limit(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    set_quota(settings, "acme", Quota.max_upload_bytes, 10 * settings.max_upload_bytes)
    response = post_upload(client, auth, b"x" * (settings.max_upload_bytes + 1), sent="chunked")
    assert response.status_code == 413
    assert error(response)["message"] == (
        f"file: larger than the upload limit of {settings.max_upload_bytes} bytes (max_upload_bytes)"
    )


# Stored bytes: max_stored_bytes → 413


@pytest.mark.parametrize("sent", ["content-length", "chunked"])
def test_upload_past_max_stored_bytes_is_a_413_naming_limit_and_usage_and_nothing_is_kept(
    client: TestClient, auth: dict[str, str], settings: Settings, sent: str
) -> None:
    content = jsonl_bytes(ROWS)
    set_quota(settings, "acme", Quota.max_stored_bytes, len(content) + 50)
    upload_file(client, auth, content)
    blobs_before = stored_blobs(settings)

    response = post_upload(client, auth, content, sent=sent)

    assert response.status_code == 413
    assert error(response) == {
        "message": f"file: storing it would take you past your storage quota "
        f"(max_stored_bytes={len(content) + 50} bytes); your files, fine-tuned weights and the checkpoints "
        f"of unfinished jobs use {len(content)} bytes, so at most 50 more fit. Delete files you no longer "
        "need, cancel paused jobs you will not resume (their checkpoints count), or ask an administrator "
        "for a larger quota; then retry.",
        "type": "invalid_request_error",
        "param": "max_stored_bytes",
        "code": "file_too_large",
    }
    assert stored_blobs(settings) == blobs_before
    assert temporary_area(settings) == []
    assert len(client.get("/v1/files", headers=auth).json()["data"]) == 1


@pytest.mark.parametrize("sent", ["content-length", "chunked"])
def test_upload_past_max_stored_bytes_is_cut_off_while_streaming(
    client: TestClient, auth: dict[str, str], settings: Settings, sent: str
) -> None:
    set_quota(settings, "acme", Quota.max_stored_bytes, 1000)
    # Not a dataset: had the body been stored whole, validation would answer 400 before any quota check.
    response = post_upload(client, auth, b"x" * (2 * 1024 * 1024), sent=sent)
    assert response.status_code == 413
    assert error(response)["param"] == "max_stored_bytes"
    assert stored_blobs(settings) == []


def test_deleting_a_file_frees_its_bytes_for_the_next_upload(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    content = jsonl_bytes(ROWS)
    set_quota(settings, "acme", Quota.max_stored_bytes, len(content) + 50)
    first = upload_file(client, auth, content)
    assert post_upload(client, auth, content, sent="chunked").status_code == 413
    assert client.delete(f"/v1/files/{first}", headers=auth).status_code == 200
    assert post_upload(client, auth, content, sent="chunked").status_code == 200


def test_weights_archives_count_toward_stored_bytes(
    client: TestClient, auth: dict[str, str], settings: Settings, training_file: str, minilm: str
) -> None:
    content = jsonl_bytes(ROWS)
    job_id = create_job(client, auth, training_file).json()["id"]
    with session_scope(settings.database_url) as session:
        artifacts.record_artifact(
            session, job_id, kind=ArtifactKind.weights_archive, blob_key="weights", size_bytes=1000, sha256="0" * 64
        )
    set_quota(settings, "acme", Quota.max_stored_bytes, 2 * len(content) + 999)

    response = post_upload(client, auth, content, sent="content-length")

    assert response.status_code == 413
    assert f"use {len(content) + 1000} bytes, so at most {len(content) - 1} more fit" in error(response)["message"]


def test_the_smaller_of_the_two_caps_is_the_one_named(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    set_quota(settings, "acme", Quota.max_upload_bytes, 100)
    set_quota(settings, "acme", Quota.max_stored_bytes, 1000)
    assert error(post_upload(client, auth, b"x" * 150, sent="chunked"))["param"] == "file"
    set_quota(settings, "acme", Quota.max_stored_bytes, 80)
    assert error(post_upload(client, auth, b"x" * 90, sent="chunked"))["param"] == "max_stored_bytes"


def test_a_tenant_at_its_storage_quota_does_not_limit_another_tenant(
    client: TestClient, auth: dict[str, str], other_auth: dict[str, str], settings: Settings
) -> None:
    content = jsonl_bytes(ROWS)
    set_quota(settings, "acme", Quota.max_stored_bytes, len(content))
    upload_file(client, auth, content)
    assert post_upload(client, auth, content, sent="chunked").status_code == 413
    assert post_upload(client, other_auth, content, sent="chunked").status_code == 200


# Jobs within max_stored_bytes: refused at creation (413) when their estimated peak does not fit

# all-MiniLM-L6-v2 (models.services.storage_estimates): 22,713,216 parameters. Under `full` a checkpoint holds
# them three times in float32 (weights, AdamW's two moments) plus 12 KiB: 272,570,880 bytes; three
# epochs keep three. The weights archive: 4 bytes a parameter, 90,852,864 bytes.
MINILM_FULL_CHECKPOINT_BYTES = 272_570_880
MINILM_WEIGHTS_BYTES = 90_852_864
MINILM_PARAMETERS = 22_713_216


def test_a_job_whose_estimated_storage_does_not_fit_is_a_413_naming_the_estimate_the_quota_and_the_usage(
    client: TestClient, auth: dict[str, str], settings: Settings, training_file: str, minilm: str
) -> None:
    in_store = len(jsonl_bytes(ROWS))
    set_quota(settings, "acme", Quota.max_stored_bytes, 500_000_000)

    response = create_job(client, auth, training_file)  # full, 3 epochs by default

    assert response.status_code == 413
    assert response.headers["x-should-retry"] == "false"
    assert error(response) == {
        "message": f"This job would store about {3 * MINILM_FULL_CHECKPOINT_BYTES} bytes at its peak "
        f"(3 epoch checkpoint(s) of {MINILM_FULL_CHECKPOINT_BYTES} bytes each while it runs (strategy full trains "
        f"{MINILM_PARAMETERS} of {minilm}'s {MINILM_PARAMETERS} parameters; a checkpoint holds them with "
        f"AdamW's two moments), then {MINILM_WEIGHTS_BYTES} bytes of fine-tuned weights), but your storage "
        f"quota is max_stored_bytes=500000000 bytes, and your files, fine-tuned weights and the checkpoints of "
        f"unfinished jobs use {in_store} bytes, which leaves {500_000_000 - in_store}. Delete files you no "
        "longer need, cancel paused jobs you will not resume (their checkpoints count), or ask an administrator "
        "for a larger quota, or choose fewer epochs or a strategy that trains fewer parameters (partial, "
        "feature_extraction); then retry.",
        "type": "invalid_request_error",
        "param": "max_stored_bytes",
        "code": "file_too_large",
    }
    assert client.get("/v1/fine_tuning/jobs", headers=auth).json()["data"] == []


def test_the_same_quota_admits_a_job_that_stores_less(
    client: TestClient, auth: dict[str, str], settings: Settings, training_file: str, minilm: str
) -> None:
    set_quota(settings, "acme", Quota.max_active_jobs, 3)
    set_quota(settings, "acme", Quota.max_stored_bytes, 500_000_000)
    one_epoch = {"training_file": training_file, "hyperparameters": {"n_epochs": 1}}
    head_only = {"training_file": training_file, "strategy": {"type": "feature_extraction"}}
    for body in (one_epoch, head_only):
        assert client.post("/v1/fine_tuning/jobs", headers=auth, json=body).status_code == 200
    set_quota(settings, "acme", Quota.max_stored_bytes, MINILM_WEIGHTS_BYTES)  # the files leave less than that
    refused = client.post("/v1/fine_tuning/jobs", headers=auth, json=head_only)
    assert (refused.status_code, error(refused)["param"]) == (413, "max_stored_bytes")


def test_a_paused_jobs_checkpoints_count_until_it_is_cancelled(
    client: TestClient, auth: dict[str, str], settings: Settings, training_file: str, minilm: str
) -> None:
    """The outside tester's case: a 273 MB checkpoint kept while paused, under a 250 kB quota."""
    content = jsonl_bytes(ROWS)
    job_id = create_job(client, auth, training_file).json()["id"]
    with session_scope(settings.database_url) as session:
        attempt = runs.claim_job(session, job_id, owner="w:1:t", lease_seconds=30)
        assert attempt is not None
        checkpoints.record_checkpoint(
            session, job_id, attempt, step=8, epoch=1, metrics={}, blob_key="k", size_bytes=273_000_000
        )
    assert client.post(f"/v1/fine_tuning/jobs/{job_id}/pause", headers=auth).status_code == 200
    with session_scope(settings.database_url) as session:
        assert runs.pause_run(session, job_id, attempt, step=8)
    set_quota(settings, "acme", Quota.max_stored_bytes, 250_000)

    upload = post_upload(client, auth, content, sent="chunked")
    assert upload.status_code == 413
    assert f"use {len(content) + 273_000_000} bytes, so at most 0 more fit" in error(upload)["message"]
    job = client.post(
        "/v1/fine_tuning/jobs", headers=auth, json={"training_file": training_file, "hyperparameters": {"n_epochs": 1}}
    )
    assert (job.status_code, error(job)["param"]) == (413, "max_stored_bytes")
    assert f"use {len(content) + 273_000_000} bytes, which leaves 0" in error(job)["message"]

    assert client.post(f"/v1/fine_tuning/jobs/{job_id}/cancel", headers=auth).json()["status"] == "cancelled"
    assert post_upload(client, auth, content, sent="chunked").status_code == 200


def test_a_model_without_an_estimate_is_refused_only_once_the_quota_is_full(
    client: TestClient, auth: dict[str, str], settings: Settings, training_file: str, minilm: str
) -> None:
    with session_scope(settings.database_url) as session:
        row = session.get(BaseModel, minilm)
        assert row is not None
        row.embedding_parameters = row.layer_parameters = row.top_parameters = None  # e.g. an uncached hub model
    in_store = len(jsonl_bytes(ROWS))
    set_quota(settings, "acme", Quota.max_stored_bytes, in_store + 1)
    assert create_job(client, auth, training_file).status_code == 200
    set_quota(settings, "acme", Quota.max_stored_bytes, in_store)
    refused = create_job(client, auth, training_file)
    assert refused.status_code == 413
    assert error(refused)["message"] == (
        "No room for a fine-tuning job, which stores at least its fine-tuned weights: your storage quota is "
        f"max_stored_bytes={in_store} bytes, and your files, fine-tuned weights and the checkpoints of unfinished "
        f"jobs use {in_store} bytes. Delete files you no longer need, cancel paused jobs you will not resume "
        "(their checkpoints count), or ask an administrator for a larger quota; then retry."
    )
