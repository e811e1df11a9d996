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


def jsonl_lines(count: int, *, label: object = None, pair: bool = False) -> list[bytes]:
    """`count` valid records of about 60 bytes: a few dozen thousand fill several validation batches."""
    return [
        json.dumps(
            {"text": f"sentence number {index}", **({"text_pair": "the other one"} if pair else {}), "label": label}
            if label is not None
            else {"text": f"sentence number {index}", "label": ["neg", "pos"][index % 2]}
        ).encode()
        + b"\n"
        for index in range(count)
    ]


def per_line_summary(path: Path) -> tuple[int, dict[str, int], bool]:
    """What record-by-record validation (the path the worker reads with) counts."""
    records = list(iter_records(path, DataFormat.jsonl))
    counts: dict[str, int] = {}
    for record in records:
        counts[str(record.label)] = counts.get(str(record.label), 0) + 1
    return len(records), counts, records[0].text_pair is not None


def test_a_file_of_many_batches_is_summarised_as_record_by_record_validation_does(tmp_path: Path) -> None:
    lines = jsonl_lines(60_000)
    path = write(tmp_path, b"".join(lines))
    assert path.stat().st_size > 2 * MAX_RECORD_BYTES
    summary = summarize_file(path, DataFormat.jsonl)
    assert (summary.record_count, summary.label_counts, summary.has_text_pair) == per_line_summary(path)
    assert summary.label_counts == {"neg": 30_000, "pos": 30_000}


def test_an_error_in_a_later_batch_names_its_exact_line(tmp_path: Path) -> None:
    lines = jsonl_lines(60_000)
    lines[45_678] = b'{"text": "fine", "label": ""}\n'
    assert error_of(write(tmp_path, b"".join(lines))) == "line 45679: 'label' must not be empty"


def test_label_kinds_mixed_across_batches_name_the_first_line_of_the_second_kind(tmp_path: Path) -> None:
    lines = jsonl_lines(30_000, label="a") + jsonl_lines(30_000, label=1)
    assert error_of(write(tmp_path, b"".join(lines))) == (
        "line 30001: 'label' mixes integers and strings; use one kind throughout"
    )


def test_text_pair_dropped_in_a_later_batch_names_the_line(tmp_path: Path) -> None:
    lines = jsonl_lines(30_000, label=1, pair=True) + jsonl_lines(30_000, label=1)
    assert error_of(write(tmp_path, b"".join(lines))).startswith("line 30001: every record must have 'text_pair'")


def test_lines_that_only_parse_when_joined_are_refused_by_line(tmp_path: Path) -> None:
    """Neither line is a JSON object, though joined into one array they would make two valid records."""
    content = b'{"text": "a", "label": "x", "k": [[\n]]}, {"text": "b", "label": "y"}\n'
    assert error_of(write(tmp_path, content)).startswith("line 1: invalid JSON")
    strings = b'{"text": "a", "label": "x", "k": "}\n{", "text": "b", "label": "y"}\n'
    assert error_of(write(tmp_path, strings)).startswith("line 1: invalid JSON")


def test_two_objects_on_one_line_are_refused_even_beside_a_blank_line_that_evens_the_count(tmp_path: Path) -> None:
    """Two records from three lines' worth of text: the batch must not mistake them for two valid lines."""
    content = b'{"text": "a", "label": "x"}{"text": "b", "label": "y"}\n\n{"text": "c", "label": "x"}\n'
    assert error_of(write(tmp_path, content)).startswith("line 1: invalid JSON")


def test_an_object_spread_over_lines_is_refused_by_line(tmp_path: Path) -> None:
    content = b'{"text": "a",\n"label": "x"}\n{"text": "b", "label": "y"}\n{"text": "c", "label": "x"}\n'
    assert error_of(write(tmp_path, content)).startswith("line 1: invalid JSON")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b'{"text": "fine", "label": true}\n', "line 30001: 'label' must be a string or an integer, got bool"),
        (b'{"text": " \\t ", "label": "x"}\n', "line 30001: 'text' must be a non-empty string"),
        (b'{"text": "fine", "text_pair": " ", "label": "x"}\n', "line 30001: 'text_pair' must be a non-empty string"),
        (b'{"text": "caf\xe9", "label": "x"}\n', "line 30001: not valid UTF-8"),
        (b'{"text": "fine", "label": "x"}\r\n', None),  # one CRLF line among LF ones is fine
    ],
)
def test_a_fault_deep_in_a_batch_is_named_as_the_per_line_path_names_it(
    tmp_path: Path, line: bytes, message: str | None
) -> None:
    lines = jsonl_lines(60_000)
    lines[30_000] = line
    path = write(tmp_path, b"".join(lines))
    if message is None:
        assert summarize_file(path, DataFormat.jsonl).record_count == 60_000
    else:
        assert error_of(path).startswith(message)


def test_a_crlf_file_of_many_batches_is_summarised_as_record_by_record_validation_does(tmp_path: Path) -> None:
    path = write(tmp_path, b"".join(line.replace(b"\n", b"\r\n") for line in jsonl_lines(60_000, pair=True, label=3)))
    summary = summarize_file(path, DataFormat.jsonl)
    assert (summary.record_count, summary.label_counts, summary.has_text_pair) == per_line_summary(path)


@pytest.mark.parametrize(
    "content",
    [
        "\ufeff" + '{"text": "bom", "label": 1}\n{"text": "x", "label": 2}\n',
        '{"text": "crlf", "label": 1}\r\n{"text": "x", "label": 2}\r\n',
        '{"text": "no final newline", "label": 1}\n{"text": "{braces}", "label": 2}',
        '{"text": "trailing blank line", "label": 1}\n{"text": "x", "label": 2}\n\n',
        '{"text": "}\\n{", "label": 1}\n{"text": "an escaped newline between braces", "label": 2}\n',
        '{"text": "a stray \\r", "label": 1}\r\n{"text": "x", "label": 2}\r\r\n',
    ],
)
def test_files_with_a_bom_crlf_braces_or_blank_ends_are_read_whole(tmp_path: Path, content: str) -> None:
    path = write(tmp_path, content.encode())
    summary = summarize_file(path, DataFormat.jsonl)
    assert (summary.record_count, summary.label_counts, summary.label_kind) == (2, {"1": 1, "2": 1}, "int")


def test_text_is_blank_in_a_batch_exactly_when_str_strip_empties_it(tmp_path: Path) -> None:
    """Blankness in a batch and on the per-line path must agree with str.strip on every character."""
    characters = [chr(code) for code in range(0x110000) if not 0xD800 <= code <= 0xDFFF]
    lines = [json.dumps({"text": character, "label": 1}).encode() + b"\n" for character in characters]
    blank = [index for index, character in enumerate(characters) if not character.strip()]
    assert error_of(write(tmp_path, b"".join(lines))) == f"line {blank[0] + 1}: 'text' must be a non-empty string"
    kept = [line for index, line in enumerate(lines) if index not in set(blank) and b"{" not in line[1:-2]]
    kept = [line for line in kept if b"}" not in line[:-2]]
    summary = summarize_file(write(tmp_path, b"".join(kept), "kept.jsonl"), DataFormat.jsonl)
    assert summary.record_count == len(kept)


@pytest.mark.parametrize(
    ("field", "message"),
    [
        (b'"x": "caf\xff"', "line 30001: not valid UTF-8"),
        (b'"x": "\xed\xa0\x80"', "line 30001: not valid UTF-8"),  # an encoded surrogate
        (b'"x": {"\xfe": 1}', "line 30001: not valid UTF-8"),
        (b'"x": ' + b"9" * 5000, "line 30001: invalid JSON (Exceeds the limit (4300 digits)"),
    ],
)
def test_what_a_batch_skips_unread_is_still_judged_as_the_per_line_path_judges_it(
    tmp_path: Path, field: bytes, message: str
) -> None:
    """Fields the record does not use are skipped by the batch decoder, yet the worker reads every line whole."""
    lines = jsonl_lines(60_000)
    lines[30_000] = b'{"text": "fine", "label": "neg", ' + field + b"}\n"
    assert error_of(write(tmp_path, b"".join(lines))).startswith(message)


def test_nesting_too_deep_for_the_batch_decoder_is_named_by_line(tmp_path: Path) -> None:
    lines = jsonl_lines(60_000)
    lines[30_000] = b'{"text": "fine", "label": "neg", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}\n"
    assert error_of(write(tmp_path, b"".join(lines))) == "line 30001: JSON nested too deeply"


def test_a_long_run_of_digits_inside_a_string_is_accepted(tmp_path: Path) -> None:
    lines = jsonl_lines(60_000)
    lines[30_000] = b'{"text": "' + b"7" * 5000 + b'", "label": "neg"}\n'
    assert summarize_file(write(tmp_path, b"".join(lines)), DataFormat.jsonl).record_count == 60_000
