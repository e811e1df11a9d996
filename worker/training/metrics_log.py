"""Every step's metrics, kept for the job's result file (OpenAI's `result_files`: a CSV per job)."""

from __future__ import annotations

import csv
import io
from typing import Any

from worker.training.reporting import StepProgress

COLUMNS = ["step", "epoch", "train_loss", "learning_rate", "valid_loss", "valid_accuracy", "valid_macro_f1"]


class MetricsLog:
    """A TrainingReporter that remembers one row per step; validation metrics join the epoch's last step."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def run_started(self, **_: int) -> None: ...

    def step_finished(self, progress: StepProgress) -> None:
        self.rows.append(
            {
                "step": progress.step,
                "epoch": progress.epoch,
                "train_loss": progress.train_loss,
                "learning_rate": progress.learning_rate,
            }
        )

    def epoch_finished(self, *, epoch: int, step: int, metrics: dict[str, float]) -> None:
        for row in reversed(self.rows):
            if row["step"] == step:
                row.update({name: value for name, value in metrics.items() if name in COLUMNS})
                break

    def checkpoint_saved(self, **_: Any) -> None: ...

    def message(self, text: str, data: dict[str, Any] | None = None) -> None: ...

    def to_csv(self) -> bytes:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        return buffer.getvalue().encode("utf-8")
