"""The official openai SDK, with only base_url changed, against the app (strict response validation)."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
from fastapi.testclient import TestClient

from tests.conftest import jsonl_bytes

ROWS = [{"text": f"line {i}", "label": "a" if i % 2 else "b"} for i in range(10)]


@pytest.fixture
def sdk(client: TestClient, auth: dict[str, str]) -> Iterator[openai.OpenAI]:
    key = auth["Authorization"].removeprefix("Bearer ")
    with openai.OpenAI(
        api_key=key, base_url="http://testserver/v1", http_client=client, _strict_response_validation=True
    ) as sdk_client:
        yield sdk_client


def test_sdk_uploads_creates_lists_and_cancels(sdk: openai.OpenAI, minilm: str) -> None:
    uploaded = sdk.files.create(file=("train.jsonl", jsonl_bytes(ROWS)), purpose="fine-tune")
    assert uploaded.status == "processed"
    assert sdk.files.retrieve(uploaded.id).bytes == len(jsonl_bytes(ROWS))
    assert [f.id for f in sdk.files.list()] == [uploaded.id]
    assert sdk.files.content(uploaded.id).read() == jsonl_bytes(ROWS)

    job = sdk.fine_tuning.jobs.create(
        model=minilm,
        training_file=uploaded.id,
        hyperparameters={"n_epochs": 2},
        suffix="sdk",
        seed=3,
        extra_body={"strategy": {"type": "feature_extraction"}, "task": "text-classification"},
    )
    assert job.status == "queued"
    assert job.hyperparameters.n_epochs == 2
    assert job.model_extra is not None and job.model_extra["strategy"]["type"] == "feature_extraction"
    assert sdk.fine_tuning.jobs.retrieve(job.id).id == job.id
    assert [j.id for j in sdk.fine_tuning.jobs.list(limit=5)] == [job.id]

    cancelled = sdk.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled"
    messages = [event.message for event in sdk.fine_tuning.jobs.list_events(job.id)]
    assert messages[0] == "Job cancelled"
    assert list(sdk.fine_tuning.jobs.checkpoints.list(job.id)) == []
    assert [m.id for m in sdk.models.list()] == [minilm]
    assert sdk.models.retrieve(minilm).id == minilm


def test_sdk_auto_paging_walks_every_job(sdk: openai.OpenAI, minilm: str) -> None:
    uploaded = sdk.files.create(file=("train.jsonl", jsonl_bytes(ROWS)), purpose="fine-tune")
    created = [sdk.fine_tuning.jobs.create(model=minilm, training_file=uploaded.id).id for _ in range(5)]
    assert [job.id for job in sdk.fine_tuning.jobs.list(limit=2)] == created[::-1]


def test_sdk_raises_typed_errors_with_the_servers_message(sdk: openai.OpenAI, minilm: str) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        sdk.fine_tuning.jobs.create(model=minilm, training_file="file-" + "n" * 24)
    assert bad.value.param == "training_file"  # type: ignore[attr-defined]
    with pytest.raises(openai.NotFoundError):
        sdk.fine_tuning.jobs.retrieve("ftjob-" + "n" * 24)
    with pytest.raises(openai.AuthenticationError):
        sdk.with_options(api_key="sk-graft-wrong").files.list()


def test_sdk_pauses_and_resumes_a_job(client: TestClient, auth: dict[str, str], minilm: str) -> None:
    """`paused` is a status OpenAI's API returns but the SDK's `status` Literal omits, so strict
    validation would refuse it; the SDK's default (lenient) parsing reads it as sent."""
    key = auth["Authorization"].removeprefix("Bearer ")
    with openai.OpenAI(api_key=key, base_url="http://testserver/v1", http_client=client) as sdk:
        uploaded = sdk.files.create(file=("train.jsonl", jsonl_bytes(ROWS)), purpose="fine-tune")
        job = sdk.fine_tuning.jobs.create(model=minilm, training_file=uploaded.id)
        assert sdk.fine_tuning.jobs.pause(job.id).status == "paused"
        assert sdk.fine_tuning.jobs.retrieve(job.id).status == "paused"
        assert sdk.fine_tuning.jobs.resume(job.id).status == "queued"
        with pytest.raises(openai.ConflictError, match="not paused"):
            sdk.fine_tuning.jobs.resume(job.id)
        assert sdk.fine_tuning.jobs.cancel(job.id).status == "cancelled"
        with pytest.raises(openai.ConflictError, match="cannot be paused"):
            sdk.fine_tuning.jobs.pause(job.id)
