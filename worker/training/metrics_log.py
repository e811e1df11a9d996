"""Every step's metrics, kept for the job's result file (OpenAI's `result_files`: a CSV per job)."""

from __future__ import annotations

import csv
import io
from typing import Any

from worker.training.reporting import StepProgress

STEP_COLUMNS = ["step", "epoch", "train_loss", "learning_rate"]


class MetricsLog:
    """A Reporter that remembers one row per step; validation metrics join the epoch's last step.

    The columns are the step's, then each validation metric in the order the task first reported it
    (they differ between tasks), then the strategy's penalty when it has one.
    """

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.columns: list[str] = list(STEP_COLUMNS)

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
        if progress.penalty is not None:
            self.rows[-1]["penalty"] = progress.penalty
            self._add_column("penalty")

    def epoch_finished(self, *, epoch: int, step: int, metrics: dict[str, float]) -> None:
        for row in reversed(self.rows):
            if row["step"] == step:
                row.update(metrics)
                break
        for name in metrics:
            self._add_column(name)

    def _add_column(self, name: str) -> None:
        if name not in self.columns:
            self.columns.append(name)

    def checkpoint_saved(self, **_: Any) -> None: ...

    def freeze_plan_changed(self, plan: Any) -> None: ...

    def message(self, text: str, data: dict[str, Any] | None = None) -> None: ...

    def to_csv(self) -> bytes:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        return buffer.getvalue().encode("utf-8")
