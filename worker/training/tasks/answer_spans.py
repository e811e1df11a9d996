"""Each question's best answer span, kept per example while the windows' start and end logits stream past."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch

from worker.training.tasks.answer_windows import NO_CONTEXT, ContextOffsets

Logits = torch.Tensor | npt.NDArray[Any]
Offsets = ContextOffsets | Sequence[tuple[int, int] | None]

MAX_ANSWER_TOKENS = 30
N_BEST = 20


@dataclass(frozen=True)
class WindowSpan:
    """A window's best span: its start + end logit and its [start_char, end_char) in the context."""

    score: float
    start_char: int
    end_char: int


@dataclass(frozen=True)
class SpanAnswer:
    """One question's prediction and the scores it was decided on.

    `text` is the predicted answer, "" for no answer; `start_char` is where it starts in the
    context, -1 for "". `span_text` and `score` are the best span's text and start + end logit,
    kept when the null score wins ("" and None when no window offered a valid span).
    `null_score` is the lowest start + end logit at the CLS token over the example's windows.
    """

    text: str
    start_char: int
    span_text: str
    score: float | None
    null_score: float

    @property
    def null_score_diff(self) -> float:
        """null_score - score: the no-answer evidence `find_best_thresholds` sorts by; inf without a span."""
        return math.inf if self.score is None else self.null_score - self.score


@dataclass
class _ExampleBest:
    span: WindowSpan | None = None
    null_score: float = math.inf
    windows: int = 0


class BestSpans:
    """Per-example bests over windows fed in any batches, holding O(examples) state and no logits.

    An example's answer is the best span over all its windows (a span's score is its start logit
    plus its end logit) and its null score the lowest CLS score over them, as Hugging Face's
    `postprocess_qa_predictions` takes them; both are a max/min, so windows of one example may
    arrive in any order and any batches. With `with_no_answer` (SQuAD v2) the prediction is ""
    when null_score - best span score > `null_score_diff_threshold`; without it (SQuAD v1) the
    best span always wins.
    """

    def __init__(
        self,
        example_ids: Sequence[str],
        contexts: Sequence[str],
        *,
        max_answer_length: int = MAX_ANSWER_TOKENS,
        n_best: int = N_BEST,
        null_score_diff_threshold: float = 0.0,
        with_no_answer: bool = True,
    ) -> None:
        if len(example_ids) != len(contexts):
            raise ValueError(f"{len(example_ids)} example ids for {len(contexts)} contexts")
        if len(set(example_ids)) != len(example_ids):
            raise ValueError("example ids repeat: answers are keyed by id")
        if max_answer_length < 1 or n_best < 1:
            raise ValueError(f"max_answer_length {max_answer_length} and n_best {n_best} must be at least 1")
        self.example_ids = list(example_ids)
        self.contexts = list(contexts)
        self.max_answer_length = max_answer_length
        self.n_best = n_best
        self.null_score_diff_threshold = null_score_diff_threshold
        self.with_no_answer = with_no_answer
        self._bests = [_ExampleBest() for _ in example_ids]

    def add_window(
        self, example_index: int, start_logits: Logits, end_logits: Logits, offsets: Offsets, *, cls_index: int = 0
    ) -> None:
        """Fold one window into its example's bests.

        `start_logits` and `end_logits` are 1-D over the window's own tokens, padding removed
        (torch tensors on any device, or numpy arrays); `offsets` are its context offsets, one per
        token, (-1, -1) or None off the context. Raises ValueError when the lengths disagree, a
        logit is NaN or `example_index`/`cls_index` is out of range.
        """
        self._fold(example_index, as_float_array(start_logits), as_float_array(end_logits), offsets, cls_index)

    def add_batch(
        self,
        example_indices: Sequence[int],
        start_logits: Logits,
        end_logits: Logits,
        offsets: Sequence[Offsets],
        *,
        cls_indices: Sequence[int] | None = None,
        padding_side: Literal["left", "right"] = "right",
    ) -> None:
        """Fold a padded batch: row i's window is its first len(offsets[i]) columns, its last ones with left padding.

        `start_logits`/`end_logits` are (windows, padded length); they cross to the CPU once for
        the whole batch. `cls_indices` are positions in the unpadded windows (0 when omitted).
        Raises ValueError as `add_window` does, or when the batch's shapes disagree.
        """
        starts, ends = as_float_array(start_logits), as_float_array(end_logits)
        if starts.ndim != 2 or starts.shape != ends.shape or starts.shape[0] != len(example_indices):
            raise ValueError(
                f"logits of shapes {starts.shape} and {ends.shape} for a batch of {len(example_indices)} windows"
            )
        if len(offsets) != len(example_indices) or (cls_indices is not None and len(cls_indices) != len(offsets)):
            raise ValueError(f"{len(offsets)} offsets and {len(cls_indices or [])} CLS indices for a batch of windows")
        padded_length = starts.shape[1]
        for row, example_index in enumerate(example_indices):
            length = len(offsets[row])
            if length > padded_length:
                raise ValueError(f"window {row} has {length} tokens, more than the batch's {padded_length}")
            columns = slice(0, length) if padding_side == "right" else slice(padded_length - length, padded_length)
            cls_index = 0 if cls_indices is None else cls_indices[row]
            self._fold(example_index, starts[row, columns], ends[row, columns], offsets[row], cls_index)

    def answers(self) -> dict[str, SpanAnswer]:
        """Every example's answer, by example id. Raises ValueError when an example received no window."""
        missing = [self.example_ids[index] for index, best in enumerate(self._bests) if best.windows == 0]
        if missing:
            raise ValueError(f"{len(missing)} examples received no window, the first {missing[0]!r}")
        return {
            example_id: self._decide(context, best)
            for example_id, context, best in zip(self.example_ids, self.contexts, self._bests, strict=True)
        }

    def _fold(
        self,
        example_index: int,
        start_logits: npt.NDArray[np.float64],
        end_logits: npt.NDArray[np.float64],
        offsets: Offsets,
        cls_index: int,
    ) -> None:
        if not 0 <= example_index < len(self._bests):
            raise ValueError(f"example index {example_index} outside the {len(self._bests)} examples")
        context_offsets = as_offset_array(offsets)
        if not 0 <= cls_index < len(context_offsets):
            raise ValueError(f"CLS index {cls_index} outside a window of {len(context_offsets)} tokens")
        span = best_span_in_window(
            start_logits,
            end_logits,
            context_offsets,
            max_answer_length=self.max_answer_length,
            n_best=self.n_best,
        )
        best = self._bests[example_index]
        best.windows += 1
        # Strict comparisons keep the earlier window on a tie, as HF's stable sort over features does.
        if span is not None and (best.span is None or span.score > best.span.score):
            best.span = span
        best.null_score = min(best.null_score, float(start_logits[cls_index] + end_logits[cls_index]))

    def _decide(self, context: str, best: _ExampleBest) -> SpanAnswer:
        if best.span is None:
            return SpanAnswer(text="", start_char=-1, span_text="", score=None, null_score=best.null_score)
        span_text = context[best.span.start_char : best.span.end_char]
        no_answer = self.with_no_answer and best.null_score - best.span.score > self.null_score_diff_threshold
        return SpanAnswer(
            text="" if no_answer else span_text,
            start_char=-1 if no_answer else best.span.start_char,
            span_text=span_text,
            score=best.span.score,
            null_score=best.null_score,
        )


def best_span_in_window(
    start_logits: npt.NDArray[np.float64],
    end_logits: npt.NDArray[np.float64],
    offsets: ContextOffsets,
    *,
    max_answer_length: int = MAX_ANSWER_TOKENS,
    n_best: int = N_BEST,
) -> WindowSpan | None:
    """The highest-scoring span among the window's `n_best` best starts × `n_best` best ends, or None.

    A span qualifies when both ends are context tokens, start ≤ end, it has at most
    `max_answer_length` tokens and its text is not empty. Candidates are ranked over all the
    window's tokens, question and specials included, as HF ranks them; on a tie the higher-ranked
    start, then end, wins. Raises ValueError when the lengths disagree or a logit is NaN.
    """
    tokens = len(offsets)
    if start_logits.shape != (tokens,) or end_logits.shape != (tokens,):
        raise ValueError(
            f"logits of shapes {start_logits.shape} and {end_logits.shape} for a window of {tokens} tokens"
        )
    if np.isnan(start_logits).any() or np.isnan(end_logits).any():
        raise ValueError("a window's logits hold NaN")
    # A stable sort reversed ranks equal logits later token first, as HF's `argsort()[-1:-n-1:-1]` does when stable.
    starts = np.argsort(start_logits, kind="stable")[::-1][:n_best, None]
    ends = np.argsort(end_logits, kind="stable")[::-1][None, :n_best]
    valid = (
        (offsets[starts, 0] != NO_CONTEXT)
        & (offsets[ends, 0] != NO_CONTEXT)
        & (ends >= starts)
        & (ends - starts + 1 <= max_answer_length)
        & (offsets[starts, 0] < offsets[ends, 1])
    )
    if not valid.any():
        return None
    scores = np.where(valid, start_logits[starts] + end_logits[ends], -np.inf)
    # Row-major argmax: the first best in HF's loop order (starts outer, ends inner).
    start_rank, end_rank = np.unravel_index(int(np.argmax(scores)), scores.shape)
    start, end = int(starts[start_rank, 0]), int(ends[0, end_rank])
    return WindowSpan(
        score=float(scores[start_rank, end_rank]), start_char=int(offsets[start, 0]), end_char=int(offsets[end, 1])
    )


def as_float_array(logits: Logits) -> npt.NDArray[np.float64]:
    """Logits as a float64 numpy array on the CPU (a bfloat16 CUDA tensor included)."""
    if isinstance(logits, torch.Tensor):
        return logits.detach().to(device="cpu", dtype=torch.float64).numpy()
    return np.asarray(logits, dtype=np.float64)


def as_offset_array(offsets: Offsets) -> ContextOffsets:
    """Context offsets as a (tokens, 2) int64 array, None becoming (-1, -1)."""
    if isinstance(offsets, np.ndarray):
        return offsets.astype(np.int64, copy=False).reshape(-1, 2)
    rows = [(NO_CONTEXT, NO_CONTEXT) if pair is None else pair for pair in offsets]
    return np.asarray(rows, dtype=np.int64).reshape(-1, 2)
