"""Running one job: claim it, supervise a training process, record how it ended.

The Celery process never imports torch: training happens in a fresh interpreter (`worker.training_process`),
so CUDA is initialised only there, and a crash, an OOM kill or a cancel ends that process alone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from models.errors import JobErrorCode
from models.log_context import job_log_context
from models.services import artifacts, checkpoints, dispatch, files, jobs, quotas, runs
from models.services.artifacts import ArtifactKind
from models.services.quotas import StorageQuotaExceeded
from models.services.runs import JobFailure, LeaseState
from models.settings import Settings
from models.storage import broker as queue
from models.storage.blob_keys import checkpoints_prefix, run_outputs_prefix
from models.storage.blobs import ArtifactStore
from models.storage.database import (
    MAX_RETRY_DELAY_SECONDS,
    TRANSACTION_ATTEMPTS,
    is_transient_database_error,
    run_transaction,
    session_scope,
)
from worker.allocator import with_training_allocator
from worker.lifeline import PARENT_PID_VARIABLE
from worker.run_protocol import Failed, RunReport, RunRequest, Stopped, Succeeded, TemplateRecord, read_report

logger = logging.getLogger(__name__)

# Roughly the longest a heartbeat's run_transaction keeps retrying before it gives up.
RENEWAL_RETRY_SECONDS = TRANSACTION_ATTEMPTS * MAX_RETRY_DELAY_SECONDS


@dataclass(frozen=True)
class RunnerSettings:
    database_url: str
    broker_url: str
    artifact_root: Path
    lease_seconds: int
    heartbeat_seconds: float
    stop_grace_seconds: float
    checkpoint_interval_seconds: float
    cache_dir: Path
    model_pool_size: int
    tenant_max_stored_bytes: int  # the storage quota of a tenant without its own

    @classmethod
    def from_settings(cls, settings: Settings) -> RunnerSettings:
        return cls(
            database_url=settings.database_url,
            broker_url=settings.broker_url,
            artifact_root=settings.artifacts.resolve(),
            lease_seconds=settings.lease_seconds,
            heartbeat_seconds=settings.heartbeat_seconds,
            stop_grace_seconds=settings.stop_grace_seconds,
            checkpoint_interval_seconds=settings.checkpoint_interval_seconds,
            cache_dir=settings.worker_cache.resolve(),
            model_pool_size=settings.model_pool_size,
            tenant_max_stored_bytes=settings.tenant_max_stored_bytes,
        )


class Interruption(StrEnum):
    lost_job = "lost_job"  # cancelled, or taken over by another run: killed at once
    shutdown = "shutdown"  # the worker is stopping: the run checkpoints and the job goes back to the queue
    pause = "pause"  # the user paused the job: the run checkpoints and the job becomes `paused`


@dataclass(frozen=True)
class RunEnd:
    """How the training process ended: its exit code, its report, and why the runner stopped it (if it did)."""

    exit_code: int | None
    report: RunReport
    interruption: Interruption | None


def never() -> bool:
    return False


def run_job(job_id: str, settings: RunnerSettings, stop_requested: Callable[[], bool] = never) -> None:
    """Claim `job_id` and run it to an end state. A job that is not `queued` is left alone.

    `stop_requested` is polled at each heartbeat; once it is true (the worker is shutting down)
    the training process checkpoints and stops, and the job is handed back to the queue.
    """
    with job_log_context(job_id):
        _run_job(job_id, settings, stop_requested)


def _run_job(job_id: str, settings: RunnerSettings, stop_requested: Callable[[], bool]) -> None:
    if stop_requested():
        # A stopping worker takes no new job; the job stays `queued` in the database, and a
        # worker's sweep re-sends it (worker.reconciler).
        logger.info("job %s not started: the worker is shutting down", job_id)
        return
    # host:pid:token — the token makes the claim idempotent under a rerun (models.services.runs.claim_job).
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
    attempt = run_transaction(
        settings.database_url,
        lambda session: runs.claim_job(session, job_id, owner=owner, lease_seconds=settings.lease_seconds),
    )
    if attempt is None:
        logger.info("job %s is not queued; delivery ignored", job_id)
        return
    try:
        end = supervise_training_process(job_id, attempt, settings, stop_requested)
        remember_template(end.report.template, settings.model_pool_size)
        record_run_end(job_id, attempt, end, settings)
    except DBAPIError as error:
        if not is_transient_database_error(error):
            raise
        # The database stayed unreachable past the retries. Failing the job would contradict what
        # happened, and could not be written anyway: the lease lapses and a sweep re-queues the
        # job, which resumes from its newest checkpoint.
        logger.exception("job %s attempt %d: database unreachable; leaving the job to the sweep", job_id, attempt)
    except Exception:
        # The worker's one catch-all: record the failure on the job, keep the traceback in the log.
        logger.exception("run of job %s (attempt %d) failed", job_id, attempt)
        with session_scope(settings.database_url) as session:
            runs.fail_job(
                session,
                job_id,
                attempt,
                JobFailure(JobErrorCode.internal_error, "The worker hit an internal error; the job can be retried."),
            )
    finally:
        if not stop_requested():
            start_standby(settings)


def supervise_training_process(
    job_id: str, attempt: int, settings: RunnerSettings, stop_requested: Callable[[], bool] = never
) -> RunEnd:
    """Start the training process and renew the lease while it runs; stop it when lost, paused or on shutdown."""
    with tempfile.TemporaryDirectory(prefix="graft-run-") as scratch:
        report_path = Path(scratch) / "report.json"
        request = RunRequest(job_id=job_id, attempt=attempt, report_path=report_path, handed_over_at=time.time())
        process = hand_job_to_training_process(request, settings)
        try:
            interruption = _wait_while_owning_job(process, job_id, attempt, settings, stop_requested)
        except BaseException:
            kill_process(process)  # never leave training running unsupervised
            raise
        return RunEnd(exit_code=process.returncode, report=read_report(report_path), interruption=interruption)


# The training process started ahead for the next job (worker.training_process --standby), and the template
# keys (task, base model, labels) of this worker's recent jobs, newest first, which it preloads.
_standby: subprocess.Popen[bytes] | None = None
_recent_templates: list[TemplateRecord] = []


def start_standby(settings: RunnerSettings) -> None:
    """Start the next job's training process now, so it imports and loads models while the worker is idle."""
    global _standby
    if _standby is not None and _standby.poll() is None:
        return
    templates = json.dumps([template.model_dump() for template in _recent_templates])
    command = [sys.executable, "-m", "worker.training_process", "--standby", templates]
    _standby = _start_training_process(command, settings)


def stop_standby() -> None:
    global _standby
    if _standby is not None:
        kill_process(_standby)
        _close_stdin(_standby)
        _standby = None


def _close_stdin(process: subprocess.Popen[bytes]) -> None:
    if process.stdin is not None and not process.stdin.closed:
        with contextlib.suppress(BrokenPipeError):
            process.stdin.close()


def hand_job_to_training_process(request: RunRequest, settings: RunnerSettings) -> subprocess.Popen[bytes]:
    """Give the job to the standby (starting one now if there is none) by writing it to its stdin."""
    global _standby
    process, _standby = _standby, None
    if process is None or process.poll() is not None:
        if process is not None:
            logger.warning("the standby training process had exited (%s); starting another", process.returncode)
            _close_stdin(process)
        process = _start_training_process(
            [sys.executable, "-m", "worker.training_process", "--standby", "[]"], settings
        )
    assert process.stdin is not None
    try:
        process.stdin.write((request.model_dump_json() + "\n").encode())
        process.stdin.close()
    except BrokenPipeError:  # it died just now: its exit is what the supervisor will record
        logger.warning("the training process exited before it took its job")
    return process


def _start_training_process(command: list[str], settings: RunnerSettings) -> subprocess.Popen[bytes]:
    environment = {
        **with_training_allocator(),
        "GRAFT_DATABASE_URL": settings.database_url,
        "GRAFT_ARTIFACT_ROOT": str(settings.artifact_root),
        "GRAFT_CHECKPOINT_INTERVAL_SECONDS": str(settings.checkpoint_interval_seconds),
        "GRAFT_CACHE_DIR": str(settings.cache_dir),
        "GRAFT_MODEL_POOL_SIZE": str(settings.model_pool_size),
        "GRAFT_TENANT_MAX_STORED_BYTES": str(settings.tenant_max_stored_bytes),
        PARENT_PID_VARIABLE: str(os.getpid()),
    }
    # A session of its own: a Ctrl-C meant for the worker's terminal must not kill training
    # behind the runner's back; the runner decides how training stops.
    # No preexec_fn (this process has threads, and code run between fork and exec can
    # deadlock): the training process arranges to die with this one itself (worker.lifeline).
    return subprocess.Popen(command, env=environment, stdin=subprocess.PIPE, start_new_session=True)


def remember_template(template: TemplateRecord | None, capacity: int) -> None:
    if template is None:
        return
    _recent_templates[:] = [template, *(t for t in _recent_templates if t != template)][: max(capacity, 0)]


def _wait_while_owning_job(
    process: subprocess.Popen[bytes],
    job_id: str,
    attempt: int,
    settings: RunnerSettings,
    stop_requested: Callable[[], bool],
) -> Interruption | None:
    """Wait for the process to exit, renewing the lease; None once it has exited on its own.

    A lost job is killed at once (its writes are fenced anyway). A pause or a shutdown sends
    SIGTERM, and the lease is kept alive while the process writes its checkpoint, for up to
    `stop_grace_seconds`; then SIGKILL.
    """
    interruption: Interruption | None = None
    stop_deadline = math.inf
    lease_valid_until = time.monotonic() + settings.lease_seconds
    while True:
        try:
            process.wait(timeout=settings.heartbeat_seconds)
            return interruption
        except subprocess.TimeoutExpired:
            pass
        if interruption is None and stop_requested():
            interruption, stop_deadline = Interruption.shutdown, time.monotonic() + settings.stop_grace_seconds
            process.terminate()
        if time.monotonic() > stop_deadline:
            logger.warning("job %s attempt %d: no checkpoint within the stop grace period; killing", job_id, attempt)
            kill_process(process)
            return interruption
        renewal_started = time.monotonic()
        try:
            lease = run_transaction(
                settings.database_url,
                lambda session: runs.renew_lease(session, job_id, attempt, lease_seconds=settings.lease_seconds),
            )
            lease_valid_until = renewal_started + settings.lease_seconds
        except DBAPIError as error:
            if not is_transient_database_error(error):
                raise
            # The database is unreachable: keep training while the lease we hold is surely still
            # ours (another heartbeat and a full round of retries must fit before it expires).
            # After that another worker may take the job over, so this run stops.
            if time.monotonic() + 2 * settings.heartbeat_seconds + RENEWAL_RETRY_SECONDS < lease_valid_until:
                logger.warning("job %s attempt %d: could not renew the lease; retrying", job_id, attempt)
                continue
            logger.error("job %s attempt %d: lease could not be renewed before it expired; stopping", job_id, attempt)
            lease = LeaseState.lost
        if lease is LeaseState.lost:
            kill_process(process)
            return Interruption.lost_job
        if lease is LeaseState.pause_requested and interruption is None:
            interruption, stop_deadline = Interruption.pause, time.monotonic() + settings.stop_grace_seconds
            process.terminate()


def kill_process(process: subprocess.Popen[bytes]) -> None:
    process.kill()
    process.wait()


def record_run_end(job_id: str, attempt: int, end: RunEnd, settings: RunnerSettings) -> None:
    """Move the job to its end state from what the training process reported."""
    store = ArtifactStore(settings.artifact_root)
    outcome = end.report.outcome
    if end.interruption is Interruption.lost_job:
        logger.info("job %s attempt %d stopped: cancelled or taken over", job_id, attempt)
        store.delete(run_outputs_prefix(job_id, attempt))
        if run_transaction(settings.database_url, lambda session: runs.has_ended(session, job_id)):
            # A checkpoint the run published just before it was stopped has no row for the
            # sweep's janitor to find; the job ended, so all of its resume state can go.
            store.delete(checkpoints_prefix(job_id))
        return
    if isinstance(outcome, Succeeded):
        # Finished before a pause or shutdown took effect: the result stands, if it fits the storage quota.
        try:
            published = publish_run(job_id, attempt, outcome, settings)
        except StorageQuotaExceeded as refusal:
            fail_run(job_id, attempt, JobFailure(JobErrorCode.storage_quota_exceeded, refusal.message), settings)
            return
        if published:
            store.delete(checkpoints_prefix(job_id))  # resume state; the published model replaces it
        else:
            store.delete(run_outputs_prefix(job_id, attempt))  # cancelled at the last moment
        return
    if not isinstance(outcome, Failed) and (
        end.interruption is not None or isinstance(outcome, Stopped) or end.exit_code == -signal.SIGTERM
    ):
        # Stopped on request (or killed after the grace period, or SIGTERMed by something other
        # than this runner): pause it if a pause is (still) requested, else hand it back.
        step = outcome.step if isinstance(outcome, Stopped) else -1

        def stop_run(session: Session) -> str:
            if runs.pause_is_requested(session, job_id):
                return "paused" if runs.pause_run(session, job_id, attempt, step=step) else "lost"
            return "queued" if runs.hand_back_job(session, job_id, attempt, step=step) else "lost"

        stopped_as = run_transaction(settings.database_url, stop_run)
        store.delete(run_outputs_prefix(job_id, attempt))
        if stopped_as == "queued" and end.interruption is not Interruption.shutdown:
            # A pause withdrawn while the run was stopping: this worker is not going away, so
            # the job goes straight back to the broker rather than waiting for a sweep.
            send_again(job_id, settings)
        return
    failure = (
        JobFailure(outcome.code, outcome.message)
        if isinstance(outcome, Failed)
        else JobFailure(JobErrorCode.worker_crashed, describe_exit(end.exit_code))
    )
    fail_run(job_id, attempt, failure, settings)


def fail_run(job_id: str, attempt: int, failure: JobFailure, settings: RunnerSettings) -> None:
    """Fail the job, and delete what the run stored: its unpublished outputs and, once the job has
    failed, its checkpoints (a failed job never resumes; their rows go too, which the sweep would do)."""
    store = ArtifactStore(settings.artifact_root)
    store.delete(run_outputs_prefix(job_id, attempt))
    if run_transaction(settings.database_url, lambda session: runs.fail_job(session, job_id, attempt, failure)):
        store.delete(checkpoints_prefix(job_id))
        run_transaction(settings.database_url, lambda session: checkpoints.forget_checkpoints(session, job_id))


def send_again(job_id: str, settings: RunnerSettings) -> None:
    try:
        queue.enqueue_job_run(settings.broker_url, job_id)
    except queue.QueueUnavailable:
        logger.warning("job %s: broker unreachable; the sweep will send it", job_id)
        return
    run_transaction(settings.database_url, lambda session: dispatch.mark_enqueued(session, [job_id]))


def publish_run(job_id: str, attempt: int, outcome: Succeeded, settings: RunnerSettings) -> bool:
    """In one transaction: the result file, `running → succeeded` and the weights. False if the run lost.

    Raises StorageQuotaExceeded, having committed nothing, when the tenant would then store more
    than its max_stored_bytes (the job's checkpoints no longer count once it succeeded).
    """
    weights, results = outcome.weights, outcome.results

    def publish(session: Session) -> bool:
        if runs.succeeded_with_attempt(session, job_id, attempt):
            return True  # a rerun after a commit whose answer was lost with the connection
        result_file = files.create_result_file(
            session,
            tenant_id=jobs.tenant_of(session, job_id),
            job_id=job_id,
            blob_key=results.blob_key,
            size_bytes=results.size_bytes,
            sha256=results.sha256,
            record_count=results.record_count,
        )
        best = outcome.best_checkpoint
        name = runs.complete_job(
            session,
            job_id,
            attempt,
            trained_tokens=outcome.trained_tokens,
            result_files=[result_file.id],
            best_checkpoint=best.model_dump() if best is not None else None,
        )
        if name is None:
            session.rollback()
            return False
        artifacts.record_artifact(
            session,
            job_id,
            kind=ArtifactKind.weights_archive,
            blob_key=weights.blob_key,
            size_bytes=weights.size_bytes,
            sha256=weights.sha256,
        )
        quotas.ensure_run_output_fits(
            session,
            job_id,
            service_max_stored_bytes=settings.tenant_max_stored_bytes,
            output="the fine-tuned weights",
            size_bytes=weights.size_bytes,
        )
        return True

    return run_transaction(settings.database_url, publish)


def describe_exit(exit_code: int | None) -> str:
    if exit_code is not None and exit_code < 0:
        name = signal.Signals(-exit_code).name
        hint = " (the machine may have run out of memory; try a smaller batch_size)" if name == "SIGKILL" else ""
        return f"The training process was killed by {name}{hint}."
    return f"The training process exited with code {exit_code} without reporting a result."
