"""Serving a stored file for download, with Range requests held to RFC 9110's grammar."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fastapi import HTTPException, Request
from fastapi.responses import FileResponse
from starlette.responses import MalformedRangeHeader, RangeNotSatisfiable
from starlette.types import Receive, Scope, Send

from models.wire.common import ErrorResponse

# RFC 9110 §14.1.1: int-range = first-pos "-" [ last-pos ], suffix-range = "-" suffix-length.
_INT_RANGE = re.compile(r"([0-9]+)-([0-9]*)")
_SUFFIX_RANGE = re.compile(r"-[0-9]+")

DOWNLOAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    206: {"description": "The requested byte range, or several as multipart/byteranges"},
    416: {
        "model": ErrorResponse,
        "description": "A malformed byte range, or one past the end; `Content-Range: bytes */SIZE` gives the size",
    },
}


class _WholeFileResponse(FileResponse):
    """Sends the whole file whatever the request's Range says."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(name, value) for name, value in scope["headers"] if name.lower() != b"range"]
        await super().__call__({**scope, "headers": headers}, receive, send)


def is_byte_range_set(range_set: str) -> bool:
    """Whether the text after `bytes=` is a list of int-ranges (first ≤ last) and suffix-ranges.

    Empty list elements are allowed (RFC 9110 §5.6.1), but not a list of only those.
    """
    specs = [spec.strip() for spec in range_set.split(",")]
    if not any(specs):
        return False
    for spec in filter(None, specs):
        int_range = _INT_RANGE.fullmatch(spec)
        if int_range is not None:
            first, last = int_range.groups()
            if last and int(last) < int(first):
                return False
        elif _SUFFIX_RANGE.fullmatch(spec) is None:
            return False
    return True


def file_download(
    request: Request, path: Path, *, media_type: str, filename: str, headers: dict[str, str]
) -> FileResponse:
    """The file at `path`, honouring a byte Range as Starlette does, with two departures from it.

    A Range in a unit other than bytes is ignored (RFC 9110 §14.2: 200 and the whole file), and a
    malformed byte range raises a 416 HTTPException carrying `Content-Range: bytes */SIZE`, where
    Starlette answers a plain-text 400. So does a well-formed range Starlette would not satisfy
    (one starting at or past the end, `bytes=-0`, any range of an empty file), where Starlette
    answers an empty plain-text 416: the error handler renders both in the error shape.
    """
    stat_result = path.stat()
    response = FileResponse(path, media_type=media_type, filename=filename, headers=headers, stat_result=stat_result)
    range_header = request.headers.get("range")
    if_range = request.headers.get("if-range")
    if range_header is None:
        return response
    if if_range is not None and if_range not in (response.headers["etag"], response.headers["last-modified"]):
        return response  # a stale If-Range means the whole file: the Range is not looked at (RFC 9110 §13.1.5)
    unit, separator, range_set = range_header.partition("=")
    if unit.strip().lower() != "bytes":
        return _WholeFileResponse(
            path, media_type=media_type, filename=filename, headers=headers, stat_result=stat_result
        )
    if not separator or not is_byte_range_set(range_set):
        raise HTTPException(
            416,
            detail=f"Range {range_header!r} is not a valid byte range; "
            "expected e.g. 'bytes=0-1023', 'bytes=1024-' or 'bytes=-1024'",
            headers={"Content-Range": f"bytes */{stat_result.st_size}"},
        )
    if not is_satisfiable(range_header, stat_result.st_size):
        raise HTTPException(
            416,
            detail=f"Range {range_header!r} is not satisfiable: the file has {stat_result.st_size} bytes; "
            "ask for ranges that start before its end, or no Range for the whole file",
            headers={"Content-Range": f"bytes */{stat_result.st_size}"},
        )
    return response


def is_satisfiable(range_header: str, size_bytes: int) -> bool:
    """Whether Starlette's FileResponse serves this well-formed byte Range rather than answering it 416 itself.

    Asked of Starlette's own parser, so the two never disagree on which ranges it satisfies.
    """
    try:
        FileResponse._parse_range_header(range_header, size_bytes)
    except RangeNotSatisfiable:
        return False
    except MalformedRangeHeader:
        return False  # e.g. first > last; is_byte_range_set refuses those before this is asked
    return True
