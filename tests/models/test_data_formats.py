from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.data_formats import MAX_RECORD_BYTES, DataFormat, detect_format, iter_records, summarize_file
from models.errors import InvalidFile
from tests.conftest import SHARED_DATA


def write(tmp_path: Path, content: bytes, name: str = "data.jsonl") -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def error_of(path: Path, data_format: DataFormat = DataFormat.jsonl) -> str:
    with pytest.raises(InvalidFile) as caught:
        summarize_file(path, data_format)
    assert caught.value.param == "file"
    return caught.value.message


def test_sst2_validation_file_is_summarised_exactly() -> None:
    summary = summarize_file(SHARED_DATA / "sst2" / "validation.jsonl", DataFormat.jsonl)
    assert summary.record_count == 872
    assert summary.label_counts == {"positive": 444, "negative": 428}
    assert summary.label_names == ["negative", "positive"]
    assert not summary.has_text_pair


def test_mrpc_is_recognised_as_sentence_pairs_and_extra_fields_are_ignored() -> None:
    summary = summarize_file(SHARED_DATA / "mrpc" / "validation.jsonl", DataFormat.jsonl)
    assert summary.has_text_pair
    assert summary.label_counts == {"equivalent": 279, "not_equivalent": 129}


def test_integer_labels_are_ordered_numerically(tmp_path: Path) -> None:
    rows = [{"text": f"t{i}", "label": label} for i, label in enumerate([10, 2, 1, 2])]
    path = write(tmp_path, "".join(json.dumps(r) + "\n" for r in rows).encode())
    assert summarize_file(path, DataFormat.jsonl).label_names == [1, 2, 10]


def test_missing_label_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, b'{"text": "a", "label": "x"}\n{"text": "b"}\n')
    assert error_of(path) == "line 2: missing 'label'"


def test_invalid_json_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, b'{"text": "a", "label": "x"}\n{"text": "b", \n')
    assert error_of(path).startswith("line 2: invalid JSON")


def test_non_object_line_is_refused(tmp_path: Path) -> None:
    assert error_of(write(tmp_path, b'["a", "x"]\n')) == "line 1: expected a JSON object, got list"


def test_non_utf8_bytes_name_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, b'{"text": "a", "label": "x"}\n{"text": "\xff\xfe", "label": "x"}\n')
    assert error_of(path) == "line 2: not valid UTF-8"


def test_empty_file_is_refused(tmp_path: Path) -> None:
    assert error_of(write(tmp_path, b"")) == "file holds no records"


def test_blank_line_in_the_middle_is_refused_but_a_trailing_one_is_not(tmp_path: Path) -> None:
    good = write(tmp_path, b'{"text": "a", "label": "x"}\n\n', "good.jsonl")
    assert summarize_file(good, DataFormat.jsonl).record_count == 1
    bad = write(tmp_path, b'{"text": "a", "label": "x"}\n\n{"text": "b", "label": "y"}\n', "bad.jsonl")
    assert error_of(bad).startswith("line 2: blank line")


def test_boolean_and_float_labels_are_refused(tmp_path: Path) -> None:
    assert "got bool" in error_of(write(tmp_path, b'{"text": "a", "label": true}\n', "b.jsonl"))
    assert "got float" in error_of(write(tmp_path, b'{"text": "a", "label": 1.5}\n', "f.jsonl"))


def test_mixed_label_kinds_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, b'{"text": "a", "label": 1}\n{"text": "b", "label": "1"}\n')
    assert error_of(path).startswith("line 2: 'label' mixes integers and strings")


def test_empty_text_is_refused(tmp_path: Path) -> None:
    assert error_of(write(tmp_path, b'{"text": "  ", "label": "x"}\n')) == "line 1: 'text' must be a non-empty string"


def test_text_pair_must_be_all_or_nothing(tmp_path: Path) -> None:
    path = write(tmp_path, b'{"text": "a", "text_pair": "b", "label": "x"}\n{"text": "c", "label": "x"}\n')
    assert error_of(path).startswith("line 2: every record must have 'text_pair' or none may")


def test_overlong_line_is_refused_without_reading_it_whole(tmp_path: Path) -> None:
    path = write(tmp_path, b'{"text": "' + b"a" * (MAX_RECORD_BYTES + 10) + b'", "label": "x"}\n')
    assert error_of(path) == f"line 1: longer than {MAX_RECORD_BYTES} bytes"


def test_csv_with_header_is_read(tmp_path: Path) -> None:
    path = write(tmp_path, b'text,label\n"a, quoted",pos\nplain,neg\n', "data.csv")
    records = list(iter_records(path, DataFormat.csv))
    assert [(r.text, r.label, r.line_number) for r in records] == [
        ("a, quoted", "pos", 2),
        ("plain", "neg", 3),
    ]


def test_csv_without_label_column_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, b"text,target\na,b\n", "data.csv")
    assert error_of(path, DataFormat.csv).startswith("line 1: CSV header must name a 'label' column")


def test_csv_row_with_wrong_field_count_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, b"text,label\na,b\nc,d,e\n", "data.csv")
    assert error_of(path, DataFormat.csv) == "line 3: 3 fields, but the header has 2"


@pytest.mark.parametrize(
    ("filename", "first_bytes", "expected"),
    [
        ("train.jsonl", b"", DataFormat.jsonl),
        ("train.CSV", b"{", DataFormat.csv),
        ("upload", b'  {"text"', DataFormat.jsonl),
        ("upload", b"text,label", DataFormat.csv),
    ],
)
def test_format_follows_the_extension_then_the_content(filename: str, first_bytes: bytes, expected: DataFormat) -> None:
    assert detect_format(filename, first_bytes) is expected


def test_an_integer_too_long_to_convert_is_a_named_error_not_a_crash(tmp_path: Path) -> None:
    path = write(tmp_path, b'{"text": "a", "label": ' + b"9" * 5000 + b"}\n")
    assert error_of(path).startswith("line 1: invalid JSON")


def test_records_the_fast_parser_refuses_are_judged_by_json_loads_exactly(tmp_path: Path) -> None:
    # A lone surrogate escape: pydantic's parser refuses it, json.loads reads it; the file is valid.
    lone = write(tmp_path, b'{"text": "a \\ud800 b", "label": "x"}\n{"text": "c", "label": "y"}\n')
    assert [record.text for record in iter_records(lone, DataFormat.jsonl)] == ["a \ud800 b", "c"]
    # An integer label past Python's digit limit: both refuse it, and the message is json.loads's.
    huge = write(tmp_path, b'{"text": "a", "label": "x"}\n{"text": "b", "label": ' + b"7" * 5000 + b"}\n", "huge.jsonl")
    assert error_of(huge).startswith("line 2: invalid JSON (Exceeds the limit (4300 digits)")
