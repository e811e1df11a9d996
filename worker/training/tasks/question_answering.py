"""question-answering, engine half: a start/end span head over question + context windows, scored as SQuAD v2.0."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoModelForQuestionAnswering, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from models.errors import JobErrorCode
from models.tasks.jsonl_records import iter_jsonl_records
from models.tasks.question_answering import JSONL_EXAMPLE
from models.tasks.text_classification import DataFormat
from worker.training.examples import TokenisedExamples, from_lists
from worker.training.reporting import TrainingFailure
from worker.training.run_spec import DataFile, RunSpec
from worker.training.speedups.model_pool import Template, TemplateKey
from worker.training.tasks.answer_spans import MAX_ANSWER_TOKENS, BestSpans
from worker.training.tasks.answer_windows import ContextOffsets, GoldAnswer, make_windows
from worker.training.tasks.protocol import Batch, Examples
from worker.training.tasks.squad_scoring import find_best_thresholds, score_predictions
from worker.training.tasks.task_heads import load_with_new_head, template_key

DOC_STRIDE = 128  # Hugging Face's run_qa default, with its max_length of 384
SPAN_HEAD = "span"
POSITION_FIELDS = ("start_positions", "end_positions")


@dataclass(frozen=True)
class Question:
    """One record: the question, its context, and its gold answers (none when it is unanswerable)."""

    line_number: int
    question: str
    context: str
    answer_texts: list[str]
    answer_starts: list[int]

    @property
    def first_answer(self) -> GoldAnswer | None:
        """What training points at, as Hugging Face's examples take it: the first gold answer."""
        return GoldAnswer(self.answer_texts[0], self.answer_starts[0]) if self.answer_texts else None


def iter_questions(data_file: DataFile) -> Iterator[Question]:
    """The records of a JSONL file `{"id", "context", "question", "answers": {"text": [], "answer_start": []}}`.

    Read as validation reads it. Raises ValueError for a file that is not JSONL.
    """
    if data_file.data_format is not DataFormat.jsonl:
        raise ValueError(f"question-answering reads JSONL files, not {data_file.data_format.value}")
    for line_number, record in iter_jsonl_records(data_file.path, example=JSONL_EXAMPLE):
        answers = record["answers"]
        yield Question(
            line_number=line_number,
            question=str(record["question"]),
            context=str(record["context"]),
            answer_texts=[str(text) for text in answers["text"]],
            answer_starts=[int(start) for start in answers["answer_start"]],
        )


def window_stride(spec: RunSpec) -> int:
    """The context tokens consecutive windows share: `doc_stride`, at most a third of max_length.

    A window must hold the question and more than `stride` context tokens, so a stride near
    max_length leaves no room; a third is Hugging Face's own pair (128 of 384) and leaves a
    question up to about 2/3 of max_length.
    """
    doc_stride = int(spec.task_settings.get("doc_stride", DOC_STRIDE))
    return min(doc_stride, spec.hyperparameters.max_length // 3)


def max_answer_tokens(spec: RunSpec) -> int:
    """The longest answer span decoded, in tokens: `max_answer_tokens`, 30 by default as in Hugging Face's run_qa."""
    return int(spec.task_settings.get("max_answer_tokens", MAX_ANSWER_TOKENS))


class AnswerEvaluator:
    """Streams each batch's start/end logits into every question's best span; scores them as SQuAD v2.0.

    Rows are windows in any order (window indices, as the loop passes them); each window's
    question and context offsets are read from the examples' side fields. A question is
    predicted unanswerable when its null score beats its best span (BestSpans' threshold 0).
    """

    def __init__(self, examples: TokenisedExamples, questions: list[Question], *, max_answer_length: int) -> None:
        self.offsets = examples.offsets.tolist()
        self.padding_side = examples.padding_side
        self.example_index = examples.side_example_fields["example_index"].tolist()
        self.cls_index = examples.side_example_fields["cls_index"].tolist()
        self.context_offsets = (
            torch.stack([examples.side_token_fields["context_start"], examples.side_token_fields["context_end"]], dim=1)
            .to(torch.int64)
            .numpy()
        )
        if self.example_index and max(self.example_index) >= len(questions):
            raise ValueError(f"windows of {max(self.example_index) + 1} questions, but the file holds {len(questions)}")
        keys = [str(index) for index in range(len(questions))]  # by position: ids need not be unique
        self.gold_answers = {key: question.answer_texts for key, question in zip(keys, questions, strict=True)}
        self.spans = BestSpans(keys, [question.context for question in questions], max_answer_length=max_answer_length)

    def window_offsets(self, window: int) -> ContextOffsets:
        offsets: ContextOffsets = self.context_offsets[self.offsets[window] : self.offsets[window + 1]]
        return offsets

    def update(self, indices: list[int], batch: Batch, outputs: Any) -> None:
        self.spans.add_batch(
            [self.example_index[window] for window in indices],
            outputs.start_logits,
            outputs.end_logits,
            [self.window_offsets(window) for window in indices],
            cls_indices=[self.cls_index[window] for window in indices],
            padding_side=self.padding_side,
        )

    def compute(self) -> dict[str, float]:
        """exact, f1, and has_answer_/no_answer_ exact and f1 when such questions exist, in percent; and the
        official script's best_exact and best_f1: the scores at the no-answer threshold that suits this file
        best, which tell a model that can find answers but abstains too often from one that cannot."""
        answers = self.spans.answers()
        predictions = {key: answer.text for key, answer in answers.items()}
        report = score_predictions(self.gold_answers, predictions)
        best = find_best_thresholds(
            self.gold_answers,
            {key: answer.span_text for key, answer in answers.items()},
            {key: answer.null_score_diff for key, answer in answers.items()},
        )
        scores = {name: value for name, value in report.items() if not name.endswith("total")}
        return scores | {"best_exact": best["best_exact"], "best_f1": best["best_f1"]}


class QuestionAnswering:
    label_fields: tuple[str, ...] = POSITION_FIELDS
    reads_every_token: bool = True

    def load_processor(self, spec: RunSpec) -> PreTrainedTokenizerBase:
        """The base model's tokenizer; raises ValueError for a slow one (windows need character offsets)."""
        tokenizer = AutoTokenizer.from_pretrained(spec.base_model_location, trust_remote_code=spec.trust_remote_code)
        if not tokenizer.is_fast:
            raise ValueError(f"{type(tokenizer).__name__} is a slow tokenizer; answer spans need a fast one")
        return tokenizer

    def template_key(self, spec: RunSpec, fingerprint: str) -> TemplateKey:
        return template_key(spec, fingerprint, SPAN_HEAD)

    def load_template(self, key: TemplateKey) -> Template:
        return load_with_new_head(AutoModelForQuestionAnswering, key)

    def prepare_network(self, network: PreTrainedModel, spec: RunSpec) -> None:
        """A span head has no label names: the exported config needs nothing from the job."""

    def build_examples(self, data_file: DataFile, processor: Any, spec: RunSpec) -> TokenisedExamples:
        """Windows labelled with the first gold answer's token span (the CLS token when it has none or
        lies outside); each window's question and per-token context offsets kept beside, for the evaluator.

        Raises TrainingFailure (invalid_training_data) for a question too long to leave its context
        more room than the stride.
        """
        tokenizer: PreTrainedTokenizerBase = processor
        questions = list(iter_questions(data_file))
        stride = window_stride(spec)
        try:
            windows = make_windows(
                tokenizer,
                [question.question for question in questions],
                [question.context for question in questions],
                max_length=spec.hyperparameters.max_length,
                stride=stride,
                answers=[question.first_answer for question in questions],
            )
        except ValueError as error:
            raise TrainingFailure(
                JobErrorCode.invalid_training_data,
                f"{error} (max_length {spec.hyperparameters.max_length}, window stride {stride}); "
                "raise hyperparameters.max_length or shorten the question",
            ) from error
        window_fields = windows.window_fields()
        return from_lists(
            windows.token_fields(),
            {name: window_fields[name] for name in POSITION_FIELDS},
            pad_values={"input_ids": tokenizer.pad_token_id or 0},
            padding_side="left" if tokenizer.padding_side == "left" else "right",
            side_token_fields={
                "context_start": [offsets[:, 0].tolist() for offsets in windows.context_offsets],
                "context_end": [offsets[:, 1].tolist() for offsets in windows.context_offsets],
            },
            side_example_fields={"example_index": windows.example_indices, "cls_index": windows.cls_indices},
        )

    def loss_step(self, network: nn.Module, batch: Batch) -> tuple[torch.Tensor, Any]:
        """The mean of the start and end cross-entropies over each window's own tokens.

        Unlike the head's built-in loss, padding is masked out of the softmax: no answer lies
        there, and the loss then does not depend on what padded positions hold, so it is the same
        whether the frozen layers ran or their kept states were served (those hold no padding).
        Positions count from each window's first token, so they shift by its left padding.
        """
        inputs = {name: tensor for name, tensor in batch.items() if name not in POSITION_FIELDS}
        outputs = network(**inputs)
        mask = batch["attention_mask"]
        window_start = mask.argmax(dim=1)  # the first 1: 0 unless padded on the left
        padding = mask == 0
        losses = [
            nn.functional.cross_entropy(
                logits.float().masked_fill(padding, torch.finfo(torch.float32).min),
                batch[name] + window_start,
            )
            for logits, name in ((outputs.start_logits, "start_positions"), (outputs.end_logits, "end_positions"))
        ]
        return (losses[0] + losses[1]) / 2, outputs

    def evaluator(self, examples: Examples, spec: RunSpec) -> AnswerEvaluator:
        if not isinstance(examples, TokenisedExamples) or spec.validation_file is None:
            raise ValueError("question-answering evaluates the windows of a validation file")
        return AnswerEvaluator(
            examples, list(iter_questions(spec.validation_file)), max_answer_length=max_answer_tokens(spec)
        )

    def save_extras(self, folder: Path, network: nn.Module, processor: Any) -> None:
        processor.save_pretrained(folder)
