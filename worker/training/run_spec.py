"""What one training run needs to know, as plain values: no rows, no settings, no sessions."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.hyperparameters import ResolvedHyperparameters
from models.strategies.specs import AnyStrategySpec
from models.tasks.names import Task
from models.tasks.text_classification import DataFormat


@dataclass(frozen=True)
class DataFile:
    path: Path
    data_format: DataFormat
    sha256: str


@dataclass(frozen=True)
class RunSpec:
    """A job's run as the engine sees it; the worker side builds it from the job's rows.

    `task_settings` is the task's own part of the job (label names for the classification
    tasks), as the task's torch-free half recorded it at job creation; only that task reads it.
    """

    job_id: str
    task: Task
    seed: int
    base_model_location: str
    trust_remote_code: bool
    strategy: AnyStrategySpec  # resolved: no "auto" left
    hyperparameters: ResolvedHyperparameters
    training_file: DataFile
    validation_file: DataFile | None
    # Where checkpoints go: a key with a `{step}` field (models.storage.blob_keys names every key).
    checkpoint_keys: str
    task_settings: dict[str, Any] = field(default_factory=dict)
    attempt: int = 1  # the run this spec was loaded for
