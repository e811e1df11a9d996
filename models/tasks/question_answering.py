"""question-answering, torch-free half: the SQuAD-style JSONL record, its validator and job checks."""

from __future__ import annotations

import secrets
from dataclasses import replace
from hashlib import blake2b
from pathlib import Path
from typing import Any

from models.errors import InvalidFile, InvalidRequest
from models.strategies.common import StrategyDefaults
from models.strategies.names import StrategyType
from models.strategies.specs import SPEC_CLASSES
from models.tasks.jsonl_records import LongInteger, iter_jsonl_records, json_kind, surrogate_fault
from models.tasks.names import Task
from models.tasks.text_classification import DataFormat, DataLimits

ID_FIELD, CONTEXT_FIELD, QUESTION_FIELD, ANSWERS_FIELD = "id", "context", "question", "answers"
TEXT_KEY, START_KEY, IMPOSSIBLE_FIELD = "text", "answer_start", "is_impossible"
ANSWERS_EXAMPLE = '{"text": ["Paris"], "answer_start": [0]}'
NO_ANSWERS = '{"text": [], "answer_start": []}'
JSONL_EXAMPLE = (
    '{"id": "q1", "context": "Paris is the capital of France.", "question": "What is the capital of France?", '
    f'"answers": {ANSWERS_EXAMPLE}}}'
)
QUOTED_CHARS = 60  # the most of an answer or of the context a message quotes
QA_MAX_LENGTH = 384  # a window's tokens: question, context and special tokens
QA_BATCH_SIZE, QA_EPOCHS = 8, 10


class QuestionAnsweringFormat:
    """Extractive questions, SQuAD v1.1 and v2.0 style: each answer is a span of its context, or there is none."""

    task: Task = Task.question_answering
    # The engine's SQuAD v2.0 scores, main first: over all questions, then over those with and without an answer.
    metrics: tuple[str, ...] = (
        "f1",
        "exact",
        "has_answer_f1",
        "has_answer_exact",
        "no_answer_f1",
        "no_answer_exact",
        "best_f1",
        "best_exact",
    )
    record_fields: frozenset[str] = frozenset({QUESTION_FIELD, CONTEXT_FIELD})

    def summarize(self, path: Path, data_format: DataFormat, limits: DataLimits) -> dict[str, Any]:
        """Validate every record in one streaming pass; `{"record_count", "answerable", "unanswerable",
        "longest_context_chars"}`.

        Raises InvalidFile (param "file") naming the line of the first fault: a CSV file, a
        malformed line (see `iter_jsonl_records`), a missing or blank 'id', 'context' or
        'question', 'answers' whose lists differ in length or whose answer is not the text of the
        context at its answer_start, an 'is_impossible' that contradicts the answers, an id that
        an earlier line holds (naming both lines), or no records at all. `limits` bound labels,
        which this task has none of. Memory holds one line and a 64-bit hash per id.
        """
        if data_format is not DataFormat.jsonl:
            raise InvalidFile(
                'question-answering data must be JSONL: one {"id": ..., "context": ..., "question": ..., '
                '"answers": {"text": [...], "answer_start": [...]}} object per line',
                param="file",
            )
        id_hashes: set[int] = set()
        hash_key = secrets.token_bytes(16)
        record_count = answerable = longest_context_chars = 0
        for line_number, record in iter_jsonl_records(path, example=JSONL_EXAMPLE):
            question_id = _read_id(record, line_number)
            context = _read_text(record, CONTEXT_FIELD, line_number)
            _read_text(record, QUESTION_FIELD, line_number)
            answer_count = _check_answers(record, context, line_number)
            # Keyed afresh for each file, so no file can be built to make two ids' hashes collide; a hash
            # seen before sends us back over the file for the line that holds the same id.
            id_hash = int.from_bytes(blake2b(question_id.encode(), digest_size=8, key=hash_key).digest())
            if id_hash in id_hashes:
                _check_id_is_new(path, question_id, line_number)
            id_hashes.add(id_hash)
            record_count += 1
            answerable += answer_count > 0
            longest_context_chars = max(longest_context_chars, len(context))
        return {
            "record_count": record_count,
            "answerable": answerable,
            "unanswerable": record_count - answerable,
            "longest_context_chars": longest_context_chars,
        }

    def describe(self, summary: dict[str, Any]) -> str:
        """The file in words for the job's events: "950 questions, 473 answerable, 477 unanswerable"."""
        questions = summary["record_count"]
        noun = "question" if questions == 1 else "questions"
        return f"{questions:,} {noun}, {summary['answerable']:,} answerable, {summary['unanswerable']:,} unanswerable"

    def job_settings(self, training: dict[str, Any], validation: dict[str, Any] | None) -> dict[str, Any]:
        """No settings (`{}`): the head finds spans and has no classes. Takes the files' summaries.

        Raises InvalidRequest (param "training_file") when no training question has an answer.
        A validation file of unanswerable questions alone is accepted: it still measures no_answer_*.
        """
        if training["answerable"] == 0:
            count = training["record_count"]
            raise InvalidRequest(
                f"training_file: none of the training file's {count:,} questions has an answer, and a model learns "
                "to find answers only from questions whose answer it is shown; add questions whose 'answers' give "
                f"the answer's text and where it starts in the context, such as {ANSWERS_EXAMPLE}",
                param="training_file",
            )
        return {}

    def defaults(self, strategy: StrategyType) -> StrategyDefaults | None:
        """The strategy's own learning rate, with 384-token windows, batches of 8 and 10 epochs.

        Hugging Face's run_qa pairs 384-token windows with a 128-token stride. A shorter window cuts
        a SQuAD paragraph into several, and every window that misses the answer teaches the head to
        point at [CLS], which pushes a small training file toward abstaining on every question.
        For the same reason the schedule is long: on a training file of a thousand questions, three
        epochs at batch 32 (classification's defaults) end with a model that abstains on every
        question, and it starts answering only after the fourth epoch of batches of 8 (README,
        "Defaults, by measurement").
        """
        return replace(
            SPEC_CLASSES[strategy].defaults, max_length=QA_MAX_LENGTH, batch_size=QA_BATCH_SIZE, n_epochs=QA_EPOCHS
        )


def _read_id(record: dict[str, Any], line_number: int) -> str:
    """The record's id as text: an id of 7 and one of "7" name the same question in any list of answers."""
    if ID_FIELD not in record:
        raise InvalidFile(
            f"line {line_number}: missing '{ID_FIELD}'; give each question an id of its own, such as \"q1\"",
            param="file",
        )
    value = record[ID_FIELD]
    if isinstance(value, LongInteger):
        raise InvalidFile(
            f"line {line_number}: '{ID_FIELD}' is an integer of {value.digits} digits; use a string for so long an id",
            param="file",
        )
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidFile(
            f"line {line_number}: '{ID_FIELD}' must be a string or an integer, not {json_kind(value)}", param="file"
        )
    if isinstance(value, int):
        return str(value)
    if not value.strip():
        raise InvalidFile(f"line {line_number}: '{ID_FIELD}' must not be empty", param="file")
    fault = surrogate_fault(value)
    if fault is not None:
        raise InvalidFile(f"line {line_number}: '{ID_FIELD}' {fault}", param="file")
    return value


def _read_text(record: dict[str, Any], field: str, line_number: int) -> str:
    if field not in record:
        raise InvalidFile(f"line {line_number}: missing '{field}'; a record is {JSONL_EXAMPLE}", param="file")
    value = record[field]
    if not isinstance(value, str) or not value.strip():
        raise InvalidFile(f"line {line_number}: '{field}' must be a non-empty string", param="file")
    fault = surrogate_fault(value)
    if fault is not None:
        raise InvalidFile(f"line {line_number}: '{field}' {fault}", param="file")
    return value


def _check_answers(record: dict[str, Any], context: str, line_number: int) -> int:
    """How many answers the record gives (0: unanswerable); raises InvalidFile for one that is not a span of
    `context`, or for an 'is_impossible' that says otherwise."""
    if ANSWERS_FIELD not in record:
        raise InvalidFile(
            f"line {line_number}: missing '{ANSWERS_FIELD}'; give the answer as {ANSWERS_EXAMPLE}, or "
            f"{NO_ANSWERS} for a question the context does not answer",
            param="file",
        )
    answers = record[ANSWERS_FIELD]
    if not isinstance(answers, dict):
        raise InvalidFile(
            f"line {line_number}: '{ANSWERS_FIELD}' must be an object such as {ANSWERS_EXAMPLE}, not "
            f"{json_kind(answers)}",
            param="file",
        )
    texts = _read_answer_list(answers, TEXT_KEY, line_number)
    starts = _read_answer_list(answers, START_KEY, line_number)
    if len(texts) != len(starts):
        raise InvalidFile(
            f"line {line_number}: '{ANSWERS_FIELD}' has {len(texts)} in '{TEXT_KEY}' but {len(starts)} in "
            f"'{START_KEY}'; give one answer_start for each answer text",
            param="file",
        )
    for position, (text, start) in enumerate(zip(texts, starts, strict=True), start=1):
        _check_answer(context, text, start, f"line {line_number}: answer {position} of {len(texts)}")
    _check_is_impossible(record, len(texts), line_number)
    return len(texts)


def _read_answer_list(answers: dict[str, Any], key: str, line_number: int) -> list[Any]:
    if key not in answers:
        raise InvalidFile(
            f"line {line_number}: '{ANSWERS_FIELD}' lacks '{key}'; write answers as {ANSWERS_EXAMPLE}, or "
            f"{NO_ANSWERS} for a question the context does not answer",
            param="file",
        )
    value = answers[key]
    if not isinstance(value, list):
        raise InvalidFile(
            f"line {line_number}: '{ANSWERS_FIELD}.{key}' must be a list, not {json_kind(value)}; write answers as "
            f"{ANSWERS_EXAMPLE}",
            param="file",
        )
    return value


def _check_answer(context: str, text: Any, start: Any, place: str) -> None:
    """Raise InvalidFile, starting with `place`, unless `text` is a non-empty string that `context` holds at `start`."""
    if not isinstance(text, str):
        raise InvalidFile(f"{place}: its text is {json_kind(text)}, not a string", param="file")
    if not text.strip():
        raise InvalidFile(f"{place}: its text is empty; an answer is a span of the context", param="file")
    fault = surrogate_fault(text)
    if fault is not None:
        raise InvalidFile(f"{place}: its text {fault}", param="file")
    if isinstance(start, bool) or not isinstance(start, (int, LongInteger)):
        raise InvalidFile(
            f"{place}: its answer_start is {json_kind(start)}; give where the answer starts in the context, counted "
            "in characters from 0",
            param="file",
        )
    if isinstance(start, LongInteger) or not 0 <= start < len(context):
        shown = f"an integer of {start.digits} digits" if isinstance(start, LongInteger) else str(start)
        raise InvalidFile(
            f"{place}: its answer_start is {shown}, outside the context, which has {len(context):,} characters "
            "(counted from 0)",
            param="file",
        )
    found = context[start : start + len(text)]
    if found != text:
        raise InvalidFile(
            f"{place}: the context at answer_start {start} holds {_quote(found)}, not the answer {_quote(text)}; "
            "answer_start counts the context's characters (Unicode code points) from 0, and the answer's text "
            "must be copied from there exactly",
            param="file",
        )


def _check_is_impossible(record: dict[str, Any], answer_count: int, line_number: int) -> None:
    """SQuAD v2.0's flag is optional; when given, it must agree with the answers."""
    if IMPOSSIBLE_FIELD not in record:
        return
    flag = record[IMPOSSIBLE_FIELD]
    if not isinstance(flag, bool):
        raise InvalidFile(
            f"line {line_number}: '{IMPOSSIBLE_FIELD}' must be true or false, not {json_kind(flag)}", param="file"
        )
    if flag and answer_count:
        raise InvalidFile(
            f"line {line_number}: '{IMPOSSIBLE_FIELD}' is true, yet 'answers' gives {answer_count}; empty the "
            f"answers ({NO_ANSWERS}) or set '{IMPOSSIBLE_FIELD}' to false",
            param="file",
        )
    if not flag and not answer_count:
        raise InvalidFile(
            f"line {line_number}: '{IMPOSSIBLE_FIELD}' is false, yet 'answers' is empty; give the answer, such as "
            f"{ANSWERS_EXAMPLE}, or set '{IMPOSSIBLE_FIELD}' to true",
            param="file",
        )


def _check_id_is_new(path: Path, question_id: str, line_number: int) -> None:
    """Raise InvalidFile naming both lines if a line before `line_number` holds `question_id`; return if the
    hashes alone matched. Reads the file again up to `line_number`: the lines before it were valid."""
    for earlier_line, record in iter_jsonl_records(path, example=JSONL_EXAMPLE):
        if earlier_line >= line_number:
            return
        if _read_id(record, earlier_line) == question_id:
            raise InvalidFile(
                f"line {line_number}: id {_quote(question_id)} is also the id of line {earlier_line}; give each "
                "question an id of its own",
                param="file",
            )


def _quote(text: str) -> str:
    """`text` quoted for a message, cut to QUOTED_CHARS characters."""
    return repr(text) if len(text) <= QUOTED_CHARS else f"{text[:QUOTED_CHARS]!r}… ({len(text):,} characters)"
