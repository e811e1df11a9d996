"""The training process: trains one job with the engine, reporting to the database; started by the runner.

`python -m worker.training_process --standby [TEMPLATES_JSON]` imports torch and transformers and
loads the base models the worker used most recently (the model pool) while the worker is idle,
then reads its one job from stdin (a worker.run_protocol.RunRequest, as one JSON line) and renames
itself to `… worker.training_process JOB_ID ATTEMPT`. Each job still has a process of its own (its
crash, its memory, its GPU context end with it); only the waiting is done ahead.

It writes how the run ended to the request's report path (a RunReport whose outcome is
Succeeded, Failed or Stopped). Exit status 0, 1 or 4 follows; 3 means the run lost its job
(cancelled or taken over) and reports nothing.

SIGTERM asks for a stop: training checkpoints after the step in progress and exits with 4, so a
paused job or a job handed back at a worker shutdown loses nothing. SIGKILL is the hard stop.
"""

from __future__ import annotations

import hashlib
import json
import logging
import select
import signal
import sys
import time
import traceback
from dataclasses import asdict
from typing import Any

from setproctitle import setproctitle
from sqlalchemy.exc import DBAPIError

from models.errors import JobErrorCode
from models.log_context import LogFormat, configure_json_logging, job_id_var
from models.services.checkpoints import checkpoint_blob_keys_newest_first
from models.services.runs import LeaseLost
from models.settings import Settings
from models.storage.blob_keys import results_blob_key, weights_blob_key
from models.storage.blobs import ArtifactStore
from models.storage.database import is_transient_database_error, session_scope
from models.tasks.names import Task
from worker.database_reporter import DatabaseReporter
from worker.lifeline import die_with_parent
from worker.run_protocol import (
    BestCheckpoint,
    Failed,
    PublishedBlob,
    ResultsFile,
    RunOutcome,
    RunReport,
    RunRequest,
    Stopped,
    Succeeded,
    TemplateRecord,
    read_report,
    write_report,
)
from worker.run_specs import load_run_spec
from worker.training.accelerator import Accelerator
from worker.training.checkpoints import is_complete
from worker.training.metrics_log import MetricsLog
from worker.training.recipe import FineTuningRecipe, RunControl, TrainingStopped, describe_run
from worker.training.reporting import FanOutReporter, TrainingFailure
from worker.training.speedups.data_cache import DerivedDataCache
from worker.training.speedups.model_pool import ModelPool, TemplateKey
from worker.training.speedups.prepared_data import CacheOptions
from worker.training.tasks.registry import engine_task

EXIT_SUCCEEDED, EXIT_FAILED, EXIT_LOST_JOB, EXIT_STOPPED = 0, 1, 3, 4
STANDBY_POLL_SECONDS = 0.5
MAX_MESSAGE_CHARS = 300


def resume_from_latest_checkpoint(
    recipe: FineTuningRecipe, database_url: str, store: ArtifactStore, reporter: DatabaseReporter
) -> None:
    """Continue from the newest complete checkpoint an earlier run of this job left; skip partial ones."""
    with session_scope(database_url) as session:
        keys = checkpoint_blob_keys_newest_first(session, recipe.spec.job_id)
    complete = [store.path(key) for key in keys if is_complete(store.path(key))]
    for folder in complete:
        try:
            step = recipe.resume(folder)
        except (OSError, ValueError, KeyError, RuntimeError) as error:
            # Resume restores everything a checkpoint holds, so an older one overwrites whatever
            # this one half-restored.
            reporter.message(f"Checkpoint {folder.name} is unusable ({type(error).__name__}); trying an older one")
            continue
        reporter.message(f"Resumed from the checkpoint at step {step}", data={"resumed_from_step": step})
        return
    if complete:
        raise TrainingFailure(
            JobErrorCode.internal_error, "none of the job's checkpoints could be loaded; create the job again"
        )


class StopSignal:
    """Set by SIGTERM; the recipe polls it before every step."""

    def __init__(self) -> None:
        self.received = False
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, _signum: int, _frame: object) -> None:
        self.received = True

    def __call__(self) -> bool:
        return self.received


def train_job(
    settings: Settings,
    request: RunRequest,
    stop_signal: StopSignal,
    pool: ModelPool | None = None,
) -> Succeeded:
    """Train the job; the report file gets the run's template as soon as its network is loaded."""
    job_id, attempt = request.job_id, request.attempt
    received = time.monotonic() - max(time.time() - request.handed_over_at, 0.0)
    store = ArtifactStore(settings.artifacts)
    spec = load_run_spec(settings.database_url, job_id, attempt, store.root)
    database = DatabaseReporter(
        settings.database_url, job_id, attempt, store, service_max_stored_bytes=settings.tenant_max_stored_bytes
    )
    metrics_log = MetricsLog()
    database.message("Training process started", data=describe_run(spec))
    control = RunControl(checkpoint_interval_seconds=settings.checkpoint_interval_seconds, stop_requested=stop_signal)
    recipe = FineTuningRecipe(
        spec,
        store,
        FanOutReporter(database, metrics_log),
        control,
        cache_options=CacheOptions(
            cache=DerivedDataCache(settings.worker_cache, settings.cache_max_bytes),
            feature_memory_limit_bytes=settings.feature_memory_limit_bytes,
        ),
        accelerator=Accelerator.pick(compile_network=settings.torch_compile),
        model_pool=pool,
        started=received,
    )
    recipe.setup()
    # Whatever becomes of the run, the worker's next standby preloads this base model.
    write_report(request.report_path, RunReport(template=TemplateRecord(**asdict(recipe.template_key))))
    if recipe.model_from_pool:
        database.message("Base model taken from the worker's memory (loaded before the job arrived)")
    resume_from_latest_checkpoint(recipe, settings.database_url, store, database)
    trained_tokens = recipe.train()
    if recipe.last_progress is not None:
        performance = recipe.last_progress.performance()
        database.message(
            f"Trained at {performance['samples_per_second']:.1f} examples/s "
            f"({performance['tokens_per_second']:.0f} tokens/s); first step "
            f"{performance['seconds_to_first_step']:.2f} s after the job reached this process; peak memory "
            f"{performance['peak_memory_bytes'] / 1024**2:.0f} MiB; frozen layers: {performance['frozen_features']}",
            data=performance,
        )
    manifest = recipe.export(weights_blob_key(job_id, attempt))
    database.message(f"Exported the fine-tuned model ({manifest.size_bytes} bytes, sha256 {manifest.sha256[:12]}…)")
    results = metrics_log.to_csv()
    with store.open_blob_writer(results_blob_key(job_id, attempt)) as handle:
        handle.write(results)
    return Succeeded(
        weights=PublishedBlob(blob_key=manifest.blob_key, size_bytes=manifest.size_bytes, sha256=manifest.sha256),
        results=ResultsFile(
            blob_key=results_blob_key(job_id, attempt),
            size_bytes=len(results),
            sha256=hashlib.sha256(results).hexdigest(),
            record_count=len(metrics_log.rows),
        ),
        trained_tokens=trained_tokens,
        best_checkpoint=(
            BestCheckpoint(epoch=best.epoch, step=best.step, metrics=best.metrics)
            if (best := recipe.best_epoch) is not None
            else None
        ),
    )


def main(argv: list[str]) -> int:
    die_with_parent()
    stop_signal = StopSignal()
    settings = Settings()
    if settings.log_format is LogFormat.json:
        configure_json_logging(level="INFO", process="training")
    else:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s [training] %(message)s")
    pool = ModelPool(settings.model_pool_size)
    preload_templates(pool, json.loads(argv[1]) if len(argv) > 1 else [])
    request = wait_for_job(stop_signal)
    if request is None:
        return EXIT_STOPPED
    setproctitle(" ".join([sys.executable, "-m", "worker.training_process", request.job_id, str(request.attempt)]))
    job_id, attempt = request.job_id, request.attempt
    job_id_var.set(job_id)  # every line of this process is about this one job
    outcome: RunOutcome
    try:
        outcome = train_job(settings, request, stop_signal, pool)
        exit_code = EXIT_SUCCEEDED
    except LeaseLost:
        logging.info("job %s: run %d no longer owns the job; stopping", job_id, attempt)
        return EXIT_LOST_JOB
    except TrainingStopped as stopped:
        outcome, exit_code = Stopped(step=stopped.step), EXIT_STOPPED
    except DBAPIError as error:
        if not is_transient_database_error(error):
            raise
        # The database stayed unreachable past the reporter's retries: stop without a verdict,
        # so the run is handed back (it resumes from its newest checkpoint), not failed.
        logging.exception("job %s: database unreachable; stopping the run", job_id)
        outcome, exit_code = Stopped(step=-1), EXIT_STOPPED
    except TrainingFailure as failure:
        outcome, exit_code = Failed(code=failure.code.value, message=failure.message), EXIT_FAILED
    except MemoryError:
        outcome = Failed(
            code=JobErrorCode.out_of_memory.value,
            message="ran out of memory; lower hyperparameters.batch_size or max_length",
        )
        exit_code = EXIT_FAILED
    except Exception as error:
        traceback.print_exc()
        outcome = Failed(
            code=_classify(error).value,
            message=f"training failed: {type(error).__name__}: {str(error)[:MAX_MESSAGE_CHARS]}",
        )
        exit_code = EXIT_FAILED
    write_report(request.report_path, read_report(request.report_path).model_copy(update={"outcome": outcome}))
    return exit_code


def preload_templates(pool: ModelPool, templates: list[dict[str, Any]]) -> None:
    """Load the base models of the worker's recent jobs; one that fails to load is left to its next job."""
    for fields in templates[: pool.capacity]:
        try:
            key = TemplateKey(**TemplateRecord.model_validate(fields).model_dump())
            pool.add(key, engine_task(Task(key.task)).load_template(key))
        except (OSError, ValueError, KeyError):
            logging.warning("could not preload %s; a job will load it itself", fields.get("location"), exc_info=True)


def wait_for_job(stop_signal: StopSignal) -> RunRequest | None:
    """The job from stdin; None when the runner closes stdin or a SIGTERM asks this standby to go."""
    while not stop_signal():
        readable, _, _ = select.select([sys.stdin], [], [], STANDBY_POLL_SECONDS)
        if readable:
            line = sys.stdin.readline().strip()
            return RunRequest.model_validate_json(line) if line else None
    return None


def _classify(error: Exception) -> JobErrorCode:
    if type(error).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError, without importing CUDA here
        return JobErrorCode.out_of_memory
    return JobErrorCode.internal_error


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
