"""Receiving a multipart upload as a stream: straight to a temporary blob, hashed and size-capped.

Starlette's `request.form()` spools file parts to disk with no total cap, and runs before any
dependency. This parser reads `request.stream()` itself, so the byte limit holds for bodies with a
Content-Length and for chunked ones alike, and nothing beyond the limit ever reaches the disk. The
limit is an UploadCap: the tenant's upload limit or the room left in its storage quota.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from fastapi import Request
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header
from starlette.concurrency import run_in_threadpool

from models.errors import InvalidRequest
from models.services.quotas import UploadCap
from models.storage.blobs import ArtifactStore

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

FILE_FIELD = "file"
MAX_FORM_FIELD_BYTES = 64 * 1024
MAX_FORM_PARTS = 16  # file, purpose and a few SDK extras; more is not an honest client
MULTIPART_OVERHEAD_BYTES = 1024 * 1024  # boundaries, part headers and small fields around the file
PARSE_BATCH_BYTES = 1024 * 1024  # body received before the parser runs on it, in one thread hop


@dataclass
class ReceivedUpload:
    temporary_path: Path
    filename: str | None
    size_bytes: int
    sha256: str
    fields: dict[str, str]


@dataclass
class _Part:
    name: str = ""
    filename: str | None = None
    header_field: bytes = b""
    header_value: bytes = b""
    value: bytearray = field(default_factory=bytearray)


class _UploadSink:
    """Multipart callbacks: the `file` part goes to disk through sha256; other parts stay small strings."""

    def __init__(self, handle: BinaryIO, cap: UploadCap) -> None:
        self._handle = handle
        self._cap = cap
        self._digest = hashlib.sha256()
        self._part = _Part()
        self.file_seen = False
        self.filename: str | None = None
        self.size_bytes = 0
        self.fields: dict[str, str] = {}
        self._parts = 0

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    def on_part_begin(self) -> None:
        self._part = _Part()
        self._parts += 1
        if self._parts > MAX_FORM_PARTS:
            raise InvalidRequest(f"the form has more than {MAX_FORM_PARTS} parts", param="file")

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._part.header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._part.header_value += data[start:end]

    def on_header_end(self) -> None:
        if self._part.header_field.lower() == b"content-disposition":
            _, options = parse_options_header(self._part.header_value)
            self._part.name = options.get(b"name", b"").decode("utf-8", "replace")
            raw_filename = options.get(b"filename")
            self._part.filename = raw_filename.decode("utf-8", "replace") if raw_filename is not None else None
        self._part.header_field = b""
        self._part.header_value = b""

    def on_headers_finished(self) -> None:
        if self._part.name == FILE_FIELD:
            if self.file_seen:
                raise InvalidRequest("file: send exactly one file part", param="file")
            self.file_seen = True
            self.filename = self._part.filename

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._part.name == FILE_FIELD:
            self.size_bytes += len(chunk)
            if self.size_bytes > self._cap.max_file_bytes:
                raise self._cap.refusal()
            self._digest.update(chunk)
            self._handle.write(chunk)
        else:
            self._part.value += chunk
            if len(self._part.value) > MAX_FORM_FIELD_BYTES:
                raise InvalidRequest(f"{self._part.name}: form field too long", param=self._part.name)

    def on_part_end(self) -> None:
        if self._part.name and self._part.name != FILE_FIELD:
            self.fields[self._part.name] = self._part.value.decode("utf-8", "replace")


def check_declared_size(request: Request, cap: UploadCap) -> None:
    """Refuse an upload whose Content-Length already exceeds the cap, before reading a byte."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap.max_file_bytes + MULTIPART_OVERHEAD_BYTES:
        raise cap.refusal()


async def receive_upload(request: Request, store: ArtifactStore, cap: UploadCap) -> ReceivedUpload:
    """Stream the body into a temporary file in the store. On any error the temporary file is removed."""
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise InvalidRequest("send the upload as multipart/form-data with a 'file' part", param="file")
    temporary_path = store.new_temporary_path()
    try:
        with temporary_path.open("wb") as handle:
            sink = _UploadSink(handle, cap)
            parser = MultipartParser(boundary, _callbacks(sink))
            body_bytes = 0
            pending: list[bytes] = []
            pending_bytes = 0
            async for chunk in request.stream():
                body_bytes += len(chunk)
                if body_bytes > cap.max_file_bytes + MULTIPART_OVERHEAD_BYTES:
                    raise cap.refusal()
                pending.append(chunk)
                pending_bytes += len(chunk)
                if pending_bytes >= PARSE_BATCH_BYTES:
                    # Parsing writes the file part to disk: off the event loop, so uploads don't stall
                    # requests; a thread hop per megabyte rather than per socket read (~64 KB).
                    await run_in_threadpool(_parse_all, parser, pending)
                    pending, pending_bytes = [], 0
            if pending:
                await run_in_threadpool(_parse_all, parser, pending)
            parser.finalize()
        if parser.state != MultipartState.END:
            # A body cut short (a dropped proxy connection, a client that gave up) may end mid-line
            # at a plausible record: only the closing boundary says the file is whole.
            raise InvalidRequest(
                "the upload ended before the multipart closing boundary; the file was not stored", param="file"
            )
        if not sink.file_seen:
            raise InvalidRequest("file: the form has no 'file' part", param="file")
        return ReceivedUpload(temporary_path, sink.filename, sink.size_bytes, sink.sha256, sink.fields)
    except MultipartParseError as error:
        temporary_path.unlink(missing_ok=True)
        raise InvalidRequest(f"file: malformed multipart body ({error})", param="file") from None
    except BaseException:
        temporary_path.unlink(missing_ok=True)
        raise


def _parse_all(parser: MultipartParser, chunks: list[bytes]) -> None:
    for chunk in chunks:
        parser.write(chunk)


def _callbacks(sink: _UploadSink) -> MultipartCallbacks:
    return {
        "on_part_begin": sink.on_part_begin,
        "on_part_data": sink.on_part_data,
        "on_part_end": sink.on_part_end,
        "on_header_field": sink.on_header_field,
        "on_header_value": sink.on_header_value,
        "on_header_end": sink.on_header_end,
        "on_headers_finished": sink.on_headers_finished,
    }
