"""Every strategy's spec in one union, told apart by `type`: what a job's `strategy` field accepts and stores."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Discriminator, Tag, TypeAdapter

from models.strategies.common import StrategySpecBase
from models.strategies.feature_extraction import FeatureExtractionSpec
from models.strategies.full import FullSpec
from models.strategies.gradual_unfreezing import GradualUnfreezingSpec
from models.strategies.layerwise_lr import LayerwiseLearningRatesSpec
from models.strategies.names import StrategyType
from models.strategies.partial import PartialSpec

SPEC_CLASSES: dict[StrategyType, type[StrategySpecBase]] = {
    StrategyType.feature_extraction: FeatureExtractionSpec,
    StrategyType.partial: PartialSpec,
    StrategyType.full: FullSpec,
    StrategyType.layerwise_lr: LayerwiseLearningRatesSpec,
    StrategyType.gradual_unfreezing: GradualUnfreezingSpec,
}
DEFAULT_STRATEGY = StrategyType.full


def _type_name_is_shorthand(value: Any) -> Any:
    """A bare type name reads as the object of that type alone: `"partial"` is `{"type": "partial"}`."""
    if isinstance(value, str):
        return {"type": value}
    if not isinstance(value, (dict, StrategySpecBase)):
        raise ValueError('must be a strategy type such as "partial", or an object such as {"type": "partial"}')
    return value


def _strategy_type(value: Any) -> str | None:
    """The union member to validate against; an object without `type` is the default strategy."""
    if isinstance(value, dict):
        chosen = value.get("type", DEFAULT_STRATEGY.value)
        return chosen if isinstance(chosen, str) else None
    return getattr(value, "type", None)


AnyStrategySpec = FeatureExtractionSpec | PartialSpec | FullSpec | LayerwiseLearningRatesSpec | GradualUnfreezingSpec
StrategySpec = Annotated[
    Annotated[FeatureExtractionSpec, Tag(StrategyType.feature_extraction.value)]
    | Annotated[PartialSpec, Tag(StrategyType.partial.value)]
    | Annotated[FullSpec, Tag(StrategyType.full.value)]
    | Annotated[LayerwiseLearningRatesSpec, Tag(StrategyType.layerwise_lr.value)]
    | Annotated[GradualUnfreezingSpec, Tag(StrategyType.gradual_unfreezing.value)],
    Discriminator(_strategy_type),
    BeforeValidator(_type_name_is_shorthand),
]
_ADAPTER: TypeAdapter[AnyStrategySpec] = TypeAdapter(StrategySpec)


def parse_strategy(stored: dict[str, Any]) -> AnyStrategySpec:
    """A strategy spec from JSON: a request's (shorthand included) or the resolved one stored on a job."""
    return _ADAPTER.validate_python(stored)


def resolved_strategy(kind: StrategyType, num_layers: int, **knobs: Any) -> AnyStrategySpec:
    """The spec of strategy `kind` with `knobs`, resolved for a model of `num_layers` layers."""
    return parse_strategy(SPEC_CLASSES[kind](**knobs).resolved(num_layers).model_dump(mode="json"))
