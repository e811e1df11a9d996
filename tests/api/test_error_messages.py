"""Every 400 says, in plain English, which field is wrong and what to send instead; rendering it never fails."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.errors import error_response
from tests.conftest import jsonl_bytes, upload_file

ROWS: list[dict[str, object]] = [{"text": "a fine film", "label": "pos"}, {"text": "a dull film", "label": "neg"}]
JOB_FIELDS = (
    "model, training_file, validation_file, hyperparameters, method, suffix, seed, metadata, integrations, task, "
    "strategy"
)
HYPERPARAMETER_FIELDS = "n_epochs, batch_size, learning_rate_multiplier, warmup_ratio, max_length, early_stopping"
STRATEGY_TYPES = "'feature_extraction', 'partial', 'full', 'layerwise_lr' or 'gradual_unfreezing'"


def test_an_error_message_holding_a_lone_surrogate_still_renders() -> None:
    response = error_response(
        400, "no such file: x\ud800y", code="invalid_request_error", error_type="t", param="a\udc00"
    )
    assert json.loads(bytes(response.body)) == {
        "error": {
            "message": "no such file: x\\ud800y",
            "type": "t",
            "param": "a\\udc00",
            "code": "invalid_request_error",
        }
    }


def post_job(client: TestClient, auth: dict[str, str], body: Any) -> Any:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post("/v1/fine_tuning/jobs", headers={**auth, "content-type": "application/json"}, content=content)


def hyper(**fields: Any) -> dict[str, Any]:
    return {"training_file": "file-abc", "hyperparameters": fields}


NUMBER_CASES = [
    (hyper(n_epochs=True), "hyperparameters.n_epochs", 'must be an integer or "auto", not true'),
    (hyper(n_epochs="3"), "hyperparameters.n_epochs", 'must be an integer or "auto", not the string "3"'),
    (hyper(n_epochs=2.5), "hyperparameters.n_epochs", 'must be an integer or "auto", not 2.5'),
    (hyper(batch_size=False), "hyperparameters.batch_size", 'must be an integer or "auto", not false'),
    (hyper(batch_size="16"), "hyperparameters.batch_size", 'must be an integer or "auto", not the string "16"'),
    (
        hyper(learning_rate_multiplier=True),
        "hyperparameters.learning_rate_multiplier",
        'must be a number or "auto", not true',
    ),
    (
        hyper(learning_rate_multiplier="2"),
        "hyperparameters.learning_rate_multiplier",
        'must be a number or "auto", not the string "2"',
    ),
    (hyper(warmup_ratio="0.1"), "hyperparameters.warmup_ratio", 'must be a number or "auto", not the string "0.1"'),
    (hyper(warmup_ratio=None), "hyperparameters.warmup_ratio", 'must be a number or "auto", not null'),
    (hyper(max_length=[128]), "hyperparameters.max_length", 'must be an integer or "auto", not an array'),
    ({"training_file": "file-abc", "seed": True}, "seed", "must be an integer, not true"),
    ({"training_file": "file-abc", "seed": "42"}, "seed", 'must be an integer, not the string "42"'),
    (
        {"training_file": "file-abc", "strategy": {"type": "partial", "trainable_layers": True}},
        "strategy.trainable_layers",
        'must be an integer or "auto", not true',
    ),
    (
        {"training_file": "file-abc", "strategy": {"type": "layerwise_lr", "layer_decay": "0.8"}},
        "strategy.layer_decay",
        'must be a number or "auto", not the string "0.8"',
    ),
    (
        {"training_file": "file-abc", "method": {"supervised": {"hyperparameters": {"n_epochs": True}}}},
        "method.supervised.hyperparameters.n_epochs",
        'must be an integer or "auto", not true',
    ),
]


@pytest.mark.parametrize(("body", "param", "message"), NUMBER_CASES)
def test_numbers_are_json_numbers_never_booleans_or_strings(
    client: TestClient, auth: dict[str, str], body: dict[str, Any], param: str, message: str
) -> None:
    response = post_job(client, auth, body)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == {
        "message": f"{param}: {message}",
        "type": "invalid_request_error",
        "param": param,
        "code": "invalid_request_error",
    }


MESSAGE_CASES = [
    ({}, "training_file", "training_file: missing required field"),
    (
        {"training_file": "file-abc", "epochs": 3},
        "epochs",
        f'epochs: unknown field "epochs"; this API accepts {JOB_FIELDS}',
    ),
    (
        hyper(epochs=3),
        "hyperparameters.epochs",
        f'hyperparameters.epochs: unknown field "epochs"; this API accepts {HYPERPARAMETER_FIELDS}',
    ),
    (
        {"training_file": "file-abc", "strategy": {"type": "lora"}},
        "strategy.type",
        f'strategy.type: must be one of {STRATEGY_TYPES}, not the string "lora"',
    ),
    (
        {"training_file": "file-abc", "strategy": "lora"},
        "strategy.type",
        f'strategy.type: must be one of {STRATEGY_TYPES}, not the string "lora"',
    ),
    (
        {"training_file": "file-abc", "strategy": 5},
        "strategy",
        'strategy: must be a strategy type such as "partial", or an object such as {"type": "partial"}',
    ),
    (
        {"training_file": "file-abc", "task": "summarization"},
        "task",
        "task: must be one of 'text-classification', 'token-classification' or 'question-answering', not the string "
        '"summarization"',
    ),
    (
        {"training_file": "file-abc", "method": {"type": "dpo"}},
        "method.type",
        "method.type: must be one of 'supervised', not the string \"dpo\"",
    ),
    ({"training_file": ""}, "training_file", "training_file: must not be empty"),
    ({"training_file": "file-abc", "model": "m" * 257}, "model", "model: must be at most 256 characters long"),
    ({"training_file": 123}, "training_file", "training_file: must be a string, not 123"),
    ({"training_file": "file-abc", "metadata": {"k": 1}}, "metadata.k", "metadata.k: must be a string, not 1"),
    (
        {"training_file": "file-abc", "metadata": "k=v"},
        "metadata",
        'metadata: must be a JSON object, not the string "k=v"',
    ),
    (
        {"training_file": "file-abc", "metadata": {f"k{i}": "v" for i in range(17)}},
        "metadata",
        "metadata: holds 17 keys; at most 16 are allowed",
    ),
    ({"training_file": "file-abc", "seed": -1}, "seed", "seed: must be at least 0"),
    (hyper(n_epochs=0), "hyperparameters.n_epochs", "hyperparameters.n_epochs: must be between 1 and 100"),
    (
        {"training_file": "file-abc", "strategy": {"type": "full", "trainable_layers": 2}},
        "strategy.trainable_layers",
        "strategy.trainable_layers: applies only to strategy type 'partial'; remove it, or set strategy.type to "
        "'partial'",
    ),
    (
        {"training_file": "file-abc", "integrations": [{"type": "wandb"}]},
        "integrations",
        "integrations: are not supported by this server; send an empty list or leave the field out",
    ),
    (b"", None, 'the request body is empty; send a JSON object such as {"training_file": "file-…"}'),
    (b'["training_file"]', None, "the request body must be a JSON object, not an array"),
    (b'"file-abc"', None, 'the request body must be a JSON object, not the string "file-abc"'),
    (
        b'{"training_file": ',
        None,
        "the request body must be a JSON object, and what was sent is not valid JSON (the first error is at "
        "character 18)",
    ),
]


@pytest.mark.parametrize(("body", "param", "message"), MESSAGE_CASES)
def test_validation_errors_are_plain_english_naming_the_field(
    client: TestClient, auth: dict[str, str], body: Any, param: str | None, message: str
) -> None:
    response = post_job(client, auth, body)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == {
        "message": message,
        "type": "invalid_request_error",
        "param": param,
        "code": "invalid_request_error",
    }


@pytest.mark.parametrize(
    ("query", "message"),
    [("limit=abc", 'limit: must be an integer, not the string "abc"'), ("limit=0", "limit: must be at least 1")],
)
def test_query_parameter_errors_are_plain_english(
    client: TestClient, auth: dict[str, str], query: str, message: str
) -> None:
    error = client.get(f"/v1/files?{query}", headers=auth).json()["error"]
    assert (error["message"], error["param"]) == (message, "limit")


def test_a_bare_strategy_type_creates_a_job_with_that_strategy(
    client: TestClient, auth: dict[str, str], minilm: str
) -> None:
    training_file = upload_file(client, auth, jsonl_bytes(ROWS))
    response = post_job(client, auth, {"model": minilm, "training_file": training_file, "strategy": "partial"})
    assert response.status_code == 200, response.text
    assert response.json()["strategy"]["type"] == "partial"


def test_an_integer_is_accepted_where_a_float_is_expected(
    client: TestClient, auth: dict[str, str], minilm: str
) -> None:
    training_file = upload_file(client, auth, jsonl_bytes(ROWS))
    body = {"model": minilm, "training_file": training_file, "hyperparameters": {"learning_rate_multiplier": 2}}
    response = post_job(client, auth, body)
    assert response.status_code == 200, response.text
    assert response.json()["hyperparameters"]["learning_rate_multiplier"] == 2.0


def test_the_openapi_schema_documents_the_bare_strategy_type(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    strategy = schema["components"]["schemas"]["JobCreate"]["properties"]["strategy"]
    [members] = [member["oneOf"] for member in strategy["anyOf"] if "oneOf" in member]
    assert {"$ref": "#/components/schemas/PartialSpec"} in members
    assert {"feature_extraction", "partial", "full", "layerwise_lr"} <= {
        value for member in strategy["anyOf"] for value in member.get("enum", [])
    }


def upload(client: TestClient, auth: dict[str, str], content: bytes, filename: str = "t.jsonl") -> Any:
    return client.post("/v1/files", headers=auth, files={"file": (filename, content)}, data={"purpose": "fine-tune"})


@pytest.mark.parametrize(
    ("filename", "content", "message"),
    [
        (
            "train.json",
            json.dumps(ROWS).encode(),
            'line 1: this looks like a JSON array; a JSONL file holds one JSON object per line, such as {"text": '
            '"a fine film", "label": "positive"}. Write each record on a line of its own, without the enclosing [ ] '
            "and commas",
        ),
        (
            "t.csv",
            b"text,text,label\na,b,pos\n",
            "line 1: the CSV header names the column 'text' more than once; give each column one name of its own",
        ),
        (
            "t.jsonl",
            b'{"text": "a", "label": 1}\n' * 3 + b'{"text": "b", "label": ' + b"7" * 5000 + b"}\n",
            "line 4: 'label' is an integer of 5000 digits; labels must be strings or integers of at most 256 digits",
        ),
    ],
)
def test_upload_errors_say_what_is_wrong_with_the_data(
    client: TestClient, auth: dict[str, str], filename: str, content: bytes, message: str
) -> None:
    response = upload(client, auth, content, filename)
    assert response.status_code == 400
    assert response.json()["error"] == {
        "message": message,
        "type": "invalid_request_error",
        "param": "file",
        "code": "invalid_file",
    }


@pytest.mark.parametrize("tail", [b"\n", b"\n\n", b"\r\n\r\n\r\n", b" \n\t\n"])
@pytest.mark.parametrize("filename", ["t.jsonl", "t.csv"])
def test_an_upload_ending_in_blank_lines_is_accepted_however_many(
    client: TestClient, auth: dict[str, str], filename: str, tail: bytes
) -> None:
    content = jsonl_bytes(ROWS) if filename.endswith(".jsonl") else b"text,label\na fine film,pos\na dull film,neg\n"
    response = upload(client, auth, content + tail, filename)
    assert response.status_code == 200, response.text
    assert response.json()["record_count"] == 2


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/plain", None])
def test_a_body_sent_as_another_content_type_is_told_to_send_json(
    client: TestClient, auth: dict[str, str], content_type: str | None
) -> None:
    headers = {**auth, **({"content-type": content_type} if content_type else {})}
    response = client.post("/v1/fine_tuning/jobs", headers=headers, content=b"training_file=file-abc")
    assert response.status_code == 400
    assert response.json()["error"]["message"] == (
        "the request body must be a JSON object, sent with Content-Type: application/json"
    )


def test_an_unknown_url_names_itself(client: TestClient, auth: dict[str, str]) -> None:
    response = client.get("/v1/fine-tuning/jobs", headers=auth)
    assert response.status_code == 404
    assert response.json()["error"] == {
        "message": "Invalid URL (GET /v1/fine-tuning/jobs); the routes this API serves are listed at /docs",
        "type": "invalid_request_error",
        "param": None,
        "code": "not_found",
    }


def test_a_method_a_route_does_not_take_names_the_request_and_where_to_look(
    client: TestClient, auth: dict[str, str]
) -> None:
    response = client.put("/v1/files", headers=auth)
    assert response.status_code == 405
    assert response.json()["error"]["message"] == (
        "Method not allowed (PUT /v1/files); the methods each route takes are listed at /docs"
    )
