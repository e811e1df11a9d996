"""Reliability checklist items 18 and 19: foreign ids look like missing ones; keys stay secret and die at once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from models.services import tenants
from models.settings import Settings
from models.storage.database import session_scope
from tests.conftest import jsonl_bytes, upload_file
from tests.live_api import running_api

ROWS: list[dict[str, object]] = [{"text": "good", "label": "pos"}, {"text": "bad", "label": "neg"}]
MISSING_FILE, MISSING_JOB = "file-" + "q" * 24, "ftjob-" + "q" * 24

# ---------------------------------------------------------------------------------------------
# 18. Another tenant's id answers exactly what a missing id answers: status, headers and body,
#     once the id itself is swapped.
# ---------------------------------------------------------------------------------------------

FILE_REQUESTS = [("GET", "/v1/files/{}"), ("GET", "/v1/files/{}/content"), ("DELETE", "/v1/files/{}")]
JOB_REQUESTS = [
    ("GET", "/v1/fine_tuning/jobs/{}"),
    ("POST", "/v1/fine_tuning/jobs/{}/cancel"),
    ("GET", "/v1/fine_tuning/jobs/{}/events"),
    ("GET", "/v1/fine_tuning/jobs/{}/checkpoints"),
    ("GET", "/v1/fine_tuning/jobs/{}/weights"),
]
COMPARED_HEADERS = ("content-type", "content-length", "x-should-retry", "etag", "www-authenticate")


def assert_indistinguishable(foreign: Any, absent: Any, foreign_id: str, missing_id: str) -> None:
    assert foreign.status_code == absent.status_code, (foreign.text, absent.text)
    assert foreign.json() == json.loads(absent.text.replace(missing_id, foreign_id))
    for header in COMPARED_HEADERS:
        assert foreign.headers.get(header) == absent.headers.get(header), header


@pytest.fixture
def foreign_objects(client: TestClient, auth: dict[str, str], minilm: str) -> dict[str, str]:
    """A file and a job of tenant acme (`auth`); the tests ask for them as globex (`other_auth`)."""
    file_id = upload_file(client, auth, jsonl_bytes(ROWS))
    job = client.post("/v1/fine_tuning/jobs", headers=auth, json={"training_file": file_id})
    assert job.status_code == 200, job.text
    return {"file": file_id, "job": job.json()["id"]}


@pytest.mark.parametrize(
    ("kind", "method", "template"),
    [("file", method, template) for method, template in FILE_REQUESTS]
    + [("job", method, template) for method, template in JOB_REQUESTS],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_a_foreign_id_answers_exactly_like_a_missing_one(
    client: TestClient,
    auth: dict[str, str],
    other_auth: dict[str, str],
    foreign_objects: dict[str, str],
    kind: str,
    method: str,
    template: str,
) -> None:
    foreign_id = foreign_objects[kind]
    missing_id = MISSING_FILE if kind == "file" else MISSING_JOB
    foreign = client.request(method, template.format(foreign_id), headers=other_auth)
    absent = client.request(method, template.format(missing_id), headers=other_auth)
    assert foreign.status_code == 404
    assert_indistinguishable(foreign, absent, foreign_id, missing_id)
    # The owner still sees the object untouched.
    path = f"/v1/files/{foreign_id}" if kind == "file" else f"/v1/fine_tuning/jobs/{foreign_id}"
    owned = client.get(path, headers=auth)
    assert owned.status_code == 200
    assert kind == "file" or owned.json()["status"] == "queued"


@pytest.mark.parametrize(
    ("path", "cursor_kind"),
    [("/v1/files?after={}", "file"), ("/v1/fine_tuning/jobs?after={}", "job")],
)
def test_a_foreign_cursor_answers_exactly_like_a_missing_one(
    client: TestClient, other_auth: dict[str, str], foreign_objects: dict[str, str], path: str, cursor_kind: str
) -> None:
    foreign_id = foreign_objects[cursor_kind]
    missing_id = MISSING_FILE if cursor_kind == "file" else MISSING_JOB
    foreign = client.get(path.format(foreign_id), headers=other_auth)
    absent = client.get(path.format(missing_id), headers=other_auth)
    assert foreign.status_code == 400
    assert_indistinguishable(foreign, absent, foreign_id, missing_id)


@pytest.mark.parametrize("field", ["training_file", "validation_file"])
def test_a_job_naming_a_foreign_file_answers_exactly_like_one_naming_a_missing_file(
    client: TestClient, other_auth: dict[str, str], foreign_objects: dict[str, str], field: str
) -> None:
    own_file = upload_file(client, other_auth, jsonl_bytes(ROWS))
    body = {"training_file": own_file}

    def create(file_id: str) -> Any:
        return client.post("/v1/fine_tuning/jobs", headers=other_auth, json={**body, field: file_id})

    foreign, absent = create(foreign_objects["file"]), create(MISSING_FILE)
    assert foreign.status_code == 400
    assert foreign.json()["error"]["param"] == field
    assert_indistinguishable(foreign, absent, foreign_objects["file"], MISSING_FILE)
    assert client.get("/v1/fine_tuning/jobs", headers=other_auth).json()["data"] == []


# ---------------------------------------------------------------------------------------------
# 19. Keys: never on disk or in a log in plaintext, refused with 401 when wrong, dead at once
#     when revoked, against a real API process.
# ---------------------------------------------------------------------------------------------


def secrets_of(key: str) -> list[str]:
    """The full key and its secret part (what follows the lookup prefix)."""
    return [key, key.rsplit("_", 1)[1]]


def data_dir_bytes(settings: Settings) -> bytes:
    """Every byte the service keeps: databases with their journals, the broker, the artifact store."""
    return b"".join(path.read_bytes() for path in sorted(settings.data_dir.rglob("*")) if path.is_file())


def test_keys_are_never_stored_or_logged_in_plaintext_and_revocation_is_immediate(
    settings: Settings, tmp_path: Path
) -> None:
    with session_scope(settings.database_url) as session:
        row, key = tenants.create_api_key(session, tenants.create_tenant(session, "acme"))
        key_id = row.id
    # A well-formed key whose lookup prefix exists but whose secret is wrong, and one that is unknown.
    wrong_secret = key[: -len(key.rsplit("_", 1)[1])] + "W" * len(key.rsplit("_", 1)[1])
    unknown = "sk-graft-" + "U" * 12 + "_" + "V" * 40
    log_path = tmp_path / "api.log"
    with running_api(settings, log_path, GRAFT_LOG_LEVEL="DEBUG") as api:

        def get_files(bearer: str | None) -> httpx.Response:
            headers = {"authorization": f"Bearer {bearer}"} if bearer is not None else {}
            return httpx.get(f"{api.base_url}/v1/files", headers=headers)

        upload = httpx.post(
            f"{api.base_url}/v1/files",
            headers={"authorization": f"Bearer {key}"},
            files={"file": ("t.jsonl", jsonl_bytes(ROWS))},
            data={"purpose": "fine-tune"},
        )
        assert upload.status_code == 200, upload.text
        assert get_files(key).status_code == 200
        for bad in (wrong_secret, unknown, None):
            refused = get_files(bad)
            assert refused.status_code == 401
            assert refused.json()["error"]["code"] == "invalid_api_key"
            assert bad is None or bad not in refused.text

        with session_scope(settings.database_url) as session:
            tenants.revoke_api_key(session, key_id)
        revoked = get_files(key)  # the very next request, in another process: no cache keeps the key alive
        assert revoked.status_code == 401
        assert revoked.json()["error"]["code"] == "invalid_api_key"
        assert key not in revoked.text

    log = log_path.read_bytes()
    assert b"GET /v1/files" in log  # the log did record the requests
    stored = data_dir_bytes(settings)
    for secret in secrets_of(key) + secrets_of(wrong_secret) + secrets_of(unknown):
        assert secret.encode() not in log, "a key reached the API log"
        assert secret.encode() not in stored, "a key is stored in plaintext"
