from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from api.main import create_app
from models.services import events
from models.settings import Settings
from models.storage.database import session_scope
from models.storage.tables import JobEvent, utc_now
from models.strategies.names import StrategyType
from models.strategies.specs import SPEC_CLASSES
from tests.conftest import jsonl_bytes, upload_file

ROWS = [{"text": f"sample {i}", "label": "positive" if i % 2 else "negative"} for i in range(40)]


@pytest.fixture
def training_file(client: TestClient, auth: dict[str, str]) -> str:
    return upload_file(client, auth, jsonl_bytes(ROWS))


def create(client: TestClient, auth: dict[str, str], **body: Any) -> Any:
    return client.post("/v1/fine_tuning/jobs", headers=auth, json=body)


def error(response: Any) -> dict[str, Any]:
    payload: dict[str, Any] = response.json()["error"]
    return payload


def test_job_with_only_file_and_strategy_gets_every_default_recorded(
    client: TestClient, auth: dict[str, str], training_file: str, minilm: str
) -> None:
    response = create(client, auth, training_file=training_file, strategy={"type": "partial"})
    assert response.status_code == 200
    job = response.json()
    assert job["object"] == "fine_tuning.job"
    assert job["status"] == "queued"
    assert job["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert job["strategy"] == {"type": "partial", "trainable_layers": 2, "regularization": None}
    defaults = SPEC_CLASSES[StrategyType.partial].defaults
    assert job["hyperparameters"] == {
        "n_epochs": defaults.n_epochs,
        "batch_size": 32,
        "learning_rate_multiplier": 1.0,
        "learning_rate": defaults.learning_rate,
        "warmup_ratio": defaults.warmup_ratio,
        "max_length": 128,
        "weight_decay": defaults.weight_decay,
        "early_stopping": None,
    }
    assert job["labels"] == ["negative", "positive"]
    assert isinstance(job["seed"], int)
    assert job["method"]["type"] == "supervised"


def test_learning_rate_multiplier_scales_the_strategy_default(
    client: TestClient, auth: dict[str, str], training_file: str, minilm: str
) -> None:
    job = create(
        client,
        auth,
        training_file=training_file,
        strategy={"type": "feature_extraction"},
        hyperparameters={"learning_rate_multiplier": 0.5, "n_epochs": 2, "batch_size": "auto"},
        seed=7,
    ).json()
    base = SPEC_CLASSES[StrategyType.feature_extraction].defaults.learning_rate
    assert job["hyperparameters"]["learning_rate"] == pytest.approx(base * 0.5)
    assert job["hyperparameters"]["n_epochs"] == 2
    assert job["seed"] == 7


def test_hyperparameters_in_method_are_accepted(
    client: TestClient, auth: dict[str, str], training_file: str, minilm: str
) -> None:
    job = create(
        client,
        auth,
        training_file=training_file,
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 5}}},
    ).json()
    assert job["hyperparameters"]["n_epochs"] == 5


def test_layerwise_lr_records_its_decay(
    client: TestClient, auth: dict[str, str], training_file: str, minilm: str
) -> None:
    job = create(
        client, auth, training_file=training_file, strategy={"type": "layerwise_lr", "layer_decay": 0.9}
    ).json()
    assert job["strategy"] == {"type": "layerwise_lr", "layer_decay": 0.9, "regularization": None}


def test_gradual_unfreezing_starts_at_a_heads_rate_halved_per_layer_unless_asked_otherwise(
    client: TestClient, auth: dict[str, str], training_file: str, minilm: str
) -> None:
    job = create(client, auth, training_file=training_file, strategy="gradual_unfreezing").json()
    assert job["strategy"] == {"type": "gradual_unfreezing", "layer_decay": 0.5, "regularization": None}
    assert (job["hyperparameters"]["learning_rate"], job["hyperparameters"]["n_epochs"]) == (1e-3, 4)
    one_rate = {"type": "gradual_unfreezing", "layer_decay": 1.0}
    assert create(client, auth, training_file=training_file, strategy=one_rate).json()["strategy"]["layer_decay"] == 1.0
    invalid = create(client, auth, training_file=training_file, strategy={**one_rate, "layer_decay": "0.5"})
    assert invalid.status_code == 400 and invalid.json()["error"]["param"] == "strategy.layer_decay"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"strategy": {"type": "partial", "trainable_layers": 7}}, "strategy.trainable_layers"),
        ({"strategy": {"type": "partial", "trainable_layers": 0}}, "strategy.trainable_layers"),
        ({"strategy": {"type": "full", "trainable_layers": 2}}, "strategy.trainable_layers"),
        ({"strategy": {"type": "lora"}}, "strategy.type"),
        ({"hyperparameters": {"n_epochs": 0}}, "hyperparameters.n_epochs"),
        ({"hyperparameters": {"n_epochs": 10**9}}, "hyperparameters.n_epochs"),
        ({"hyperparameters": {"learning_rate_multiplier": -1.0}}, "hyperparameters.learning_rate_multiplier"),
        ({"hyperparameters": {"max_length": 4096}}, "hyperparameters.max_length"),
        ({"hyperparameters": {"epochs": 3}}, "hyperparameters.epochs"),
        ({"suffix": "bad suffix!"}, "suffix"),
        ({"task": "summarization"}, "task"),
        ({"model": "no-such-model"}, "model"),
        ({"validation_file": "file-doesnotexist"}, "validation_file"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"unknown_field": 1}, "unknown_field"),
    ],
)
def test_bad_job_requests_are_400s_naming_the_field(
    client: TestClient,
    auth: dict[str, str],
    training_file: str,
    minilm: str,
    body: dict[str, Any],
    param: str,
) -> None:
    response = create(client, auth, training_file=training_file, **body)
    assert response.status_code == 400, response.text
    assert error(response)["param"] == param
    assert error(response)["type"] == "invalid_request_error"


def test_unknown_training_file_is_a_400(client: TestClient, auth: dict[str, str], minilm: str) -> None:
    response = create(client, auth, training_file="file-" + "x" * 24)
    assert response.status_code == 400
    assert error(response)["param"] == "training_file"


def test_single_class_training_file_is_refused(client: TestClient, auth: dict[str, str], minilm: str) -> None:
    file_id = upload_file(client, auth, jsonl_bytes([{"text": "a", "label": "only"}, {"text": "b", "label": "only"}]))
    response = create(client, auth, training_file=file_id)
    assert response.status_code == 400
    assert error(response)["param"] == "training_file"
    assert "at least 2 labels" in error(response)["message"]


def test_validation_label_absent_from_training_is_refused(
    client: TestClient, auth: dict[str, str], training_file: str, minilm: str
) -> None:
    validation = upload_file(client, auth, jsonl_bytes([{"text": "a", "label": "neutral"}]))
    response = create(client, auth, training_file=training_file, validation_file=validation)
    assert response.status_code == 400
    assert error(response) == {
        "message": "validation_file: label 'neutral' does not occur in the training file; remove its examples from "
        "the validation file, or add examples of it to the training file",
        "type": "invalid_request_error",
        "param": "validation_file",
        "code": "invalid_request_error",
    }


def test_cancel_queued_job_ends_cancelled_and_a_second_cancel_is_409(
    client: TestClient, auth: dict[str, str], training_file: str, minilm: str
) -> None:
    job_id = create(client, auth, training_file=training_file).json()["id"]
    cancelled = client.post(f"/v1/fine_tuning/jobs/{job_id}/cancel", headers=auth)
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    again = client.post(f"/v1/fine_tuning/jobs/{job_id}/cancel", headers=auth)
    assert again.status_code == 409
    assert error(again) == {
        "message": f"Job {job_id} already ended (cancelled), so it cannot be cancelled; only a queued, running or "
        "paused job can be.",
        "type": "invalid_request_error",
        "param": "fine_tuning_job_id",
        "code": "invalid_state",
    }
    assert again.headers["x-should-retry"] == "false"


def test_validation_labels_of_another_kind_are_refused_in_plain_words(
    client: TestClient, auth: dict[str, str], training_file: str, minilm: str
) -> None:
    validation = upload_file(client, auth, jsonl_bytes([{"text": "a", "label": 0}, {"text": "b", "label": 1}]))
    response = create(client, auth, training_file=training_file, validation_file=validation)
    assert response.status_code == 400
    assert error(response) == {
        "message": "validation_file: its labels are integers, but the training file's are strings; use the same "
        "kind of label in both files",
        "type": "invalid_request_error",
        "param": "validation_file",
        "code": "invalid_request_error",
    }


def test_jobs_list_paginates_newest_first(
    client: TestClient, auth: dict[str, str], training_file: str, minilm: str
) -> None:
    ids = [create(client, auth, training_file=training_file).json()["id"] for _ in range(5)]
    seen: list[str] = []
    after = None
    while True:
        query = "?limit=2" + (f"&after={after}" if after else "")
        page = client.get(f"/v1/fine_tuning/jobs{query}", headers=auth).json()
        seen += [job["id"] for job in page["data"]]
        if not page["has_more"]:
            break
        after = page["data"][-1]["id"]
    assert seen == ids[::-1]


@pytest.mark.parametrize("query", ["limit=0", "limit=1000000", "after=garbage", "after=ftjob-" + "a" * 24])
def test_bad_list_parameters_are_400s(client: TestClient, auth: dict[str, str], query: str) -> None:
    response = client.get(f"/v1/fine_tuning/jobs?{query}", headers=auth)
    assert response.status_code == 400
    assert error(response)["param"] == query.split("=")[0]


def test_events_list_the_jobs_history_newest_first(
    client: TestClient, auth: dict[str, str], training_file: str, minilm: str
) -> None:
    job_id = create(client, auth, training_file=training_file).json()["id"]
    client.post(f"/v1/fine_tuning/jobs/{job_id}/cancel", headers=auth)
    page = client.get(f"/v1/fine_tuning/jobs/{job_id}/events?limit=2", headers=auth).json()
    assert [event["message"] for event in page["data"]] == ["Job cancelled", "Job queued"]
    assert page["has_more"] is True
    rest = client.get(f"/v1/fine_tuning/jobs/{job_id}/events?after={page['data'][-1]['id']}", headers=auth).json()
    assert rest["data"][-1]["message"] == f"Created fine-tuning job: {job_id}"
    assert all(event["object"] == "fine_tuning.job.event" for event in rest["data"])


def test_events_page_through_250_events_newest_first_exactly_once(
    client: TestClient, auth: dict[str, str], training_file: str, minilm: str, settings: Settings
) -> None:
    job_id = create(client, auth, training_file=training_file).json()["id"]
    with session_scope(settings.database_url) as session:
        for number in range(247):
            events.append_event(session, job_id, f"Step {number}/247: training loss=0.5000", data={"step": number})
        session.execute(update(JobEvent).where(JobEvent.job_id == job_id).values(created_at=utc_now()))
    with session_scope(settings.database_url) as session:
        expected = list(
            session.scalars(select(JobEvent.id).where(JobEvent.job_id == job_id).order_by(JobEvent.sequence.desc()))
        )
    assert len(expected) == 250
    seen: list[str] = []
    pages = 0
    after = None
    while True:
        query = "?limit=100" + (f"&after={after}" if after else "")
        page = client.get(f"/v1/fine_tuning/jobs/{job_id}/events{query}", headers=auth).json()
        pages += 1
        seen += [event["id"] for event in page["data"]]
        assert page["last_id"] == seen[-1]
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert (seen, pages) == (expected, 3)


def test_events_pages_go_up_to_1000_events_and_no_further(
    client: TestClient, auth: dict[str, str], training_file: str, minilm: str, settings: Settings
) -> None:
    job_id = create(client, auth, training_file=training_file).json()["id"]
    with session_scope(settings.database_url) as session:
        for number in range(1000):
            events.append_event(session, job_id, f"event {number}")
    page = client.get(f"/v1/fine_tuning/jobs/{job_id}/events?limit=1000", headers=auth).json()
    assert (len(page["data"]), page["has_more"]) == (1000, True)
    too_long = client.get(f"/v1/fine_tuning/jobs/{job_id}/events?limit=1001", headers=auth)
    assert (too_long.status_code, error(too_long)["param"], error(too_long)["code"]) == (
        400,
        "limit",
        "invalid_request_error",
    )


def test_file_used_by_an_unfinished_job_cannot_be_deleted(
    client: TestClient, auth: dict[str, str], training_file: str, minilm: str
) -> None:
    create(client, auth, training_file=training_file)
    response = client.delete(f"/v1/files/{training_file}", headers=auth)
    assert response.status_code == 409
    assert error(response)["param"] == "file_id"


def test_weights_of_an_unfinished_job_are_404(
    client: TestClient, auth: dict[str, str], training_file: str, minilm: str
) -> None:
    job_id = create(client, auth, training_file=training_file).json()["id"]
    assert client.get(f"/v1/fine_tuning/jobs/{job_id}/weights", headers=auth).status_code == 404


def test_models_list_shows_the_default_base_model(client: TestClient, auth: dict[str, str], minilm: str) -> None:
    listed = client.get("/v1/models", headers=auth).json()
    assert [m["id"] for m in listed["data"]] == ["sentence-transformers/all-MiniLM-L6-v2"]
    one = client.get("/v1/models/sentence-transformers/all-MiniLM-L6-v2", headers=auth).json()
    assert one == {
        "object": "model",
        "id": "sentence-transformers/all-MiniLM-L6-v2",
        "created": listed["data"][0]["created"],
        "owned_by": "graft",
        "num_layers": 6,
        "fine_tuning_job_id": None,
    }
    assert client.get("/v1/models/ft:nope", headers=auth).status_code == 404


def test_unreachable_queue_is_a_503_and_the_job_is_failed_not_left_queued(
    settings: Settings, auth: dict[str, str], minilm: str
) -> None:
    unreachable = settings.model_copy(update={"broker_url": "redis://127.0.0.1:9/0"})
    with TestClient(create_app(unreachable)) as client:
        file_id = upload_file(client, auth, jsonl_bytes(ROWS))
        response = create(client, auth, training_file=file_id)
        assert response.status_code == 503
        assert error(response)["code"] == "service_unavailable"
        [job] = client.get("/v1/fine_tuning/jobs", headers=auth).json()["data"]
        assert job["status"] == "failed"
        assert job["error"]["code"] == "queue_unavailable"


def test_job_get_answers_the_job_exactly_as_the_list_shows_it(
    client: TestClient, auth: dict[str, str], training_file: str, minilm: str
) -> None:
    """The GET builds its body itself (one statement, no second validation); the list goes through FastAPI."""
    job_id = create(client, auth, training_file=training_file, suffix="poll", metadata={"team": "ml"}).json()["id"]
    response = client.get(f"/v1/fine_tuning/jobs/{job_id}", headers=auth)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    listed = client.get("/v1/fine_tuning/jobs", headers=auth).json()["data"]
    assert response.json() == listed[0]
    assert response.json()["id"] == job_id


@pytest.mark.parametrize("job_id", ["garbage", "ftjob-" + "a" * 24])
def test_job_get_of_a_malformed_or_missing_id_is_404(client: TestClient, auth: dict[str, str], job_id: str) -> None:
    response = client.get(f"/v1/fine_tuning/jobs/{job_id}", headers=auth)
    assert response.status_code == 404
    assert error(response)["param"] == "fine_tuning_job_id"


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("after=%00", "after"),
        ("metadata[team]=a%00b", "metadata[team]"),
        ("metadata[%00]=nlp", "metadata[\x00]"),
    ],
)
def test_list_query_text_that_cannot_be_stored_is_a_400_naming_the_parameter(
    client: TestClient, auth: dict[str, str], query: str, param: str
) -> None:
    for path in ("/v1/fine_tuning/jobs", "/v1/fine_tuning/jobs/ftjob-abc/events"):
        if path.endswith("events") and query.startswith("metadata"):
            continue
        response = client.get(f"{path}?{query}", headers=auth)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert (error["code"], error["param"]) == ("invalid_request_error", param)
        assert "NUL character" in error["message"]
