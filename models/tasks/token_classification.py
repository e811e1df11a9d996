"""token-classification, torch-free half: the JSONL record of a tagged sentence, its validator and job settings."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from models.bio_tags import OUTSIDE_TAG, bio_tag_fault
from models.errors import InvalidFile, InvalidRequest
from models.strategies.common import StrategyDefaults
from models.strategies.names import StrategyType
from models.tasks.jsonl_records import iter_jsonl_records, json_kind, surrogate_fault
from models.tasks.names import Task
from models.tasks.text_classification import DataFormat, DataLimits

TOKENS_FIELD, TAGS_FIELD = "tokens", "ner_tags"
JSONL_EXAMPLE = '{"tokens": ["Ada", "lives", "in", "Paris"], "ner_tags": ["B-person", "O", "O", "B-location"]}'
MIN_TAGS = 2  # with one tag there is nothing to tell apart


class TokenClassificationFormat:
    """Sentences split into words, one BIO tag per word: `{"tokens": [...], "ner_tags": [...]}` per line."""

    task: Task = Task.token_classification
    # The engine's seqeval scores, main first; it also reports `f1_<type>` for each entity type.
    metrics: tuple[str, ...] = ("f1", "precision", "recall", "accuracy")
    record_fields: frozenset[str] = frozenset({TOKENS_FIELD, TAGS_FIELD})

    def summarize(self, path: Path, data_format: DataFormat, limits: DataLimits) -> dict[str, Any]:
        """Validate every record in one streaming pass; `{"record_count", "token_count", "tag_counts"}`.

        Raises InvalidFile (param "file") naming the line of the first fault: a CSV file, a
        malformed line (see `iter_jsonl_records`), a record without a non-empty list of words in
        'tokens' or with other than one BIO tag per word in 'ner_tags', a tag longer than
        `limits.max_label_chars`, more than `limits.max_labels` distinct tags, or no records at all.
        Memory holds one line and the tag counts.
        """
        if data_format is not DataFormat.jsonl:
            raise InvalidFile(
                'token-classification data must be JSONL: one {"tokens": [...], "ner_tags": [...]} object per line',
                param="file",
            )
        tag_counts: Counter[str] = Counter()
        record_count = token_count = 0
        for line_number, record in iter_jsonl_records(path, example=JSONL_EXAMPLE):
            tokens = _read_tokens(record, line_number)
            tags = _read_tags(record, line_number, len(tokens))
            for tag in [tag for tag in dict.fromkeys(tags) if tag not in tag_counts]:  # in the order they come
                _check_new_tag(tag, line_number, limits)
                if len(tag_counts) >= limits.max_labels:
                    raise InvalidFile(
                        f"line {line_number}: the file has more than {limits.max_labels} distinct tags, the most "
                        "this server accepts; a tag names an entity type, so check that 'ner_tags' holds tags and "
                        "not the words",
                        param="file",
                    )
                tag_counts[tag] = 0
            tag_counts.update(tags)
            record_count += 1
            token_count += len(tokens)
        return {"record_count": record_count, "token_count": token_count, "tag_counts": dict(tag_counts)}

    def describe(self, summary: dict[str, Any]) -> str:
        """The file's size in words for the job's events: "3,394 records, 62,730 tokens, 13 tags"."""
        return ", ".join(
            (
                _count(summary["record_count"], "record"),
                _count(summary["token_count"], "token"),
                _count(len(summary["tag_counts"]), "tag"),
            )
        )

    def job_settings(self, training: dict[str, Any], validation: dict[str, Any] | None) -> dict[str, Any]:
        """`{"labels": [...]}`: the training file's tags, in the order of `ordered_tags`, as the head's class ids.

        Takes the files' summaries. Raises InvalidRequest (param "training_file") when the training
        file has fewer than 2 tags, and (param "validation_file") when the validation file has a tag
        the training file lacks, as the model could never predict it.
        """
        tags = ordered_tags(training["tag_counts"])
        if len(tags) < MIN_TAGS:
            raise InvalidRequest(
                f"training_file: token classification needs at least {MIN_TAGS} tags, but the training file has "
                f"only {tags!r}; tag each entity's words with 'B-<type>' and 'I-<type>', and other words with 'O'",
                param="training_file",
            )
        if validation is not None:
            unknown = sorted(set(validation["tag_counts"]) - set(tags))
            if unknown:
                raise InvalidRequest(
                    f"validation_file: tag {unknown[0]!r} does not occur in the training file, so the model could "
                    "never predict it; retag those words in the validation file with tags the training file has, "
                    "or add sentences tagged with it to the training file",
                    param="validation_file",
                )
        return {"labels": tags}

    def defaults(self, strategy: StrategyType) -> StrategyDefaults | None:
        """None: no defaults were measured for token classification, so every strategy's own apply."""
        return None


def ordered_tags(tag_counts: dict[str, int]) -> list[str]:
    """The tags in class-id order: "O" first (when present), then the others sorted by code point.

    Sorting puts each type's 'B-' tags before its 'I-' tags and makes the order independent of
    the file's; "O" first gives the commonest tag class id 0, as the usual NER datasets do.
    """
    others = sorted(tag for tag in tag_counts if tag != OUTSIDE_TAG)
    return [OUTSIDE_TAG, *others] if OUTSIDE_TAG in tag_counts else others


def _read_tokens(record: dict[str, Any], line_number: int) -> list[str]:
    """The record's words; raises InvalidFile naming the line and the word at fault."""
    if TOKENS_FIELD not in record:
        raise InvalidFile(f"line {line_number}: missing '{TOKENS_FIELD}'; a record is {JSONL_EXAMPLE}", param="file")
    tokens = record[TOKENS_FIELD]
    if not isinstance(tokens, list):
        raise InvalidFile(
            f"line {line_number}: '{TOKENS_FIELD}' must be a list of words, not {json_kind(tokens)}; "
            f"a record is {JSONL_EXAMPLE}",
            param="file",
        )
    if not tokens:
        raise InvalidFile(
            f"line {line_number}: '{TOKENS_FIELD}' is empty; a record holds a sentence of at least one word",
            param="file",
        )
    for position, token in enumerate(tokens, start=1):
        place = f"line {line_number}: token {position} of {len(tokens)}"
        if not isinstance(token, str):
            raise InvalidFile(f"{place} is {json_kind(token)}, not a string; each token is a word", param="file")
        if not token.strip():
            raise InvalidFile(
                f"{place} is empty or only whitespace; each token is a word, and the tokenizer finds nothing "
                "in a blank one to tag",
                param="file",
            )
        fault = surrogate_fault(token)
        if fault is None and "\x00" in token:
            fault = "holds a NUL character (\\u0000); remove it"
        if fault is not None:
            raise InvalidFile(f"{place} {fault}", param="file")
    return tokens


def _read_tags(record: dict[str, Any], line_number: int, token_count: int) -> list[str]:
    """The record's tags, one string per token; whether each is a fit tag is `_check_new_tag`'s question."""
    if TAGS_FIELD not in record:
        raise InvalidFile(f"line {line_number}: missing '{TAGS_FIELD}'; a record is {JSONL_EXAMPLE}", param="file")
    tags = record[TAGS_FIELD]
    if not isinstance(tags, list):
        raise InvalidFile(
            f"line {line_number}: '{TAGS_FIELD}' must be a list of tags, one per token, not {json_kind(tags)}",
            param="file",
        )
    if len(tags) != token_count:
        raise InvalidFile(
            f"line {line_number}: '{TAGS_FIELD}' has {_count(len(tags), 'tag')} for {_count(token_count, 'token')}; "
            "give one tag per token",
            param="file",
        )
    for position, tag in enumerate(tags, start=1):
        if not isinstance(tag, str):
            raise InvalidFile(
                f"line {line_number}: tag {position} of {len(tags)} in '{TAGS_FIELD}' is {json_kind(tag)}, not a "
                "string; tags are written out, such as 'B-person', not given as class numbers",
                param="file",
            )
    return tags


def _check_new_tag(tag: str, line_number: int, limits: DataLimits) -> None:
    """Raise InvalidFile, naming the line, for a tag that is too long, not valid Unicode or not a BIO tag."""
    if len(tag) > limits.max_label_chars:
        raise InvalidFile(
            f"line {line_number}: a tag in '{TAGS_FIELD}' is {len(tag)} characters long; tags may be at most "
            f"{limits.max_label_chars} characters (a tag names an entity type; the words go in '{TOKENS_FIELD}')",
            param="file",
        )
    fault = surrogate_fault(tag)
    if fault is not None:
        raise InvalidFile(f"line {line_number}: a tag in '{TAGS_FIELD}' {fault}", param="file")
    fault = bio_tag_fault(tag)
    if fault is not None:
        raise InvalidFile(f"line {line_number}: {fault}", param="file")


def _count(number: int, noun: str) -> str:
    """`number` with thousands separators and `noun`, plural unless it is 1: "62,730 tokens"."""
    return f"{number:,} {noun}" if number == 1 else f"{number:,} {noun}s"
