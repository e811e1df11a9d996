"""Text a user sends that no UTF-8 encoder or database could carry is refused where it arrives, naming the field."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import jsonl_bytes, upload_file

SURROGATE_FAULT = (
    "holds text that is not valid Unicode (an unpaired surrogate \\ud800); send UTF-8 text, where an escaped "
    "surrogate comes only in pairs"
)
ROWS: list[dict[str, object]] = [{"text": "a fine film", "label": "pos"}, {"text": "a dull film", "label": "neg"}]


def post_job(client: TestClient, auth: dict[str, str], body: dict[str, Any]) -> Any:
    """Sends `body` as a client's JSON encoder would: a lone surrogate travels as its `\\ud800` escape."""
    headers = {**auth, "content-type": "application/json"}
    return client.post("/v1/fine_tuning/jobs", headers=headers, content=json.dumps(body).encode())


def assert_invalid_request(response: Any, param: str | None, message: str) -> None:
    assert response.status_code == 400, response.text
    assert response.json() == {
        "error": {"message": message, "type": "invalid_request_error", "param": param, "code": "invalid_request_error"}
    }


@pytest.mark.parametrize(
    ("fields", "param", "message"),
    [
        ({"model": "mini\ud800lm"}, "model", f"model: {SURROGATE_FAULT}"),
        ({"training_file": "file-\ud800"}, "training_file", f"training_file: {SURROGATE_FAULT}"),
        ({"validation_file": "file-\ud800"}, "validation_file", f"validation_file: {SURROGATE_FAULT}"),
        ({"suffix": "mine\ud800"}, "suffix", f"suffix: {SURROGATE_FAULT}"),
        ({"metadata": {"team": "\ud800"}}, "metadata.team", f"metadata.team: {SURROGATE_FAULT}"),
        ({"metadata": {"te\ud800am": "nlp"}}, "metadata", f"metadata: a key {SURROGATE_FAULT}"),
        ({"integrations": [{"\ud800": 1}]}, "integrations", f"integrations: a key {SURROGATE_FAULT}"),
        (
            {"model": "mini\x00lm"},
            "model",
            "model: holds a NUL character (\\u0000), which cannot be stored; remove it",
        ),
    ],
)
def test_a_job_request_string_that_cannot_be_stored_is_a_400_naming_the_field(
    client: TestClient, auth: dict[str, str], fields: dict[str, Any], param: str, message: str
) -> None:
    assert_invalid_request(post_job(client, auth, {"training_file": "file-abc", **fields}), param, message)
    assert client.get("/v1/fine_tuning/jobs", headers=auth).json()["data"] == []


@pytest.mark.parametrize(
    ("fields", "param", "where"),
    [
        ({"col\ud800or": 1}, None, "the request body"),
        ({"hyperparameters": {"n_ep\ud800ochs": 1}}, "hyperparameters", "hyperparameters"),
        ({"strategy": {"ty\ud800pe": "full"}}, "strategy", "strategy"),
    ],
)
def test_a_field_name_that_cannot_be_stored_is_a_400_naming_the_object_holding_it(
    client: TestClient, auth: dict[str, str], fields: dict[str, Any], param: str | None, where: str
) -> None:
    response = post_job(client, auth, {"training_file": "file-abc", **fields})
    assert_invalid_request(response, param, f"{where}: a field name {SURROGATE_FAULT}")


def test_a_metadata_surrogate_no_longer_creates_a_job_that_cannot_be_read(
    client: TestClient, auth: dict[str, str], minilm: str
) -> None:
    training_file = upload_file(client, auth, jsonl_bytes(ROWS))
    body = {"model": minilm, "training_file": training_file, "metadata": {"run": "x\ud800"}}
    assert_invalid_request(post_job(client, auth, body), "metadata.run", f"metadata.run: {SURROGATE_FAULT}")
    assert client.get("/v1/fine_tuning/jobs", headers=auth).json()["data"] == []


def test_a_query_parameter_that_cannot_be_stored_is_a_400_naming_it(client: TestClient, auth: dict[str, str]) -> None:
    response = client.get("/v1/files?purpose=fine%00tune", headers=auth)
    assert_invalid_request(
        response, "purpose", "purpose: holds a NUL character (\\u0000), which cannot be stored; remove it"
    )


@pytest.mark.parametrize(
    ("record", "field"),
    [
        ('{"text": "a \\ud800 b", "label": "pos"}', "text"),
        ('{"text": "a", "text_pair": "\\ud800", "label": "pos"}', "text_pair"),
        ('{"text": "a", "label": "x\\ud800"}', "label"),
    ],
)
def test_an_upload_holding_an_unpaired_surrogate_in_a_kept_field_is_refused_naming_line_and_field(
    client: TestClient, auth: dict[str, str], record: str, field: str
) -> None:
    clean = record.replace("\\u", "u") + "\n"
    content = (clean + clean + record + "\n").encode()
    response = client.post(
        "/v1/files", headers=auth, files={"file": ("t.jsonl", content)}, data={"purpose": "fine-tune"}
    )
    assert response.status_code == 400
    assert response.json()["error"] == {
        "message": f"line 3: '{field}' holds text that is not valid Unicode (an unpaired surrogate \\ud800); save "
        "the file as UTF-8 text, where an escaped surrogate comes only in pairs",
        "type": "invalid_request_error",
        "param": "file",
        "code": "invalid_file",
    }
    assert client.get("/v1/files", headers=auth).json()["data"] == []
