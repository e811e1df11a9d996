"""Which engine strategy each resolved strategy spec builds: one line per strategy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from models.strategies.common import StrategySpecBase
from models.strategies.names import StrategyType
from worker.training.strategies.feature_extraction import FeatureExtraction
from worker.training.strategies.full import Full
from worker.training.strategies.gradual_unfreezing import GradualUnfreezing
from worker.training.strategies.l2_sp import L2SP
from worker.training.strategies.layerwise_lr import LayerwiseLearningRates
from worker.training.strategies.partial import Partial
from worker.training.strategies.protocol import Strategy

# Each builder takes its own spec class (models/strategies/<name>.py), resolved: no "auto" left.
STRATEGIES: dict[StrategyType, Callable[[Any], Strategy]] = {
    StrategyType.feature_extraction: lambda spec: FeatureExtraction(),
    StrategyType.partial: lambda spec: Partial(spec.trainable_layers),
    StrategyType.full: lambda spec: Full(),
    StrategyType.layerwise_lr: lambda spec: LayerwiseLearningRates(spec.layer_decay),
    StrategyType.gradual_unfreezing: lambda spec: GradualUnfreezing(spec.layer_decay),
}


def build_strategy(spec: StrategySpecBase) -> Strategy:
    """The strategy of a run, with its regulariser when it has one."""
    strategy = STRATEGIES[StrategyType(spec.type_name())](spec)
    if spec.regularization is not None:
        alpha = spec.regularization.alpha
        if not isinstance(alpha, float):
            raise ValueError("the strategy's regularization.alpha is not resolved")
        strategy = L2SP(strategy, alpha)
    return strategy
