"""Training configs and a reporter that remembers what it was told."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from models.checkpoint_kinds import CheckpointKind
from models.hyperparameters import ResolvedHyperparameters
from models.storage.blob_keys import checkpoint_key_pattern
from models.strategies.names import StrategyType
from models.strategies.specs import resolved_strategy
from models.tasks.names import Task
from models.tasks.text_classification import DataFormat, summarize_file
from tests.conftest import write_jsonl
from worker.training.reporting import StepProgress
from worker.training.run_spec import DataFile, RunSpec

JOB_ID = "ftjob-" + "t" * 24
WORDS_POSITIVE = ["good", "great", "fun", "best", "love", "moving"]
WORDS_NEGATIVE = ["bad", "awful", "dull", "worst", "hate", "boring"]


@dataclass
class RecordingReporter:
    steps: list[StepProgress] = field(default_factory=list)
    epochs: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    started: dict[str, int] = field(default_factory=dict)

    def run_started(self, **counts: int) -> None:
        self.started = counts

    def step_finished(self, progress: StepProgress) -> None:
        self.steps.append(progress)

    def epoch_finished(self, *, epoch: int, step: int, metrics: dict[str, float]) -> None:
        self.epochs.append({"epoch": epoch, "step": step, **metrics})

    def checkpoint_saved(
        self, *, step: int, epoch: int, metrics: dict[str, float], blob_key: str, kind: str, size_bytes: int
    ) -> None:
        self.checkpoints.append(
            {"step": step, "epoch": epoch, "blob_key": blob_key, "kind": kind, "size_bytes": size_bytes}
        )

    def message(self, text: str, data: dict[str, Any] | None = None) -> None: ...


class Killed(Exception):
    """Stands in for the process dying right after a checkpoint was published."""


class DiesAfterCheckpointAtStep(RecordingReporter):
    """A reporter whose process "dies" (raises Killed) once the checkpoint at `step` is published."""

    def __init__(self, step: int) -> None:
        super().__init__()
        self.dies_at = step

    def checkpoint_saved(
        self,
        *,
        step: int,
        epoch: int,
        metrics: dict[str, float],
        blob_key: str,
        kind: CheckpointKind,
        size_bytes: int,
    ) -> None:
        super().checkpoint_saved(
            step=step, epoch=epoch, metrics=metrics, blob_key=blob_key, kind=kind, size_bytes=size_bytes
        )
        if step == self.dies_at:
            raise Killed


def sentiment_rows(count: int) -> list[dict[str, object]]:
    """A learnable toy task: the label follows the sentiment word in the sentence."""
    rows: list[dict[str, object]] = []
    for index in range(count):
        positive = index % 2 == 0
        words = WORDS_POSITIVE if positive else WORDS_NEGATIVE
        word = words[(index // 2) % len(words)]
        rows.append({"text": f"the film was {word}", "label": "pos" if positive else "neg"})
    return rows


@pytest.fixture
def make_config(tmp_path: Path, tiny_bert_folder: Path) -> Any:
    training = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(64))
    validation = write_jsonl(tmp_path / "valid.jsonl", sentiment_rows(24))

    def _make(
        kind: StrategyType = StrategyType.full, *, epochs: int = 2, learning_rate: float = 1e-3, seed: int = 3
    ) -> RunSpec:
        return RunSpec(
            job_id=JOB_ID,
            task=Task.text_classification,
            seed=seed,
            base_model_location=str(tiny_bert_folder),
            trust_remote_code=False,
            task_settings={"labels": summarize_file(training, DataFormat.jsonl).label_names},
            strategy=resolved_strategy(
                kind,
                2,
                **({"trainable_layers": 1} if kind is StrategyType.partial else {}),
                **({"layer_decay": 0.8} if kind is StrategyType.layerwise_lr else {}),
            ),
            hyperparameters=ResolvedHyperparameters(
                n_epochs=epochs,
                batch_size=8,
                learning_rate_multiplier=1.0,
                learning_rate=learning_rate,
                warmup_ratio=0.1,
                max_length=32,
                weight_decay=0.01,
            ),
            training_file=DataFile(training, DataFormat.jsonl, ""),
            validation_file=DataFile(validation, DataFormat.jsonl, ""),
            checkpoint_keys=checkpoint_key_pattern(JOB_ID, 1),
        )

    return _make
