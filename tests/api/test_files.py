from __future__ import annotations

import hashlib

from fastapi.testclient import TestClient

from models.settings import Settings
from tests.conftest import SHARED_DATA, jsonl_bytes, upload_file

GOOD_ROWS = [{"text": "great film", "label": "positive"}, {"text": "awful plot", "label": "negative"}]


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

    def body() -> object:
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
