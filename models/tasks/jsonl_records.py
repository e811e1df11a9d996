"""The lines of a data file and the JSON objects of a JSONL one, streamed, every malformed line named by its number."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

from pydantic_core import from_json

from models.errors import InvalidFile
from models.unicode_text import unpaired_surrogate

MAX_RECORD_BYTES = 1024 * 1024  # one JSONL line or CSV row; a longer one is almost surely not text


class LongInteger(NamedTuple):
    """An integer too long for int() (Python's int_max_str_digits), kept as its length for messages.

    A field a task ignores may hold one; a field it reads names it by its digits.
    """

    digits: int


def one_object_per_line(example: str) -> str:
    """What a JSONL file holds, as the end of a sentence, with `example` as a record."""
    return f"a JSONL file holds one JSON object per line, such as {example}"


def iter_jsonl_records(path: Path, *, example: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line of the file, in order, one line in memory at a time.

    `example` is a record of the caller's task, shown in messages that say what a line should hold.
    Raises InvalidFile (param "file") naming the line: longer than MAX_RECORD_BYTES, not UTF-8, not
    JSON, not a JSON object, a blank line followed by a record, or a JSON array in place of lines;
    and, after the last line, a file with no records at all. A UTF-8 byte order mark before line 1
    is skipped, blank lines at the end are ignored, and an integer too long for int() is yielded as
    a LongInteger. It does not judge the strings inside an object: see `surrogate_fault`.
    """
    with path.open("rb") as handle:
        yield from iter_jsonl_objects(PhysicalLines(handle), example=example)


def iter_jsonl_objects(lines: PhysicalLines, *, example: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """`iter_jsonl_records` over lines already open, perhaps partway through the file (a batch reader's fallback).

    A file with no records is an error only when reading starts at line 1.
    """
    layout = one_object_per_line(example)
    starts_the_file = lines.line_number == 0
    found_record = False
    first_blank_line: int | None = None
    for line in lines:
        line_number = lines.line_number
        text = line.strip()
        if not text:
            first_blank_line = first_blank_line or line_number
            continue
        if first_blank_line is not None:
            raise InvalidFile(
                f"line {first_blank_line}: blank line; {layout}, with no blank lines between records", param="file"
            )
        if line_number == 1 and text.startswith("["):
            raise InvalidFile(
                f"line 1: this looks like a JSON array; {layout}. Write each record on a line of its own, "
                "without the enclosing [ ] and commas",
                param="file",
            )
        try:
            # pydantic's Rust parser reads a line about 4× faster than json.loads and accepts nothing
            # json.loads refuses; what it refuses (a lone surrogate escape, an integer of thousands of
            # digits) goes to json.loads, which either accepts it too or names the fault.
            value = from_json(text, cache_strings=True)
        except ValueError:
            value = _parse_json_line(text, line_number, layout, example)
        if not isinstance(value, dict):
            raise InvalidFile(
                f"line {line_number}: holds {json_kind(value)}, not a JSON object; {layout}", param="file"
            )
        found_record = True
        yield line_number, value
    if starts_the_file and not found_record:
        raise InvalidFile(f"file holds no records; {layout}", param="file")


def json_kind(value: Any) -> str:
    """What a decoded JSON value is, in words: "a string", "an array", "null"…"""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, LongInteger)):
        return "an integer"
    if isinstance(value, float):
        return "a number with a fraction"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def surrogate_fault(text: str) -> str | None:
    """What makes a string from a data file unfit to keep, as a sentence's end ("holds …"); None if it is fit.

    JSON's "\\ud800" escape decodes to a code point no UTF-8 encoder can write: a task refuses it in
    every string it keeps, naming the field, before the string can reach a message or the database.
    """
    surrogate = unpaired_surrogate(text)
    if surrogate is None:
        return None
    return (
        f"holds text that is not valid Unicode (an unpaired surrogate {surrogate}); save the file as UTF-8 text, "
        "where an escaped surrogate comes only in pairs"
    )


class PhysicalLines:
    """The lines of an open data file, decoded one by one so that an error names its line; none longer than the cap.

    `line_number` is the last line read (`lines_before` before the first); `bytes_since_mark`
    counts the bytes read since `mark()`, for a reader whose records span lines (CSV's quoted fields).
    """

    def __init__(self, handle: BinaryIO, lines_before: int = 0) -> None:
        self._handle = handle
        self.line_number = lines_before
        self.bytes_since_mark = 0

    def __iter__(self) -> Iterator[str]:
        while raw := self._handle.readline(MAX_RECORD_BYTES + 3):  # the record, "\r\n", and one byte too many
            self.line_number += 1
            self.bytes_since_mark += len(raw)
            if len(raw.rstrip(b"\r\n")) > MAX_RECORD_BYTES:
                raise InvalidFile(
                    f"line {self.line_number}: longer than {MAX_RECORD_BYTES} bytes, the most one record may hold",
                    param="file",
                )
            try:
                yield raw.decode("utf-8-sig" if self.line_number == 1 else "utf-8")
            except UnicodeDecodeError:
                raise InvalidFile(
                    f"line {self.line_number}: not valid UTF-8; save the file with UTF-8 encoding", param="file"
                ) from None

    def mark(self) -> None:
        self.bytes_since_mark = 0


def _parse_integer(literal: str) -> int | LongInteger:
    """json.loads's integers; one past Python's conversion limit becomes its length, not a ValueError."""
    digits = len(literal.lstrip("-"))
    max_digits = sys.get_int_max_str_digits()
    return LongInteger(digits) if max_digits and digits > max_digits else int(literal)


def _parse_json_line(text: str, line_number: int, layout: str, example: str) -> Any:
    """json.loads, with every way it can fail turned into InvalidFile naming the line."""
    try:
        return json.loads(text, parse_int=_parse_integer)
    except json.JSONDecodeError as error:
        raise InvalidFile(
            f"line {line_number}: invalid JSON ({error.msg} at column {error.colno}); {layout}, complete on its line",
            param="file",
        ) from None
    except RecursionError:
        raise InvalidFile(
            f"line {line_number}: JSON nested too deeply; a record is an object such as {example}", param="file"
        ) from None
