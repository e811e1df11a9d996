"""Training configs and a reporter that remembers what it was told."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

from models.checkpoint_kinds import CheckpointKind
from models.hyperparameters import ResolvedHyperparameters
from models.storage.blob_keys import checkpoint_key_pattern
from models.storage.blobs import ArtifactStore
from models.strategies.names import StrategyType
from models.strategies.specs import resolved_strategy
from models.tasks.names import Task
from models.tasks.text_classification import DataFormat, summarize_file
from tests.conftest import write_jsonl
from worker.training.export import extract_model_archive
from worker.training.freeze_plan import FreezePlan
from worker.training.recipe import FineTuningRecipe, RunControl
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
    plans: list[FreezePlan] = field(default_factory=list)

    def run_started(self, **counts: int) -> None:
        self.started = counts

    def freeze_plan_changed(self, plan: FreezePlan) -> None:
        self.plans.append(plan)

    def step_finished(self, progress: StepProgress) -> None:
        self.steps.append(progress)

    def epoch_finished(self, *, epoch: int, step: int, metrics: dict[str, float]) -> None:
        self.epochs.append({"epoch": epoch, "step": step, **metrics})

    def checkpoint_saved(
        self, *, step: int, epoch: int, metrics: dict[str, float], blob_key: str, kind: CheckpointKind, size_bytes: int
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


@dataclass
class MessageRecordingReporter(RecordingReporter):
    """Also keeps each message's data, which says (among other things) which frozen-features path a file took."""

    messages: list[dict[str, Any]] = field(default_factory=list)

    def message(self, text: str, data: dict[str, Any] | None = None) -> None:
        self.messages.append(data or {})

    def feature_paths(self) -> dict[str, str]:
        return {data["file"]: data["frozen_features"] for data in self.messages if "frozen_features" in data}


def run_to_the_end(config: RunSpec, store: Path, reporter: RecordingReporter | None = None) -> FineTuningRecipe:
    recipe = FineTuningRecipe(config, ArtifactStore(store), reporter or MessageRecordingReporter())
    recipe.setup()
    recipe.train()
    return recipe


def exported_folder(recipe: FineTuningRecipe, store: Path, destination: Path) -> tuple[Path, list[str]]:
    """The recipe's published model, unpacked into `destination`, and the files its manifest lists."""
    manifest = recipe.export("jobs/x/weights.tar")
    extract_model_archive(ArtifactStore(store).path(manifest.blob_key), destination)
    return destination, manifest.files


def assert_a_mid_epoch_resume_reproduces_the_run(config: RunSpec, tmp_path: Path) -> None:
    """A run that dies after its step-3 checkpoint and resumes from it ends exactly as an uninterrupted one:
    the same steps and losses, the same epoch metrics, the same weights."""
    reference_reporter = RecordingReporter()
    reference = run_to_the_end(config, tmp_path / "reference", reference_reporter)

    store = ArtifactStore(tmp_path / "interrupted")
    dying = DiesAfterCheckpointAtStep(3)
    first = FineTuningRecipe(config, store, dying, RunControl(checkpoint_interval_seconds=1e-9))
    first.setup()
    with pytest.raises(Killed):
        first.train()
    assert [(c["step"], c["kind"]) for c in dying.checkpoints] == [(1, "interval"), (2, "interval"), (3, "interval")]

    resumed_reporter = RecordingReporter()
    resumed = FineTuningRecipe(config, store, resumed_reporter)
    resumed.setup()
    assert resumed.resume(store.path(dying.checkpoints[-1]["blob_key"])) == 3
    resumed.train()
    steps_after = [step for step in reference_reporter.steps if step.step > 3]
    assert [s.step for s in resumed_reporter.steps] == [s.step for s in steps_after]
    assert [s.train_loss for s in resumed_reporter.steps] == pytest.approx([s.train_loss for s in steps_after])
    assert len(resumed_reporter.epochs) == len(reference_reporter.epochs)
    for resumed_epoch, reference_epoch in zip(resumed_reporter.epochs, reference_reporter.epochs, strict=True):
        assert resumed_epoch == pytest.approx(reference_epoch)
    for (name, expected), actual in zip(
        reference.network.state_dict().items(), resumed.network.state_dict().values(), strict=True
    ):
        assert torch.allclose(expected, actual, atol=1e-6), name


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
