from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

import api.routes.files
from api.main import create_app
from models.errors import InvalidRequest
from models.services import files
from models.settings import Settings
from tests.conftest import SHARED_DATA, jsonl_bytes, upload_file

GOOD_ROWS: list[dict[str, object]] = [
    {"text": "great film", "label": "positive"},
    {"text": "awful plot", "label": "negative"},
]
PURPOSE = {"purpose": "fine-tune"}


def test_upload_records_size_sha256_and_label_counts(client: TestClient, auth: dict[str, str]) -> None:
    content = (SHARED_DATA / "sst2" / "validation.jsonl").read_bytes()
    response = client.post(
        "/v1/files", headers=auth, files={"file": ("val.jsonl", content)}, data={"purpose": "fine-tune"}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "file"
    assert body["id"].startswith("file-")
    assert body["bytes"] == len(content)
    assert body["sha256"] == hashlib.sha256(content).hexdigest()
    assert body["status"] == "processed"
    assert body["record_count"] == 872
    assert body["label_counts"] == {"positive": 444, "negative": 428}
    assert body["filename"] == "val.jsonl"


def test_uploaded_content_downloads_byte_for_byte(client: TestClient, auth: dict[str, str]) -> None:
    content = jsonl_bytes(GOOD_ROWS)
    file_id = upload_file(client, auth, content)
    response = client.get(f"/v1/files/{file_id}/content", headers=auth)
    assert response.status_code == 200
    assert response.content == content


def test_invalid_line_is_a_400_naming_the_line_and_nothing_is_stored(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    content = b'{"text": "ok", "label": "a"}\n{"text": "no label"}\n'
    response = client.post(
        "/v1/files", headers=auth, files={"file": ("t.jsonl", content)}, data={"purpose": "fine-tune"}
    )
    assert response.status_code == 400
    assert response.json()["error"] == {
        "message": "line 2: missing 'label'",
        "type": "invalid_request_error",
        "param": "file",
        "code": "invalid_file",
    }
    assert client.get("/v1/files", headers=auth).json()["data"] == []
    leftovers = [p for p in settings.artifacts.rglob("*") if p.is_file()]
    assert leftovers == []


def test_upload_over_the_limit_is_413(client: TestClient, auth: dict[str, str], settings: Settings) -> None:
    content = b"x" * (settings.max_upload_bytes + 1)
    response = client.post(
        "/v1/files", headers=auth, files={"file": ("big.jsonl", content)}, data={"purpose": "fine-tune"}
    )
    assert response.status_code == 413
    assert response.json()["error"]["param"] == "file"
    assert [p for p in settings.artifacts.rglob("*") if p.is_file()] == []


def test_chunked_upload_over_the_limit_is_413(client: TestClient, auth: dict[str, str], settings: Settings) -> None:
    boundary = "graftboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n\r\n'
    ).encode()

    def body() -> Iterator[bytes]:
        yield head
        for _ in range(settings.max_upload_bytes // (1024 * 1024) + 2):
            yield b"x" * (1024 * 1024)
        yield f"\r\n--{boundary}--\r\n".encode()

    response = client.post(
        "/v1/files",
        headers={**auth, "content-type": f"multipart/form-data; boundary={boundary}"},
        content=body(),  # a generator: sent chunked, with no Content-Length
    )
    assert response.status_code == 413


def test_wrong_purpose_is_a_400_naming_purpose(client: TestClient, auth: dict[str, str]) -> None:
    response = client.post(
        "/v1/files",
        headers=auth,
        files={"file": ("t.jsonl", jsonl_bytes(GOOD_ROWS))},
        data={"purpose": "assistants"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "purpose"


def test_missing_file_part_is_a_400(client: TestClient, auth: dict[str, str]) -> None:
    response = client.post("/v1/files", headers=auth, data={"purpose": "fine-tune"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "file"


def test_path_in_filename_is_reduced_to_its_last_component(client: TestClient, auth: dict[str, str]) -> None:
    response = client.post(
        "/v1/files",
        headers=auth,
        files={"file": ("../../etc/passwd.jsonl", jsonl_bytes(GOOD_ROWS))},
        data={"purpose": "fine-tune"},
    )
    assert response.status_code == 200
    assert response.json()["filename"] == "passwd.jsonl"


def test_csv_upload_is_accepted(client: TestClient, auth: dict[str, str]) -> None:
    response = client.post(
        "/v1/files",
        headers=auth,
        files={"file": ("t.csv", b"text,label\ngood,pos\nbad,neg\n")},
        data={"purpose": "fine-tune"},
    )
    assert response.status_code == 200
    assert response.json()["format"] == "csv"
    assert response.json()["label_counts"] == {"pos": 1, "neg": 1}


def test_files_list_newest_first_with_cursor(client: TestClient, auth: dict[str, str]) -> None:
    ids = [upload_file(client, auth, jsonl_bytes(GOOD_ROWS)) for _ in range(3)]
    first = client.get("/v1/files?limit=2", headers=auth).json()
    assert [f["id"] for f in first["data"]] == ids[::-1][:2]
    assert first["has_more"] is True
    second = client.get(f"/v1/files?limit=2&after={first['data'][-1]['id']}", headers=auth).json()
    assert [f["id"] for f in second["data"]] == [ids[0]]
    assert second["has_more"] is False


def test_deleted_file_is_gone(client: TestClient, auth: dict[str, str], settings: Settings) -> None:
    file_id = upload_file(client, auth, jsonl_bytes(GOOD_ROWS))
    response = client.delete(f"/v1/files/{file_id}", headers=auth)
    assert response.json() == {"object": "file", "id": file_id, "deleted": True}
    assert client.get(f"/v1/files/{file_id}", headers=auth).status_code == 404
    assert [p for p in settings.artifacts.rglob("*") if p.is_file()] == []


def test_a_form_with_too_many_parts_is_refused(client: TestClient, auth: dict[str, str]) -> None:
    fields = {f"field{i}": "x" for i in range(40)}
    response = client.post(
        "/v1/files",
        headers=auth,
        files={"file": ("t.jsonl", jsonl_bytes(GOOD_ROWS))},
        data={"purpose": "fine-tune", **fields},
    )
    assert response.status_code == 400
    assert "parts" in response.json()["error"]["message"]


class _UnrenderableResponse:
    """Stands in for a response model whose building fails, as one echoing unencodable text once did."""

    def __init__(self, *_args: object, **_kwargs: object) -> None:
        raise RuntimeError("the response could not be built")

    @classmethod
    def from_row(cls, *_args: object) -> None:
        raise RuntimeError("the response could not be built")


def test_an_upload_whose_response_cannot_be_built_stores_nothing(
    client: TestClient, auth: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api.routes.files, "FileRead", _UnrenderableResponse)
    response = client.post("/v1/files", headers=auth, files={"file": ("t.jsonl", jsonl_bytes(GOOD_ROWS))}, data=PURPOSE)
    assert response.status_code == 500
    monkeypatch.undo()
    assert client.get("/v1/files", headers=auth).json()["data"] == []


def test_a_delete_whose_response_cannot_be_built_deletes_nothing(
    client: TestClient, auth: dict[str, str], settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    file_id = upload_file(client, auth, jsonl_bytes(GOOD_ROWS))
    monkeypatch.setattr(api.routes.files, "FileDeleted", _UnrenderableResponse)
    assert client.delete(f"/v1/files/{file_id}", headers=auth).status_code == 500
    assert client.get(f"/v1/files/{file_id}", headers=auth).status_code == 200
    assert client.get(f"/v1/files/{file_id}/content", headers=auth).content == jsonl_bytes(GOOD_ROWS)


def test_missing_purpose_is_a_400_saying_what_to_send(client: TestClient, auth: dict[str, str]) -> None:
    response = client.post("/v1/files", headers=auth, files={"file": ("t.jsonl", jsonl_bytes(GOOD_ROWS))})
    assert response.status_code == 400
    assert response.json()["error"] == {
        "message": "purpose: missing; send purpose=fine-tune with the file",
        "type": "invalid_request_error",
        "param": "purpose",
        "code": "invalid_request_error",
    }


def test_wrong_purpose_is_a_400_naming_the_value_and_the_one_accepted(client: TestClient, auth: dict[str, str]) -> None:
    response = client.post(
        "/v1/files", headers=auth, files={"file": ("t.jsonl", jsonl_bytes(GOOD_ROWS))}, data={"purpose": "batch"}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("invalid_request_error", "purpose")
    assert error["message"] == ("purpose: 'batch' is not accepted; send purpose=fine-tune")


@pytest.mark.parametrize(
    ("filename", "stored"),
    [
        ("evil\u202egnp.exe", "evilgnp.exe"),  # right-to-left override: would display as "evilexe.png"
        ("\u2066report\u2069\u200e.jsonl", "report.jsonl"),  # isolates and a left-to-right mark
        ("data\u061c\u200f\u202a\u202b\u202c\u202d.csv", "data.csv"),
        ("zero\u200bwidth\ufeff.jsonl", "zerowidth.jsonl"),
        ("\u202e", "upload"),  # nothing left
    ],
)
def test_format_characters_are_stripped_from_filenames(
    client: TestClient, auth: dict[str, str], filename: str, stored: str
) -> None:
    content = b"text,label\ngood,pos\nbad,neg\n" if stored.endswith(".csv") else jsonl_bytes(GOOD_ROWS)
    boundary = "graftboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n\r\n'
        ).encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    headers = {**auth, "content-type": f"multipart/form-data; boundary={boundary}"}
    response = client.post("/v1/files", headers=headers, content=body)
    assert response.status_code == 200, response.text
    assert response.json()["filename"] == stored


def test_a_filename_that_is_not_valid_unicode_is_refused_naming_file() -> None:
    with pytest.raises(InvalidRequest) as caught:
        files.clean_filename("train\ud800.jsonl")
    assert caught.value.param == "file"
    assert caught.value.message == (
        "file: the filename is not valid Unicode (an unpaired surrogate \\ud800); rename the file"
    )


def test_labels_over_the_configured_bounds_are_refused_at_upload(client: TestClient, auth: dict[str, str]) -> None:
    """The route passes Settings' max_label_chars and max_labels down (here the defaults, 256 and 1000)."""
    long_label = jsonl_bytes([{"text": "a", "label": "x" * 257}, {"text": "b", "label": "y"}])
    response = client.post("/v1/files", headers=auth, files={"file": ("t.jsonl", long_label)}, data=PURPOSE)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("invalid_file", "file")
    assert error["message"].startswith("line 1: 'label' is 257 characters long; labels may be at most 256 characters")


def test_label_bounds_follow_the_settings(settings: Settings, auth: dict[str, str]) -> None:
    narrow = settings.model_copy(update={"max_label_chars": 4, "max_labels": 2})
    rows: list[dict[str, object]] = [{"text": "a", "label": "one"}, {"text": "b", "label": "two"}]
    extras: list[dict[str, object]] = [{"text": "c", "label": "three"}, {"text": "c", "label": "six"}]
    with TestClient(create_app(narrow)) as narrow_client:
        messages = [
            narrow_client.post(
                "/v1/files", headers=auth, files={"file": ("t.jsonl", jsonl_bytes([*rows, extra]))}, data=PURPOSE
            ).json()["error"]["message"]
            for extra in extras  # the first holds too long a label, the second one label too many
        ]
    assert messages[0].startswith("line 3: 'label' is 5 characters long; labels may be at most 4 characters")
    assert messages[1].startswith("line 3: the file has more than 2 distinct labels")


def test_an_unknown_cursor_is_a_400_saying_what_to_pass(client: TestClient, auth: dict[str, str]) -> None:
    error = client.get("/v1/files?after=garbage", headers=auth).json()["error"]
    assert (error["param"], error["code"]) == ("after", "invalid_request_error")
    assert (
        error["message"]
        == "after: 'garbage' is not one of your files; pass the id of the last file of the previous page"
    )
