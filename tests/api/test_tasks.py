"""Each task through the API: an upload records the tasks it can train, and a job is checked against its task."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from tests.conftest import SHARED_DATA, jsonl_bytes, upload_file


def head_of(path: Path, lines: int) -> bytes:
    with path.open("rb") as handle:
        return b"".join(handle.readline() for _ in range(lines))


def create_job(client: TestClient, auth: dict[str, str], **body: Any) -> Any:
    return client.post("/v1/fine_tuning/jobs", headers=auth, json=body)


def test_a_ner_upload_records_token_classification_and_a_job_takes_its_tags(
    client: TestClient, auth: dict[str, str], minilm: str
) -> None:
    training = upload_file(client, auth, head_of(SHARED_DATA / "wnut17" / "train.jsonl", 1000))
    validation = upload_file(client, auth, head_of(SHARED_DATA / "wnut17" / "validation.jsonl", 20))
    file = client.get(f"/v1/files/{training}", headers=auth).json()
    assert list(file["task_summaries"]) == ["token-classification"]
    assert file["record_count"] == 1000 and file["label_counts"] == {}
    response = create_job(client, auth, training_file=training, validation_file=validation, task="token-classification")
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["task"] == "token-classification"
    assert job["labels"][0] == "O" and all(tag[:2] in ("B-", "I-") for tag in job["labels"][1:])
    events = client.get(f"/v1/fine_tuning/jobs/{job['id']}/events", headers=auth).json()["data"]
    assert any("for token-classification: 1,000 records" in event["message"] for event in events)


def test_a_squad_upload_makes_a_question_answering_job(client: TestClient, auth: dict[str, str], minilm: str) -> None:
    training = upload_file(client, auth, head_of(SHARED_DATA / "squad_v2_subset" / "train.jsonl", 40))
    assert list(client.get(f"/v1/files/{training}", headers=auth).json()["task_summaries"]) == ["question-answering"]
    response = create_job(client, auth, training_file=training, task="question-answering", strategy="partial")
    assert response.status_code == 200, response.text
    assert (response.json()["task"], response.json()["labels"]) == ("question-answering", [])
    hyperparameters = response.json()["hyperparameters"]
    assert hyperparameters["max_length"] == 384  # a paragraph in one window, not three
    assert (hyperparameters["batch_size"], hyperparameters["n_epochs"]) == (8, 10)  # QA's schedule, not the strategy's


def test_a_question_answering_job_may_still_choose_shorter_windows(
    client: TestClient, auth: dict[str, str], minilm: str
) -> None:
    training = upload_file(client, auth, head_of(SHARED_DATA / "squad_v2_subset" / "train.jsonl", 40))
    response = create_job(
        client, auth, training_file=training, task="question-answering", hyperparameters={"max_length": 256}
    )
    assert response.status_code == 200, response.text
    assert response.json()["hyperparameters"]["max_length"] == 256


def test_a_file_of_another_task_is_refused_at_job_creation_naming_the_line(
    client: TestClient, auth: dict[str, str], minilm: str
) -> None:
    ner = upload_file(client, auth, head_of(SHARED_DATA / "wnut17" / "train.jsonl", 20))
    response = create_job(client, auth, training_file=ner, task="text-classification")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "training_file"
    assert error["message"].startswith(f"training_file: file {ner} does not hold text-classification data: line 1")


def test_a_file_satisfying_a_second_task_is_validated_for_it_at_job_creation_and_remembered(
    client: TestClient, auth: dict[str, str], minilm: str
) -> None:
    rows = [
        {"text": f"t{i}", "label": "a" if i % 2 else "b", "tokens": ["x", "y"], "ner_tags": ["O", "B-x"]}
        for i in range(8)
    ]
    both = upload_file(client, auth, jsonl_bytes(rows))
    assert set(client.get(f"/v1/files/{both}", headers=auth).json()["task_summaries"]) == {
        "text-classification",
        "token-classification",
    }
    assert create_job(client, auth, training_file=both, task="token-classification").status_code == 200
    assert create_job(client, auth, training_file=both, task="text-classification").status_code == 200


def test_early_stopping_needs_a_validation_file(client: TestClient, auth: dict[str, str], minilm: str) -> None:
    rows = [{"text": f"t{i}", "label": "a" if i % 2 else "b"} for i in range(8)]
    training = upload_file(client, auth, jsonl_bytes(rows))
    response = create_job(
        client, auth, training_file=training, hyperparameters={"early_stopping": {"metric": "accuracy"}}
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "hyperparameters.early_stopping"


def test_early_stopping_names_the_metrics_the_task_reports(
    client: TestClient, auth: dict[str, str], minilm: str
) -> None:
    rows = [{"text": f"t{i}", "label": "a" if i % 2 else "b"} for i in range(8)]
    training, validation = upload_file(client, auth, jsonl_bytes(rows)), upload_file(client, auth, jsonl_bytes(rows))
    early = {"metric": "bleu", "patience": 1}
    response = create_job(
        client, auth, training_file=training, validation_file=validation, hyperparameters={"early_stopping": early}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "hyperparameters.early_stopping.metric"
    assert "valid_loss, valid_macro_f1, valid_accuracy" in error["message"]
    accepted = create_job(
        client,
        auth,
        training_file=training,
        validation_file=validation,
        hyperparameters={"early_stopping": {"patience": 1}},
    ).json()
    assert accepted["hyperparameters"]["early_stopping"] == {
        "metric": "valid_macro_f1",
        "patience": 1,
        "min_delta": 0.0,
    }
