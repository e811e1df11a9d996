"""A job's training knobs once every "auto" is resolved: what training uses, as stored on the job."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

DEFAULT_BATCH_SIZE = 32
DEFAULT_MAX_LENGTH = 128


@dataclass(frozen=True)
class EarlyStopping:
    """Stop once `metric` has not improved by more than `min_delta` for `patience` epochs; deliver the best epoch."""

    metric: str  # a validation metric as checkpoints name it, e.g. valid_macro_f1
    patience: int
    min_delta: float

    @property
    def lower_is_better(self) -> bool:
        return self.metric.endswith("loss")

    def improves(self, value: float, best: float | None) -> bool:
        """Whether `value` beats `best` by more than min_delta (any value beats no best)."""
        if best is None:
            return True
        return value < best - self.min_delta if self.lower_is_better else value > best + self.min_delta


@dataclass(frozen=True)
class ResolvedHyperparameters:
    n_epochs: int
    batch_size: int
    learning_rate_multiplier: float
    learning_rate: float
    warmup_ratio: float
    max_length: int
    weight_decay: float
    early_stopping: EarlyStopping | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, stored: dict[str, Any]) -> ResolvedHyperparameters:
        """The inverse of `as_dict`, for the value stored on a job row."""
        early_stopping = stored.get("early_stopping")
        return cls(**{**stored, "early_stopping": EarlyStopping(**early_stopping) if early_stopping else None})
