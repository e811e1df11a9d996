"""gradual_unfreezing, torch-free half (ULMFiT): one more layer per epoch from the top, optionally decayed rates."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, StrictFloat, field_validator

from models.strategies.common import StrategyDefaults, StrategySpecBase, check_layer_decay
from models.strategies.names import StrategyType


class GradualUnfreezingSpec(StrategySpecBase):
    # Not measured yet (bench.defaults covers the other strategies): full fine-tuning's rate, and 4 epochs,
    # which train the head alone and then the top three layers one by one.
    defaults: ClassVar[StrategyDefaults] = StrategyDefaults(
        learning_rate=1e-4, n_epochs=4, warmup_ratio=0.06, weight_decay=0.01
    )

    type: Literal[StrategyType.gradual_unfreezing] = StrategyType.gradual_unfreezing
    layer_decay: StrictFloat | None = Field(
        default=None,
        description="Optional: each layer learns at the rate of the one above times this (ULMFiT's "
        "discriminative fine-tuning); > 0 and ≤ 1. Leave it out for one rate throughout.",
    )

    _decay_in_range = field_validator("layer_decay")(check_layer_decay)
