"""text-classification, engine half: a sequence-classification head on texts or pairs, scored by accuracy, macro-F1."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from models.tasks.text_classification import iter_records
from worker.training.examples import TokenisedExamples, from_lists
from worker.training.run_spec import DataFile, RunSpec
from worker.training.speedups.model_pool import Template, TemplateKey
from worker.training.tasks.protocol import Batch, Examples
from worker.training.tasks.task_heads import (
    head_labels,
    label_names,
    labels_head,
    load_with_new_head,
    name_labels,
    template_key,
)


class ConfusionCounts:
    """A streaming confusion matrix: accuracy and macro-F1 from counts, never from gathered logits."""

    def __init__(self, num_classes: int) -> None:
        self.counts = torch.zeros((num_classes, num_classes), dtype=torch.long)

    def update(self, indices: list[int], batch: Batch, outputs: Any) -> None:
        predicted = outputs.logits.argmax(dim=-1).cpu()
        actual = batch["labels"].cpu()
        classes = self.counts.shape[0]
        self.counts += torch.bincount(actual * classes + predicted, minlength=classes * classes).view(classes, classes)

    def compute(self) -> dict[str, float]:
        total = int(self.counts.sum())
        correct = int(self.counts.diag().sum())
        return {"accuracy": correct / total if total else 0.0, "macro_f1": self.macro_f1()}

    def macro_f1(self) -> float:
        """Unweighted mean of per-class F1 over the classes present in targets or predictions.

        A class that appears in neither contributes nothing (scikit-learn's `labels=None` behaviour).
        """
        scores = []
        for label in range(self.counts.shape[0]):
            actual, predicted = int(self.counts[label].sum()), int(self.counts[:, label].sum())
            if actual == 0 and predicted == 0:
                continue
            scores.append(2 * int(self.counts[label, label]) / (actual + predicted))
        return sum(scores) / len(scores) if scores else 0.0


class TextClassification:
    label_fields: tuple[str, ...] = ("labels",)
    reads_every_token: bool = False

    def load_processor(self, spec: RunSpec) -> PreTrainedTokenizerBase:
        return AutoTokenizer.from_pretrained(spec.base_model_location, trust_remote_code=spec.trust_remote_code)

    def template_key(self, spec: RunSpec, fingerprint: str) -> TemplateKey:
        return template_key(spec, fingerprint, labels_head(spec))

    def load_template(self, key: TemplateKey) -> Template:
        return load_with_new_head(
            AutoModelForSequenceClassification,
            key,
            num_labels=head_labels(key),
            problem_type="single_label_classification",
        )

    def prepare_network(self, network: PreTrainedModel, spec: RunSpec) -> None:
        name_labels(network, spec)

    def build_examples(self, data_file: DataFile, processor: Any, spec: RunSpec) -> TokenisedExamples:
        tokenizer: PreTrainedTokenizerBase = processor
        label_ids = {name: index for index, name in enumerate(label_names(spec))}
        texts: list[str] = []
        pairs: list[str] = []
        labels: list[int] = []
        for record in iter_records(data_file.path, data_file.data_format):
            texts.append(record.text)
            if record.text_pair is not None:
                pairs.append(record.text_pair)
            labels.append(label_ids[str(record.label)])
        encoded = tokenizer(texts, pairs or None, truncation=True, max_length=spec.hyperparameters.max_length)
        token_fields = {name: values for name, values in encoded.items() if name != "attention_mask"}
        return from_lists(
            token_fields,
            {"labels": labels},
            pad_values={"input_ids": tokenizer.pad_token_id or 0},
            padding_side="left" if tokenizer.padding_side == "left" else "right",
        )

    def loss_step(self, network: nn.Module, batch: Batch) -> tuple[torch.Tensor, Any]:
        outputs = network(**batch)
        return outputs.loss, outputs

    def evaluator(self, examples: Examples, spec: RunSpec) -> ConfusionCounts:
        return ConfusionCounts(len(spec.task_settings["labels"]))

    def save_extras(self, folder: Path, network: nn.Module, processor: Any) -> None:
        processor.save_pretrained(folder)
