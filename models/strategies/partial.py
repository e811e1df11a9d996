"""partial, torch-free half: how many of the top layers train, checked against the model's depth."""

from __future__ import annotations

import math
from typing import ClassVar, Literal

from pydantic import Field, StrictInt, field_validator

from models.errors import InvalidRequest
from models.strategies.common import Auto, BodyParameters, StrategyDefaults, StrategySpecBase
from models.strategies.names import StrategyType


def default_trainable_layers(num_layers: int) -> int:
    """The top third of the body, at least one layer: the layers most specific to the source task."""
    return max(1, math.ceil(num_layers / 3))


class PartialSpec(StrategySpecBase):
    defaults: ClassVar[StrategyDefaults] = StrategyDefaults(
        learning_rate=1e-4, n_epochs=3, warmup_ratio=0.06, weight_decay=0.01
    )

    type: Literal[StrategyType.partial] = StrategyType.partial
    trainable_layers: StrictInt | Auto = Field(default="auto", description="How many of the top layers train.")

    @field_validator("trainable_layers")
    @classmethod
    def _at_least_one(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("must be at least 1 (to freeze every layer, use strategy type 'feature_extraction')")
        return value

    def _resolved_knobs(self, num_layers: int) -> PartialSpec:
        layers = default_trainable_layers(num_layers) if self.trainable_layers == "auto" else self.trainable_layers
        if layers > num_layers:
            raise InvalidRequest(
                f"strategy.trainable_layers is {layers}, but the model has only {num_layers} layers; "
                f"use at most {num_layers}, or 'auto'",
                param="strategy.trainable_layers",
            )
        return self.model_copy(update={"trainable_layers": layers})

    def most_trained_parameters(self, body: BodyParameters) -> int:
        layers = body.num_layers if self.trainable_layers == "auto" else self.trainable_layers
        return body.layers * layers // max(body.num_layers, 1) + body.top
