"""The typed messages between the runner and the training process: the job handed over, and how the run went.

The runner writes a RunRequest as one JSON line to the standby training process's stdin. The
training process writes a RunReport to the report file, by rename so it is read whole or not at
all: once when its network is loaded (the template, which the next standby preloads, whatever
becomes of the run) and once more when the run ends (the outcome). Neither side imports the other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RunRequest(Message):
    job_id: str
    attempt: int
    report_path: Path
    handed_over_at: float  # wall-clock time.time(): the job's time to first step counts from here


class TemplateRecord(Message):
    """The model pool's key of the base model the run loaded (worker.training.speedups.model_pool.TemplateKey)."""

    task: str
    location: str
    fingerprint: str
    head: str
    trust_remote_code: bool


class PublishedBlob(Message):
    blob_key: str
    size_bytes: int
    sha256: str


class ResultsFile(PublishedBlob):
    record_count: int


class BestCheckpoint(Message):
    epoch: int
    step: int
    metrics: dict[str, float]


class Succeeded(Message):
    status: Literal["succeeded"] = "succeeded"
    weights: PublishedBlob
    results: ResultsFile
    trained_tokens: int
    best_checkpoint: BestCheckpoint | None = None


class Failed(Message):
    status: Literal["failed"] = "failed"
    code: str
    message: str


class Stopped(Message):
    """Stopped on request after checkpointing at `step`; -1 when it stopped before it could checkpoint."""

    status: Literal["stopped"] = "stopped"
    step: int


RunOutcome = Annotated[Succeeded | Failed | Stopped, Field(discriminator="status")]


class RunReport(Message):
    template: TemplateRecord | None = None
    outcome: RunOutcome | None = None


def write_report(path: Path, report: RunReport) -> None:
    """Write under a temporary name and rename: the runner reads the whole report or none."""
    temporary = path.with_suffix(".partial")
    temporary.write_text(report.model_dump_json(), encoding="utf-8")
    temporary.replace(path)


def read_report(path: Path) -> RunReport:
    """The report as the training process last wrote it; an empty one if it wrote none (killed first)."""
    try:
        return RunReport.model_validate_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return RunReport()
