"""Reliability checklist item 17: downloads honour Range requests and publish the sha256 of what they send."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from models.settings import Settings
from tests.conftest import jsonl_bytes, upload_file
from tests.processes import running_worker, wait_for
from tests.worker.training.conftest import sentiment_rows

CONTENT = jsonl_bytes([{"text": f"review number {i}", "label": "pos" if i % 2 else "neg"} for i in range(200)])
SIZE = len(CONTENT)


@pytest.fixture
def file_id(client: TestClient, auth: dict[str, str]) -> str:
    return upload_file(client, auth, CONTENT)


def content_url(file_id: str) -> str:
    return f"/v1/files/{file_id}/content"


@pytest.mark.parametrize(
    ("range_header", "start", "end"),
    [
        pytest.param("bytes=0-9", 0, 9, id="first-ten"),
        pytest.param("bytes=100-", 100, SIZE - 1, id="open-ended"),
        pytest.param("bytes=-25", SIZE - 25, SIZE - 1, id="suffix"),
        pytest.param(f"bytes=10-{SIZE + 1000}", 10, SIZE - 1, id="end-past-the-file-is-clamped"),
        pytest.param(f"bytes={SIZE - 1}-{SIZE - 1}", SIZE - 1, SIZE - 1, id="last-byte"),
    ],
)
def test_a_valid_range_is_a_206_with_exactly_those_bytes(
    client: TestClient, auth: dict[str, str], file_id: str, range_header: str, start: int, end: int
) -> None:
    response = client.get(content_url(file_id), headers={**auth, "range": range_header})
    assert response.status_code == 206, response.text
    assert response.content == CONTENT[start : end + 1]
    assert response.headers["content-range"] == f"bytes {start}-{end}/{SIZE}"
    assert response.headers["content-length"] == str(end - start + 1)
    assert response.headers["accept-ranges"] == "bytes"


def test_two_ranges_come_back_as_multipart_byteranges(client: TestClient, auth: dict[str, str], file_id: str) -> None:
    response = client.get(content_url(file_id), headers={**auth, "range": "bytes=0-4,50-59"})
    assert response.status_code == 206
    assert response.headers["content-type"].startswith("multipart/byteranges; boundary=")
    assert CONTENT[0:5] in response.content and CONTENT[50:60] in response.content
    assert f"bytes 0-4/{SIZE}".encode() in response.content and f"bytes 50-59/{SIZE}".encode() in response.content


@pytest.mark.parametrize("range_header", [f"bytes={SIZE}-", f"bytes={SIZE + 10}-{SIZE + 20}"])
def test_a_range_past_the_end_is_a_416_naming_the_size(
    client: TestClient, auth: dict[str, str], file_id: str, range_header: str
) -> None:
    response = client.get(content_url(file_id), headers={**auth, "range": range_header})
    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{SIZE}"


@pytest.mark.parametrize(
    "range_header",
    [
        "bytes=999999999-",
        "bytes=-0",
        f"bytes={SIZE}-",
        f"bytes={SIZE}-{SIZE}",
        "bytes=0-9,999999999-",  # Starlette serves a set only when every range in it starts inside the file
        "bytes=-0,-0",
    ],
)
def test_an_unsatisfiable_range_is_a_416_in_the_error_shape_naming_the_size(
    client: TestClient, auth: dict[str, str], file_id: str, range_header: str
) -> None:
    response = client.get(content_url(file_id), headers={**auth, "range": range_header})
    assert response.status_code == 416, response.text
    assert response.headers["content-range"] == f"bytes */{SIZE}"
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "invalid_request_error", None)
    assert error["message"] == (
        f"Range {range_header!r} is not satisfiable: the file has {SIZE} bytes; "
        "ask for ranges that start before its end, or no Range for the whole file"
    )


@pytest.mark.parametrize(
    "range_header", ["bytes=abc", "bytes=9-3", "bytes", "bytes=-", "bytes=", "bytes=,", "bytes=--5", "bytes=0-1-2"]
)
def test_a_malformed_range_is_a_416(client: TestClient, auth: dict[str, str], file_id: str, range_header: str) -> None:
    response = client.get(content_url(file_id), headers={**auth, "range": range_header})
    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{SIZE}"
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_request_error")
    assert repr(range_header) in error["message"]


@pytest.mark.parametrize("range_header", ["bytes=+1-2", "bytes=1_0-20", "bytes=0-9,abc"])
def test_a_range_starlette_would_stretch_or_skip_is_a_416(
    client: TestClient, auth: dict[str, str], file_id: str, range_header: str
) -> None:
    response = client.get(content_url(file_id), headers={**auth, "range": range_header})
    assert (response.status_code, response.headers["content-range"]) == (416, f"bytes */{SIZE}")


@pytest.mark.parametrize("range_header", ["items=0-1", "items", "=0-1"])
def test_a_range_in_an_unknown_unit_is_ignored(
    client: TestClient, auth: dict[str, str], file_id: str, range_header: str
) -> None:
    response = client.get(content_url(file_id), headers={**auth, "range": range_header})
    assert (response.status_code, response.content) == (200, CONTENT)
    assert "content-range" not in response.headers


def test_the_range_unit_and_spaces_around_ranges_are_tolerated(
    client: TestClient, auth: dict[str, str], file_id: str
) -> None:
    response = client.get(content_url(file_id), headers={**auth, "range": "Bytes=0-4, ,"})
    assert (response.status_code, response.content) == (206, CONTENT[0:5])


def test_a_malformed_range_behind_a_stale_if_range_is_ignored(
    client: TestClient, auth: dict[str, str], file_id: str
) -> None:
    stale = '"' + "0" * 64 + '"'
    response = client.get(content_url(file_id), headers={**auth, "range": "bytes=abc", "if-range": stale})
    assert (response.status_code, response.content) == (200, CONTENT)


def test_a_malformed_range_never_answers_with_a_partial_body_or_a_5xx(
    client: TestClient, auth: dict[str, str], file_id: str
) -> None:
    for range_header in ("bytes=abc", "bytes=9-3", "bytes", "bytes=-", "bytes=--5", "bytes=0-1-2"):
        response = client.get(content_url(file_id), headers={**auth, "range": range_header})
        assert response.status_code in (200, 400, 416), (range_header, response.status_code)
        assert response.status_code != 200 or response.content == CONTENT


def test_if_range_resumes_only_while_the_etag_still_matches(
    client: TestClient, auth: dict[str, str], file_id: str
) -> None:
    etag = client.get(content_url(file_id), headers=auth).headers["etag"]
    resumed = client.get(content_url(file_id), headers={**auth, "range": "bytes=10-", "if-range": etag})
    assert (resumed.status_code, resumed.content) == (206, CONTENT[10:])
    stale = client.get(content_url(file_id), headers={**auth, "range": "bytes=10-", "if-range": '"' + "0" * 64 + '"'})
    assert (stale.status_code, stale.content) == (200, CONTENT)


def test_the_published_sha256_of_a_file_matches_its_bytes(
    client: TestClient, auth: dict[str, str], file_id: str
) -> None:
    digest = hashlib.sha256(CONTENT).hexdigest()
    assert client.get(f"/v1/files/{file_id}", headers=auth).json()["sha256"] == digest
    download = client.get(content_url(file_id), headers=auth)
    assert download.content == CONTENT
    assert download.headers["etag"] == f'"{digest}"'


# ---------------------------------------------------------------------------------------------
# The weights of a job trained by a real worker.
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def worker(settings: Settings, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    with running_worker(settings, tmp_path / "worker.log") as process:
        yield process


def trained_job(client: TestClient, auth: dict[str, str], model: str) -> str:
    training = upload_file(client, auth, jsonl_bytes(sentiment_rows(32)))
    created = client.post(
        "/v1/fine_tuning/jobs",
        headers=auth,
        json={"model": model, "training_file": training, "hyperparameters": {"n_epochs": 1, "batch_size": 16}},
    )
    assert created.status_code == 200, created.text
    job_id: str = created.json()["id"]

    def succeeded() -> dict[str, Any] | None:
        job: dict[str, Any] = client.get(f"/v1/fine_tuning/jobs/{job_id}", headers=auth).json()
        assert job["status"] not in ("failed", "cancelled"), job
        return job if job["status"] == "succeeded" else None

    wait_for(succeeded, timeout=120, interval=0.2, what=f"job {job_id} to succeed")
    return job_id


def test_weights_publish_their_sha256_and_serve_ranges(
    client: TestClient, auth: dict[str, str], tiny_bert: str, worker: subprocess.Popen[bytes]
) -> None:
    url = f"/v1/fine_tuning/jobs/{trained_job(client, auth, tiny_bert)}/weights"
    whole = client.get(url, headers=auth)
    assert whole.status_code == 200
    size, digest = len(whole.content), hashlib.sha256(whole.content).hexdigest()
    assert whole.headers["etag"] == f'"{digest}"'
    assert whole.headers["x-checksum-sha256"] == digest
    assert whole.headers["accept-ranges"] == "bytes"

    middle = client.get(url, headers={**auth, "range": "bytes=512-1535"})
    assert middle.status_code == 206
    assert middle.content == whole.content[512:1536]
    assert middle.headers["content-range"] == f"bytes 512-1535/{size}"
    assert middle.headers["x-checksum-sha256"] == digest  # the whole archive's digest, to check after resuming

    pieces = [
        client.get(url, headers={**auth, "range": f"bytes={start}-{start + 65535}"}) for start in range(0, size, 65536)
    ]
    assert all(piece.status_code == 206 for piece in pieces)
    assert hashlib.sha256(b"".join(piece.content for piece in pieces)).hexdigest() == digest

    past_the_end = client.get(url, headers={**auth, "range": f"bytes={size}-"})
    assert past_the_end.status_code == 416
    assert past_the_end.headers["content-range"] == f"bytes */{size}"
    malformed = client.get(url, headers={**auth, "range": "bytes=1535-512"})
    assert (malformed.status_code, malformed.headers["content-range"]) == (416, f"bytes */{size}")
    assert malformed.json()["error"]["code"] == "invalid_request_error"
    other_unit = client.get(url, headers={**auth, "range": "items=0-1"})
    assert (other_unit.status_code, other_unit.content) == (200, whole.content)
