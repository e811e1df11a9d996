from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from models.errors import InvalidFile
from models.tasks.jsonl_records import (
    MAX_RECORD_BYTES,
    LongInteger,
    iter_jsonl_records,
    json_kind,
    one_object_per_line,
    surrogate_fault,
)

EXAMPLE = '{"a": 1}'
LAYOUT = 'a JSONL file holds one JSON object per line, such as {"a": 1}'


def write(tmp_path: Path, content: bytes) -> Path:
    path = tmp_path / "data.jsonl"
    path.write_bytes(content)
    return path


def records_of(path: Path) -> list[tuple[int, dict[str, Any]]]:
    return list(iter_jsonl_records(path, example=EXAMPLE))


def error_of(path: Path) -> str:
    with pytest.raises(InvalidFile) as caught:
        records_of(path)
    assert caught.value.param == "file"
    return caught.value.message


def test_each_object_comes_with_its_line_number(tmp_path: Path) -> None:
    path = write(tmp_path, b'{"a": 1}\n{"b": [1, "x"], "c": {"d": null}}\n{}\n')
    assert records_of(path) == [(1, {"a": 1}), (2, {"b": [1, "x"], "c": {"d": None}}), (3, {})]


def test_the_layout_sentence_shows_the_callers_example() -> None:
    assert one_object_per_line(EXAMPLE) == LAYOUT


@pytest.mark.parametrize(
    "content",
    [
        b'\xef\xbb\xbf{"a": 1}\n{"a": 2}\n',
        b'{"a": 1}\r\n{"a": 2}\r\n',
        b'{"a": 1}\n{"a": 2}',
        b'{"a": 1}\n{"a": 2}\n\n  \n\t\r\n',
        b'  {"a": 1}  \n{"a": 2}\n',
    ],
    ids=["bom", "crlf", "no-final-newline", "blank-lines-at-the-end", "surrounding-spaces"],
)
def test_a_bom_crlf_endings_and_blank_lines_at_the_end_are_read_as_plain_lines(tmp_path: Path, content: bytes) -> None:
    assert records_of(write(tmp_path, content)) == [(1, {"a": 1}), (2, {"a": 2})]


def test_lines_are_read_one_at_a_time_so_early_records_arrive_before_a_later_fault(tmp_path: Path) -> None:
    records = iter_jsonl_records(write(tmp_path, b'{"a": 1}\n{"a": 2}\nnot json\n'), example=EXAMPLE)
    assert next(records) == (1, {"a": 1})
    assert next(records) == (2, {"a": 2})
    with pytest.raises(InvalidFile, match=r"^line 3: invalid JSON"):
        next(records)


def test_a_blank_line_between_records_is_refused_naming_the_first_blank_line(tmp_path: Path) -> None:
    assert error_of(write(tmp_path, b'{"a": 1}\n\n  \n{"a": 2}\n')) == (
        f"line 2: blank line; {LAYOUT}, with no blank lines between records"
    )


@pytest.mark.parametrize("content", [b"", b"\n", b"  \n\t\r\n\n"], ids=["empty", "one-newline", "blank-lines"])
def test_a_file_without_records_is_refused(tmp_path: Path, content: bytes) -> None:
    assert error_of(write(tmp_path, content)) == f"file holds no records; {LAYOUT}"


@pytest.mark.parametrize(
    "content",
    [b'[{"a": 1}, {"a": 2}]\n', b'[\n  {"a": 1}\n]\n', b'\xef\xbb\xbf  [{"a": 1}]\n'],
    ids=["one-line", "pretty-printed", "after-a-bom"],
)
def test_a_json_array_file_is_refused_saying_it_looks_like_one(tmp_path: Path, content: bytes) -> None:
    assert error_of(write(tmp_path, content)) == (
        f"line 1: this looks like a JSON array; {LAYOUT}. Write each record on a line of its own, without the "
        "enclosing [ ] and commas"
    )


def test_invalid_json_is_refused_with_the_parsers_complaint_and_column(tmp_path: Path) -> None:
    assert error_of(write(tmp_path, b'{"a": 1}\n{"a": 1,}\n')) == (
        f"line 2: invalid JSON (Expecting property name enclosed in double quotes at column 9); {LAYOUT}, "
        "complete on its line"
    )


def test_two_objects_on_one_line_are_invalid_json(tmp_path: Path) -> None:
    assert error_of(write(tmp_path, b'{"a": 1}{"a": 2}\n')) == (
        f"line 1: invalid JSON (Extra data at column 9); {LAYOUT}, complete on its line"
    )


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        (b"[1, 2]", "an array"),
        (b'"a"', "a string"),
        (b"7", "an integer"),
        (b"7.5", "a number with a fraction"),
        (b"null", "null"),
        (b"false", "a boolean"),
    ],
)
def test_a_line_that_is_not_an_object_is_refused_saying_what_it_holds(tmp_path: Path, line: bytes, kind: str) -> None:
    assert error_of(write(tmp_path, b'{"a": 1}\n' + line + b"\n")) == (
        f"line 2: holds {kind}, not a JSON object; {LAYOUT}"
    )


@pytest.mark.parametrize(
    "bad",
    [b'"caf\xe9"', b'"\xed\xa0\x80"', b'"\xff\xfe"'],
    ids=["latin-1", "encoded-surrogate", "utf-16-bom"],
)
def test_bytes_that_are_not_utf8_are_refused_naming_the_line(tmp_path: Path, bad: bytes) -> None:
    assert error_of(write(tmp_path, b'{"a": 1}\n{"a": ' + bad + b"}\n")) == (
        "line 2: not valid UTF-8; save the file with UTF-8 encoding"
    )


def test_a_byte_order_mark_after_line_1_is_not_skipped(tmp_path: Path) -> None:
    """Only a file's first bytes may be a BOM; one on a later line comes from files joined, and is named."""
    assert error_of(write(tmp_path, b'{"a": 1}\n\xef\xbb\xbf{"a": 2}\n')) == (
        f"line 2: invalid JSON (Unexpected UTF-8 BOM (decode using utf-8-sig) at column 1); {LAYOUT}, complete on "
        "its line"
    )


def test_a_line_over_the_record_limit_is_refused(tmp_path: Path) -> None:
    line = b'{"a": "' + b"x" * (MAX_RECORD_BYTES - 8) + b'"}'
    assert len(line) == MAX_RECORD_BYTES + 1
    assert error_of(write(tmp_path, b'{"a": 1}\n' + line + b"\n")) == (
        f"line 2: longer than {MAX_RECORD_BYTES} bytes, the most one record may hold"
    )


def test_a_line_of_exactly_the_record_limit_is_read(tmp_path: Path) -> None:
    line = b'{"a": "' + b"x" * (MAX_RECORD_BYTES - 9) + b'"}'
    assert len(line) == MAX_RECORD_BYTES
    [(line_number, record)] = records_of(write(tmp_path, line + b"\r\n"))
    assert (line_number, len(record["a"])) == (1, MAX_RECORD_BYTES - 9)


def test_nesting_too_deep_is_refused_naming_the_line(tmp_path: Path) -> None:
    line = b'{"a": ' + b"[" * 5000 + b"]" * 5000 + b"}\n"
    assert error_of(write(tmp_path, b'{"a": 1}\n' + line)) == (
        f"line 2: JSON nested too deeply; a record is an object such as {EXAMPLE}"
    )


def test_an_integer_too_long_to_convert_is_yielded_as_its_length(tmp_path: Path) -> None:
    path = write(tmp_path, b'{"a": ' + b"9" * 5000 + b', "b": -' + b"1" * 4400 + b', "c": "\\ud800", "d": 12}\n')
    [(_, record)] = records_of(path)
    assert record == {"a": LongInteger(5000), "b": LongInteger(4400), "c": "\ud800", "d": 12}
    assert json_kind(record["a"]) == "an integer"


def test_an_unpaired_surrogate_is_yielded_for_the_task_to_refuse_with_its_field(tmp_path: Path) -> None:
    [(_, record)] = records_of(write(tmp_path, b'{"a": "x\\udc00y"}\n'))
    assert surrogate_fault(record["a"]) == (
        "holds text that is not valid Unicode (an unpaired surrogate \\udc00); save the file as UTF-8 text, where an "
        "escaped surrogate comes only in pairs"
    )


@pytest.mark.parametrize("text", ["plain", "caf\u00e9", "\U0001f600", ""])
def test_text_that_encodes_as_utf8_has_no_surrogate_fault(text: str) -> None:
    assert surrogate_fault(text) is None


def test_an_escaped_surrogate_pair_reads_as_the_character_it_encodes(tmp_path: Path) -> None:
    [(_, record)] = records_of(write(tmp_path, b'{"a": "\\ud83d\\ude00"}\n'))
    assert record["a"] == "\U0001f600"
    assert surrogate_fault(record["a"]) is None
