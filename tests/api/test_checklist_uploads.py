"""Checklist items 12–15 (upload size, filenames, archives, big files) and uploads cut short or aborted."""

from __future__ import annotations

import io
import json
import logging
import socket
import struct
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from models.services import tenants
from models.settings import Settings
from models.storage.database import session_scope
from tests.conftest import make_tenant_key
from tests.live_api import (
    BOUNDARY,
    MULTIPART_CONTENT_TYPE,
    LiveApi,
    multipart_head,
    multipart_tail,
    running_api,
    running_server,
    tree_size_bytes,
)
from tests.processes import wait_for

MIB = 1024 * 1024
CHUNK = b"x" * (256 * 1024)
GOOD = b'{"text": "a fine film", "label": "pos"}\n{"text": "a dull film", "label": "neg"}\n'


@pytest.fixture
def live_api(settings: Settings, tmp_path: Path) -> Iterator[LiveApi]:
    with running_api(settings, tmp_path / "api.log") as api:
        yield api


@pytest.fixture
def live_key(settings: Settings) -> str:
    return make_tenant_key(settings, "acme")


# ---------------------------------------------------------------------------------------------
# 12. An oversized upload gets 413 (or 401 without a key) before the temporary disk grows past
#     the limit plus 1 MB: sampled while the body streams into a real uvicorn process.
# ---------------------------------------------------------------------------------------------


class DiskWatch:
    """Samples the artifact store's size (its temporary area included) each time the body yields a chunk."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.peak_bytes = 0
        self.sent_bytes = 0

    def sample(self) -> None:
        self.peak_bytes = max(self.peak_bytes, tree_size_bytes(self.root))

    def body(self, file_bytes: int) -> Iterator[bytes]:
        head = multipart_head(b"big.jsonl")
        self.sent_bytes += len(head)
        yield head
        while self.sent_bytes < file_bytes:
            self.sample()
            self.sent_bytes += len(CHUNK)
            yield CHUNK
        self.sample()
        yield multipart_tail()


def post_streamed(api: LiveApi, headers: dict[str, str], body: Iterator[bytes]) -> httpx.Response:
    return httpx.post(
        f"{api.base_url}/v1/files",
        headers={"content-type": MULTIPART_CONTENT_TYPE, **headers},
        content=body,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("authorized", "declare_length", "status"),
    [
        pytest.param(True, False, 413, id="chunked"),
        pytest.param(True, True, 413, id="content-length"),
        pytest.param(False, False, 401, id="chunked-without-a-key"),
        pytest.param(False, True, 413, id="content-length-without-a-key"),
    ],
)
def test_an_oversized_upload_is_refused_before_the_disk_grows_past_the_limit(
    live_api: LiveApi,
    live_key: str,
    settings: Settings,
    authorized: bool,
    declare_length: bool,
    status: int,
) -> None:
    file_bytes = 4 * settings.max_upload_bytes  # 20 MiB against the fixture's 5 MiB limit
    watch = DiskWatch(settings.artifacts)
    headers = {"authorization": f"Bearer {live_key}"} if authorized else {}
    if declare_length:
        declared = len(multipart_head(b"big.jsonl")) + file_bytes + len(multipart_tail())
        headers["content-length"] = str(declared)
    response = post_streamed(live_api, headers, watch.body(file_bytes))
    watch.sample()

    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == ("file_too_large" if status == 413 else "invalid_api_key"), error
    assert watch.peak_bytes <= settings.max_upload_bytes + MIB
    assert tree_size_bytes(settings.artifacts) == 0
    if status == 401 or declare_length:
        assert watch.peak_bytes == 0  # refused before a byte of the body reached the disk
    else:
        assert watch.peak_bytes > 0  # the sampling did see the temporary file grow
    listed = httpx.get(f"{live_api.base_url}/v1/files", headers={"authorization": f"Bearer {live_key}"})
    assert listed.json()["data"] == []


def test_an_upload_just_under_the_limit_is_accepted_by_the_live_api(
    live_api: LiveApi, live_key: str, settings: Settings
) -> None:
    line = b'{"text": "' + b"y" * 1000 + b'", "label": "pos"}\n'
    count = (settings.max_upload_bytes - MIB) // len(line)

    def body() -> Iterator[bytes]:
        yield multipart_head()
        for _ in range(count):
            yield line
        yield multipart_tail()

    response = post_streamed(live_api, {"authorization": f"Bearer {live_key}"}, body())
    assert response.status_code == 200, response.text
    assert response.json()["record_count"] == count
    assert response.json()["bytes"] == count * len(line)


# ---------------------------------------------------------------------------------------------
# 13. A filename is display text only: the blob lives at files/<tenant id>/<file id>, and nothing
#     appears anywhere else on disk.
# ---------------------------------------------------------------------------------------------


def files_on_disk(root: Path) -> set[Path]:
    """Every file under `root` except the SQLite databases and their journals."""
    return {path for path in root.rglob("*") if path.is_file() and ".db" not in path.name}


def raw_upload(client: TestClient, headers: dict[str, str], disposition_filename: bytes) -> Any:
    body = multipart_head(b"PLACEHOLDER") + GOOD + multipart_tail()
    body = body.replace(b'filename="PLACEHOLDER"', disposition_filename)
    return client.post("/v1/files", headers={**headers, "content-type": MULTIPART_CONTENT_TYPE}, content=body)


@pytest.mark.parametrize(
    ("disposition_filename", "display_name"),
    [
        pytest.param(b'filename="../x"', "x", id="dot-dot-slash"),
        pytest.param(b'filename="../../../../../../tmp/x.jsonl"', "x.jsonl", id="deep-traversal"),
        pytest.param(b'filename="/etc/cron.d/x.jsonl"', "x.jsonl", id="absolute-posix"),
        pytest.param(b'filename="C:\\\\Windows\\\\x.jsonl"', "x.jsonl", id="absolute-windows"),
        pytest.param(b'filename=".."', "upload", id="only-dot-dot"),
        pytest.param(b"filename*=UTF-8''..%2F..%2Fx.jsonl", None, id="rfc5987-encoded-traversal"),
    ],
)
def test_a_path_like_filename_is_stored_under_a_server_id_inside_the_tenant_directory(
    client: TestClient,
    settings: Settings,
    tmp_path: Path,
    disposition_filename: bytes,
    display_name: str | None,
) -> None:
    with session_scope(settings.database_url) as session:
        tenant = tenants.create_tenant(session, "acme")
        _, key = tenants.create_api_key(session, tenant)
        tenant_id = tenant.id
    before = files_on_disk(tmp_path)
    response = raw_upload(client, {"authorization": f"Bearer {key}"}, disposition_filename)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"].startswith("file-")
    if display_name is not None:
        assert body["filename"] == display_name
    assert "/" not in body["filename"] and "\\" not in body["filename"]
    assert files_on_disk(tmp_path) - before == {settings.artifacts / "files" / tenant_id / body["id"]}
    assert (settings.artifacts / "files" / tenant_id / body["id"]).read_bytes() == GOOD


@pytest.mark.parametrize(
    "disposition_filename",
    [
        pytest.param(b'filename="x\x00.jsonl"', id="nul-inside"),
        pytest.param(b'filename="../x\x00/../../y.jsonl"', id="nul-inside-a-traversal"),
        pytest.param(b'filename="x.jsonl\x00"', id="nul-at-the-end"),
    ],
)
def test_a_filename_with_a_nul_byte_is_refused_and_nothing_is_written(
    client: TestClient, auth: dict[str, str], settings: Settings, tmp_path: Path, disposition_filename: bytes
) -> None:
    before = files_on_disk(tmp_path)
    response = raw_upload(client, auth, disposition_filename)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("invalid_request_error", "file")
    assert "control characters" in error["message"]
    assert files_on_disk(tmp_path) == before
    assert client.get("/v1/files", headers=auth).json()["data"] == []


# ---------------------------------------------------------------------------------------------
# 14. The service accepts no archives: a zip is read as data and refused, never extracted.
# ---------------------------------------------------------------------------------------------


def test_a_zip_upload_is_refused_as_data_and_never_extracted(
    client: TestClient, auth: dict[str, str], settings: Settings, tmp_path: Path
) -> None:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as writer:
        writer.writestr("../escaped.jsonl", GOOD)
        writer.writestr("train.jsonl", GOOD * 1000)
    before = files_on_disk(tmp_path)
    for filename in ("train.zip", "train.jsonl"):
        response = client.post(
            "/v1/files",
            headers=auth,
            files={"file": (filename, archive.getvalue())},
            data={"purpose": "fine-tune"},
        )
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert (error["code"], error["param"]) == ("invalid_file", "file")
        assert error["message"].startswith("line 1:"), error["message"]
    assert files_on_disk(tmp_path) == before
    assert not list(tmp_path.rglob("escaped.jsonl"))


# ---------------------------------------------------------------------------------------------
# 15. A big JSONL file is validated as a stream: the API's peak memory stays flat.
# ---------------------------------------------------------------------------------------------

BIG_FILE_BYTES = 256 * MIB
MEMORY_GROWTH_ALLOWANCE_BYTES = 16 * MIB  # buffers and allocator slack (about 1 MiB measured); the file is 256 MiB


def big_jsonl_body(file_bytes: int, last_line: bytes) -> tuple[Iterator[bytes], int]:
    """A multipart body of about `file_bytes` of valid records ending in `last_line`; returns it and the line count."""
    line = json.dumps({"text": "a streamed review " + "z" * 990, "label": "pos"}).encode() + b"\n"
    other = line.replace(b'"pos"', b'"neg"')
    block = (line + other) * 512  # about 1 MiB of whole lines
    blocks = file_bytes // len(block)

    def body() -> Iterator[bytes]:
        yield multipart_head(b"big.jsonl")
        for _ in range(blocks):
            yield block
        yield last_line
        yield multipart_tail()

    return body(), blocks * 1024 + 1


@pytest.mark.parametrize(
    ("last_line", "expected_status"),
    [
        pytest.param(b'{"text": "the last one", "label": "neg"}\n', 200, id="valid"),
        pytest.param(b'{"text": "the last one"}\n', 400, id="last-line-lacks-its-label"),
    ],
)
def test_a_256_mib_file_is_validated_with_flat_memory(
    settings: Settings, tmp_path: Path, last_line: bytes, expected_status: int
) -> None:
    key = make_tenant_key(settings, "acme")
    headers = {"authorization": f"Bearer {key}"}
    with running_api(settings, tmp_path / "api.log", GRAFT_MAX_UPLOAD_BYTES=str(2 * BIG_FILE_BYTES)) as api:
        warm_up = post_streamed(api, headers, iter([multipart_head(), GOOD, multipart_tail()]))
        assert warm_up.status_code == 200, warm_up.text
        baseline = api.peak_rss_bytes()
        body, line_count = big_jsonl_body(BIG_FILE_BYTES, last_line)
        response = post_streamed(api, headers, body)
        growth = api.peak_rss_bytes() - baseline

    assert response.status_code == expected_status, response.text
    if expected_status == 200:
        assert response.json()["record_count"] == line_count
        assert response.json()["label_counts"] == {"pos": line_count // 2, "neg": line_count // 2 + 1}
    else:
        error = response.json()["error"]
        assert error == {
            "message": f"line {line_count}: missing 'label'",
            "type": "invalid_request_error",
            "param": "file",
            "code": "invalid_file",
        }
    assert growth < MEMORY_GROWTH_ALLOWANCE_BYTES, f"peak RSS grew by {growth / MIB:.1f} MiB"


# ---------------------------------------------------------------------------------------------
# An upload cut short is refused whole: only the multipart closing boundary says the file is all
# there. A client that hangs up mid-upload is a normal event, and leaves nothing behind either.
# ---------------------------------------------------------------------------------------------

COMPLETE_UPLOAD = multipart_head() + GOOD + multipart_tail()  # the tail is "\r\n--BOUNDARY--\r\n"
TRUNCATED_UPLOAD_ERROR = {
    "message": "the upload ended before the multipart closing boundary; the file was not stored",
    "type": "invalid_request_error",
    "param": "file",
    "code": "invalid_request_error",
}


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(multipart_head() + GOOD[:-4], id="cut-mid-row-inside-a-label"),
        pytest.param(multipart_head() + GOOD[:-1], id="jsonl-one-byte-short"),
        pytest.param(multipart_head() + GOOD, id="cut-right-after-the-file"),
        pytest.param(multipart_head() + GOOD + b"\r\n--" + BOUNDARY.encode(), id="closing-boundary-without-dashes"),
        pytest.param(COMPLETE_UPLOAD[: -len(b"-\r\n")], id="closing-boundary-one-dash-short"),
        pytest.param(
            multipart_head() + GOOD + b"\r\n--" + BOUNDARY.encode() + b"\r\n", id="a-part-boundary-then-nothing"
        ),
        pytest.param(multipart_head(), id="cut-before-the-file"),
        pytest.param(b"", id="empty-body"),
    ],
)
def test_an_upload_without_its_closing_boundary_is_refused_and_nothing_is_kept(
    client: TestClient, auth: dict[str, str], tmp_path: Path, body: bytes
) -> None:
    before = files_on_disk(tmp_path)
    response = client.post("/v1/files", headers={**auth, "content-type": MULTIPART_CONTENT_TYPE}, content=body)

    assert response.status_code == 400, response.text
    assert response.json()["error"] == TRUNCATED_UPLOAD_ERROR
    assert files_on_disk(tmp_path) == before  # no blob, no temporary file
    assert client.get("/v1/files", headers=auth).json()["data"] == []


def test_an_upload_whose_closing_boundary_lacks_the_final_crlf_is_stored_whole(
    client: TestClient, auth: dict[str, str]
) -> None:
    # RFC 2046: the CRLF after the closing delimiter belongs to the optional epilogue.
    response = client.post(
        "/v1/files", headers={**auth, "content-type": MULTIPART_CONTENT_TYPE}, content=COMPLETE_UPLOAD[:-2]
    )
    assert response.status_code == 200, response.text
    assert client.get(f"/v1/files/{response.json()['id']}/content", headers=auth).content == GOOD


def test_a_client_that_aborts_an_upload_mid_body_is_logged_in_one_info_line_and_nothing_is_kept(
    settings: Settings, auth: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    line = b'{"text": "' + b"w" * 1000 + b'", "label": "pos"}\n'
    sent = line * 2048  # 2 MiB: past one parse batch, so the temporary file has bytes on disk
    head = (
        b"POST /v1/files HTTP/1.1\r\nHost: graft\r\nAuthorization: " + auth["Authorization"].encode() + b"\r\n"
        b"Content-Type: " + MULTIPART_CONTENT_TYPE.encode() + b"\r\n"
        b"Content-Length: " + str(4 * MIB).encode() + b"\r\n\r\n" + multipart_head()
    )
    with running_server(create_app(settings), settings) as served:
        connection = served.connect()
        try:
            connection.sendall(head + sent)
            wait_for(lambda: tree_size_bytes(settings.artifacts) > 0, timeout=30, what="the upload to reach the disk")
        finally:
            # RST, as a killed client's kernel sends: the server learns of it at once.
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            connection.close()

        def abort_logged() -> list[logging.LogRecord]:
            return [record for record in caplog.records if record.name == "api.request_bodies"]

        logged = wait_for(abort_logged, timeout=30, what="the aborted upload to be logged")
        listed = httpx.get(f"{served.base_url}/v1/files", headers=auth).json()["data"]

    assert [(record.levelno, record.getMessage()) for record in logged] == [
        (
            logging.INFO,
            "client closed the connection during POST /v1/files after "
            f"{len(multipart_head()) + len(sent)} bytes of its body; nothing was kept",
        )
    ]
    assert [record for record in caplog.records if record.exc_info or record.levelno >= logging.WARNING] == []
    assert [path for path in settings.artifacts.rglob("*") if path.is_file()] == []
    assert listed == []
