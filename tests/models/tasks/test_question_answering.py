from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from models.errors import InvalidFile, InvalidRequest
from models.strategies.names import StrategyType
from models.strategies.specs import SPEC_CLASSES
from models.tasks import question_answering
from models.tasks.names import Task
from models.tasks.question_answering import JSONL_EXAMPLE, QuestionAnsweringFormat
from models.tasks.text_classification import DataFormat, DataLimits
from tests.conftest import SHARED_DATA

LIMITS = DataLimits(max_label_chars=256, max_labels=1000)  # Settings' defaults
FORMAT = QuestionAnsweringFormat()
CONTEXT = "Paris is the capital of France."
GOOD = {
    "id": "q1",
    "context": CONTEXT,
    "question": "What is the capital of France?",
    "answers": {"text": ["Paris", "France"], "answer_start": [0, 24]},
}
SURROGATE_ADVICE = "save the file as UTF-8 text, where an escaped surrogate comes only in pairs"


def write(tmp_path: Path, content: bytes, name: str = "data.jsonl") -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def jsonl(*records: object) -> bytes:
    return b"".join(json.dumps(record).encode() + b"\n" for record in records)


def question(question_id: object, **fields: Any) -> dict[str, Any]:
    """GOOD under another id, with `fields` replaced."""
    return {**GOOD, "id": question_id, **fields}


def error_of(path: Path, data_format: DataFormat = DataFormat.jsonl) -> str:
    with pytest.raises(InvalidFile) as caught:
        FORMAT.summarize(path, data_format, LIMITS)
    assert caught.value.param == "file"
    return caught.value.message


def fault_of_third_line(tmp_path: Path, **fields: Any) -> str:
    """The message for GOOD with `fields` replaced (None: removed) on line 3, after two good records."""
    record = {key: value for key, value in question("q3", **fields).items() if value is not None}
    return error_of(write(tmp_path, jsonl(question("q1"), question("q2"), record)))


def summary_of(tmp_path: Path, *records: object) -> dict[str, Any]:
    return FORMAT.summarize(write(tmp_path, jsonl(*records)), DataFormat.jsonl, LIMITS)


@pytest.mark.parametrize(
    ("split", "expected", "described"),
    [
        ("train", (950, 473, 477, 1765), "950 questions, 473 answerable, 477 unanswerable"),
        ("validation", (210, 108, 102, 1127), "210 questions, 108 answerable, 102 unanswerable"),
    ],
)
def test_the_squad_v2_subset_validates_with_its_published_counts(
    split: str, expected: tuple[int, int, int, int], described: str
) -> None:
    summary = FORMAT.summarize(SHARED_DATA / "squad_v2_subset" / f"{split}.jsonl", DataFormat.jsonl, LIMITS)
    fields = ("record_count", "answerable", "unanswerable", "longest_context_chars")
    assert tuple(summary[field] for field in fields) == expected
    assert set(summary) == set(fields)
    assert FORMAT.describe(summary) == described


def test_squad_job_settings_are_empty() -> None:
    folder = SHARED_DATA / "squad_v2_subset"
    training = FORMAT.summarize(folder / "train.jsonl", DataFormat.jsonl, LIMITS)
    validation = FORMAT.summarize(folder / "validation.jsonl", DataFormat.jsonl, LIMITS)
    assert FORMAT.job_settings(training, validation) == {}
    assert FORMAT.job_settings(training, None) == {}


def test_v1_records_without_title_or_is_impossible_and_integer_ids_are_read(tmp_path: Path) -> None:
    unanswerable = question(2, answers={"text": [], "answer_start": []}, title=["anything"], is_impossible=True)
    summary = summary_of(
        tmp_path,
        question(1),
        unanswerable,
        question("3", context="Paris." * 50, answers={"text": ["Paris"], "answer_start": [6]}),
    )
    assert summary == {"record_count": 3, "answerable": 2, "unanswerable": 1, "longest_context_chars": 300}


def test_answer_start_counts_code_points_so_text_after_an_emoji_is_found(tmp_path: Path) -> None:
    context = "\U0001f600 Paris is lovely"
    record = question("q", context=context, answers={"text": ["Paris"], "answer_start": [2]})
    assert summary_of(tmp_path, record)["answerable"] == 1


def test_a_csv_file_is_refused_saying_the_data_must_be_jsonl(tmp_path: Path) -> None:
    path = write(tmp_path, b"id,context,question\nq1,Paris,Where?\n", "data.csv")
    assert error_of(path, DataFormat.csv) == (
        'question-answering data must be JSONL: one {"id": ..., "context": ..., "question": ..., "answers": '
        '{"text": [...], "answer_start": [...]}} object per line'
    )


def test_an_empty_file_is_refused_showing_a_question(tmp_path: Path) -> None:
    assert error_of(write(tmp_path, b"")) == (
        f"file holds no records; a JSONL file holds one JSON object per line, such as {JSONL_EXAMPLE}"
    )
    assert json.loads(JSONL_EXAMPLE)["answers"] == {"text": ["Paris"], "answer_start": [0]}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"id": None}, "line 3: missing 'id'; give each question an id of its own, such as \"q1\""),
        ({"id": True}, "line 3: 'id' must be a string or an integer, not a boolean"),
        ({"id": 1.5}, "line 3: 'id' must be a string or an integer, not a number with a fraction"),
        ({"id": ["q"]}, "line 3: 'id' must be a string or an integer, not an array"),
        ({"id": " "}, "line 3: 'id' must not be empty"),
        (
            {"id": "q\udc00"},
            f"line 3: 'id' holds text that is not valid Unicode (an unpaired surrogate \\udc00); {SURROGATE_ADVICE}",
        ),
        ({"context": None}, f"line 3: missing 'context'; a record is {JSONL_EXAMPLE}"),
        ({"context": "\n"}, "line 3: 'context' must be a non-empty string"),
        ({"question": None}, f"line 3: missing 'question'; a record is {JSONL_EXAMPLE}"),
        ({"question": 7}, "line 3: 'question' must be a non-empty string"),
        (
            {"question": "Why\ud800?"},
            "line 3: 'question' holds text that is not valid Unicode (an unpaired surrogate \\ud800); "
            f"{SURROGATE_ADVICE}",
        ),
    ],
    ids=[
        "id-missing",
        "id-boolean",
        "id-float",
        "id-array",
        "id-blank",
        "id-surrogate",
        "context-missing",
        "context-blank",
        "question-missing",
        "question-integer",
        "question-surrogate",
    ],
)
def test_an_id_context_or_question_that_is_missing_or_unfit_is_refused(
    tmp_path: Path, fields: dict[str, Any], message: str
) -> None:
    assert fault_of_third_line(tmp_path, **fields) == message


def test_an_integer_id_too_long_to_convert_is_named_by_its_digits(tmp_path: Path) -> None:
    line = json.dumps(question(0)).replace('"id": 0', '"id": ' + "9" * 5000).encode() + b"\n"
    assert error_of(write(tmp_path, jsonl(GOOD) + line)) == (
        "line 2: 'id' is an integer of 5000 digits; use a string for so long an id"
    )


NO_ANSWERS = '{"text": [], "answer_start": []}'
ANSWERS_EXAMPLE = '{"text": ["Paris"], "answer_start": [0]}'


@pytest.mark.parametrize(
    ("answers", "message"),
    [
        (
            None,
            f"line 3: missing 'answers'; give the answer as {ANSWERS_EXAMPLE}, or {NO_ANSWERS} for a question the "
            "context does not answer",
        ),
        (["Paris"], f"line 3: 'answers' must be an object such as {ANSWERS_EXAMPLE}, not an array"),
        (
            {"answer_start": [0]},
            f"line 3: 'answers' lacks 'text'; write answers as {ANSWERS_EXAMPLE}, or {NO_ANSWERS} for a question "
            "the context does not answer",
        ),
        (
            {"text": ["Paris"]},
            f"line 3: 'answers' lacks 'answer_start'; write answers as {ANSWERS_EXAMPLE}, or {NO_ANSWERS} for a "
            "question the context does not answer",
        ),
        (
            {"text": "Paris", "answer_start": [0]},
            f"line 3: 'answers.text' must be a list, not a string; write answers as {ANSWERS_EXAMPLE}",
        ),
        (
            {"text": ["Paris"], "answer_start": 0},
            f"line 3: 'answers.answer_start' must be a list, not an integer; write answers as {ANSWERS_EXAMPLE}",
        ),
        (
            {"text": ["Paris", "France"], "answer_start": [0]},
            "line 3: 'answers' has 2 in 'text' but 1 in 'answer_start'; give one answer_start for each answer text",
        ),
        (
            {"text": [], "answer_start": [0]},
            "line 3: 'answers' has 0 in 'text' but 1 in 'answer_start'; give one answer_start for each answer text",
        ),
        ({"text": ["Paris", 5], "answer_start": [0, 0]}, "line 3: answer 2 of 2: its text is an integer, not a string"),
        (
            {"text": [" "], "answer_start": [5]},
            "line 3: answer 1 of 1: its text is empty; an answer is a span of the context",
        ),
        (
            {"text": ["P\ud800"], "answer_start": [0]},
            f"line 3: answer 1 of 1: its text holds text that is not valid Unicode (an unpaired surrogate \\ud800); "
            f"{SURROGATE_ADVICE}",
        ),
        (
            {"text": ["Paris"], "answer_start": ["0"]},
            "line 3: answer 1 of 1: its answer_start is a string; give where the answer starts in the context, "
            "counted in characters from 0",
        ),
        (
            {"text": ["Paris"], "answer_start": [False]},
            "line 3: answer 1 of 1: its answer_start is a boolean; give where the answer starts in the context, "
            "counted in characters from 0",
        ),
        (
            {"text": ["Paris"], "answer_start": [-1]},
            "line 3: answer 1 of 1: its answer_start is -1, outside the context, which has 31 characters (counted "
            "from 0)",
        ),
        (
            {"text": ["."], "answer_start": [31]},
            "line 3: answer 1 of 1: its answer_start is 31, outside the context, which has 31 characters (counted "
            "from 0)",
        ),
        (
            {"text": ["Paris", "France"], "answer_start": [0, 23]},
            "line 3: answer 2 of 2: the context at answer_start 23 holds ' Franc', not the answer 'France'; "
            "answer_start counts the context's characters (Unicode code points) from 0, and the answer's text must "
            "be copied from there exactly",
        ),
        (
            {"text": ["France. And more"], "answer_start": [24]},
            "line 3: answer 1 of 1: the context at answer_start 24 holds 'France.', not the answer 'France. And "
            "more'; answer_start counts the context's characters (Unicode code points) from 0, and the answer's "
            "text must be copied from there exactly",
        ),
        (
            {"text": ["paris"], "answer_start": [0]},
            "line 3: answer 1 of 1: the context at answer_start 0 holds 'Paris', not the answer 'paris'; "
            "answer_start counts the context's characters (Unicode code points) from 0, and the answer's text must "
            "be copied from there exactly",
        ),
    ],
    ids=[
        "missing",
        "an-array",
        "no-text",
        "no-answer-start",
        "text-a-string",
        "start-an-integer",
        "more-texts",
        "more-starts",
        "text-integer",
        "text-blank",
        "text-surrogate",
        "start-string",
        "start-boolean",
        "start-negative",
        "start-past-the-end",
        "off-by-one",
        "runs-past-the-end",
        "case-differs",
    ],
)
def test_answers_that_are_not_spans_of_the_context_are_refused_saying_what_it_holds(
    tmp_path: Path, answers: object, message: str
) -> None:
    assert fault_of_third_line(tmp_path, answers=answers) == message


def test_an_answer_start_too_long_to_convert_is_named_by_its_digits(tmp_path: Path) -> None:
    line = json.dumps(question("q2", answers={"text": ["Paris"], "answer_start": [0]}))
    line = line.replace('"answer_start": [0]', '"answer_start": [' + "9" * 5000 + "]")
    assert error_of(write(tmp_path, jsonl(GOOD) + line.encode() + b"\n")) == (
        "line 2: answer 1 of 1: its answer_start is an integer of 5000 digits, outside the context, which has 31 "
        "characters (counted from 0)"
    )


def test_a_long_answer_and_what_the_context_holds_are_quoted_cut_short(tmp_path: Path) -> None:
    context = "a" * 100 + "b" * 100
    answers = {"text": ["b" * 80], "answer_start": [90]}
    assert fault_of_third_line(tmp_path, context=context, answers=answers) == (
        f"line 3: answer 1 of 1: the context at answer_start 90 holds {'a' * 10 + 'b' * 50!r}… (80 characters), not "
        f"the answer {'b' * 60!r}… (80 characters); answer_start counts the context's characters (Unicode code "
        "points) from 0, and the answer's text must be copied from there exactly"
    )


@pytest.mark.parametrize(
    ("is_impossible", "answers", "message"),
    [
        (
            True,
            GOOD["answers"],
            f"line 3: 'is_impossible' is true, yet 'answers' gives 2; empty the answers ({NO_ANSWERS}) or set "
            "'is_impossible' to false",
        ),
        (
            False,
            {"text": [], "answer_start": []},
            f"line 3: 'is_impossible' is false, yet 'answers' is empty; give the answer, such as {ANSWERS_EXAMPLE}, "
            "or set 'is_impossible' to true",
        ),
        ("false", GOOD["answers"], "line 3: 'is_impossible' must be true or false, not a string"),
        (0, {"text": [], "answer_start": []}, "line 3: 'is_impossible' must be true or false, not an integer"),
    ],
)
def test_is_impossible_must_agree_with_the_answers(
    tmp_path: Path, is_impossible: object, answers: object, message: str
) -> None:
    assert fault_of_third_line(tmp_path, is_impossible=is_impossible, answers=answers) == message


def test_a_repeated_id_is_refused_naming_both_lines(tmp_path: Path) -> None:
    records = [question(f"q{index}") for index in range(1, 6)] + [question("q2")]
    assert error_of(write(tmp_path, jsonl(*records))) == (
        "line 6: id 'q2' is also the id of line 2; give each question an id of its own"
    )


def test_an_integer_id_and_the_same_digits_as_a_string_are_one_id(tmp_path: Path) -> None:
    assert error_of(write(tmp_path, jsonl(question(7), question("8"), question("7")))) == (
        "line 3: id '7' is also the id of line 1; give each question an id of its own"
    )


def test_ids_whose_hashes_collide_are_told_apart_by_reading_the_lines_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every id hashes alike here: distinct ids still pass, and a true repeat is still named with both lines."""

    def same_digest_for_all(data: bytes, *, digest_size: int, key: bytes) -> Any:
        return hashlib.blake2b(b"", digest_size=digest_size, key=key)

    monkeypatch.setattr(question_answering, "blake2b", same_digest_for_all)
    distinct = [question(f"q{index}") for index in range(50)]
    assert summary_of(tmp_path, *distinct)["record_count"] == 50
    assert error_of(write(tmp_path, jsonl(*distinct, question("q17")), "repeat.jsonl")) == (
        "line 51: id 'q17' is also the id of line 18; give each question an id of its own"
    )


def test_a_fault_far_into_a_file_names_its_exact_line(tmp_path: Path) -> None:
    records = [question(index) for index in range(20_000)]
    records[15_000] = question(15_000, answers={"text": ["Lyon"], "answer_start": [0]})
    assert error_of(write(tmp_path, jsonl(*records))) == (
        "line 15001: answer 1 of 1: the context at answer_start 0 holds 'Pari', not the answer 'Lyon'; "
        "answer_start counts the context's characters (Unicode code points) from 0, and the answer's text must be "
        "copied from there exactly"
    )


def test_a_training_file_without_an_answerable_question_is_refused() -> None:
    training = {"record_count": 1200, "answerable": 0, "unanswerable": 1200, "longest_context_chars": 500}
    with pytest.raises(InvalidRequest) as caught:
        FORMAT.job_settings(training, None)
    assert caught.value.param == "training_file"
    assert caught.value.message == (
        "training_file: none of the training file's 1,200 questions has an answer, and a model learns to find "
        "answers only from questions whose answer it is shown; add questions whose 'answers' give the answer's "
        f"text and where it starts in the context, such as {ANSWERS_EXAMPLE}"
    )


def test_a_validation_file_of_unanswerable_questions_alone_is_accepted() -> None:
    training = {"record_count": 2, "answerable": 1, "unanswerable": 1, "longest_context_chars": 50}
    validation = {"record_count": 3, "answerable": 0, "unanswerable": 3, "longest_context_chars": 50}
    assert FORMAT.job_settings(training, validation) == {}


def test_describe_counts_one_question_in_the_singular() -> None:
    summary = {"record_count": 1, "answerable": 1, "unanswerable": 0, "longest_context_chars": 5}
    assert FORMAT.describe(summary) == "1 question, 1 answerable, 0 unanswerable"


def test_the_format_declares_its_task_metrics_and_record_fields() -> None:
    assert (FORMAT.task, FORMAT.task.value) == (Task.question_answering, "question-answering")
    assert FORMAT.metrics[0] == "f1"
    assert FORMAT.record_fields <= set(GOOD)


def test_question_answering_takes_each_strategys_rate_with_384_token_windows_and_a_long_schedule() -> None:
    for strategy in StrategyType:
        defaults = FORMAT.defaults(strategy)
        expected = replace(SPEC_CLASSES[strategy].defaults, max_length=384, batch_size=8, n_epochs=10)
        assert defaults == expected, strategy
