"""Questions and their contexts cut into overlapping model windows, each labelled with its answer's token span."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from transformers import PreTrainedTokenizerBase

NO_CONTEXT = -1  # the character offsets of a token outside the context (question, specials): (-1, -1)

ContextOffsets = npt.NDArray[np.int64]  # (tokens, 2): each token's [start, end) in the context, or (-1, -1)


@dataclass(frozen=True)
class GoldAnswer:
    """One answer to one question: its text and where it starts in the context, in characters."""

    text: str
    start_char: int

    @property
    def end_char(self) -> int:
        return self.start_char + len(self.text)


@dataclass(frozen=True)
class AnswerWindows:
    """Windows of question + context tokens, one list entry per window, in the tokenizer's order.

    Window i comes from example `example_indices[i]`; an example's windows are consecutive and
    overlap by `stride` context tokens. `context_offsets[i][t]` is token t's character span in the
    example's context, (-1, -1) for question and special tokens. `cls_indices[i]` is the window's
    classifier token, where an unanswerable question points. `start_positions`/`end_positions` are
    the answer's first and last token in the unpadded window, inclusive, or the CLS index when the
    question has no answer or the answer is not wholly inside the window; they are None when no
    answers were given. A batch padded on the left shifts every position by its padding.
    `token_type_ids` is None for a tokenizer that makes none (RoBERTa). `question_first` is False
    for a tokenizer that pads on the left: its windows hold the context first, as Hugging Face's
    question-answering examples build them.
    """

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    example_indices: list[int]
    context_offsets: list[ContextOffsets]
    cls_indices: list[int]
    start_positions: list[int] | None
    end_positions: list[int] | None
    question_first: bool

    def __len__(self) -> int:
        return len(self.input_ids)

    def token_fields(self) -> dict[str, list[list[int]]]:
        """The per-token fields a question-answering network takes, by its argument names."""
        fields = {"input_ids": self.input_ids}
        if self.token_type_ids is not None:
            fields["token_type_ids"] = self.token_type_ids
        return fields

    def window_fields(self) -> dict[str, list[int]]:
        """The per-window fields: the source example and, when answers were given, the answer's token span."""
        fields = {"example_index": self.example_indices, "cls_index": self.cls_indices}
        if self.start_positions is not None and self.end_positions is not None:
            fields["start_positions"] = self.start_positions
            fields["end_positions"] = self.end_positions
        return fields


def make_windows(
    tokenizer: PreTrainedTokenizerBase,
    questions: Sequence[str],
    contexts: Sequence[str],
    *,
    max_length: int,
    stride: int,
    answers: Sequence[GoldAnswer | None] | None = None,
) -> AnswerWindows:
    """Cut every (question, context) into windows of at most `max_length` tokens overlapping by `stride`.

    `tokenizer` must be fast (offsets come from it). Questions are left-stripped: leading blanks
    carry nothing and, for tokenizers that make tokens of spaces, would take the context's room.
    `answers[i]` is example i's answer for training (the first gold answer), None when it has
    none. Raises ValueError when there are no questions, when the lengths disagree, when an
    answer's text is empty or is not the context's text at its start, or when a question leaves
    its context no more than `stride` tokens of room in a window although the context does not
    fit (the tokenizer would abort).
    """
    if not tokenizer.is_fast:
        raise ValueError(f"{type(tokenizer).__name__} is not a fast tokenizer: windows need its character offsets")
    if not questions or len(questions) != len(contexts):
        raise ValueError(f"{len(questions)} questions for {len(contexts)} contexts: windows need one or more pairs")
    if answers is not None:
        if len(answers) != len(contexts):
            raise ValueError(f"{len(answers)} answers for {len(contexts)} contexts")
        check_answers(contexts, answers)
    if stride < 0:
        raise ValueError(f"stride {stride} is negative")
    stripped_questions = [question.lstrip() for question in questions]
    check_context_room(tokenizer, stripped_questions, contexts, max_length=max_length, stride=stride)

    question_first = tokenizer.padding_side == "right"
    context_sequence = 1 if question_first else 0
    encoding = tokenizer(
        stripped_questions if question_first else list(contexts),
        list(contexts) if question_first else stripped_questions,
        truncation="only_second" if question_first else "only_first",
        max_length=max_length,
        stride=stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding=False,
    )
    example_indices = [int(index) for index in encoding["overflow_to_sample_mapping"]]
    input_ids: list[list[int]] = encoding["input_ids"]
    context_offsets: list[ContextOffsets] = []
    cls_indices: list[int] = []
    start_positions: list[int] = []
    end_positions: list[int] = []
    for window, example_index in enumerate(example_indices):
        in_context = np.array([sequence == context_sequence for sequence in encoding.sequence_ids(window)], dtype=bool)
        offsets = np.asarray(encoding["offset_mapping"][window], dtype=np.int64).reshape(-1, 2)
        offsets[~in_context] = NO_CONTEXT
        context_offsets.append(offsets)
        cls_index = find_cls_index(tokenizer, input_ids[window])
        cls_indices.append(cls_index)
        if answers is not None:
            start, end = label_answer_span(offsets, answers[example_index], cls_index=cls_index)
            start_positions.append(start)
            end_positions.append(end)
    return AnswerWindows(
        input_ids=input_ids,
        token_type_ids=encoding.get("token_type_ids"),
        example_indices=example_indices,
        context_offsets=context_offsets,
        cls_indices=cls_indices,
        start_positions=start_positions if answers is not None else None,
        end_positions=end_positions if answers is not None else None,
        question_first=question_first,
    )


def label_answer_span(offsets: ContextOffsets, answer: GoldAnswer | None, *, cls_index: int) -> tuple[int, int]:
    """The answer's first and last token in a window, or (cls_index, cls_index) when it is not wholly inside.

    `offsets` are the window's context offsets ((-1, -1) off the context). The first token is the
    last context token starting at or before the answer's first character, the last token the
    first context token ending at or after its end, as Hugging Face's `prepare_train_features`
    finds them, except that the search never leaves the context (theirs runs onto [SEP] when the
    answer starts in the window's last context token).
    """
    context_tokens = np.flatnonzero(offsets[:, 0] != NO_CONTEXT)
    if answer is None or context_tokens.size == 0:
        return cls_index, cls_index
    starts, ends = offsets[context_tokens, 0], offsets[context_tokens, 1]
    if not (starts[0] <= answer.start_char and ends[-1] >= answer.end_char):
        return cls_index, cls_index
    first = int(context_tokens[np.flatnonzero(starts <= answer.start_char)[-1]])
    last = int(context_tokens[np.flatnonzero(ends >= answer.end_char)[0]])
    return first, last


def find_cls_index(tokenizer: PreTrainedTokenizerBase, input_ids: Sequence[int]) -> int:
    """Where the window's classifier token is: [CLS], else the beginning-of-sequence token, else position 0."""
    for special_id in (tokenizer.cls_token_id, tokenizer.bos_token_id):
        if special_id is not None and special_id in input_ids:
            return list(input_ids).index(special_id)
    return 0


def check_answers(contexts: Sequence[str], answers: Sequence[GoldAnswer | None]) -> None:
    """Raise ValueError naming the first example whose answer is empty or not found at its start."""
    for index, (context, answer) in enumerate(zip(contexts, answers, strict=True)):
        if answer is None:
            continue
        if not answer.text:
            raise ValueError(f"example {index}: the answer text is empty")
        if answer.start_char < 0 or context[answer.start_char : answer.end_char] != answer.text:
            raise ValueError(
                f"example {index}: the context holds {context[answer.start_char : answer.end_char]!r} "
                f"at answer_start {answer.start_char}, not the answer {answer.text!r}"
            )


def check_context_room(
    tokenizer: PreTrainedTokenizerBase,
    questions: Sequence[str],
    contexts: Sequence[str],
    *,
    max_length: int,
    stride: int,
) -> None:
    """Raise ValueError for the first question too long to leave its overflowing context more than `stride` tokens.

    The Rust tokenizer panics (a BaseException, not an Exception) or raises a bare Exception in
    that case; this names the example instead. Only questions over the limit have their context
    measured, so the check costs one tokenization of the questions.
    """
    special_tokens = tokenizer.num_special_tokens_to_add(pair=True)
    question_lengths = [len(ids) for ids in tokenizer(list(questions), add_special_tokens=False)["input_ids"]]
    for index, question_length in enumerate(question_lengths):
        room = max_length - special_tokens - question_length
        if room > stride:
            continue
        context_length = len(tokenizer(contexts[index], add_special_tokens=False)["input_ids"])
        if question_length + special_tokens + context_length > max_length:
            raise ValueError(
                f"example {index}: the question takes {question_length} of max_length {max_length} tokens "
                f"({special_tokens} more are special), leaving {room} for a context of {context_length}; "
                f"a window needs more than stride {stride}"
            )
