"""A job's run spec, read from its rows: what the engine is given in place of the database."""

from __future__ import annotations

from pathlib import Path

from models.errors import JobErrorCode
from models.hyperparameters import ResolvedHyperparameters
from models.storage.blob_keys import checkpoint_key_pattern
from models.storage.database import session_scope
from models.storage.tables import BaseModel, File, Job
from models.strategies.specs import parse_strategy
from models.tasks.names import Task
from models.tasks.text_classification import DataFormat
from worker.training.reporting import TrainingFailure
from worker.training.run_spec import DataFile, RunSpec


def load_run_spec(database_url: str, job_id: str, attempt: int, artifact_root: Path) -> RunSpec:
    """The spec of run `attempt` of `job_id`; TrainingFailure when its base model or a file is gone."""
    with session_scope(database_url) as session:
        job = session.get(Job, job_id)
        if job is None:
            raise LookupError(f"job {job_id} does not exist")
        base_model = session.get(BaseModel, job.base_model_id)
        training = session.get(File, job.training_file_id)
        validation = session.get(File, job.validation_file_id) if job.validation_file_id else None
        if base_model is None or training is None:
            raise TrainingFailure(JobErrorCode.invalid_training_data, "the job's base model or file is gone")

        def data_file(row: File) -> DataFile:
            return DataFile(artifact_root / row.blob_key, DataFormat(row.data_format or "jsonl"), row.sha256)

        return RunSpec(
            job_id=job.id,
            task=Task(job.task),
            seed=job.seed,
            base_model_location=base_model.location,
            trust_remote_code=base_model.trust_remote_code,
            strategy=parse_strategy(job.strategy),
            hyperparameters=ResolvedHyperparameters.from_dict(job.hyperparameters),
            training_file=data_file(training),
            validation_file=data_file(validation) if validation else None,
            checkpoint_keys=checkpoint_key_pattern(job.id, attempt),
            task_settings=dict(job.task_settings),
            attempt=attempt,
        )
