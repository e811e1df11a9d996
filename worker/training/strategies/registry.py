"""Which engine strategy each resolved strategy spec builds: one line per strategy."""

from __future__ import annotations

from collections.abc import Callable

from models.hyperparameters import ResolvedStrategy
from models.strategies.names import StrategyType
from worker.training.strategies.feature_extraction import FeatureExtraction
from worker.training.strategies.full import Full
from worker.training.strategies.layerwise_lr import LayerwiseLearningRates
from worker.training.strategies.partial import Partial
from worker.training.strategies.protocol import Strategy

STRATEGIES: dict[StrategyType, Callable[[ResolvedStrategy], Strategy]] = {
    StrategyType.feature_extraction: lambda spec: FeatureExtraction(),
    StrategyType.partial: lambda spec: Partial(spec.trainable_layers or 1),
    StrategyType.full: lambda spec: Full(),
    StrategyType.layerwise_lr: lambda spec: LayerwiseLearningRates(spec.layer_decay or 1.0),
}


def build_strategy(spec: ResolvedStrategy) -> Strategy:
    """The strategy of a run."""
    return STRATEGIES[spec.type](spec)
