"""The baseline of bench.training: a `transformers.Trainer` script, written as a user would write it.

The user loads the model, freezes what the strategy freezes (`requires_grad = False`), tokenises
the data (padded to max length, as the Trainer tutorials do, or left unpadded for a
`DataCollatorWithPadding`), and calls `trainer.train()` with the same optimiser (AdamW, the
Trainer's default), learning rate, schedule (linear with warmup), weight decay, batch size,
epochs and gradient clipping as the Graft job. Layer-wise learning rates need the user's own
optimiser groups, passed through `optimizers=`.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    PreTrainedModel,
    Trainer,
    TrainingArguments,
    get_linear_schedule_with_warmup,
)


@dataclass(frozen=True)
class BenchJob:
    """One job configuration, run the same way by Graft and by the Trainer script."""

    model_path: str
    strategy: str
    trainable_layers: int
    layer_decay: float
    learning_rate: float
    weight_decay: float
    warmup_ratio: float
    epochs: int
    batch_size: int
    max_length: int
    seed: int
    labels: tuple[str, ...]


class TokenisedRows(Dataset[dict[str, Any]]):
    def __init__(self, encoded: dict[str, list[Any]], labels: list[int]) -> None:
        self.encoded, self.labels = encoded, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = {name: values[index] for name, values in self.encoded.items()}
        row["labels"] = self.labels[index]
        return row


def freeze_for_strategy(model: PreTrainedModel, job: BenchJob) -> None:
    body = model.base_model
    if job.strategy == "feature_extraction":
        body.embeddings.requires_grad_(False)
        body.encoder.requires_grad_(False)
    elif job.strategy == "partial":
        body.embeddings.requires_grad_(False)
        for layer in body.encoder.layer[: len(body.encoder.layer) - job.trainable_layers]:
            layer.requires_grad_(False)


def layerwise_optimizer(model: PreTrainedModel, job: BenchJob, total_steps: int) -> tuple[Any, Any]:
    """The usual LLRD recipe: the head at the full rate, layer i of L at decay^(L−i), embeddings below."""
    body = model.base_model
    depth = len(body.encoder.layer)
    scaled: list[tuple[list[tuple[str, torch.nn.Parameter]], float]] = [
        (list(body.embeddings.named_parameters()), job.layer_decay ** (depth + 1))
    ]
    scaled += [
        (list(layer.named_parameters()), job.layer_decay ** (depth - index))
        for index, layer in enumerate(body.encoder.layer)
    ]
    in_body = {id(p) for p in body.embeddings.parameters()} | {id(p) for p in body.encoder.parameters()}
    scaled.append(([(n, p) for n, p in model.named_parameters() if id(p) not in in_body], 1.0))
    groups = []
    for named, scale in scaled:
        decayed = [p for n, p in named if p.ndim >= 2 and "norm" not in n.lower()]
        undecayed = [p for n, p in named if not (p.ndim >= 2 and "norm" not in n.lower())]
        groups.append({"params": decayed, "lr": job.learning_rate * scale, "weight_decay": job.weight_decay})
        groups.append({"params": undecayed, "lr": job.learning_rate * scale, "weight_decay": 0.0})
    optimizer = torch.optim.AdamW(groups, lr=job.learning_rate)
    scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(job.warmup_ratio * total_steps), total_steps)
    return optimizer, scheduler


def run_trainer(
    job: BenchJob,
    training: list[dict[str, Any]],
    validation: list[dict[str, Any]],
    *,
    pad_to_max_length: bool,
) -> dict[str, Any]:
    """Load, freeze, tokenise, train; then predict the validation rows. Returns times and accuracy."""
    started = time.perf_counter()
    label_ids = {label: index for index, label in enumerate(job.labels)}
    tokenizer = AutoTokenizer.from_pretrained(job.model_path)
    model = AutoModelForSequenceClassification.from_pretrained(
        job.model_path,
        num_labels=len(job.labels),
        id2label=dict(enumerate(job.labels)),
        label2id=label_ids,
    )
    freeze_for_strategy(model, job)
    padding: Any = "max_length" if pad_to_max_length else False

    def tokenise(rows: list[dict[str, Any]]) -> TokenisedRows:
        encoded = tokenizer([row["text"] for row in rows], truncation=True, max_length=job.max_length, padding=padding)
        return TokenisedRows(dict(encoded), [label_ids[row["label"]] for row in rows])

    train_set, validation_set = tokenise(training), tokenise(validation)
    total_steps = math.ceil(len(train_set) / job.batch_size) * job.epochs
    with tempfile.TemporaryDirectory() as output_dir:
        arguments = TrainingArguments(
            output_dir=output_dir,
            per_device_train_batch_size=job.batch_size,
            per_device_eval_batch_size=job.batch_size,
            num_train_epochs=job.epochs,
            learning_rate=job.learning_rate,
            weight_decay=job.weight_decay,
            warmup_steps=job.warmup_ratio,
            seed=job.seed,
            save_strategy="no",
            eval_strategy="no",
            report_to="none",
            disable_tqdm=True,
            logging_strategy="no",
        )
        optimizers: Any = (None, None)
        if job.strategy == "layerwise_lr":
            optimizers = layerwise_optimizer(model, job, total_steps)
        trainer = Trainer(
            model=model,
            args=arguments,
            train_dataset=train_set,
            data_collator=DataCollatorWithPadding(tokenizer),
            optimizers=optimizers,
        )
        trainer.train()
        trained = time.perf_counter()
        predictions = trainer.predict(validation_set)  # type: ignore[arg-type]
        evaluated = time.perf_counter()
    predicted = torch.as_tensor(predictions.predictions).argmax(dim=-1)
    accuracy = float((predicted == torch.as_tensor(validation_set.labels)).float().mean())
    return {
        "seconds": trained - started,
        "evaluation_seconds": evaluated - trained,
        "accuracy": accuracy,
        "samples_per_second": len(train_set) * job.epochs / (trained - started),
    }
