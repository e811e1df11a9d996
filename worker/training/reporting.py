"""The recipe's window to the outside: progress, metrics and checkpoints, reported as they happen."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol

from models.checkpoint_kinds import CheckpointKind
from models.errors import JobErrorCode
from worker.training.freeze_plan import FreezePlan


@dataclass(frozen=True)
class StepProgress:
    step: int
    total_steps: int
    epoch: int
    train_loss: float
    learning_rate: float
    samples_per_second: float
    tokens_per_second: float
    trained_tokens: int
    seconds_to_first_step: float = 0.0  # from the training process taking the job to its first optimiser step
    peak_memory_bytes: int = 0  # GPU memory allocated on CUDA, the process's resident set on CPU
    frozen_features: str = "not_applicable"  # worker.training.speedups.frozen_features.FeaturePath
    penalty: float | None = None  # the strategy's regularisation term at this step (L2-SP), when it has one

    def performance(self) -> dict[str, Any]:
        """The job object's `performance` (models.wire.jobs.PerformanceRead)."""
        return {
            "samples_per_second": round(self.samples_per_second, 2),
            "tokens_per_second": round(self.tokens_per_second, 1),
            "seconds_to_first_step": round(self.seconds_to_first_step, 3),
            "peak_memory_bytes": self.peak_memory_bytes,
            "frozen_features": self.frozen_features,
        }

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class TrainingFailure(Exception):
    """A run that cannot succeed for a reason the user can act on."""

    def __init__(self, code: JobErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Reporter(Protocol):
    def run_started(
        self, *, trainable_parameters: int, total_parameters: int, total_steps: int, examples: int
    ) -> None: ...

    def freeze_plan_changed(self, plan: FreezePlan) -> None:
        """What trains changed: at the first epoch of a run, and at each epoch a schedule changes it."""

    def step_finished(self, progress: StepProgress) -> None:
        """Called after every optimiser step; implementations decide how often to persist."""

    def epoch_finished(self, *, epoch: int, step: int, metrics: dict[str, float]) -> None: ...

    def checkpoint_saved(
        self, *, step: int, epoch: int, metrics: dict[str, float], blob_key: str, kind: CheckpointKind, size_bytes: int
    ) -> None:
        """A checkpoint of `size_bytes` was published at `blob_key`.

        May raise TrainingFailure (storage_quota_exceeded) after deleting it, when it does not fit.
        """

    def message(self, text: str, data: dict[str, Any] | None = None) -> None: ...


class FanOutReporter:
    """Tells several reporters the same things, in order."""

    def __init__(self, *reporters: Reporter) -> None:
        self._reporters = reporters

    def run_started(self, *, trainable_parameters: int, total_parameters: int, total_steps: int, examples: int) -> None:
        for reporter in self._reporters:
            reporter.run_started(
                trainable_parameters=trainable_parameters,
                total_parameters=total_parameters,
                total_steps=total_steps,
                examples=examples,
            )

    def freeze_plan_changed(self, plan: FreezePlan) -> None:
        for reporter in self._reporters:
            reporter.freeze_plan_changed(plan)

    def step_finished(self, progress: StepProgress) -> None:
        for reporter in self._reporters:
            reporter.step_finished(progress)

    def epoch_finished(self, *, epoch: int, step: int, metrics: dict[str, float]) -> None:
        for reporter in self._reporters:
            reporter.epoch_finished(epoch=epoch, step=step, metrics=metrics)

    def checkpoint_saved(
        self, *, step: int, epoch: int, metrics: dict[str, float], blob_key: str, kind: CheckpointKind, size_bytes: int
    ) -> None:
        for reporter in self._reporters:
            reporter.checkpoint_saved(
                step=step, epoch=epoch, metrics=metrics, blob_key=blob_key, kind=kind, size_bytes=size_bytes
            )

    def message(self, text: str, data: dict[str, Any] | None = None) -> None:
        for reporter in self._reporters:
            reporter.message(text, data)
