"""What a task's torch-free half provides: its record format and validator, file summary, job settings, metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from models.strategies.common import StrategyDefaults
from models.strategies.names import StrategyType
from models.tasks.names import Task
from models.tasks.text_classification import DataFormat, DataLimits


class TaskFormat(Protocol):
    task: Task
    # The validation metrics the engine reports for the task, its main one first (checkpoints show them
    # with a `valid_` prefix, beside valid_loss).
    metrics: tuple[str, ...]
    # The keys that mark a record as meant for this task: an upload is validated for each task whose
    # keys its first record holds.
    record_fields: frozenset[str]

    def summarize(self, path: Path, data_format: DataFormat, limits: DataLimits) -> dict[str, Any]:
        """Validate every record in one streaming pass; raises InvalidFile naming the line. Returns what the
        file's row keeps for this task (JSON), from which `describe` and `job_settings` work."""
        ...

    def describe(self, summary: dict[str, Any]) -> str:
        """The summary in words, for the job's events ("950 questions, 473 answerable")."""
        ...

    def job_settings(self, training: dict[str, Any], validation: dict[str, Any] | None) -> dict[str, Any]:
        """The task's part of a job from its files' summaries (label names, say); raises InvalidRequest
        naming training_file or validation_file when they cannot make a job together."""
        ...

    def defaults(self, strategy: StrategyType) -> StrategyDefaults | None:
        """Training defaults measured for this task under `strategy`, where they differ from the strategy's."""
        ...
