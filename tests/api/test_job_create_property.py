"""Any job-create body gets a 2xx the openai SDK parses, or a 4xx in OpenAI's error shape: never a 5xx,
and a job is committed exactly when the answer is a 2xx."""

from __future__ import annotations

import json
from typing import Any

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from openai.types.fine_tuning import FineTuningJob
from sqlalchemy import func, select

from api.main import create_app
from models.settings import Settings
from models.storage.database import session_scope
from models.storage.tables import Job
from tests.conftest import jsonl_bytes, upload_file

EXAMPLES = 200  # about 5 s on two cores
ERROR_KEYS = {"message", "type", "param", "code"}
TRAINING_FILE = "<the uploaded training file>"  # in the explicit examples, replaced by its id

# Strings a hostile client sends: unpaired surrogates, control and format characters (bidi
# overrides among them), long runs, and ordinary text.
hostile_characters = st.one_of(
    st.characters(categories=["Cs"]),
    st.characters(categories=["Cc", "Cf"]),
    st.characters(codec="utf-8"),
)
lone_surrogates = st.tuples(
    st.text(max_size=3), st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff"]), st.text(max_size=3)
)
hostile_text = st.one_of(
    lone_surrogates.map("".join),
    st.text(hostile_characters, max_size=12),
    st.text(st.characters(codec="ascii"), min_size=60, max_size=600),
    st.sampled_from(["auto", "3", "1e3", "", " ", "partial", "full", "text-classification", "\ud800", "x\udfff"]),
)
numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, 1, 2, 3, 8, 100, 1024, 0.1, 0.5, 1.0, 2.0]),
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), numbers, hostile_text),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.one_of(hostile_text, st.just("type")), children, max_size=3)
    ),
    max_leaves=8,
)
hyperparameter_values = st.fixed_dictionaries(
    {},
    optional={
        "n_epochs": st.one_of(st.sampled_from([1, 2, "auto"]), json_values),
        "batch_size": st.one_of(st.sampled_from([4, 8, "auto"]), json_values),
        "learning_rate_multiplier": st.one_of(st.sampled_from([0.5, 1, "auto"]), json_values),
        "warmup_ratio": st.one_of(st.sampled_from([0.0, 0.1]), json_values),
        "max_length": st.one_of(st.sampled_from([16, 64, "auto"]), json_values),
    },
)
strategy_values = st.one_of(
    st.sampled_from(["feature_extraction", "partial", "full", "layerwise_lr"]),
    st.fixed_dictionaries(
        {"type": st.sampled_from(["feature_extraction", "partial", "full", "layerwise_lr"])},
        optional={"trainable_layers": st.one_of(st.sampled_from([1, 2]), json_values)},
    ),
    json_values,
)


VALID_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "validation_file": st.none(),
    "hyperparameters": hyperparameter_values,
    "suffix": st.sampled_from(["sst2", "a-b_c"]),
    "seed": st.integers(min_value=0, max_value=2**31 - 1),
    "metadata": st.dictionaries(st.sampled_from(["team", "run"]), st.sampled_from(["nlp", "é", "🙂"]), max_size=2),
    "task": st.just("text-classification"),
    "strategy": strategy_values,
}
HOSTILE_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "training_file": json_values,
    "model": json_values,
    "validation_file": json_values,
    "hyperparameters": st.one_of(
        st.fixed_dictionaries({}, optional={name: json_values for name in ("n_epochs", "batch_size", "max_length")}),
        json_values,
    ),
    "method": st.one_of(
        st.fixed_dictionaries(
            {"type": st.just("supervised")},
            optional={"supervised": st.fixed_dictionaries({"hyperparameters": hyperparameter_values})},
        ),
        json_values,
    ),
    "suffix": json_values,
    "seed": json_values,
    "metadata": st.one_of(
        st.dictionaries(
            st.one_of(st.sampled_from(["team", "run"]), hostile_text), hostile_text, min_size=1, max_size=2
        ),
        json_values,
    ),
    "task": json_values,
    "strategy": json_values,
    "integrations": json_values,
    "unknown_field": json_values,
}


@st.composite
def job_bodies(draw: st.DrawFn, training_file: str, model: str) -> dict[str, Any]:
    """A valid body (optional fields in or out), then one or two of its fields made hostile."""
    body: dict[str, Any] = {"training_file": training_file, "model": model}
    for name, values in VALID_FIELDS.items():
        if draw(st.booleans()):
            body[name] = draw(values)
    for name in draw(st.lists(st.sampled_from(sorted(HOSTILE_FIELDS)), min_size=1, max_size=2, unique=True)):
        body[name] = draw(HOSTILE_FIELDS[name])
    return body


def assert_numbers_taken_as_sent(body: dict[str, Any], job: dict[str, Any]) -> None:
    """An accepted number is a JSON number (never a boolean or a string) and is the value the job records."""
    requested = body.get("hyperparameters")
    if isinstance(requested, dict):
        for name, value in requested.items():
            if value != "auto":
                assert type(value) in (int, float) and job["hyperparameters"][name] == value, (name, value)
    if body.get("seed") is not None:  # null asks for a random seed
        assert type(body["seed"]) is int and job["seed"] == body["seed"], body["seed"]


def committed_jobs(settings: Settings) -> int:
    with session_scope(settings.database_url) as session:
        return int(session.scalar(select(func.count()).select_from(Job)) or 0)


def test_any_job_create_body_gets_a_parsable_2xx_or_a_4xx_and_a_job_only_with_the_2xx(
    auth: dict[str, str], settings: Settings, minilm: str
) -> None:
    # A 500 comes back as a response, as a client sees it, so the test can also check what it left behind.
    client = TestClient(create_app(settings), raise_server_exceptions=False)
    rows: list[dict[str, object]] = [{"text": f"sample {i}", "label": "pos" if i % 2 else "neg"} for i in range(8)]
    training_file = upload_file(client, auth, jsonl_bytes(rows))
    headers = {**auth, "Content-Type": "application/json"}
    outcomes: set[int] = set()

    @given(body=job_bodies(training_file, minilm))
    # The classes the outside probe found, tried on every run whatever the random draw.
    @example(body={"training_file": TRAINING_FILE, "metadata": {"team": "x\ud800"}})
    @example(body={"training_file": TRAINING_FILE, "metadata": {"\udfff": "nlp"}})
    @example(body={"training_file": TRAINING_FILE, "suffix": "a\ud800"})
    @example(body={"training_file": TRAINING_FILE, "model": "\ud800"})
    @example(body={"training_file": TRAINING_FILE, "hyperparameters": {"n_epochs": True}})
    @example(body={"training_file": TRAINING_FILE, "hyperparameters": {"n_epochs": "3"}})
    @example(body={"training_file": TRAINING_FILE, "seed": "3"})
    @example(body={"training_file": TRAINING_FILE, "strategy": {"type": "partial", "trainable_layers": True}})
    @hypothesis_settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def create(body: dict[str, Any]) -> None:
        if body["training_file"] == TRAINING_FILE:
            body = {**body, "training_file": training_file}
        before = committed_jobs(settings)
        # json.dumps escapes what UTF-8 cannot carry (a lone surrogate becomes \ud800), as any client must.
        response = client.post("/v1/fine_tuning/jobs", headers=headers, content=json.dumps(body))
        after = committed_jobs(settings)
        outcomes.add(response.status_code // 100)
        assert response.status_code < 500, (body, response.text)
        if response.status_code == 200:
            assert after == before + 1, body
            job = FineTuningJob.model_validate(response.json())
            assert job.status == "queued" and job.training_file == training_file
            assert_numbers_taken_as_sent(body, response.json())
            return
        assert 400 <= response.status_code < 500 and after == before, (body, response.status_code, response.text)
        payload = response.json()
        assert set(payload) == {"error"} and set(payload["error"]) == ERROR_KEYS, payload
        assert isinstance(payload["error"]["message"], str) and payload["error"]["message"], payload

    create()
    assert outcomes == {2, 4}, "the bodies must reach both the accepted and the refused paths"
