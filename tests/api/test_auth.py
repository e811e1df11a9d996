from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from models.services import tenants
from models.settings import Settings
from models.storage.database import session_scope
from models.storage.tables import ApiKey, Tenant, utc_now
from tests.conftest import jsonl_bytes, upload_file

ROWS = [{"text": "good", "label": "pos"}, {"text": "bad", "label": "neg"}]


@pytest.mark.parametrize(
    "header",
    [None, "Bearer", "Basic abc", "Bearer sk-graft-short", "Bearer sk-graft-" + "a" * 12 + "_" + "b" * 40],
)
def test_missing_malformed_or_unknown_key_is_401_in_openai_shape(client: TestClient, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    response = client.get("/v1/files", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_revoked_key_stops_working_at_once(client: TestClient, settings: Settings) -> None:
    with session_scope(settings.database_url) as session:
        row, key = tenants.create_api_key(session, tenants.create_tenant(session, "initech"))
    headers = {"Authorization": f"Bearer {key}"}
    assert client.get("/v1/files", headers=headers).status_code == 200
    with session_scope(settings.database_url) as session:
        tenants.revoke_api_key(session, row.id)
    assert client.get("/v1/files", headers=headers).status_code == 401


def test_keys_are_stored_only_as_hashes(settings: Settings) -> None:
    with session_scope(settings.database_url) as session:
        row, key = tenants.create_api_key(session, tenants.create_tenant(session, "hooli"))
        assert key.split("_")[-1] not in (row.secret_sha256, row.lookup_prefix)
        assert len(row.secret_sha256) == 64


def test_another_tenants_objects_answer_404_like_missing_ones(
    client: TestClient, auth: dict[str, str], other_auth: dict[str, str], minilm: str
) -> None:
    file_id = upload_file(client, auth, jsonl_bytes(ROWS))
    job_id = client.post("/v1/fine_tuning/jobs", headers=auth, json={"training_file": file_id}).json()["id"]
    missing_file, missing_job = "file-" + "z" * 24, "ftjob-" + "z" * 24
    for own, missing in [
        (f"/v1/files/{file_id}", f"/v1/files/{missing_file}"),
        (f"/v1/files/{file_id}/content", f"/v1/files/{missing_file}/content"),
        (f"/v1/fine_tuning/jobs/{job_id}", f"/v1/fine_tuning/jobs/{missing_job}"),
        (f"/v1/fine_tuning/jobs/{job_id}/events", f"/v1/fine_tuning/jobs/{missing_job}/events"),
        (f"/v1/fine_tuning/jobs/{job_id}/checkpoints", f"/v1/fine_tuning/jobs/{missing_job}/checkpoints"),
        (f"/v1/fine_tuning/jobs/{job_id}/weights", f"/v1/fine_tuning/jobs/{missing_job}/weights"),
    ]:
        foreign = client.get(own, headers=other_auth)
        absent = client.get(missing, headers=other_auth)
        assert foreign.status_code == absent.status_code == 404, own
        assert foreign.json()["error"]["code"] == absent.json()["error"]["code"]
    assert client.post(f"/v1/fine_tuning/jobs/{job_id}/cancel", headers=other_auth).status_code == 404
    assert client.delete(f"/v1/files/{file_id}", headers=other_auth).status_code == 404
    assert client.get("/v1/files", headers=other_auth).json()["data"] == []
    assert client.get("/v1/fine_tuning/jobs", headers=other_auth).json()["data"] == []
    foreign_job = client.post("/v1/fine_tuning/jobs", headers=other_auth, json={"training_file": file_id})
    assert foreign_job.status_code == 400
    assert foreign_job.json()["error"]["param"] == "training_file"
    assert client.get(f"/v1/fine_tuning/jobs/{job_id}", headers=auth).json()["status"] == "queued"


@pytest.mark.parametrize(
    "header",
    [None, "Bearer", "Basic abc", "Bearer sk-graft-short", "Bearer sk-graft-" + "a" * 12 + "_" + "b" * 40],
)
def test_job_get_checks_the_key_before_the_job(client: TestClient, header: str | None) -> None:
    """The job GET reads key and job in one statement; a bad key is still a 401, never a 404."""
    headers = {"Authorization": header} if header else {}
    response = client.get("/v1/fine_tuning/jobs/ftjob-" + "z" * 24, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_a_revoked_key_stops_reading_jobs_at_once(
    client: TestClient, settings: Settings, auth: dict[str, str], minilm: str
) -> None:
    with session_scope(settings.database_url) as session:
        tenant_id = tenants.authenticate(session, auth["Authorization"].removeprefix("Bearer "))
        row, key = tenants.create_api_key(session, session.get_one(Tenant, tenant_id))
    file_id = upload_file(client, auth, jsonl_bytes(ROWS))
    job_id = client.post("/v1/fine_tuning/jobs", headers=auth, json={"training_file": file_id}).json()["id"]
    headers = {"Authorization": f"Bearer {key}"}
    assert client.get(f"/v1/fine_tuning/jobs/{job_id}", headers=headers).status_code == 200
    with session_scope(settings.database_url) as session:
        tenants.revoke_api_key(session, row.id)
    revoked = client.get(f"/v1/fine_tuning/jobs/{job_id}", headers=headers)
    assert revoked.status_code == 401
    assert revoked.json()["error"]["code"] == "invalid_api_key"
    assert client.get(f"/v1/fine_tuning/jobs/{job_id}", headers=auth).status_code == 200


def test_a_job_get_records_the_keys_last_use_at_most_once_a_minute(
    client: TestClient, settings: Settings, auth: dict[str, str], new_job: Callable[[], str]
) -> None:
    job_id = new_job()
    lookup = auth["Authorization"].removeprefix(f"Bearer {tenants.KEY_PREFIX}").split("_")[0]

    def last_used_at(set_to: datetime | None = None, *, reset: bool = False) -> datetime | None:
        with session_scope(settings.database_url) as session:
            key = session.scalars(select(ApiKey).where(ApiKey.lookup_prefix == lookup)).one()
            if reset:
                key.last_used_at = set_to
            return key.last_used_at

    last_used_at(None, reset=True)
    assert client.get(f"/v1/fine_tuning/jobs/{job_id}", headers=auth).status_code == 200
    first = last_used_at()
    assert first is not None and utc_now() - first < timedelta(seconds=10)
    assert client.get(f"/v1/fine_tuning/jobs/{job_id}", headers=auth).status_code == 200
    assert last_used_at() == first
    long_ago = utc_now() - timedelta(minutes=5)
    last_used_at(long_ago, reset=True)
    assert client.get(f"/v1/fine_tuning/jobs/{job_id}", headers=auth).status_code == 200
    latest = last_used_at()
    assert latest is not None and latest > long_ago + timedelta(minutes=4)
