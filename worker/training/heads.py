"""Tasks as plug-ins of the one training loop: each is a head, a data format and its metrics."""

from __future__ import annotations

from typing import Protocol

import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from models.tasks.names import Task
from models.tasks.text_classification import iter_records
from worker.training.config import DataFile, TrainingConfig
from worker.training.examples import TokenisedExamples, from_lists
from worker.training.metrics import accuracy, macro_f1
from worker.training.speedups.model_pool import Template, TemplateKey, new_module_names


class TaskAdapter(Protocol):
    def load_tokenizer(self, config: TrainingConfig) -> PreTrainedTokenizerBase: ...

    def load_template(self, key: TemplateKey) -> Template:
        """The base model with this task's head for `key.num_labels` labels (model_pool copies it per job)."""
        ...

    def label_network(self, network: PreTrainedModel, config: TrainingConfig) -> None:
        """Write the job's label names into the network's config (they go into the exported model)."""
        ...

    def tokenise_file(
        self, data_file: DataFile, tokenizer: PreTrainedTokenizerBase, config: TrainingConfig
    ) -> TokenisedExamples: ...

    def metrics(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]: ...


class TextClassification:
    """A sequence-classification head (single texts or pairs) scored by accuracy and macro-F1."""

    def load_tokenizer(self, config: TrainingConfig) -> PreTrainedTokenizerBase:
        return AutoTokenizer.from_pretrained(config.base_model_location, trust_remote_code=config.trust_remote_code)

    def load_template(self, key: TemplateKey) -> Template:
        network, loading = AutoModelForSequenceClassification.from_pretrained(
            key.location,
            num_labels=key.num_labels,
            problem_type="single_label_classification",
            trust_remote_code=key.trust_remote_code,
            use_safetensors=True,
            output_loading_info=True,
        )
        return Template(network, new_module_names(loading["missing_keys"]))

    def label_network(self, network: PreTrainedModel, config: TrainingConfig) -> None:
        names = [str(label) for label in config.label_names]
        network.config.id2label = dict(enumerate(names))
        network.config.label2id = {name: index for index, name in enumerate(names)}

    def tokenise_file(
        self, data_file: DataFile, tokenizer: PreTrainedTokenizerBase, config: TrainingConfig
    ) -> TokenisedExamples:
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
        token_fields = {name: values for name, values in encoded.items() if name != "attention_mask"}
        return from_lists(
            token_fields,
            {"labels": labels},
            pad_values={"input_ids": tokenizer.pad_token_id or 0},
            padding_side="left" if tokenizer.padding_side == "left" else "right",
        )

    def metrics(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        predictions = logits.argmax(dim=-1)
        return {
            "accuracy": accuracy(predictions, labels),
            "macro_f1": macro_f1(predictions, labels, num_classes=logits.shape[-1]),
        }


TASKS: dict[Task, TaskAdapter] = {Task.text_classification: TextClassification()}
