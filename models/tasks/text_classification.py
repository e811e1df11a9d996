"""text-classification, torch-free half: its data files (JSONL or CSV) validated line by line, and its job rules."""

from __future__ import annotations

import csv
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from operator import attrgetter
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import msgspec

from models.errors import InvalidFile, InvalidRequest
from models.strategies.common import StrategyDefaults
from models.strategies.names import StrategyType
from models.tasks.jsonl_records import (
    MAX_RECORD_BYTES,
    LongInteger,
    PhysicalLines,
    iter_jsonl_objects,
    json_kind,
    one_object_per_line,
)
from models.tasks.names import Task
from models.unicode_text import unpaired_surrogate

TEXT_FIELD, PAIR_FIELD, LABEL_FIELD = "text", "text_pair", "label"
JSONL_EXAMPLE = '{"text": "a fine film", "label": "positive"}'
ONE_OBJECT_PER_LINE = one_object_per_line(JSONL_EXAMPLE)

Label = str | int


@dataclass(frozen=True)
class DataLimits:
    """Bounds on a file's labels (Settings.max_label_chars, max_labels): every job read carries them all.

    An integer label is bounded by its digits, as its name is those digits.
    """

    max_label_chars: int
    max_labels: int


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


def summarize_file(path: Path, data_format: DataFormat, limits: DataLimits | None = None) -> FileSummary:
    """Validate every record of a file in one streaming pass; raises InvalidFile naming the line.

    `limits` bound the labels; None leaves them unbounded, for files from a trusted source (the
    benchmarks' datasets), never for an upload. JSONL is validated a megabyte of lines at a time
    by msgspec, and record by record (iter_records) from the first batch that fails or that it
    cannot vouch for: the error then names the line and reads as it always has. Memory stays
    bounded by one batch.
    """
    summary = _SummaryBuilder(limits)
    if data_format is not DataFormat.jsonl:
        for record in iter_records(path, data_format, limits):
            summary.add_record(record)
        return summary.finish(data_format)
    with path.open("rb") as handle:
        resume_at = _summarize_jsonl_batches(handle, summary)
        if resume_at is not None:
            offset, line_number = resume_at
            handle.seek(offset)
            for record in _iter_jsonl(PhysicalLines(handle, lines_before=line_number), limits):
                summary.add_record(record)
    return summary.finish(data_format)


class _SummaryBuilder:
    """The rules across records (text_pair everywhere or nowhere, one label kind, at most
    `limits.max_labels` labels) and the counts, fed record by record or by validated batches."""

    def __init__(self, limits: DataLimits | None) -> None:
        self.limits = limits
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
        if self.limits is not None and len(self.counts) > self.limits.max_labels:
            raise InvalidFile(
                f"line {record.line_number}: the file has more than {self.limits.max_labels} distinct labels, the "
                "most this server accepts; a label names one of a few classes, so check that 'label' holds the "
                "class and not the text",
                param="file",
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
        if self.limits is not None:
            if any(_label_size_fault(label, self.limits.max_label_chars) for label in batch_counts):
                return False
            if len(self.counts.keys() | {str(label) for label in batch_counts}) > self.limits.max_labels:
                return False
        self.pair_seen, self.kinds = has_pair, kinds
        self.counts.update({str(label): count for label, count in batch_counts.items()})
        self.record_count += len(labels)
        return True

    def finish(self, data_format: DataFormat) -> FileSummary:
        if self.record_count == 0:
            layout = ONE_OBJECT_PER_LINE if data_format is DataFormat.jsonl else "a CSV file holds one record per row"
            raise InvalidFile(f"file holds no records; {layout}", param="file")
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
    line, a stray '\r', invalid UTF-8 in what msgspec skips unchecked; an error) goes to the
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


def _is_utf8(body: bytes) -> bool:
    """msgspec checks UTF-8 only in the strings it decodes, where the per-line path decodes every
    line whole; a batch with invalid UTF-8 in a skipped field goes to the per-line path, which names it."""
    if body.isascii():
        return True
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


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
    if not _is_utf8(body):
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
    # msgspec itself refuses an unpaired surrogate escape ("\ud800"), in any field; this keeps the
    # batch path sound without relying on that, at the cost of a scan of the (rare) batches that
    # escape any surrogate, such as an emoji written by json.dumps.
    if (b"\\ud" in body or b"\\uD" in body) and not _kept_strings_encode(records):
        return False
    return summary.add_batch(labels, pair_count)


def _kept_strings_encode(records: list[_BatchRecord]) -> bool:
    """Whether every string a record keeps encodes as UTF-8 (holds no unpaired surrogate)."""
    for record in records:
        kept = (record.text, record.text_pair, record.label)
        if any(type(value) is str and unpaired_surrogate(value) for value in kept):
            return False
    return True


def iter_records(
    path: Path, data_format: DataFormat, limits: DataLimits | None = None
) -> Iterator[ClassificationRecord]:
    """Every record of the file, in order; the worker trains on exactly what validation accepted.

    Raises InvalidFile naming the line; `limits` bound each label (None: a file validated already).
    """
    with path.open("rb") as handle:
        lines = PhysicalLines(handle)
        yield from _iter_jsonl(lines, limits) if data_format is DataFormat.jsonl else _iter_csv(lines, limits)


def _iter_jsonl(lines: PhysicalLines, limits: DataLimits | None) -> Iterator[ClassificationRecord]:
    """The records of JSONL lines; `iter_jsonl_objects` names every malformed line."""
    for line_number, value in iter_jsonl_objects(lines, example=JSONL_EXAMPLE):
        yield _record_from_mapping(value, line_number, limits)


def _iter_csv(lines: PhysicalLines, limits: DataLimits | None) -> Iterator[ClassificationRecord]:
    """The records of a CSV file under its header line. Blank rows at the end are ignored, however
    many; one followed by a record is an error naming the first of them."""
    csv.field_size_limit(MAX_RECORD_BYTES)
    reader = csv.reader(iter(lines))
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as error:
        raise InvalidFile(f"line 1: unreadable CSV header: {_csv_fault(error)}", param="file") from None
    columns = _csv_columns(header)
    first_blank_line: int | None = None
    while True:
        line_number = lines.line_number + 1  # a quoted field may span lines: the record starts here
        lines.mark()
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            raise InvalidFile(f"line {line_number}: {_csv_fault(error)}", param="file") from None
        if lines.bytes_since_mark > MAX_RECORD_BYTES:
            raise InvalidFile(
                f"line {line_number}: record longer than {MAX_RECORD_BYTES} bytes, the most one record may hold",
                param="file",
            )
        if not row or (len(row) == 1 and not row[0].strip()):
            first_blank_line = first_blank_line or line_number
            continue
        if first_blank_line is not None:
            raise InvalidFile(
                f"line {first_blank_line}: blank line; a CSV file holds one record per row, with no blank rows "
                "between records",
                param="file",
            )
        if len(row) != len(columns):
            raise InvalidFile(
                f"line {line_number}: {len(row)} fields, but the header has {len(columns)}; put a field that "
                'holds a comma in double quotes ("like, this")',
                param="file",
            )
        values: dict[str, Any] = dict(zip(columns, row, strict=True))
        if values.get(PAIR_FIELD) == "":
            values.pop(PAIR_FIELD)
        yield _record_from_mapping(values, line_number, limits)


def _csv_columns(header: list[str]) -> list[str]:
    """The header's column names; raises InvalidFile, naming line 1, for a missing or repeated one."""
    columns = [name.strip() for name in header]
    repeated = [name for name, count in Counter(columns).items() if count > 1]
    if repeated:
        raise InvalidFile(
            f"line 1: the CSV header names the column {repeated[0]!r} more than once; give each column one name "
            "of its own",
            param="file",
        )
    for required in (TEXT_FIELD, LABEL_FIELD):
        if required not in columns:
            named = ", ".join(repr(name) for name in columns) or "nothing"
            raise InvalidFile(
                f"line 1: the CSV header must name a '{required}' column; it names {named}. A CSV file's first line "
                f"names its columns: '{TEXT_FIELD}', '{LABEL_FIELD}' and, for sentence pairs, '{PAIR_FIELD}'",
                param="file",
            )
    return columns


def _csv_fault(error: csv.Error) -> str:
    """The csv module's complaint, in words that say what to change."""
    complaint = str(error)
    if complaint.startswith("field larger than field limit"):
        return f"a field is longer than {MAX_RECORD_BYTES} bytes, the most one record may hold"
    if complaint.startswith("new-line character seen in unquoted field"):
        return "a carriage return (\\r) inside a field; put the field in double quotes, or remove the \\r"
    return f"malformed CSV ({complaint})"


def _record_from_mapping(value: dict[str, Any], line_number: int, limits: DataLimits | None) -> ClassificationRecord:
    if TEXT_FIELD not in value:
        raise InvalidFile(f"line {line_number}: missing '{TEXT_FIELD}'", param="file")
    text = value[TEXT_FIELD]
    if not isinstance(text, str) or not text.strip():
        raise InvalidFile(f"line {line_number}: '{TEXT_FIELD}' must be a non-empty string", param="file")
    text_pair = value.get(PAIR_FIELD)
    if text_pair is not None and (not isinstance(text_pair, str) or not text_pair.strip()):
        raise InvalidFile(f"line {line_number}: '{PAIR_FIELD}' must be a non-empty string when present", param="file")
    if LABEL_FIELD not in value:
        raise InvalidFile(f"line {line_number}: missing '{LABEL_FIELD}'", param="file")
    label = value[LABEL_FIELD]
    if isinstance(label, LongInteger):
        max_digits = limits.max_label_chars if limits is not None else sys.get_int_max_str_digits()
        raise InvalidFile(
            f"line {line_number}: '{LABEL_FIELD}' is an integer of {label.digits} digits; labels must be strings "
            f"or integers of at most {max_digits} digits",
            param="file",
        )
    if isinstance(label, bool) or not isinstance(label, (str, int)):
        raise InvalidFile(
            f"line {line_number}: '{LABEL_FIELD}' must be a string or an integer, not {json_kind(label)}",
            param="file",
        )
    if isinstance(label, str) and not label.strip():
        raise InvalidFile(f"line {line_number}: '{LABEL_FIELD}' must not be empty", param="file")
    for name, kept in ((TEXT_FIELD, text), (PAIR_FIELD, text_pair), (LABEL_FIELD, label)):
        surrogate = unpaired_surrogate(kept) if type(kept) is str else None
        if surrogate is not None:
            raise InvalidFile(
                f"line {line_number}: '{name}' holds text that is not valid Unicode (an unpaired surrogate "
                f"{surrogate}); save the file as UTF-8 text, where an escaped surrogate comes only in pairs",
                param="file",
            )
    fault = _label_size_fault(label, limits.max_label_chars) if limits is not None else None
    if fault is not None:
        raise InvalidFile(f"line {line_number}: '{LABEL_FIELD}' {fault}", param="file")
    return ClassificationRecord(line_number=line_number, text=text, text_pair=text_pair, label=label)


def _label_size_fault(label: Label, max_label_chars: int) -> str | None:
    """What makes `label` too long, as the end of a sentence starting "'label' "; None when it fits."""
    if type(label) is str:
        if len(label) <= max_label_chars:
            return None
        return (
            f"is {len(label)} characters long; labels may be at most {max_label_chars} characters (a label "
            "names a class; the text to classify goes in 'text')"
        )
    bound = 10**max_label_chars
    if -bound < int(label) < bound:
        return None
    return (
        f"is an integer of {len(str(abs(int(label))))} digits; labels must be strings or integers of at most "
        f"{max_label_chars} digits"
    )


MIN_CLASSES = 2
_LABEL_KIND_WORDS = {"int": "integers", "str": "strings"}  # FileSummary.label_kind, in words


class TextClassificationFormat:
    """text-classification, torch-free half: `{"text", "label"}` records (with an optional `text_pair`)."""

    task = Task.text_classification
    metrics: tuple[str, ...] = ("macro_f1", "accuracy")
    record_fields = frozenset({TEXT_FIELD, LABEL_FIELD})

    def summarize(self, path: Path, data_format: DataFormat, limits: DataLimits) -> dict[str, Any]:
        summary = summarize_file(path, data_format, limits)
        return {
            "record_count": summary.record_count,
            "label_counts": summary.label_counts,
            "label_kind": summary.label_kind,
            "has_text_pair": summary.has_text_pair,
        }

    def describe(self, summary: dict[str, Any]) -> str:
        return f"{summary['record_count']:,} records, {len(summary['label_counts'])} labels"

    def job_settings(self, training: dict[str, Any], validation: dict[str, Any] | None) -> dict[str, Any]:
        labels = ordered_labels(training["label_counts"], training["label_kind"])
        if len(labels) < MIN_CLASSES:
            raise InvalidRequest(
                f"training_file: classification needs at least {MIN_CLASSES} labels, but the file has only "
                f"{labels!r}; add examples of another label",
                param="training_file",
            )
        if validation is not None:
            _check_validation_matches_training(training, validation)
        return {"labels": labels}

    def defaults(self, strategy: StrategyType) -> StrategyDefaults | None:
        return None  # the strategies' defaults were measured on this task


def _check_validation_matches_training(training: dict[str, Any], validation: dict[str, Any]) -> None:
    if validation["has_text_pair"] != training["has_text_pair"]:
        has, lacks = ("validation", "training") if validation["has_text_pair"] else ("training", "validation")
        raise InvalidRequest(
            f"validation_file: the {has} file's records have 'text_pair' but the {lacks} file's do not; give "
            "'text_pair' in both files or in neither",
            param="validation_file",
        )
    if validation["label_kind"] != training["label_kind"]:
        kinds = (
            _LABEL_KIND_WORDS.get(summary["label_kind"], summary["label_kind"]) for summary in (validation, training)
        )
        raise InvalidRequest(
            "validation_file: its labels are {}, but the training file's are {}; use the same kind of label in "
            "both files".format(*kinds),
            param="validation_file",
        )
    unknown = sorted(set(validation["label_counts"]) - set(training["label_counts"]))
    if unknown:
        raise InvalidRequest(
            f"validation_file: label {unknown[0]!r} does not occur in the training file; remove its examples from "
            "the validation file, or add examples of it to the training file",
            param="validation_file",
        )
