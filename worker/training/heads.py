"""Tasks as plug-ins of the one training loop: each is a head, a data format and its metrics."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch.utils.data import Dataset
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from models.data_formats import iter_records
from models.schemas import Task
from worker.training.config import DataFile, TrainingConfig
from worker.training.metrics import accuracy, macro_f1

Batch = dict[str, torch.Tensor]


class EncodedExamples(Dataset[dict[str, Any]]):
    """Tokenised examples held as Python lists; padding happens per batch."""

    def __init__(self, features: dict[str, list[Any]]) -> None:
        self._features = features
        self._length = len(next(iter(features.values())))

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {name: values[index] for name, values in self._features.items()}


class TaskAdapter(Protocol):
    def load_tokenizer(self, config: TrainingConfig) -> PreTrainedTokenizerBase: ...

    def load_network(self, config: TrainingConfig) -> PreTrainedModel: ...

    def encode_file(
        self, data_file: DataFile, tokenizer: PreTrainedTokenizerBase, config: TrainingConfig
    ) -> EncodedExamples: ...

    def collator(self, tokenizer: PreTrainedTokenizerBase) -> Callable[[list[dict[str, Any]]], Batch]: ...

    def metrics(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]: ...


class TextClassification:
    """A sequence-classification head (single texts or pairs) scored by accuracy and macro-F1."""

    def load_tokenizer(self, config: TrainingConfig) -> PreTrainedTokenizerBase:
        return AutoTokenizer.from_pretrained(config.base_model_location, trust_remote_code=config.trust_remote_code)

    def load_network(self, config: TrainingConfig) -> PreTrainedModel:
        names = [str(label) for label in config.label_names]
        network: PreTrainedModel = AutoModelForSequenceClassification.from_pretrained(
            config.base_model_location,
            num_labels=len(names),
            id2label=dict(enumerate(names)),
            label2id={name: index for index, name in enumerate(names)},
            problem_type="single_label_classification",
            trust_remote_code=config.trust_remote_code,
            use_safetensors=True,
        )
        return network

    def encode_file(
        self, data_file: DataFile, tokenizer: PreTrainedTokenizerBase, config: TrainingConfig
    ) -> EncodedExamples:
        label_ids = {str(label): index for index, label in enumerate(config.label_names)}
        texts: list[str] = []
        pairs: list[str] = []
        labels: list[int] = []
        for record in iter_records(data_file.path, data_file.data_format):
            texts.append(record.text)
            if record.text_pair is not None:
                pairs.append(record.text_pair)
            labels.append(label_ids[str(record.label)])
        encoded = tokenizer(
            texts,
            pairs or None,
            truncation=True,
            max_length=config.hyperparameters.max_length,
        )
        features = {name: list(values) for name, values in encoded.items()}
        features["labels"] = labels
        return EncodedExamples(features)

    def collator(self, tokenizer: PreTrainedTokenizerBase) -> Callable[[list[dict[str, Any]]], Batch]:
        return DataCollatorWithPadding(tokenizer, return_tensors="pt")

    def metrics(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        predictions = logits.argmax(dim=-1)
        return {
            "accuracy": accuracy(predictions, labels),
            "macro_f1": macro_f1(predictions, labels, num_classes=logits.shape[-1]),
        }


TASKS: dict[Task, TaskAdapter] = {Task.text_classification: TextClassification()}
