"""Early stopping: the best epoch by a validation metric so far, and whether patience has run out."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from models.hyperparameters import EarlyStopping


@dataclass(frozen=True)
class BestEpoch:
    epoch: int
    step: int
    metrics: dict[str, float]
    blob_key: str  # the epoch's checkpoint, whose weights are delivered


class BestEpochTracker:
    """Follows one metric across epochs; its state travels in checkpoints, so a resumed run keeps counting."""

    def __init__(self, rule: EarlyStopping) -> None:
        self.rule = rule
        self.best: BestEpoch | None = None
        self.epochs_without_improvement = 0

    def observe(self, *, epoch: int, step: int, metrics: dict[str, float], blob_key: str) -> bool:
        """Record an epoch's validation metrics; True when training should stop (patience exhausted)."""
        value = metrics[self.rule.metric]
        if self.rule.improves(value, self.best.metrics[self.rule.metric] if self.best else None):
            self.best = BestEpoch(epoch=epoch, step=step, metrics=dict(metrics), blob_key=blob_key)
            self.epochs_without_improvement = 0
        else:
            self.epochs_without_improvement += 1
        return self.epochs_without_improvement >= self.rule.patience

    def state(self) -> dict[str, Any]:
        return {
            "best": asdict(self.best) if self.best else None,
            "epochs_without_improvement": self.epochs_without_improvement,
        }

    def restore(self, state: dict[str, Any]) -> None:
        best = state.get("best")
        self.best = BestEpoch(**best) if best else None
        self.epochs_without_improvement = int(state.get("epochs_without_improvement", 0))
