"""Text-classification data files (JSONL or CSV): parsed record by record, every fault named by line."""

from __future__ import annotations

import csv
import json
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from operator import attrgetter
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import msgspec
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
    """Validate every record of a file in one streaming pass; raises InvalidFile naming the line.

    JSONL is validated a megabyte of lines at a time by msgspec, and record by record (iter_records)
    from the first batch that fails or that it cannot vouch for: the error then names the line and
    reads as it always has. Memory stays bounded by one batch.
    """
    summary = _SummaryBuilder()
    if data_format is not DataFormat.jsonl:
        for record in iter_records(path, data_format):
            summary.add_record(record)
        return summary.finish(data_format)
    with path.open("rb") as handle:
        resume_at = _summarize_jsonl_batches(handle, summary)
        if resume_at is not None:
            offset, line_number = resume_at
            handle.seek(offset)
            for record in _iter_jsonl(_PhysicalLines(handle, lines_before=line_number)):
                summary.add_record(record)
    return summary.finish(data_format)


class _SummaryBuilder:
    """The rules across records (text_pair everywhere or nowhere, one label kind, at most
    MAX_DISTINCT_LABELS labels) and the counts, fed record by record or by validated batches."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.kinds: set[str] = set()
        self.pair_seen: bool | None = None
        self.record_count = 0

    def add_record(self, record: ClassificationRecord) -> None:
        has_pair = record.text_pair is not None
        if self.pair_seen is None:
            self.pair_seen = has_pair
        elif has_pair != self.pair_seen:
            expectation = "has" if self.pair_seen else "lacks"
            raise InvalidFile(
                f"line {record.line_number}: every record must have '{PAIR_FIELD}' or none may; "
                f"the first record {expectation} it",
                param="file",
            )
        self.kinds.add("int" if isinstance(record.label, int) else "str")
        if len(self.kinds) > 1:
            raise InvalidFile(
                f"line {record.line_number}: 'label' mixes integers and strings; use one kind throughout",
                param="file",
            )
        self.counts[str(record.label)] += 1
        if len(self.counts) > MAX_DISTINCT_LABELS:
            raise InvalidFile(
                f"line {record.line_number}: more than {MAX_DISTINCT_LABELS} distinct labels", param="file"
            )
        self.record_count += 1

    def add_batch(self, labels: list[Label], pair_count: int) -> bool:
        """Count a batch of valid records; False, changing nothing, if it breaks a rule across records."""
        if not labels or pair_count not in (0, len(labels)):
            return False
        has_pair = pair_count > 0
        kinds = self.kinds | {"int" if type(label) is int else "str" for label in set(labels)}
        if (self.pair_seen is not None and has_pair != self.pair_seen) or len(kinds) > 1:
            return False
        batch_counts = Counter(labels)
        if len(self.counts.keys() | {str(label) for label in batch_counts}) > MAX_DISTINCT_LABELS:
            return False
        self.pair_seen, self.kinds = has_pair, kinds
        self.counts.update({str(label): count for label, count in batch_counts.items()})
        self.record_count += len(labels)
        return True

    def finish(self, data_format: DataFormat) -> FileSummary:
        if self.record_count == 0:
            raise InvalidFile("file holds no records", param="file")
        return FileSummary(
            data_format=data_format,
            record_count=self.record_count,
            has_text_pair=bool(self.pair_seen),
            label_counts=dict(self.counts),
            label_kind=next(iter(self.kinds)),
        )


class _BatchRecord(msgspec.Struct, gc=False):
    """What _record_from_mapping accepts, as a msgspec schema (blankness is checked after); other keys are ignored."""

    text: str
    label: int | str
    text_pair: str | None = None


_BATCH_DECODER = msgspec.json.Decoder(_BatchRecord)
_BATCH_BYTES = MAX_RECORD_BYTES  # so no line of a batch can be over the limit
_UTF8_BOM = b"\xef\xbb\xbf"


def _summarize_jsonl_batches(handle: BinaryIO, summary: _SummaryBuilder) -> tuple[int, int] | None:
    """Validate the file's lines in batches of about a megabyte; None when all passed, else (byte
    offset, lines before it) of the first batch that per-line validation must take over.

    msgspec decodes a batch as a stream of JSON values, building one small struct per record: about
    7× faster than parsing line by line. It would also read two objects on one line, or one object
    across lines, so a batch is vouched for only if every line starts with '{' and ends with '}'
    and there are exactly as many records as lines. A raw newline cannot sit inside a JSON string,
    and no JSON value may follow a '}' but a new top-level one; so every line break ends a value,
    each line holds at least one, and equal counts mean exactly one each. Anything else (a blank
    line, a stray '\r', what msgspec skips unchecked: _parses_like_python; an error) goes to the
    per-line path, which names the line and the fault.
    """
    offset = line_number = 0
    while block := handle.read(_BATCH_BYTES):
        end = block.rfind(b"\n") + 1 if len(block) == _BATCH_BYTES else len(block)
        if end == 0:
            return offset, line_number  # a line of a megabyte or more: the per-line path says what is wrong
        batch = block[:end]
        handle.seek(offset + end)
        body = batch[len(_UTF8_BOM) :] if offset == 0 and batch.startswith(_UTF8_BOM) else batch
        lines = _count_object_lines(body)
        if lines is None or not _add_valid_batch(body, lines, summary):
            return offset, line_number
        offset += end
        line_number += lines
    return None


_DIGITS_AS_ZEROS = bytes.maketrans(b"0123456789", b"0000000000")


def _parses_like_python(body: bytes) -> bool:
    """False if `body` holds what msgspec lets pass in the fields it skips but the per-line path refuses.

    msgspec checks UTF-8 only in the strings it decodes, and converts no number it skips, where
    the per-line path decodes every line (refusing invalid UTF-8) and converts every integer
    (refusing one longer than Python's int_max_str_digits). Such a batch goes to the per-line
    path, which names the line; so does one with a long run of digits inside a string (rare).
    """
    if not body.isascii():
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            return False
    max_digits = sys.get_int_max_str_digits()
    return max_digits == 0 or b"0" * (max_digits + 1) not in body.translate(_DIGITS_AS_ZEROS)


def _count_object_lines(body: bytes) -> int | None:
    """How many lines `body` has, if each starts with '{' and ends with '}' (after an optional "\r"); else None."""
    if b"\r" in body:
        body = body.replace(b"\r\n", b"\n")  # the per-line path strips line endings too
        if b"\r" in body:
            return None
    last_line_end = len(body) - 1 if body.endswith(b"\n") else len(body)
    breaks = body.count(b"\n", 0, last_line_end)
    if body.startswith(b"{") and body.endswith(b"}", 0, last_line_end) and body.count(b"}\n{") == breaks:
        return breaks + 1
    return None


def _add_valid_batch(body: bytes, lines: int, summary: _SummaryBuilder) -> bool:
    """Count `body`'s records into `summary` if all are valid and obey the rules across records; False if not."""
    if not _parses_like_python(body):
        return False
    try:
        records = _BATCH_DECODER.decode_lines(body)
    except (ValueError, RecursionError):  # msgspec.DecodeError and ValidationError, UnicodeDecodeError; deep nesting
        return False
    if len(records) != lines:
        return False
    labels: list[Label] = list(map(attrgetter(LABEL_FIELD), records))
    pairs = list(map(attrgetter(PAIR_FIELD), records))
    pair_count = len(pairs) - pairs.count(None)
    # Blank strings: str.strip decides, as on the per-line path.
    if not all(map(str.strip, map(attrgetter(TEXT_FIELD), records))):
        return False
    if not all(label.strip() for label in labels if type(label) is str):
        return False
    if pair_count and not all(pair.strip() for pair in pairs if pair is not None):
        return False
    return summary.add_batch(labels, pair_count)


def iter_records(path: Path, data_format: DataFormat) -> Iterator[ClassificationRecord]:
    """Every record of the file, in order; the worker trains on exactly what validation accepted."""
    with path.open("rb") as handle:
        lines = _PhysicalLines(handle)
        yield from _iter_jsonl(lines) if data_format is DataFormat.jsonl else _iter_csv(lines)


class _PhysicalLines:
    """The file's lines, decoded one by one so that an error names its line; none longer than the cap."""

    def __init__(self, handle: BinaryIO, lines_before: int = 0) -> None:
        self._handle = handle
        self.line_number = lines_before
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
