"""What one training run needs to know, built from the job's row; no settings, no sessions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from models.hyperparameters import ResolvedHyperparameters, ResolvedStrategy
from models.storage.tables import BaseModel, File, Job
from models.tasks.names import Task
from models.tasks.text_classification import DataFormat


@dataclass(frozen=True)
class DataFile:
    path: Path
    data_format: DataFormat
    sha256: str


@dataclass(frozen=True)
class TrainingConfig:
    job_id: str
    task: Task
    seed: int
    base_model_location: str
    num_layers: int
    trust_remote_code: bool
    label_names: list[str | int]
    strategy: ResolvedStrategy
    hyperparameters: ResolvedHyperparameters
    training_file: DataFile
    validation_file: DataFile | None
    attempt: int = 1  # the run this configuration was loaded for

    @classmethod
    def from_rows(
        cls, job: Job, base_model: BaseModel, training: File, validation: File | None, artifact_root: Path
    ) -> TrainingConfig:
        def data_file(row: File) -> DataFile:
            return DataFile(artifact_root / row.blob_key, DataFormat(row.data_format or "jsonl"), row.sha256)

        return cls(
            job_id=job.id,
            task=Task(job.task),
            seed=job.seed,
            base_model_location=base_model.location,
            num_layers=base_model.num_layers,
            trust_remote_code=base_model.trust_remote_code,
            label_names=list(job.label_names),
            strategy=ResolvedStrategy.from_dict(job.strategy),
            hyperparameters=ResolvedHyperparameters(**job.hyperparameters),
            training_file=data_file(training),
            validation_file=data_file(validation) if validation else None,
            attempt=job.attempt,
        )
