"""A corpus of bad inputs: each is refused with the right 4xx, OpenAI's error shape and the field or line at fault."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from models.settings import Settings
from tests.conftest import TINY_BERT_ID, jsonl_bytes, upload_file

MIB = 1024 * 1024
MAX_RECORD_BYTES = MIB  # the cap models/tasks/text_classification.py puts on one JSONL line or CSV row
ROWS: list[dict[str, object]] = [
    {"text": f"sample {i}", "label": "positive" if i % 2 else "negative"} for i in range(40)
]
GOOD = b'{"text": "a fine film", "label": "pos"}\n'
GOOD_NEG = b'{"text": "a dull film", "label": "neg"}\n'
ABSENT = "file-" + "Z" * 24  # well formed, but no tenant owns it
ERROR_KEYS = {"message", "type", "param", "code"}
Response = Any  # what TestClient returns: an httpx(2) response, whichever package Starlette imports


def assert_openai_error(response: Response, status: int, param: str | None) -> dict[str, Any]:
    """The status, OpenAI's exact error shape, and the field at fault; returns the error object."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert set(error) == ERROR_KEYS, error
    assert error["type"] == "invalid_request_error", error
    assert isinstance(error["code"], str) and error["code"], error
    assert isinstance(error["message"], str) and error["message"], error
    assert error["param"] == param, error
    return error


def post_upload(
    client: TestClient, headers: dict[str, str], content: bytes, filename: str = "train.jsonl", **form: str
) -> Response:
    data = form or {"purpose": "fine-tune"}
    return client.post("/v1/files", headers=headers, files={"file": (filename, content)}, data=data)


def raw_multipart(parts: list[tuple[bytes, bytes]], boundary: bytes = b"corpusboundary") -> tuple[bytes, str]:
    """A multipart body built byte for byte: httpx percent-escapes control characters in filenames."""
    body = b"".join(
        b"--" + boundary + b"\r\nContent-Disposition: form-data; " + disposition + b"\r\n\r\n" + value + b"\r\n"
        for disposition, value in parts
    )
    return body + b"--" + boundary + b"--\r\n", f"multipart/form-data; boundary={boundary.decode()}"


def jsonl_line_of(size: int) -> bytes:
    """One valid JSONL record of exactly `size` bytes, newline excluded."""
    head, tail = b'{"text": "', b'", "label": "neg"}'
    return head + b"x" * (size - len(head) - len(tail)) + tail + b"\n"


# ---------------------------------------------------------------------------------------------
# File contents: 400, code invalid_file, param "file", and the message names the line at fault.
# ---------------------------------------------------------------------------------------------

FILE_CONTENT_CASES = [
    pytest.param("t.jsonl", GOOD + b'{"text": "cut short", "label": "neg"\n', "line 2:", id="jsonl-truncated-object"),
    pytest.param("t.jsonl", GOOD + GOOD + b"{'text': 'x', 'label': 'neg'}\n", "line 3:", id="jsonl-single-quotes"),
    pytest.param("t.jsonl", GOOD + b'{"text": "x", "label": "neg",}\n', "line 2:", id="jsonl-trailing-comma"),
    pytest.param("t.jsonl", GOOD + GOOD_NEG.strip() + GOOD, "line 2:", id="jsonl-two-objects-on-one-line"),
    pytest.param("t.jsonl", b'["a fine film", "pos"]\n' + GOOD, "line 1:", id="jsonl-array-not-object"),
    pytest.param("t.jsonl", GOOD + b'"just a string"\n', "line 2:", id="jsonl-bare-string"),
    pytest.param("t.jsonl", GOOD + b"null\n", "line 2:", id="jsonl-null"),
    pytest.param(
        "t.jsonl",
        GOOD + b'{"text": ' + b"[" * 100_000 + b"]" * 100_000 + b', "label": "neg"}\n',
        "line 2:",
        id="jsonl-nested-too-deeply",
    ),
    pytest.param("t.jsonl", GOOD + b'{"text": "x", "label": ' + b"9" * 5000 + b"}\n", "line 2:", id="jsonl-huge-int"),
    pytest.param("t.jsonl", GOOD + b"\n" + GOOD_NEG, "line 2:", id="jsonl-blank-line-inside"),
    pytest.param("t.jsonl", GOOD + b"\xef\xbb\xbf" + GOOD_NEG, "line 2:", id="jsonl-bom-after-line-1"),
    pytest.param(
        "t.jsonl", GOOD.replace(b"\n", b"\r\n") * 2 + b"{oops}\r\n", "line 3:", id="jsonl-crlf-lines-still-count"
    ),
    pytest.param("t.jsonl", GOOD + b'{"label": "neg"}\n', "line 2:", id="missing-text"),
    pytest.param("t.jsonl", GOOD + GOOD + b'{"text": "no label"}\n', "line 3:", id="missing-label"),
    pytest.param("t.jsonl", b'{"prompt": "hi", "completion": "there"}\n', "line 1:", id="openai-completion-format"),
    pytest.param("t.jsonl", GOOD + b'{"messages": [{"role": "user"}]}\n', "line 2:", id="openai-chat-format"),
    pytest.param("t.jsonl", GOOD + b'{"text": 42, "label": "neg"}\n', "line 2:", id="text-is-an-integer"),
    pytest.param("t.jsonl", GOOD + b'{"text": ["a", "b"], "label": "neg"}\n', "line 2:", id="text-is-a-list"),
    pytest.param("t.jsonl", GOOD + b'{"text": null, "label": "neg"}\n', "line 2:", id="text-is-null"),
    pytest.param("t.jsonl", GOOD + b'{"text": "", "label": "neg"}\n', "line 2:", id="text-is-empty"),
    pytest.param("t.jsonl", GOOD + b'{"text": " \\t ", "label": "neg"}\n', "line 2:", id="text-is-whitespace"),
    pytest.param("t.jsonl", GOOD + b'{"text": "x", "label": 1.5}\n', "line 2:", id="label-is-a-float"),
    pytest.param("t.jsonl", GOOD + b'{"text": "x", "label": true}\n', "line 2:", id="label-is-a-bool"),
    pytest.param("t.jsonl", GOOD + b'{"text": "x", "label": null}\n', "line 2:", id="label-is-null"),
    pytest.param("t.jsonl", GOOD + b'{"text": "x", "label": ["neg"]}\n', "line 2:", id="label-is-a-list"),
    pytest.param("t.jsonl", GOOD + b'{"text": "x", "label": {"n": 1}}\n', "line 2:", id="label-is-an-object"),
    pytest.param("t.jsonl", GOOD + b'{"text": "x", "label": "  "}\n', "line 2:", id="label-is-blank"),
    pytest.param("t.jsonl", GOOD + b'{"text": "x", "label": 1}\n', "line 2:", id="labels-mix-ints-and-strings"),
    pytest.param(
        "t.jsonl",
        b'{"text": "a", "text_pair": 7, "label": "pos"}\n',
        "line 1:",
        id="text-pair-is-an-integer",
    ),
    pytest.param("t.jsonl", b'{"text": "a", "text_pair": "", "label": "pos"}\n', "line 1:", id="text-pair-is-empty"),
    pytest.param(
        "t.jsonl",
        b'{"text": "a", "text_pair": "b", "label": "pos"}\n' * 2 + GOOD_NEG,
        "line 3:",
        id="text-pair-missing-after-first-record-had-it",
    ),
    pytest.param(
        "t.jsonl",
        b"".join(json.dumps({"text": "x", "label": f"l{i}"}).encode() + b"\n" for i in range(1001)),
        "line 1001:",
        id="more-than-1000-distinct-labels",
    ),
    pytest.param("t.jsonl", GOOD + b'{"text": "caf\xe9", "label": "neg"}\n', "line 2:", id="jsonl-not-utf8"),
    pytest.param("t.csv", b"te\xffxt,label\ngood,pos\n", "line 1:", id="csv-header-not-utf8"),
    pytest.param(
        "t.csv",
        b"text,label\ngood,pos\ncaf\xe9,neg\n",
        "line 3:",
        id="csv-row-not-utf8",
    ),
    pytest.param("t.jsonl", b"", "file is empty", id="empty-file"),
    pytest.param("t.jsonl", b"   \t  ", "file holds no records", id="whitespace-only-one-line"),
    pytest.param("t.jsonl", b"  \n\t\n   \n", "file holds no records", id="whitespace-only-several-lines"),
    pytest.param(
        "t.jsonl", GOOD + b'{"text": "' + b"x" * (MIB + 100) + b'", "label": "neg"}\n', "line 2:", id="line-over-1mib"
    ),
    pytest.param(
        "t.jsonl",
        GOOD + jsonl_line_of(MAX_RECORD_BYTES + 1),
        "line 2:",
        id="line-of-1mib-plus-one-byte",
    ),
    pytest.param("t.csv", b"text,label\n" + b"x" * (MIB + 10) + b",neg\n", "line 2:", id="csv-field-over-1mib"),
    pytest.param(
        "t.csv",
        b"text,text_pair,label\n" + b"x" * (MIB // 2 + 10) + b"," + b"y" * (MIB // 2 + 10) + b",neg\n",
        "line 2:",
        id="csv-row-over-1mib-in-two-fields",
    ),
    pytest.param("t.csv", b"sentence,category\ngood,pos\n", "line 1:", id="csv-header-without-text-and-label"),
    pytest.param("t.csv", b"text\ngood\n", "line 1:", id="csv-header-without-label"),
    pytest.param("t.csv", b"good,pos\nbad,neg\n", "line 1:", id="csv-without-a-header-row"),
    pytest.param("t.csv", b"text,label\ngood,pos\nbad,neg,extra\n", "line 3:", id="csv-row-with-too-many-fields"),
    pytest.param("t.csv", b"text,label\nlonely\n", "line 2:", id="csv-row-with-too-few-fields"),
    pytest.param(
        "t.csv",
        b'text,label\n"two\nlines",pos\nthree,fields,here\n',
        "line 4:",
        id="csv-line-count-after-a-multiline-field",
    ),
    pytest.param("t.csv", b"text,label\n,pos\n", "line 2:", id="csv-empty-text"),
]


@pytest.mark.parametrize(("filename", "content", "message_start"), FILE_CONTENT_CASES)
def test_bad_file_contents_are_400s_naming_the_line(
    client: TestClient,
    auth: dict[str, str],
    settings: Settings,
    filename: str,
    content: bytes,
    message_start: str,
) -> None:
    error = assert_openai_error(post_upload(client, auth, content, filename), 400, "file")
    assert error["code"] == "invalid_file"
    assert error["message"].startswith(message_start), error["message"]
    assert client.get("/v1/files", headers=auth).json()["data"] == []
    assert [p for p in settings.artifacts.rglob("*") if p.is_file()] == []


# ---------------------------------------------------------------------------------------------
# The upload itself: size, purpose, form shape and filename.
# ---------------------------------------------------------------------------------------------


def _control_character_filename(client: TestClient, auth: dict[str, str]) -> Response:
    body, content_type = raw_multipart(
        [(b'name="purpose"', b"fine-tune"), (b'name="file"; filename="ev\x07il.jsonl"', GOOD + GOOD_NEG)]
    )
    return client.post("/v1/files", headers={**auth, "content-type": content_type}, content=body)


def _two_file_parts(client: TestClient, auth: dict[str, str]) -> Response:
    body, content_type = raw_multipart(
        [
            (b'name="purpose"', b"fine-tune"),
            (b'name="file"; filename="a.jsonl"', GOOD),
            (b'name="file"; filename="b.jsonl"', GOOD_NEG),
        ]
    )
    return client.post("/v1/files", headers={**auth, "content-type": content_type}, content=body)


UploadCall = Callable[[TestClient, dict[str, str]], Response]

UPLOAD_CASES: list[Any] = [
    pytest.param(lambda c, a: post_upload(c, a, b"x" * (5 * MIB + 1)), 413, "file", id="one-byte-over-the-limit"),
    pytest.param(
        lambda c, a: post_upload(c, a, b'{"text": "' + b"x" * (50 * 1000 * 1000) + b'", "label": "a"}\n'),
        413,
        "file",
        id="a-50mb-single-line",
    ),
    pytest.param(
        lambda c, a: post_upload(c, a, GOOD + GOOD_NEG, purpose="assistants"), 400, "purpose", id="wrong-purpose"
    ),
    pytest.param(
        lambda c, a: post_upload(c, a, GOOD + GOOD_NEG, purpose="fine-tune-results"),
        400,
        "purpose",
        id="server-only-purpose",
    ),
    pytest.param(
        lambda c, a: c.post("/v1/files", headers=a, files={"file": ("t.jsonl", GOOD + GOOD_NEG)}),
        400,
        "purpose",
        id="missing-purpose",
    ),
    pytest.param(
        lambda c, a: c.post("/v1/files", headers=a, data={"purpose": "fine-tune"}), 400, "file", id="missing-file-part"
    ),
    pytest.param(
        lambda c, a: c.post("/v1/files", headers=a, json={"purpose": "fine-tune", "file": "t.jsonl"}),
        400,
        "file",
        id="json-body-instead-of-multipart",
    ),
    pytest.param(_two_file_parts, 400, "file", id="two-file-parts"),
    pytest.param(_control_character_filename, 400, "file", id="filename-with-control-character"),
]


@pytest.mark.parametrize(("call", "status", "param"), UPLOAD_CASES)
def test_bad_uploads_are_refused_naming_the_field(
    client: TestClient, auth: dict[str, str], settings: Settings, call: UploadCall, status: int, param: str
) -> None:
    assert_openai_error(call(client, auth), status, param)
    assert client.get("/v1/files", headers=auth).json()["data"] == []
    assert [p for p in settings.artifacts.rglob("*") if p.is_file()] == []


@pytest.mark.parametrize(
    ("filename", "stored_name"),
    [
        pytest.param("../../etc/passwd.jsonl", "passwd.jsonl", id="posix-traversal"),
        pytest.param("..\\..\\windows\\evil.jsonl", "evil.jsonl", id="windows-traversal"),
        pytest.param("/var/lib/graft/files/abs.jsonl", "abs.jsonl", id="absolute-path"),
    ],
)
def test_path_in_filename_is_stored_under_a_server_id_as_its_last_component(
    client: TestClient, auth: dict[str, str], settings: Settings, tmp_path: Path, filename: str, stored_name: str
) -> None:
    response = post_upload(client, auth, GOOD + GOOD_NEG, filename)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["filename"] == stored_name
    assert body["id"].startswith("file-")
    assert [p.name for p in settings.artifacts.rglob("*") if p.is_file()] == [body["id"]]
    assert not [p for p in tmp_path.rglob(stored_name)]


# ---------------------------------------------------------------------------------------------
# Objects the cases refer to: created on first use, each by the tenant that owns it.
# ---------------------------------------------------------------------------------------------


class World:
    """Files and jobs of two tenants (acme = `auth`, globex = `other_auth`), made lazily by name."""

    def __init__(self, client: TestClient, auth: dict[str, str], other_auth: dict[str, str]) -> None:
        self.client, self.auth, self.other_auth = client, auth, other_auth
        self._made: dict[str, str] = {}

    def __getitem__(self, name: str) -> str:
        if name not in self._made:
            self._made[name] = getattr(self, f"_make_{name}")()
        return self._made[name]

    def job_ids(self) -> list[str]:
        """The jobs made so far, newest first, as the jobs list shows them."""
        return [made for name, made in reversed(self._made.items()) if name.endswith("_job")]

    def _job(self, headers: dict[str, str], training_file: str) -> str:
        response = self.client.post("/v1/fine_tuning/jobs", headers=headers, json={"training_file": training_file})
        assert response.status_code == 200, response.text
        job_id: str = response.json()["id"]
        return job_id

    def _make_own_file(self) -> str:
        return upload_file(self.client, self.auth, jsonl_bytes(ROWS))

    def _make_other_file(self) -> str:
        return upload_file(self.client, self.other_auth, jsonl_bytes(ROWS))

    def _make_own_job(self) -> str:
        return self._job(self.auth, self["own_file"])

    def _make_other_job(self) -> str:
        return self._job(self.other_auth, self["other_file"])

    def _make_busy_file(self) -> str:
        self["own_job"]
        return self["own_file"]

    def _make_cancelled_job(self) -> str:
        job_id = self._job(self.auth, self["own_file"])
        assert self.client.post(f"/v1/fine_tuning/jobs/{job_id}/cancel", headers=self.auth).status_code == 200
        return job_id

    def _make_single_class_file(self) -> str:
        return upload_file(self.client, self.auth, GOOD + GOOD.replace(b"fine", b"great"))

    def _make_neutral_file(self) -> str:
        return upload_file(self.client, self.auth, b'{"text": "so-so", "label": "neutral"}\n')

    def _make_pair_file(self) -> str:
        return upload_file(self.client, self.auth, b'{"text": "a", "text_pair": "b", "label": "positive"}\n')

    def _make_int_label_file(self) -> str:
        return upload_file(self.client, self.auth, b'{"text": "a", "label": 1}\n')

    def _make_absent_job(self) -> str:
        return "ftjob-" + "Z" * 24

    def _make_absent_file(self) -> str:
        return ABSENT

    def _make_deleted_file(self) -> str:
        file_id = upload_file(self.client, self.auth, jsonl_bytes(ROWS))
        assert self.client.delete(f"/v1/files/{file_id}", headers=self.auth).status_code == 200
        return file_id


@pytest.fixture
def world(client: TestClient, auth: dict[str, str], other_auth: dict[str, str], minilm: str) -> World:
    return World(client, auth, other_auth)


# ---------------------------------------------------------------------------------------------
# Job creation: 400 naming the field, with the dotted path for nested fields.
# ---------------------------------------------------------------------------------------------

BodyFactory = Callable[[World], "dict[str, Any] | bytes | None"]


def with_training(**fields: Any) -> BodyFactory:
    """A request with the tenant's good training file plus `fields`."""
    return lambda world: {"training_file": world["own_file"], **fields}


def hyper(**fields: Any) -> BodyFactory:
    return with_training(hyperparameters=fields)


JOB_CREATE_CASES: list[Any] = [
    pytest.param(lambda w: None, None, id="empty-body"),
    pytest.param(lambda w: {}, "training_file", id="empty-object"),
    pytest.param(
        lambda w: b"training_file=file-abc",
        None,
        id="body-not-json",
    ),
    pytest.param(
        lambda w: b'{"training_file": ',
        None,
        id="body-truncated-json",
    ),
    pytest.param(lambda w: b'["training_file"]', None, id="body-json-array-not-object"),
    pytest.param(lambda w: b'"file-abc"', None, id="body-json-string-not-object"),
    pytest.param(lambda w: {"training_file": 123}, "training_file", id="training-file-not-a-string"),
    pytest.param(lambda w: {"training_file": ABSENT}, "training_file", id="unknown-training-file"),
    pytest.param(lambda w: {"training_file": "not-an-id"}, "training_file", id="malformed-training-file"),
    pytest.param(lambda w: {"training_file": w["other_file"]}, "training_file", id="other-tenants-training-file"),
    pytest.param(lambda w: {"training_file": w["deleted_file"]}, "training_file", id="deleted-training-file"),
    pytest.param(lambda w: {"training_file": w["single_class_file"]}, "training_file", id="single-class-training"),
    pytest.param(with_training(validation_file=ABSENT), "validation_file", id="unknown-validation-file"),
    pytest.param(
        lambda w: {"training_file": w["own_file"], "validation_file": w["other_file"]},
        "validation_file",
        id="other-tenants-validation-file",
    ),
    pytest.param(
        lambda w: {"training_file": w["own_file"], "validation_file": w["neutral_file"]},
        "validation_file",
        id="validation-label-absent-from-training",
    ),
    pytest.param(
        lambda w: {"training_file": w["own_file"], "validation_file": w["pair_file"]},
        "validation_file",
        id="validation-has-text-pair-training-lacks",
    ),
    pytest.param(
        lambda w: {"training_file": w["own_file"], "validation_file": w["int_label_file"]},
        "validation_file",
        id="validation-int-labels-training-str",
    ),
    pytest.param(with_training(model="no-such-model"), "model", id="unknown-model"),
    pytest.param(with_training(model=""), "model", id="empty-model"),
    pytest.param(hyper(n_epochs=0), "hyperparameters.n_epochs", id="n-epochs-0"),
    pytest.param(hyper(n_epochs=10**9), "hyperparameters.n_epochs", id="n-epochs-10-to-the-9"),
    pytest.param(
        hyper(n_epochs="three"),
        "hyperparameters.n_epochs",
        id="n-epochs-a-word",
    ),
    pytest.param(hyper(learning_rate_multiplier=-1.0), "hyperparameters.learning_rate_multiplier", id="lr-negative"),
    pytest.param(hyper(learning_rate_multiplier=0.0), "hyperparameters.learning_rate_multiplier", id="lr-zero"),
    pytest.param(hyper(learning_rate_multiplier=0), "hyperparameters.learning_rate_multiplier", id="lr-integer-zero"),
    pytest.param(hyper(batch_size=0), "hyperparameters.batch_size", id="batch-size-0"),
    pytest.param(hyper(warmup_ratio=0.9), "hyperparameters.warmup_ratio", id="warmup-ratio-0.9"),
    pytest.param(hyper(max_length=4), "hyperparameters.max_length", id="max-length-4"),
    pytest.param(hyper(max_length=4096), "hyperparameters.max_length", id="max-length-over-the-models-limit"),
    pytest.param(hyper(epochs=3), "hyperparameters.epochs", id="unknown-hyperparameter"),
    pytest.param(
        with_training(strategy={"type": "partial", "trainable_layers": 7}),
        "strategy.trainable_layers",
        id="trainable-layers-deeper-than-minilm",
    ),
    pytest.param(
        with_training(model=TINY_BERT_ID, strategy={"type": "partial", "trainable_layers": 3}),
        "strategy.trainable_layers",
        id="trainable-layers-deeper-than-tiny-bert",
    ),
    pytest.param(
        with_training(strategy={"type": "full", "trainable_layers": 2}),
        "strategy.trainable_layers",
        id="trainable-layers-on-full-strategy",
    ),
    pytest.param(
        with_training(strategy={"type": "partial", "layer_decay": 0.9}),
        "strategy.layer_decay",
        id="layer-decay-on-partial-strategy",
    ),
    pytest.param(with_training(strategy={"type": "lora"}), "strategy.type", id="unknown-strategy-type"),
    pytest.param(with_training(task="summarization"), "task", id="unknown-task"),
    pytest.param(with_training(suffix="bad suffix!"), "suffix", id="suffix-with-illegal-characters"),
    pytest.param(with_training(suffix="s" * 65), "suffix", id="suffix-65-characters"),
    pytest.param(with_training(metadata={f"k{i}": "v" for i in range(17)}), "metadata", id="metadata-17-keys"),
    pytest.param(with_training(metadata={"k": "v" * 513}), "metadata", id="metadata-value-513-characters"),
    pytest.param(with_training(metadata={"k" * 65: "v"}), "metadata", id="metadata-key-65-characters"),
    pytest.param(with_training(metadata={"k": 1}), "metadata.k", id="metadata-non-string-value"),
    pytest.param(with_training(seed=-1), "seed", id="negative-seed"),
    pytest.param(with_training(unknown_field=1), "unknown_field", id="unknown-top-level-field"),
    pytest.param(
        with_training(integrations=[{"type": "wandb", "wandb": {"project": "p"}}]),
        "integrations",
        id="integrations-non-empty",
    ),
    pytest.param(with_training(method={"type": "dpo"}), "method.type", id="method-dpo"),
    pytest.param(
        with_training(hyperparameters={"n_epochs": 2}, method={"supervised": {"hyperparameters": {"n_epochs": 3}}}),
        "method",
        id="hyperparameters-in-two-places",
    ),
]


@pytest.mark.parametrize(("make_body", "param"), JOB_CREATE_CASES)
def test_bad_job_requests_are_400s_naming_the_field(
    client: TestClient,
    auth: dict[str, str],
    world: World,
    tiny_bert: str,
    make_body: BodyFactory,
    param: str | None,
) -> None:
    body = make_body(world)
    if isinstance(body, dict):
        response = client.post("/v1/fine_tuning/jobs", headers=auth, json=body)
    else:
        headers = {**auth, "content-type": "application/json"}
        response = client.post("/v1/fine_tuning/jobs", headers=headers, content=body or b"")
    assert_openai_error(response, 400, param)
    listed = client.get("/v1/fine_tuning/jobs", headers=auth).json()["data"]
    assert [job["id"] for job in listed] == world.job_ids()


# ---------------------------------------------------------------------------------------------
# List parameters: 400 naming `limit` or `after`, on every paginated endpoint.
# ---------------------------------------------------------------------------------------------

LIST_PATHS = {
    "jobs": "/v1/fine_tuning/jobs",
    "files": "/v1/files",
    "events": "/v1/fine_tuning/jobs/{own_job}/events",
    "checkpoints": "/v1/fine_tuning/jobs/{own_job}/checkpoints",
}
LIST_QUERIES = {
    "limit-0": ("limit=0", "limit"),
    "limit-1000000": ("limit=1000000", "limit"),
    "limit-abc": ("limit=abc", "limit"),
    "limit-negative": ("limit=-1", "limit"),
    "limit-empty": ("limit=", "limit"),
    "after-garbage": ("after=garbage", "after"),
}
FOREIGN_CURSORS = {
    "jobs": "{other_job}",
    "files": "{other_file}",
    "events": "ftevent-" + "a" * 24,
    "checkpoints": "ftckpt-" + "a" * 24,
}
LIST_CASES = [
    pytest.param(path, query, param, id=f"{endpoint}-{name}")
    for endpoint, path in LIST_PATHS.items()
    for name, (query, param) in LIST_QUERIES.items()
] + [
    pytest.param(LIST_PATHS[endpoint], f"after={cursor}", "after", id=f"{endpoint}-after-not-one-of-yours")
    for endpoint, cursor in FOREIGN_CURSORS.items()
]


@pytest.mark.parametrize(("path", "query", "param"), LIST_CASES)
def test_bad_list_parameters_are_400s_naming_the_parameter(
    client: TestClient, auth: dict[str, str], world: World, path: str, query: str, param: str
) -> None:
    url = f"{path}?{query}".format_map(world)
    assert_openai_error(client.get(url, headers=auth), 400, param)


# ---------------------------------------------------------------------------------------------
# Authentication, ownership and state: 401 without a valid key, 404 for ids that aren't yours,
# 409 for a request the object's state forbids.
# ---------------------------------------------------------------------------------------------

BAD_KEYS = {
    "no-header": {},
    "basic-scheme": {"Authorization": "Basic YWNtZTpzZWNyZXQ="},
    "empty-bearer": {"Authorization": "Bearer "},
    "unknown-key": {"Authorization": "Bearer sk-graft-unknown-0123456789abcdef"},
}
AUTH_CASES = [pytest.param("GET", "/v1/files", name, 401, None, id=f"list-files-{name}") for name in BAD_KEYS] + [
    pytest.param("POST", "/v1/fine_tuning/jobs", "no-header", 401, None, id="create-job-no-header"),
    pytest.param("POST", "/v1/files", "unknown-key", 401, None, id="upload-unknown-key"),
    pytest.param("GET", "/v1/fine_tuning/jobs/{own_job}", "unknown-key", 401, None, id="retrieve-job-unknown-key"),
]
JOB_ENDPOINTS = {
    "retrieve": ("GET", ""),
    "cancel": ("POST", "/cancel"),
    "events": ("GET", "/events"),
    "checkpoints": ("GET", "/checkpoints"),
    "weights": ("GET", "/weights"),
}
FILE_ENDPOINTS = {"retrieve": ("GET", ""), "content": ("GET", "/content"), "delete": ("DELETE", "")}
OWNERSHIP_CASES = (
    [
        pytest.param(
            method,
            f"/v1/fine_tuning/jobs/{{{job}}}{tail}",
            "auth",
            404,
            "fine_tuning_job_id",
            id=f"{name}-{job.replace('_', '-')}",
        )
        for name, (method, tail) in JOB_ENDPOINTS.items()
        for job in ("other_job", "absent_job")
    ]
    + [
        pytest.param(method, f"/v1/files/{{{file}}}{tail}", "auth", 404, "file_id", id=f"file-{name}-{file}")
        for name, (method, tail) in FILE_ENDPOINTS.items()
        for file in ("other_file", "absent_file")
    ]
    + [
        pytest.param("GET", "/v1/models/no-such-model", "auth", 404, "model", id="unknown-model"),
        pytest.param("GET", "/v1/models/ft:no-such-model", "auth", 404, "model", id="unknown-fine-tuned-model"),
        pytest.param(
            "GET",
            "/v1/fine_tuning/jobs/{own_job}/weights",
            "auth",
            404,
            "fine_tuning_job_id",
            id="weights-of-queued-job",
        ),
        pytest.param(
            "POST",
            "/v1/fine_tuning/jobs/{cancelled_job}/cancel",
            "auth",
            409,
            "fine_tuning_job_id",
            id="cancel-a-cancelled-job",
        ),
        pytest.param("DELETE", "/v1/files/{busy_file}", "auth", 409, "file_id", id="delete-a-file-a-job-uses"),
    ]
)


@pytest.mark.parametrize(("method", "path", "key", "status", "param"), AUTH_CASES + OWNERSHIP_CASES)
def test_requests_without_a_valid_key_or_for_foreign_ids_are_refused(
    client: TestClient,
    auth: dict[str, str],
    world: World,
    method: str,
    path: str,
    key: str,
    status: int,
    param: str | None,
) -> None:
    headers = auth if key == "auth" else BAD_KEYS[key]
    response = client.request(method, path.format_map(world), headers=headers)
    error = assert_openai_error(response, status, param)
    if status == 401:
        assert error["code"] == "invalid_api_key"


# ---------------------------------------------------------------------------------------------
# The classes of input an outside probe found behind 500s: unpaired surrogates in every string a
# user can send, booleans and strings where numbers belong, bodies past the cap with and without a
# key, truncated multipart bodies and unstorable text in query parameters. Nothing is kept.
# ---------------------------------------------------------------------------------------------

LONE = "\ud800"


def escaped_json(make: Callable[[World], dict[str, Any]]) -> BodyFactory:
    """The body as any client must send it: json.dumps escapes a lone surrogate as \\ud800."""
    return lambda world: json.dumps(make(world)).encode()


SURROGATE_JOB_CASES: list[Any] = [
    pytest.param(escaped_json(lambda w: {"training_file": w["own_file"], "model": LONE}), "model", id="model"),
    pytest.param(escaped_json(lambda w: {"training_file": f"file-{LONE}"}), "training_file", id="training-file"),
    pytest.param(
        escaped_json(lambda w: {"training_file": w["own_file"], "validation_file": LONE}),
        "validation_file",
        id="validation-file",
    ),
    pytest.param(escaped_json(lambda w: {"training_file": w["own_file"], "suffix": f"a{LONE}"}), "suffix", id="suffix"),
    pytest.param(
        escaped_json(lambda w: {"training_file": w["own_file"], "metadata": {"team": f"x{LONE}"}}),
        "metadata.team",
        id="metadata-value",
    ),
    pytest.param(
        escaped_json(lambda w: {"training_file": w["own_file"], "metadata": {LONE: "nlp"}}),
        "metadata",
        id="metadata-key",
    ),
    pytest.param(escaped_json(lambda w: {"training_file": w["own_file"], "task": LONE}), "task", id="task"),
    pytest.param(
        escaped_json(lambda w: {"training_file": w["own_file"], "strategy": LONE}),
        "strategy.type",  # a bare string is the shorthand for {"type": ...}
        id="strategy-shorthand",
    ),
    pytest.param(
        escaped_json(lambda w: {"training_file": w["own_file"], "strategy": {"type": LONE}}),
        "strategy.type",
        id="strategy-type",
    ),
    pytest.param(
        escaped_json(lambda w: {"training_file": w["own_file"], "hyperparameters": {"n_epochs": LONE}}),
        "hyperparameters.n_epochs",
        id="n-epochs",
    ),
    pytest.param(
        escaped_json(lambda w: {"training_file": w["own_file"], "method": {"type": LONE}}),
        "method.type",
        id="method-type",
    ),
    pytest.param(
        escaped_json(lambda w: {"training_file": w["own_file"], "integrations": [{LONE: "x"}]}),
        "integrations",
        id="integrations",
    ),
    pytest.param(
        escaped_json(lambda w: {"training_file": w["own_file"], LONE: 1}),
        None,
        id="a-field-name",
    ),
]
NUMBER_FIELDS = {
    "n-epochs": ("hyperparameters", "n_epochs"),
    "batch-size": ("hyperparameters", "batch_size"),
    "learning-rate-multiplier": ("hyperparameters", "learning_rate_multiplier"),
    "warmup-ratio": ("hyperparameters", "warmup_ratio"),
    "max-length": ("hyperparameters", "max_length"),
}
NOT_A_NUMBER = {"true": True, "false": False, "string-3": "3", "string-0.5": "0.5"}
NUMBER_JOB_CASES: list[Any] = (
    [
        pytest.param(with_training(**{group: {name: value}}), f"{group}.{name}", id=f"{field}-{kind}")
        for field, (group, name) in NUMBER_FIELDS.items()
        for kind, value in NOT_A_NUMBER.items()
    ]
    + [pytest.param(with_training(seed=value), "seed", id=f"seed-{kind}") for kind, value in NOT_A_NUMBER.items()]
    + [
        pytest.param(
            with_training(strategy={"type": "partial", "trainable_layers": True}),
            "strategy.trainable_layers",
            id="trainable-layers-true",
        ),
        pytest.param(
            with_training(strategy={"type": "layerwise_lr", "layer_decay": "0.8"}),
            "strategy.layer_decay",
            id="layer-decay-string",
        ),
        pytest.param(
            with_training(method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": True}}}),
            "method.supervised.hyperparameters.n_epochs",
            id="method-n-epochs-true",
        ),
    ]
)


@pytest.mark.parametrize(("make_body", "param"), SURROGATE_JOB_CASES + NUMBER_JOB_CASES)
def test_job_requests_with_unstorable_text_or_non_numbers_are_400s_naming_the_field(
    client: TestClient, auth: dict[str, str], world: World, make_body: BodyFactory, param: str | None
) -> None:
    body = make_body(world)
    if isinstance(body, dict):
        response = client.post("/v1/fine_tuning/jobs", headers=auth, json=body)
    else:
        response = client.post(
            "/v1/fine_tuning/jobs", headers={**auth, "content-type": "application/json"}, content=body
        )
    error = assert_openai_error(response, 400, param)
    assert error["code"] == "invalid_request_error"
    assert client.get("/v1/fine_tuning/jobs", headers=auth).json()["data"] == []


SURROGATE_FILE_CASES = [
    pytest.param(b'{"text": "x\\ud800", "label": "neg"}\n', "line 2: 'text'", id="jsonl-text"),
    pytest.param(b'{"text": "x", "text_pair": "\\udfff", "label": "neg"}\n', "line 2: 'text_pair'", id="jsonl-pair"),
    pytest.param(b'{"text": "x", "label": "neg\\ud800"}\n', "line 2: 'label'", id="jsonl-label"),
]


@pytest.mark.parametrize(("bad_line", "message_start"), SURROGATE_FILE_CASES)
@pytest.mark.parametrize("records_before", [1, 5000], ids=["short-file", "batched-file"])
def test_an_unpaired_surrogate_in_a_kept_field_of_a_file_is_a_400_naming_line_and_field(
    client: TestClient,
    auth: dict[str, str],
    settings: Settings,
    bad_line: bytes,
    message_start: str,
    records_before: int,
) -> None:
    content = GOOD * records_before + bad_line
    line = f"line {records_before + 1}:"
    error = assert_openai_error(post_upload(client, auth, content), 400, "file")
    assert error["code"] == "invalid_file"
    assert error["message"].startswith(message_start.replace("line 2:", line)), error["message"]
    assert "unpaired surrogate" in error["message"]
    assert client.get("/v1/files", headers=auth).json()["data"] == []
    assert [p for p in settings.artifacts.rglob("*") if p.is_file()] == []


def _chunks(total: int) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        piece = min(64 * 1024, total - sent)
        sent += piece
        yield b" " * piece


OVER_THE_CAP = MIB + 1  # the default GRAFT_MAX_REQUEST_BODY_BYTES is 1 MiB
BODY_CAP_CASES = [
    pytest.param("POST", "/v1/fine_tuning/jobs", "auth", "length", 413, id="create-with-key"),
    pytest.param("POST", "/v1/fine_tuning/jobs", "none", "length", 401, id="create-without-key"),
    pytest.param("POST", "/v1/fine_tuning/jobs", "auth", "chunked", 413, id="create-chunked-with-key"),
    pytest.param("POST", "/v1/fine_tuning/jobs", "none", "chunked", 401, id="create-chunked-without-key"),
    pytest.param("POST", "/v1/fine_tuning/jobs/{own_job}/pause", "auth", "length", 413, id="pause-with-key"),
    pytest.param("POST", "/v1/fine_tuning/jobs/{own_job}/cancel", "none", "chunked", 401, id="cancel-without-key"),
    pytest.param("GET", "/v1/fine_tuning/jobs", "auth", "length", 413, id="list-with-a-body"),
]


@pytest.mark.parametrize(("method", "path", "key", "framing", "status"), BODY_CAP_CASES)
def test_a_body_past_the_cap_is_refused_with_or_without_a_key_and_changes_nothing(
    client: TestClient, auth: dict[str, str], world: World, method: str, path: str, key: str, framing: str, status: int
) -> None:
    url = path.format_map(world)
    headers = {**(auth if key == "auth" else {}), "content-type": "application/json"}
    content = b" " * OVER_THE_CAP if framing == "length" else _chunks(OVER_THE_CAP)
    assert_openai_error(client.request(method, url, headers=headers, content=content), status, None)
    listed = client.get("/v1/fine_tuning/jobs", headers=auth).json()["data"]
    assert [(job["id"], job["status"]) for job in listed] == [(job_id, "queued") for job_id in world.job_ids()]


TRUNCATED_MULTIPART_CASES = [
    pytest.param(lambda body: body[: body.rindex(b"--corpusboundary--")], id="no-closing-boundary"),
    pytest.param(lambda body: body[: body.index(b"neg") + 1], id="cut-mid-label"),
    pytest.param(lambda body: body[: body.rindex(b"--corpusboundary--") - 3], id="jsonl-one-byte-short"),
]


@pytest.mark.parametrize("cut", TRUNCATED_MULTIPART_CASES)
def test_a_truncated_multipart_upload_is_refused_and_nothing_is_kept(
    client: TestClient, auth: dict[str, str], settings: Settings, cut: Callable[[bytes], bytes]
) -> None:
    body, content_type = raw_multipart(
        [(b'name="purpose"', b"fine-tune"), (b'name="file"; filename="t.jsonl"', GOOD + GOOD_NEG)]
    )
    response = client.post("/v1/files", headers={**auth, "content-type": content_type}, content=cut(body))
    assert_openai_error(response, 400, "file")
    assert client.get("/v1/files", headers=auth).json()["data"] == []
    assert [p for p in settings.artifacts.rglob("*") if p.is_file()] == []


UNSTORABLE_QUERY_CASES = [
    pytest.param(path, "after=%00", "after", id=f"{endpoint}-after-nul") for endpoint, path in LIST_PATHS.items()
] + [
    pytest.param(LIST_PATHS["jobs"], "metadata[team]=a%00", "metadata[team]", id="jobs-metadata-nul"),
    pytest.param(LIST_PATHS["files"], "purpose=fine-tune%00", "purpose", id="files-purpose-nul"),
]


@pytest.mark.parametrize(("path", "query", "param"), UNSTORABLE_QUERY_CASES)
def test_a_query_parameter_holding_unstorable_text_is_a_400_naming_it(
    client: TestClient, auth: dict[str, str], world: World, path: str, query: str, param: str
) -> None:
    error = assert_openai_error(client.get(f"{path}?{query}".format_map(world), headers=auth), 400, param)
    assert "NUL" in error["message"]
