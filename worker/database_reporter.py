"""Reporting a run to the database: events, progress, metrics and checkpoints, fenced by attempt.

Every write is one transaction, rerun after a transient database error (models.storage.database.run_transaction).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from models.checkpoint_kinds import CheckpointKind
from models.errors import JobErrorCode
from models.services import checkpoints, events, quotas, runs
from models.services.checkpoints import describe_metrics
from models.services.events import EventType
from models.services.quotas import StorageQuotaExceeded
from models.storage.blobs import ArtifactStore
from models.storage.database import run_transaction
from worker.training.freeze_plan import FreezePlan
from worker.training.reporting import StepProgress, TrainingFailure

MIN_SECONDS_BETWEEN_STEP_EVENTS = 1.0
# A run rides out about half a minute of database outage (a server restart), well inside its
# lease, before it gives up and stops to be handed back.
REPORT_WRITE_ATTEMPTS = 10
REPORT_WRITE_MAX_DELAY_SECONDS = 5.0
T = TypeVar("T")


class Throughput:
    """Steps per second of this run, from its first step on, and when the run will end at that pace.

    Measured over the whole run so far, so the pace includes each epoch's evaluation and checkpoint
    once the first epoch has ended.
    """

    def __init__(self) -> None:
        self._first: tuple[int, float] | None = None  # (step, monotonic time) of the run's first step

    def note(self, step: int) -> None:
        if self._first is None:
            self._first = (step, time.monotonic())

    def estimated_finish(self, step: int, total_steps: int) -> int | None:
        """Unix seconds at which the last step should end; None until two steps have been timed."""
        if self._first is None or step <= self._first[0]:
            return None
        first_step, first_at = self._first
        seconds_per_step = (time.monotonic() - first_at) / (step - first_step)
        return round(time.time() + seconds_per_step * (total_steps - step))


class DatabaseReporter:
    """A Reporter that writes through `models`; every write raises LeaseLost once the run lost the job.

    Step metrics are written at most once a second (the loss is averaged over the steps in
    between), and always for the first and the last step. A checkpoint is recorded only if it fits
    the tenant's storage quota (`service_max_stored_bytes` where the tenant has none of its own).
    """

    def __init__(
        self, database_url: str, job_id: str, attempt: int, store: ArtifactStore, *, service_max_stored_bytes: int
    ) -> None:
        self._database_url = database_url
        self._store = store
        self._service_max_stored_bytes = service_max_stored_bytes
        self._job_id = job_id
        self._attempt = attempt
        self._last_write = 0.0
        self._loss_sum = 0.0
        self._loss_steps = 0
        self._throughput = Throughput()

    def run_started(self, *, trainable_parameters: int, total_parameters: int, total_steps: int, examples: int) -> None:
        share = 100.0 * trainable_parameters / max(total_parameters, 1)

        def write(session: Session) -> None:
            runs.record_progress(
                session,
                self._job_id,
                self._attempt,
                trainable_parameters=trainable_parameters,
                total_parameters=total_parameters,
                progress={"step": 0, "total_steps": total_steps, "epoch": 0, "percent": 0.0},
            )
            events.append_event(
                session,
                self._job_id,
                f"Training on {examples} examples for {total_steps} steps; "
                f"{trainable_parameters:,} of {total_parameters:,} parameters trainable ({share:.1f}%)",
                data={
                    "trainable_parameters": trainable_parameters,
                    "total_parameters": total_parameters,
                    "total_steps": total_steps,
                    "examples": examples,
                },
            )

        self._write(write)

    def freeze_plan_changed(self, plan: FreezePlan) -> None:
        def write(session: Session) -> None:
            runs.record_progress(session, self._job_id, self._attempt, freeze_plan=plan.as_dict())
            events.append_event(
                session,
                self._job_id,
                f"Epoch {plan.epoch}: {plan.summary()}",
                data={"freeze_plan": plan.as_dict()},
            )

        self._write(write)

    def step_finished(self, progress: StepProgress) -> None:
        self._loss_sum += progress.train_loss
        self._loss_steps += 1
        self._throughput.note(progress.step)
        now = time.perf_counter()
        is_edge = progress.step in (1, progress.total_steps)
        if not is_edge and now - self._last_write < MIN_SECONDS_BETWEEN_STEP_EVENTS:
            return
        data: dict[str, Any] = progress.as_dict()
        data["train_loss"] = self._loss_sum / self._loss_steps
        estimated_finish = self._throughput.estimated_finish(progress.step, progress.total_steps)
        if estimated_finish is not None:
            data["estimated_finish"] = estimated_finish
        self._loss_sum, self._loss_steps, self._last_write = 0.0, 0, now
        percent = round(100.0 * progress.step / max(progress.total_steps, 1), 2)

        def write(session: Session) -> None:
            runs.record_progress(
                session,
                self._job_id,
                self._attempt,
                trained_tokens=progress.trained_tokens,
                performance=progress.performance(),
                progress={
                    "step": progress.step,
                    "total_steps": progress.total_steps,
                    "epoch": progress.epoch,
                    "percent": percent,
                    "estimated_finish": estimated_finish,
                },
            )
            events.append_event(
                session,
                self._job_id,
                f"Step {progress.step}/{progress.total_steps}: training loss={data['train_loss']:.4f}",
                event_type=EventType.metrics,
                data=data,
            )

        self._write(write)

    def epoch_finished(self, *, epoch: int, step: int, metrics: dict[str, float]) -> None:
        summary = describe_metrics(metrics) or "no validation file"

        def write(session: Session) -> None:
            runs.ensure_run_owns_job(session, self._job_id, self._attempt)
            events.append_event(
                session,
                self._job_id,
                f"Epoch {epoch} finished at step {step}: {summary}",
                event_type=EventType.metrics,
                data={"epoch": epoch, "step": step, **metrics},
            )

        self._write(write)

    def checkpoint_saved(
        self, *, step: int, epoch: int, metrics: dict[str, float], blob_key: str, kind: CheckpointKind, size_bytes: int
    ) -> None:
        """Record the checkpoint and delete the ones it supersedes; one past the storage quota is deleted
        instead, and the run fails (TrainingFailure, storage_quota_exceeded)."""

        def write(session: Session) -> list[str]:
            superseded = checkpoints.record_checkpoint(
                session,
                self._job_id,
                self._attempt,
                step=step,
                epoch=epoch,
                metrics=metrics,
                blob_key=blob_key,
                kind=kind,
                size_bytes=size_bytes,
            )
            quotas.ensure_run_output_fits(
                session,
                self._job_id,
                service_max_stored_bytes=self._service_max_stored_bytes,
                output=f"the checkpoint at step {step}",
                size_bytes=size_bytes,
            )
            return superseded

        try:
            superseded = self._write(write)
        except StorageQuotaExceeded as refusal:
            self._store.delete(blob_key)
            raise TrainingFailure(JobErrorCode.storage_quota_exceeded, refusal.message) from None
        for key in superseded:
            self._store.delete(key)

    def _write(self, work: Callable[[Session], T]) -> T:
        return run_transaction(
            self._database_url, work, attempts=REPORT_WRITE_ATTEMPTS, max_delay=REPORT_WRITE_MAX_DELAY_SECONDS
        )

    def message(self, text: str, data: dict[str, Any] | None = None) -> None:
        def write(session: Session) -> None:
            runs.ensure_run_owns_job(session, self._job_id, self._attempt)
            events.append_event(session, self._job_id, text, data=data)

        self._write(write)
