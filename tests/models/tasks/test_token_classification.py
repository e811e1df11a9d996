from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from models.errors import InvalidFile, InvalidRequest
from models.strategies.names import StrategyType
from models.tasks.names import Task
from models.tasks.text_classification import DataFormat, DataLimits
from models.tasks.token_classification import JSONL_EXAMPLE, TokenClassificationFormat, ordered_tags
from tests.conftest import SHARED_DATA

LIMITS = DataLimits(max_label_chars=256, max_labels=1000)  # Settings' defaults
FORMAT = TokenClassificationFormat()
GOOD = {"tokens": ["Ada", "lives", "in", "Paris"], "ner_tags": ["B-person", "O", "O", "B-location"]}
WNUT17_TAGS = [
    "O",
    "B-corporation",
    "B-creative-work",
    "B-group",
    "B-location",
    "B-person",
    "B-product",
    "I-corporation",
    "I-creative-work",
    "I-group",
    "I-location",
    "I-person",
    "I-product",
]


def write(tmp_path: Path, content: bytes, name: str = "data.jsonl") -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def jsonl(*records: object) -> bytes:
    return b"".join(json.dumps(record).encode() + b"\n" for record in records)


def error_of(path: Path, data_format: DataFormat = DataFormat.jsonl, limits: DataLimits = LIMITS) -> str:
    with pytest.raises(InvalidFile) as caught:
        FORMAT.summarize(path, data_format, limits)
    assert caught.value.param == "file"
    return caught.value.message


def fault_of_third_line(tmp_path: Path, record: object, limits: DataLimits = LIMITS) -> str:
    """The message for `record` when it is line 3, after two good ones."""
    return error_of(write(tmp_path, jsonl(GOOD, GOOD, record)), limits=limits)


def test_the_wnut17_training_file_validates_with_its_published_counts() -> None:
    summary = FORMAT.summarize(SHARED_DATA / "wnut17" / "train.jsonl", DataFormat.jsonl, LIMITS)
    assert (summary["record_count"], summary["token_count"]) == (3394, 62_730)
    assert sorted(summary["tag_counts"]) == sorted(WNUT17_TAGS)
    assert sum(summary["tag_counts"].values()) == 62_730
    assert FORMAT.describe(summary) == "3,394 records, 62,730 tokens, 13 tags"
    assert json.loads(json.dumps(summary)) == summary


def test_the_wnut17_validation_file_validates_with_its_published_counts() -> None:
    summary = FORMAT.summarize(SHARED_DATA / "wnut17" / "validation.jsonl", DataFormat.jsonl, LIMITS)
    assert FORMAT.describe(summary) == "1,009 records, 15,733 tokens, 13 tags"


def test_wnut17_job_settings_put_o_first_then_the_tags_sorted() -> None:
    training = FORMAT.summarize(SHARED_DATA / "wnut17" / "train.jsonl", DataFormat.jsonl, LIMITS)
    validation = FORMAT.summarize(SHARED_DATA / "wnut17" / "validation.jsonl", DataFormat.jsonl, LIMITS)
    assert FORMAT.job_settings(training, validation) == {"labels": WNUT17_TAGS}
    assert FORMAT.job_settings(training, None) == {"labels": WNUT17_TAGS}


def test_a_small_file_is_counted_tag_by_tag(tmp_path: Path) -> None:
    other = {"tokens": ["Paris"], "ner_tags": ["B-location"]}
    summary = FORMAT.summarize(write(tmp_path, jsonl(GOOD, other)), DataFormat.jsonl, LIMITS)
    assert summary == {"record_count": 2, "token_count": 5, "tag_counts": {"B-person": 1, "O": 2, "B-location": 2}}


def test_other_fields_of_a_record_are_ignored(tmp_path: Path) -> None:
    path = write(tmp_path, jsonl({**GOOD, "id": 7, "pos_tags": [1, 2, 3, 4]}))
    assert FORMAT.summarize(path, DataFormat.jsonl, LIMITS)["record_count"] == 1


def test_a_csv_file_is_refused_saying_the_data_must_be_jsonl(tmp_path: Path) -> None:
    path = write(tmp_path, b"tokens,ner_tags\nParis,B-location\n", "data.csv")
    assert error_of(path, DataFormat.csv) == (
        'token-classification data must be JSONL: one {"tokens": [...], "ner_tags": [...]} object per line'
    )


def test_an_empty_file_is_refused_showing_a_tagged_sentence(tmp_path: Path) -> None:
    assert error_of(write(tmp_path, b"\n")) == (
        f"file holds no records; a JSONL file holds one JSON object per line, such as {JSONL_EXAMPLE}"
    )


def test_a_malformed_line_is_named_with_a_tagged_sentence_as_the_example(tmp_path: Path) -> None:
    assert error_of(write(tmp_path, jsonl(GOOD) + b'["Paris"]\n')) == (
        f"line 2: holds an array, not a JSON object; a JSONL file holds one JSON object per line, such as "
        f"{JSONL_EXAMPLE}"
    )


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"ner_tags": ["O"]}, f"line 3: missing 'tokens'; a record is {JSONL_EXAMPLE}"),
        (
            {"tokens": "Ada lives in Paris", "ner_tags": ["O"]},
            f"line 3: 'tokens' must be a list of words, not a string; a record is {JSONL_EXAMPLE}",
        ),
        ({"tokens": [], "ner_tags": []}, "line 3: 'tokens' is empty; a record holds a sentence of at least one word"),
        (
            {"tokens": ["Ada", 7], "ner_tags": ["O", "O"]},
            "line 3: token 2 of 2 is an integer, not a string; each token is a word",
        ),
        ({"tokens": [None], "ner_tags": ["O"]}, "line 3: token 1 of 1 is null, not a string; each token is a word"),
        (
            {"tokens": ["Ada", "", "x"], "ner_tags": ["O", "O", "O"]},
            "line 3: token 2 of 3 is empty or only whitespace; each token is a word, and the tokenizer finds "
            "nothing in a blank one to tag",
        ),
        (
            {"tokens": [" \t"], "ner_tags": ["O"]},
            "line 3: token 1 of 1 is empty or only whitespace; each token is a word, and the tokenizer finds "
            "nothing in a blank one to tag",
        ),
        (
            {"tokens": ["Ada", "a\x00b"], "ner_tags": ["O", "O"]},
            "line 3: token 2 of 2 holds a NUL character (\\u0000); remove it",
        ),
        (
            {"tokens": ["Ada", "a\ud800"], "ner_tags": ["O", "O"]},
            "line 3: token 2 of 2 holds text that is not valid Unicode (an unpaired surrogate \\ud800); save the "
            "file as UTF-8 text, where an escaped surrogate comes only in pairs",
        ),
    ],
    ids=["missing", "a-string", "empty-list", "integer", "null", "empty", "whitespace", "nul", "surrogate"],
)
def test_tokens_that_are_not_a_non_empty_list_of_words_are_refused(
    tmp_path: Path, record: dict[str, Any], message: str
) -> None:
    assert fault_of_third_line(tmp_path, record) == message


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"tokens": ["Ada"]}, f"line 3: missing 'ner_tags'; a record is {JSONL_EXAMPLE}"),
        (
            {"tokens": ["Ada"], "ner_tags": "B-person"},
            "line 3: 'ner_tags' must be a list of tags, one per token, not a string",
        ),
        (
            {"tokens": ["a", "b", "c", "d", "e", "f"], "ner_tags": ["O"] * 5},
            "line 3: 'ner_tags' has 5 tags for 6 tokens; give one tag per token",
        ),
        (
            {"tokens": ["a", "b"], "ner_tags": ["O"]},
            "line 3: 'ner_tags' has 1 tag for 2 tokens; give one tag per token",
        ),
        (
            {"tokens": ["a"], "ner_tags": ["O", "O"]},
            "line 3: 'ner_tags' has 2 tags for 1 token; give one tag per token",
        ),
        (
            {"tokens": ["Ada", "lives"], "ner_tags": ["O", 3]},
            "line 3: tag 2 of 2 in 'ner_tags' is an integer, not a string; tags are written out, such as "
            "'B-person', not given as class numbers",
        ),
        (
            {"tokens": ["Ada"], "ner_tags": ["B"]},
            "line 3: tag 'B' names no entity type; write it as 'B-<type>', such as 'B-person'",
        ),
        (
            {"tokens": ["Ada"], "ner_tags": ["S-person"]},
            "line 3: tag 'S-person' belongs to the IOBES scheme; tags follow the BIO scheme, 'O' (outside any "
            "entity), 'B-<type>' (an entity's first word) or 'I-<type>' (its later words): write 'E-' as 'I-' "
            "and 'S-' as 'B-'",
        ),
        (
            {"tokens": ["Ada"], "ner_tags": ["PER"]},
            "line 3: tag 'PER' is not a BIO tag; a tag is 'O' (outside any entity), 'B-<type>' (an entity's first "
            "word) or 'I-<type>' (its later words), such as 'B-person'",
        ),
        (
            {"tokens": ["Ada"], "ner_tags": ["B-per son"]},
            "line 3: tag 'B-per son' has an entity type with characters other than letters, digits, '_', '-' and "
            "'.'; the type names a metric, so rename it, such as 'B-creative-work'",
        ),
        (
            {"tokens": ["Ada"], "ner_tags": ["B-x\udfff"]},
            "line 3: a tag in 'ner_tags' holds text that is not valid Unicode (an unpaired surrogate \\udfff); save "
            "the file as UTF-8 text, where an escaped surrogate comes only in pairs",
        ),
    ],
    ids=[
        "missing",
        "a-string",
        "fewer",
        "one-tag",
        "more",
        "integer",
        "no-type",
        "iobes",
        "not-bio",
        "space-in-type",
        "surrogate",
    ],
)
def test_tags_that_are_not_one_bio_tag_per_token_are_refused(
    tmp_path: Path, record: dict[str, Any], message: str
) -> None:
    assert fault_of_third_line(tmp_path, record) == message


def test_a_tag_longer_than_max_label_chars_is_refused(tmp_path: Path) -> None:
    limits = DataLimits(max_label_chars=11, max_labels=1000)
    assert fault_of_third_line(tmp_path, {"tokens": ["Ada"], "ner_tags": ["B-personnels"]}, limits) == (
        "line 3: a tag in 'ner_tags' is 12 characters long; tags may be at most 11 characters (a tag names an "
        "entity type; the words go in 'tokens')"
    )
    at_the_limit = write(tmp_path, jsonl({"tokens": ["Ada"], "ner_tags": ["B-personnel"]}), "eleven.jsonl")
    assert FORMAT.summarize(at_the_limit, DataFormat.jsonl, limits)["tag_counts"] == {"B-personnel": 1}


def test_more_distinct_tags_than_max_labels_are_refused_naming_the_first_line_past_it(tmp_path: Path) -> None:
    limits = DataLimits(max_label_chars=256, max_labels=4)
    lines = [{"tokens": ["w"], "ner_tags": [f"B-t{index}"]} for index in range(5)]
    assert error_of(write(tmp_path, jsonl(*lines)), limits=limits) == (
        "line 5: the file has more than 4 distinct tags, the most this server accepts; a tag names an entity type, "
        "so check that 'ner_tags' holds tags and not the words"
    )
    assert FORMAT.summarize(write(tmp_path, jsonl(*lines[:4]), "four.jsonl"), DataFormat.jsonl, limits)[
        "tag_counts"
    ] == {"B-t0": 1, "B-t1": 1, "B-t2": 1, "B-t3": 1}


def test_a_fault_far_into_a_file_names_its_exact_line(tmp_path: Path) -> None:
    records: list[dict[str, Any]] = [GOOD] * 20_000
    records[12_344] = {"tokens": ["Ada"], "ner_tags": ["B-person", "O"]}
    assert error_of(write(tmp_path, jsonl(*records))) == (
        "line 12345: 'ner_tags' has 2 tags for 1 token; give one tag per token"
    )


def test_describe_counts_in_the_singular_for_one() -> None:
    assert FORMAT.describe({"record_count": 1, "token_count": 1, "tag_counts": {"O": 1}}) == "1 record, 1 token, 1 tag"


def test_tags_are_ordered_o_first_then_by_code_point_whatever_the_files_order() -> None:
    assert ordered_tags({"I-b": 1, "B-b": 1, "O": 9, "B-a": 2}) == ["O", "B-a", "B-b", "I-b"]
    assert ordered_tags({"I-x": 1, "B-x": 1}) == ["B-x", "I-x"]


def summary_with(tags: list[str]) -> dict[str, Any]:
    return {"record_count": 1, "token_count": len(tags), "tag_counts": dict.fromkeys(tags, 1)}


def test_a_training_file_of_fewer_than_two_tags_is_refused() -> None:
    with pytest.raises(InvalidRequest) as caught:
        FORMAT.job_settings(summary_with(["O"]), None)
    assert caught.value.param == "training_file"
    assert caught.value.message == (
        "training_file: token classification needs at least 2 tags, but the training file has only ['O']; tag "
        "each entity's words with 'B-<type>' and 'I-<type>', and other words with 'O'"
    )


def test_a_validation_tag_the_training_file_lacks_is_refused_naming_it() -> None:
    training = summary_with(["O", "B-person", "I-person"])
    with pytest.raises(InvalidRequest) as caught:
        FORMAT.job_settings(training, summary_with(["O", "B-person", "B-place", "I-place"]))
    assert caught.value.param == "validation_file"
    assert caught.value.message == (
        "validation_file: tag 'B-place' does not occur in the training file, so the model could never predict it; "
        "retag those words in the validation file with tags the training file has, or add sentences tagged with "
        "it to the training file"
    )


def test_a_validation_file_with_fewer_tags_than_training_is_accepted() -> None:
    training = summary_with(["B-person", "O", "I-person"])
    assert FORMAT.job_settings(training, summary_with(["O"])) == {"labels": ["O", "B-person", "I-person"]}


def test_the_format_declares_its_task_metrics_and_record_fields() -> None:
    assert (FORMAT.task, FORMAT.task.value) == (Task.token_classification, "token-classification")
    assert FORMAT.metrics[0] == "f1"
    assert FORMAT.record_fields == {"tokens", "ner_tags"} == set(GOOD)


def test_no_strategy_defaults_are_claimed_for_token_classification() -> None:
    assert all(FORMAT.defaults(strategy) is None for strategy in StrategyType)


def test_of_several_unfit_tags_in_a_sentence_the_first_is_named(tmp_path: Path) -> None:
    record = {"tokens": ["a", "b", "c", "d"], "ner_tags": ["O", "PER", "B", "PER"]}
    assert fault_of_third_line(tmp_path, record).startswith("line 3: tag 'PER' is not a BIO tag")
