"""Each strategy's measured defaults, and the resolution of a request's "auto" values into numbers."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from models.errors import InvalidRequest
from models.strategies.names import StrategyType
from models.wire.jobs import HyperparametersSpec, StrategySpec


@dataclass(frozen=True)
class StrategyDefaults:
    learning_rate: float
    n_epochs: int
    warmup_ratio: float
    weight_decay: float


# Measured with bench/defaults.py on all-MiniLM-L6-v2, 2,000 training rows of SST-2 and of TREC
# (README, "Defaults, by measurement"). A head on frozen features needs a rate 100× that of full
# fine-tuning: only the freshly initialised classifier and the pooler move, and the pooler of a
# sentence-transformers checkpoint was never trained for classification. Full fine-tuning of this
# small model prefers 1e-4 to the 2e-5–5e-5 usual for BERT-base.
STRATEGY_DEFAULTS: dict[StrategyType, StrategyDefaults] = {
    StrategyType.feature_extraction: StrategyDefaults(
        learning_rate=1e-2, n_epochs=8, warmup_ratio=0.06, weight_decay=0.0
    ),
    StrategyType.partial: StrategyDefaults(learning_rate=1e-4, n_epochs=3, warmup_ratio=0.06, weight_decay=0.01),
    StrategyType.full: StrategyDefaults(learning_rate=1e-4, n_epochs=3, warmup_ratio=0.06, weight_decay=0.01),
    StrategyType.layerwise_lr: StrategyDefaults(learning_rate=2e-4, n_epochs=3, warmup_ratio=0.06, weight_decay=0.01),
}
DEFAULT_LAYER_DECAY = 0.8
DEFAULT_BATCH_SIZE = 32
DEFAULT_MAX_LENGTH = 128


def default_trainable_layers(num_layers: int) -> int:
    """The top third of the body, at least one layer: the layers most specific to the source task."""
    return max(1, math.ceil(num_layers / 3))


@dataclass(frozen=True)
class ResolvedStrategy:
    type: StrategyType
    trainable_layers: int | None
    layer_decay: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, stored: dict[str, Any]) -> ResolvedStrategy:
        """The inverse of `as_dict`, for the value stored on a job row."""
        return cls(
            type=StrategyType(stored["type"]),
            trainable_layers=stored.get("trainable_layers"),
            layer_decay=stored.get("layer_decay"),
        )


@dataclass(frozen=True)
class ResolvedHyperparameters:
    n_epochs: int
    batch_size: int
    learning_rate_multiplier: float
    learning_rate: float
    warmup_ratio: float
    max_length: int
    weight_decay: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_strategy(spec: StrategySpec, num_layers: int) -> ResolvedStrategy:
    """Fill the strategy's knobs; raises InvalidRequest when they don't fit the model's depth."""
    trainable_layers: int | None = None
    layer_decay: float | None = None
    if spec.type is StrategyType.partial:
        requested = spec.trainable_layers
        trainable_layers = default_trainable_layers(num_layers) if requested in (None, "auto") else int(requested)
        if trainable_layers > num_layers:
            raise InvalidRequest(
                f"strategy.trainable_layers is {trainable_layers}, but the model has only {num_layers} layers; "
                f"use at most {num_layers}, or 'auto'",
                param="strategy.trainable_layers",
            )
    if spec.type is StrategyType.layerwise_lr:
        requested_decay = spec.layer_decay
        layer_decay = DEFAULT_LAYER_DECAY if requested_decay in (None, "auto") else float(requested_decay)
    return ResolvedStrategy(type=spec.type, trainable_layers=trainable_layers, layer_decay=layer_decay)


def resolve_hyperparameters(
    spec: HyperparametersSpec, strategy: StrategyType, *, training_records: int, model_max_length: int
) -> ResolvedHyperparameters:
    """Replace every "auto" by the strategy's default; raises InvalidRequest for values the model can't take."""
    defaults = STRATEGY_DEFAULTS[strategy]
    multiplier = 1.0 if spec.learning_rate_multiplier == "auto" else float(spec.learning_rate_multiplier)
    batch_size = min(DEFAULT_BATCH_SIZE, training_records) if spec.batch_size == "auto" else int(spec.batch_size)
    max_length = min(DEFAULT_MAX_LENGTH, model_max_length) if spec.max_length == "auto" else int(spec.max_length)
    if max_length > model_max_length:
        raise InvalidRequest(
            f"hyperparameters.max_length is {max_length}, but the model takes at most {model_max_length} tokens; "
            f"use at most {model_max_length}, or 'auto'",
            param="hyperparameters.max_length",
        )
    return ResolvedHyperparameters(
        n_epochs=defaults.n_epochs if spec.n_epochs == "auto" else int(spec.n_epochs),
        batch_size=batch_size,
        learning_rate_multiplier=multiplier,
        learning_rate=defaults.learning_rate * multiplier,
        warmup_ratio=defaults.warmup_ratio if spec.warmup_ratio == "auto" else float(spec.warmup_ratio),
        max_length=max_length,
        weight_decay=defaults.weight_decay,
    )
