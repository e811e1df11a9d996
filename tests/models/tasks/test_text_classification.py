from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.errors import InvalidFile
from models.tasks.text_classification import (
    JSONL_EXAMPLE,
    MAX_RECORD_BYTES,
    DataFormat,
    DataLimits,
    detect_format,
    iter_records,
    summarize_file,
)
from tests.conftest import SHARED_DATA

LIMITS = DataLimits(max_label_chars=256, max_labels=1000)  # Settings' defaults
ONE_OBJECT_PER_LINE = f"a JSONL file holds one JSON object per line, such as {JSONL_EXAMPLE}"


def write(tmp_path: Path, content: bytes, name: str = "data.jsonl") -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def error_of(path: Path, data_format: DataFormat = DataFormat.jsonl, limits: DataLimits = LIMITS) -> str:
    with pytest.raises(InvalidFile) as caught:
        summarize_file(path, data_format, limits)
    assert caught.value.param == "file"
    return caught.value.message


def test_sst2_validation_file_is_summarised_exactly() -> None:
    summary = summarize_file(SHARED_DATA / "sst2" / "validation.jsonl", DataFormat.jsonl, LIMITS)
    assert summary.record_count == 872
    assert summary.label_counts == {"positive": 444, "negative": 428}
    assert summary.label_names == ["negative", "positive"]
    assert not summary.has_text_pair


def test_mrpc_is_recognised_as_sentence_pairs_and_extra_fields_are_ignored() -> None:
    summary = summarize_file(SHARED_DATA / "mrpc" / "validation.jsonl", DataFormat.jsonl, LIMITS)
    assert summary.has_text_pair
    assert summary.label_counts == {"equivalent": 279, "not_equivalent": 129}


def test_integer_labels_are_ordered_numerically(tmp_path: Path) -> None:
    rows = [{"text": f"t{i}", "label": label} for i, label in enumerate([10, 2, 1, 2])]
    path = write(tmp_path, "".join(json.dumps(r) + "\n" for r in rows).encode())
    assert summarize_file(path, DataFormat.jsonl, LIMITS).label_names == [1, 2, 10]


def test_missing_label_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, b'{"text": "a", "label": "x"}\n{"text": "b"}\n')
    assert error_of(path) == "line 2: missing 'label'"


def test_invalid_json_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, b'{"text": "a", "label": "x"}\n{"text": "b", \n')
    assert error_of(path).startswith("line 2: invalid JSON")


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        (b'["a", "x"]', "an array"),
        (b'"a"', "a string"),
        (b"7", "an integer"),
        (b"null", "null"),
        (b"true", "a boolean"),
    ],
)
def test_a_line_that_is_not_an_object_is_refused_saying_what_a_jsonl_file_holds(
    tmp_path: Path, line: bytes, kind: str
) -> None:
    path = write(tmp_path, b'{"text": "a", "label": "x"}\n' + line + b"\n")
    assert error_of(path) == f"line 2: holds {kind}, not a JSON object; {ONE_OBJECT_PER_LINE}"


@pytest.mark.parametrize(
    "content",
    [
        b'[{"text": "a", "label": "x"}, {"text": "b", "label": "y"}]\n',
        b'[\n  {"text": "a", "label": "x"},\n  {"text": "b", "label": "y"}\n]\n',
        b'\xef\xbb\xbf  ["a", "x"]\n',
    ],
    ids=["one-line-array", "pretty-printed-array", "bom-then-array"],
)
def test_a_json_array_file_is_refused_saying_it_looks_like_one(tmp_path: Path, content: bytes) -> None:
    assert error_of(write(tmp_path, content, "data.json")) == (
        f"line 1: this looks like a JSON array; {ONE_OBJECT_PER_LINE}. Write each record on a line of its own, "
        "without the enclosing [ ] and commas"
    )


def test_a_pretty_printed_object_is_refused_saying_a_record_is_complete_on_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, b'{\n  "text": "a",\n  "label": "x"\n}\n')
    assert error_of(path) == (
        "line 1: invalid JSON (Expecting property name enclosed in double quotes at column 2); "
        f"{ONE_OBJECT_PER_LINE}, complete on its line"
    )


def test_non_utf8_bytes_name_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, b'{"text": "a", "label": "x"}\n{"text": "\xff\xfe", "label": "x"}\n')
    assert error_of(path) == "line 2: not valid UTF-8; save the file with UTF-8 encoding"


def test_empty_file_is_refused(tmp_path: Path) -> None:
    assert error_of(write(tmp_path, b"")) == f"file holds no records; {ONE_OBJECT_PER_LINE}"
    csv_path = write(tmp_path, b"text,label\n", "data.csv")
    assert error_of(csv_path, DataFormat.csv) == "file holds no records; a CSV file holds one record per row"


def test_blank_line_in_the_middle_is_refused_but_a_trailing_one_is_not(tmp_path: Path) -> None:
    good = write(tmp_path, b'{"text": "a", "label": "x"}\n\n', "good.jsonl")
    assert summarize_file(good, DataFormat.jsonl, LIMITS).record_count == 1
    bad = write(tmp_path, b'{"text": "a", "label": "x"}\n\n{"text": "b", "label": "y"}\n', "bad.jsonl")
    assert error_of(bad).startswith("line 2: blank line")


def test_boolean_and_float_labels_are_refused(tmp_path: Path) -> None:
    assert error_of(write(tmp_path, b'{"text": "a", "label": true}\n', "b.jsonl")) == (
        "line 1: 'label' must be a string or an integer, not a boolean"
    )
    assert error_of(write(tmp_path, b'{"text": "a", "label": 1.5}\n', "f.jsonl")) == (
        "line 1: 'label' must be a string or an integer, not a number with a fraction"
    )


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
    assert error_of(path) == f"line 1: longer than {MAX_RECORD_BYTES} bytes, the most one record may hold"


def test_csv_with_header_is_read(tmp_path: Path) -> None:
    path = write(tmp_path, b'text,label\n"a, quoted",pos\nplain,neg\n', "data.csv")
    records = list(iter_records(path, DataFormat.csv))
    assert [(r.text, r.label, r.line_number) for r in records] == [
        ("a, quoted", "pos", 2),
        ("plain", "neg", 3),
    ]


def test_csv_without_label_column_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, b"text,target\na,b\n", "data.csv")
    assert error_of(path, DataFormat.csv) == (
        "line 1: the CSV header must name a 'label' column; it names 'text', 'target'. A CSV file's first line "
        "names its columns: 'text', 'label' and, for sentence pairs, 'text_pair'"
    )


def test_csv_row_with_wrong_field_count_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, b"text,label\na,b\nc,d,e\n", "data.csv")
    assert error_of(path, DataFormat.csv) == (
        'line 3: 3 fields, but the header has 2; put a field that holds a comma in double quotes ("like, this")'
    )


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


def test_an_integer_label_too_long_to_convert_is_named_with_its_length_not_pythons_advice(tmp_path: Path) -> None:
    lines = b'{"text": "a", "label": 1}\n' * 3 + b'{"text": "a", "label": ' + b"9" * 5000 + b"}\n"
    assert error_of(write(tmp_path, lines)) == (
        "line 4: 'label' is an integer of 5000 digits; labels must be strings or integers of at most 256 digits"
    )


def test_an_integer_too_long_to_convert_is_accepted_in_a_field_that_is_not_kept(tmp_path: Path) -> None:
    path = write(tmp_path, b'{"text": "a", "label": 1, "id": ' + b"9" * 5000 + b'}\n{"text": "b", "label": 2}\n')
    assert summarize_file(path, DataFormat.jsonl, LIMITS).record_count == 2
    assert [record.label for record in iter_records(path, DataFormat.jsonl)] == [1, 2]


def test_records_the_fast_parser_refuses_are_judged_by_json_loads_exactly(tmp_path: Path) -> None:
    # A lone surrogate escape in a field not kept: pydantic's parser refuses it, json.loads reads it.
    lone = write(tmp_path, b'{"text": "a", "label": "x", "note": "\\ud800"}\n{"text": "c", "label": "y"}\n')
    assert [record.text for record in iter_records(lone, DataFormat.jsonl)] == ["a", "c"]
    assert summarize_file(lone, DataFormat.jsonl, LIMITS).record_count == 2


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
    summary = summarize_file(path, DataFormat.jsonl, LIMITS)
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
        (b'{"text": "fine", "label": true}\n', "line 30001: 'label' must be a string or an integer, not a boolean"),
        (b'{"text": "fine \\udc00", "label": "x"}\n', "line 30001: 'text' holds text that is not valid Unicode"),
        (b'{"text": "fine", "label": "x\\ud800"}\n', "line 30001: 'label' holds text that is not valid Unicode"),
        (b'{"text": "a", "text_pair": "\\ud83d", "label": "x"}\n', "line 30001: 'text_pair' holds text that"),
        (b'{"text": "fine", "label": "' + b"x" * 257 + b'"}\n', "line 30001: 'label' is 257 characters long"),
        (b'{"text": "fine", "label": ' + b"9" * 257 + b"}\n", "line 30001: 'label' is an integer of 257 digits"),
        (b'{"text": "fine", "label": "' + b"x" * 256 + b'"}\n', None),  # a label of max_label_chars is fine
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
        assert summarize_file(path, DataFormat.jsonl, LIMITS).record_count == 60_000
    else:
        assert error_of(path).startswith(message)


def test_a_crlf_file_of_many_batches_is_summarised_as_record_by_record_validation_does(tmp_path: Path) -> None:
    path = write(tmp_path, b"".join(line.replace(b"\n", b"\r\n") for line in jsonl_lines(60_000, pair=True, label=3)))
    summary = summarize_file(path, DataFormat.jsonl, LIMITS)
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
    summary = summarize_file(path, DataFormat.jsonl, LIMITS)
    assert (summary.record_count, summary.label_counts, summary.label_kind) == (2, {"1": 1, "2": 1}, "int")


def test_text_is_blank_in_a_batch_exactly_when_str_strip_empties_it(tmp_path: Path) -> None:
    """Blankness in a batch and on the per-line path must agree with str.strip on every character."""
    characters = [chr(code) for code in range(0x110000) if not 0xD800 <= code <= 0xDFFF]
    lines = [json.dumps({"text": character, "label": 1}).encode() + b"\n" for character in characters]
    blank = [index for index, character in enumerate(characters) if not character.strip()]
    assert error_of(write(tmp_path, b"".join(lines))) == f"line {blank[0] + 1}: 'text' must be a non-empty string"
    kept = [line for index, line in enumerate(lines) if index not in set(blank) and b"{" not in line[1:-2]]
    kept = [line for line in kept if b"}" not in line[:-2]]
    summary = summarize_file(write(tmp_path, b"".join(kept), "kept.jsonl"), DataFormat.jsonl, LIMITS)
    assert summary.record_count == len(kept)


@pytest.mark.parametrize(
    ("field", "message"),
    [
        (b'"x": "caf\xff"', "line 30001: not valid UTF-8"),
        (b'"x": "\xed\xa0\x80"', "line 30001: not valid UTF-8"),  # an encoded surrogate
        (b'"x": {"\xfe": 1}', "line 30001: not valid UTF-8"),
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
    assert error_of(write(tmp_path, b"".join(lines))) == (
        f"line 30001: JSON nested too deeply; a record is an object such as {JSONL_EXAMPLE}"
    )


def test_a_long_run_of_digits_inside_a_string_is_accepted(tmp_path: Path) -> None:
    lines = jsonl_lines(60_000)
    lines[30_000] = b'{"text": "' + b"7" * 5000 + b'", "label": "neg"}\n'
    assert summarize_file(write(tmp_path, b"".join(lines)), DataFormat.jsonl, LIMITS).record_count == 60_000


# Hostile strings and unbounded labels: refused by line and field, on every path a record takes.

SURROGATE_ADVICE = "save the file as UTF-8 text, where an escaped surrogate comes only in pairs"


@pytest.mark.parametrize(
    ("record", "field", "surrogate"),
    [
        (b'{"text": "a \\ud800 b", "label": "x"}', "text", "\\ud800"),
        (b'{"text": "a", "text_pair": "\\udfff", "label": "x"}', "text_pair", "\\udfff"),
        (b'{"text": "a", "label": "x\\ud800"}', "label", "\\ud800"),
        (b'{"text": "a", "label": "\\ude00\\ud83d"}', "label", "\\ude00"),  # a pair in the wrong order
    ],
)
def test_an_unpaired_surrogate_in_a_kept_field_is_refused_naming_line_and_field(
    tmp_path: Path, record: bytes, field: str, surrogate: str
) -> None:
    clean = record.replace(b"\\u", b"u") + b"\n"
    content = clean + clean + record + b"\n"
    assert error_of(write(tmp_path, content)) == (
        f"line 3: '{field}' holds text that is not valid Unicode (an unpaired surrogate {surrogate}); "
        f"{SURROGATE_ADVICE}"
    )


def test_the_worker_reading_a_file_refuses_an_unpaired_surrogate_as_validation_does(tmp_path: Path) -> None:
    path = write(tmp_path, b'{"text": "a", "label": "x"}\n{"text": "\\ud800", "label": "y"}\n')
    with pytest.raises(InvalidFile, match=r"^line 2: 'text' holds text that is not valid Unicode"):
        list(iter_records(path, DataFormat.jsonl))


def test_escaped_surrogate_pairs_in_a_batch_are_read_as_the_characters_they_encode(tmp_path: Path) -> None:
    """json.dumps writes an emoji as a pair of escapes: valid, and read in batches like any text."""
    lines = [
        json.dumps({"text": f"great \U0001f600 {index}", "label": "pos"}).encode() + b"\n" for index in range(60_000)
    ]
    assert b"\\ud83d\\ude00" in lines[0]
    path = write(tmp_path, b"".join(lines))
    assert summarize_file(path, DataFormat.jsonl, LIMITS).label_counts == {"pos": 60_000}
    assert next(iter_records(path, DataFormat.jsonl)).text == "great \U0001f600 0"


def test_an_encoded_surrogate_in_a_csv_file_is_refused_as_invalid_utf8(tmp_path: Path) -> None:
    path = write(tmp_path, b"text,label\ngood,pos\nbad,n\xed\xa0\x80g\n", "data.csv")
    assert error_of(path, DataFormat.csv) == "line 3: not valid UTF-8; save the file with UTF-8 encoding"


SMALL_LIMITS = DataLimits(max_label_chars=8, max_labels=3)


@pytest.mark.parametrize(
    ("data_format", "content"),
    [
        (DataFormat.jsonl, b'{"text": "a", "label": "short"}\n{"text": "b", "label": "much too long"}\n'),
        (DataFormat.csv, b"text,label\na,short\nb,much too long\n"),
    ],
)
def test_a_label_longer_than_max_label_chars_is_refused_naming_the_line(
    tmp_path: Path, data_format: DataFormat, content: bytes
) -> None:
    path = write(tmp_path, content, f"data.{data_format.value}")
    line = 2 if data_format is DataFormat.jsonl else 3
    assert error_of(path, data_format, SMALL_LIMITS) == (
        f"line {line}: 'label' is 13 characters long; labels may be at most 8 characters (a label names a class; "
        "the text to classify goes in 'text')"
    )


def test_an_integer_label_of_more_digits_than_max_label_chars_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, b'{"text": "a", "label": 12345678}\n{"text": "b", "label": -123456789}\n')
    assert error_of(path, limits=SMALL_LIMITS) == (
        "line 2: 'label' is an integer of 9 digits; labels must be strings or integers of at most 8 digits"
    )


@pytest.mark.parametrize(
    ("data_format", "content"),
    [
        (DataFormat.jsonl, b"".join(b'{"text": "t", "label": "l%d"}\n' % index for index in range(5))),
        (DataFormat.csv, b"text,label\n" + b"".join(b"t,l%d\n" % index for index in range(5))),
    ],
)
def test_more_distinct_labels_than_max_labels_are_refused_naming_the_first_line_past_it(
    tmp_path: Path, data_format: DataFormat, content: bytes
) -> None:
    line = 4 if data_format is DataFormat.jsonl else 5
    path = write(tmp_path, content, f"data.{data_format.value}")
    assert error_of(path, data_format, SMALL_LIMITS) == (
        f"line {line}: the file has more than 3 distinct labels, the most this server accepts; a label names one "
        "of a few classes, so check that 'label' holds the class and not the text"
    )


def test_max_labels_counts_labels_across_batches(tmp_path: Path) -> None:
    lines = jsonl_lines(30_000) + jsonl_lines(30_000, label="third") + jsonl_lines(1, label="fourth")
    assert summarize_file(write(tmp_path, b"".join(lines[:60_000])), DataFormat.jsonl, SMALL_LIMITS).label_counts == {
        "neg": 15_000,
        "pos": 15_000,
        "third": 30_000,
    }
    assert error_of(write(tmp_path, b"".join(lines), "four.jsonl"), limits=SMALL_LIMITS).startswith(
        "line 60001: the file has more than 3 distinct labels"
    )


def test_a_csv_header_naming_a_column_twice_is_refused_naming_line_1_and_the_column(tmp_path: Path) -> None:
    path = write(tmp_path, b"text, text ,label\nfirst,second,pos\n", "data.csv")
    assert error_of(path, DataFormat.csv) == (
        "line 1: the CSV header names the column 'text' more than once; give each column one name of its own"
    )


RECORDS = {
    DataFormat.jsonl: b'{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n',
    DataFormat.csv: b"text,label\na,x\nb,y\n",
}


@pytest.mark.parametrize("data_format", [DataFormat.jsonl, DataFormat.csv])
@pytest.mark.parametrize(
    "tail",
    [b"\n", b"\n\n", b"\r\n\r\n\r\n", b"  \n\t\n", b"   ", b"\n" * 50, b" \r\n\n \t \r\n"],
    ids=["one", "two", "three-crlf", "whitespace", "spaces-without-newline", "fifty", "mixed"],
)
def test_blank_lines_at_the_end_are_ignored_however_many(tmp_path: Path, data_format: DataFormat, tail: bytes) -> None:
    path = write(tmp_path, RECORDS[data_format] + tail, f"data.{data_format.value}")
    assert summarize_file(path, data_format, LIMITS).record_count == 2


@pytest.mark.parametrize(
    ("data_format", "middle", "message"),
    [
        (DataFormat.jsonl, b"\n\n  \n", f"line 2: blank line; {ONE_OBJECT_PER_LINE}, with no blank lines between"),
        (DataFormat.csv, b"\r\n \r\n", "line 3: blank line; a CSV file holds one record per row, with no blank rows"),
    ],
)
def test_blank_lines_between_records_are_refused_naming_the_first(
    tmp_path: Path, data_format: DataFormat, middle: bytes, message: str
) -> None:
    lines = RECORDS[data_format].splitlines(keepends=True)
    content = b"".join(lines[:-1]) + middle + lines[-1] + b"\n\n"
    assert error_of(write(tmp_path, content, f"data.{data_format.value}"), data_format).startswith(message)


def test_a_file_of_blank_lines_holds_no_records(tmp_path: Path) -> None:
    assert error_of(write(tmp_path, b"  \n\t\n   \n")) == f"file holds no records; {ONE_OBJECT_PER_LINE}"


def test_a_carriage_return_inside_an_unquoted_csv_field_is_named_in_plain_words(tmp_path: Path) -> None:
    path = write(tmp_path, b"text,label\na\rb,pos\n", "data.csv")
    assert error_of(path, DataFormat.csv) == (
        "line 2: a carriage return (\\r) inside a field; put the field in double quotes, or remove the \\r"
    )
