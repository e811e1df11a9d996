"""Text-classification data files (JSONL or CSV): parsed record by record, every fault named by line."""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

from pydantic_core import from_json

from models.errors import InvalidFile

MAX_RECORD_BYTES = 1024 * 1024  # one JSONL line or CSV row; a longer one is almost surely not text
MAX_DISTINCT_LABELS = 1000
TEXT_FIELD, PAIR_FIELD, LABEL_FIELD = "text", "text_pair", "label"

Label = str | int


class DataFormat(StrEnum):
    jsonl = "jsonl"
    csv = "csv"


class ClassificationRecord(NamedTuple):
    """One record. A named tuple, not a frozen dataclass: made once per line, it is 3× cheaper to build."""

    line_number: int
    text: str
    text_pair: str | None
    label: Label


@dataclass
class FileSummary:
    """What validation learned about a file; stored on its row and checked again at job creation."""

    data_format: DataFormat
    record_count: int = 0
    has_text_pair: bool = False
    label_counts: dict[str, int] = field(default_factory=dict)
    label_kind: str = "str"

    @property
    def label_names(self) -> list[Label]:
        return ordered_labels(self.label_counts, self.label_kind)


def ordered_labels(label_counts: dict[str, int], label_kind: str) -> list[Label]:
    """Integer labels in numeric order, string labels in lexical order: the head's class ids."""
    if label_kind == "int":
        return sorted(int(name) for name in label_counts)
    return sorted(label_counts)


def detect_format(filename: str, first_bytes: bytes) -> DataFormat:
    lowered = filename.lower()
    if lowered.endswith((".jsonl", ".json", ".ndjson")):
        return DataFormat.jsonl
    if lowered.endswith(".csv"):
        return DataFormat.csv
    return DataFormat.jsonl if first_bytes.lstrip()[:1] == b"{" else DataFormat.csv


def summarize_file(path: Path, data_format: DataFormat) -> FileSummary:
    """Validate every record of a file in one streaming pass; raises InvalidFile naming the line."""
    summary = FileSummary(data_format=data_format)
    counts: Counter[str] = Counter()
    kinds: set[str] = set()
    pair_seen: bool | None = None
    for record in iter_records(path, data_format):
        has_pair = record.text_pair is not None
        if pair_seen is None:
            pair_seen = has_pair
        elif has_pair != pair_seen:
            expectation = "has" if pair_seen else "lacks"
            raise InvalidFile(
                f"line {record.line_number}: every record must have '{PAIR_FIELD}' or none may; "
                f"the first record {expectation} it",
                param="file",
            )
        kind = "int" if isinstance(record.label, int) else "str"
        kinds.add(kind)
        if len(kinds) > 1:
            raise InvalidFile(
                f"line {record.line_number}: 'label' mixes integers and strings; use one kind throughout",
                param="file",
            )
        counts[str(record.label)] += 1
        if len(counts) > MAX_DISTINCT_LABELS:
            raise InvalidFile(
                f"line {record.line_number}: more than {MAX_DISTINCT_LABELS} distinct labels", param="file"
            )
        summary.record_count += 1
    if summary.record_count == 0:
        raise InvalidFile("file holds no records", param="file")
    summary.has_text_pair = bool(pair_seen)
    summary.label_counts = dict(counts)
    summary.label_kind = kinds.pop()
    return summary


def iter_records(path: Path, data_format: DataFormat) -> Iterator[ClassificationRecord]:
    """Every record of the file, in order; the worker trains on exactly what validation accepted."""
    with path.open("rb") as handle:
        lines = _PhysicalLines(handle)
        yield from _iter_jsonl(lines) if data_format is DataFormat.jsonl else _iter_csv(lines)


class _PhysicalLines:
    """The file's lines, decoded one by one so that an error names its line; none longer than the cap."""

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self.line_number = 0
        self.bytes_since_mark = 0

    def __iter__(self) -> Iterator[str]:
        while raw := self._handle.readline(MAX_RECORD_BYTES + 3):  # the record, "\r\n", and one byte too many
            self.line_number += 1
            self.bytes_since_mark += len(raw)
            if len(raw.rstrip(b"\r\n")) > MAX_RECORD_BYTES:
                raise InvalidFile(f"line {self.line_number}: longer than {MAX_RECORD_BYTES} bytes", param="file")
            try:
                yield raw.decode("utf-8-sig" if self.line_number == 1 else "utf-8")
            except UnicodeDecodeError:
                raise InvalidFile(f"line {self.line_number}: not valid UTF-8", param="file") from None

    def at_end(self) -> bool:
        return self._handle.peek(1) == b"" if hasattr(self._handle, "peek") else False

    def mark(self) -> None:
        self.bytes_since_mark = 0


def _iter_jsonl(lines: _PhysicalLines) -> Iterator[ClassificationRecord]:
    for line in lines:
        line_number = lines.line_number
        text = line.strip()
        if not text:
            if lines.at_end():
                return  # a trailing blank line at the very end is harmless
            raise InvalidFile(f"line {line_number}: blank line; each line must hold one JSON object", param="file")
        try:
            # pydantic's Rust parser reads a short record about 4× faster than json.loads. It accepts
            # nothing that json.loads refuses; what it refuses (a lone surrogate escape, say) goes to
            # json.loads, which either accepts it too or names the fault.
            value = from_json(text, cache_strings=True)
        except ValueError:
            value = _parse_json_line(text, line_number)
        if not isinstance(value, dict):
            raise InvalidFile(f"line {line_number}: expected a JSON object, got {type(value).__name__}", param="file")
        yield _record_from_mapping(value, line_number)


def _parse_json_line(text: str, line_number: int) -> Any:
    """json.loads, with every way it can fail turned into InvalidFile naming the line."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidFile(f"line {line_number}: invalid JSON ({error.msg})", param="file") from None
    except RecursionError:
        raise InvalidFile(f"line {line_number}: JSON nested too deeply", param="file") from None
    except ValueError as error:  # e.g. an integer beyond Python's 4300-digit conversion limit
        raise InvalidFile(f"line {line_number}: invalid JSON ({error})", param="file") from None


def _iter_csv(lines: _PhysicalLines) -> Iterator[ClassificationRecord]:
    csv.field_size_limit(MAX_RECORD_BYTES)
    reader = csv.reader(iter(lines))
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as error:
        raise InvalidFile(f"line 1: unreadable CSV header ({error})", param="file") from None
    columns = [name.strip() for name in header]
    for required in (TEXT_FIELD, LABEL_FIELD):
        if required not in columns:
            raise InvalidFile(f"line 1: CSV header must name a '{required}' column; it has {columns}", param="file")
    while True:
        line_number = lines.line_number + 1  # a quoted field may span lines: the record starts here
        lines.mark()
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            raise InvalidFile(f"line {line_number}: malformed CSV ({error})", param="file") from None
        if lines.bytes_since_mark > MAX_RECORD_BYTES:
            raise InvalidFile(f"line {line_number}: record longer than {MAX_RECORD_BYTES} bytes", param="file")
        if not row:
            continue  # csv yields [] for a line ending at end of file
        if len(row) != len(columns):
            raise InvalidFile(f"line {line_number}: {len(row)} fields, but the header has {len(columns)}", param="file")
        values: dict[str, Any] = dict(zip(columns, row, strict=True))
        if values.get(PAIR_FIELD) == "":
            values.pop(PAIR_FIELD)
        yield _record_from_mapping(values, line_number)


def _record_from_mapping(value: dict[str, Any], line_number: int) -> ClassificationRecord:
    text = value.get(TEXT_FIELD)
    if TEXT_FIELD not in value:
        raise InvalidFile(f"line {line_number}: missing '{TEXT_FIELD}'", param="file")
    if not isinstance(text, str) or not text.strip():
        raise InvalidFile(f"line {line_number}: '{TEXT_FIELD}' must be a non-empty string", param="file")
    text_pair = value.get(PAIR_FIELD)
    if text_pair is not None and (not isinstance(text_pair, str) or not text_pair.strip()):
        raise InvalidFile(f"line {line_number}: '{PAIR_FIELD}' must be a non-empty string when present", param="file")
    if LABEL_FIELD not in value:
        raise InvalidFile(f"line {line_number}: missing '{LABEL_FIELD}'", param="file")
    label = value[LABEL_FIELD]
    if isinstance(label, bool) or not isinstance(label, (str, int)):
        raise InvalidFile(
            f"line {line_number}: '{LABEL_FIELD}' must be a string or an integer, got {type(label).__name__}",
            param="file",
        )
    if isinstance(label, str) and not label.strip():
        raise InvalidFile(f"line {line_number}: '{LABEL_FIELD}' must not be empty", param="file")
    return ClassificationRecord(line_number=line_number, text=text, text_pair=text_pair, label=label)
