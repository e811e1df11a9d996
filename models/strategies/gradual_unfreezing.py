"""gradual_unfreezing, torch-free half (ULMFiT): one more layer per epoch from the top, at decayed rates."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, StrictFloat, field_validator

from models.strategies.common import Auto, StrategyDefaults, StrategySpecBase, check_layer_decay
from models.strategies.names import StrategyType

# Measured with bench.defaults (README, "Defaults, by measurement"): the head trains alone in the first
# epoch, so it needs a head's rate rather than full fine-tuning's, and halving the rate per layer keeps
# the layers below near full fine-tuning's. Four epochs train the head, then the top three layers.
DEFAULT_LAYER_DECAY = 0.5


class GradualUnfreezingSpec(StrategySpecBase):
    defaults: ClassVar[StrategyDefaults] = StrategyDefaults(
        learning_rate=1e-3, n_epochs=4, warmup_ratio=0.06, weight_decay=0.01
    )

    type: Literal[StrategyType.gradual_unfreezing] = StrategyType.gradual_unfreezing
    # None (one rate throughout) is what jobs created before the default was measured hold; 1 says the same.
    layer_decay: StrictFloat | Auto | None = Field(
        default="auto",
        description="Each layer learns at the rate of the one above times this (ULMFiT's discriminative "
        "fine-tuning); > 0 and ≤ 1, 1 for one rate throughout.",
    )

    _decay_in_range = field_validator("layer_decay")(check_layer_decay)

    def _resolved_knobs(self, num_layers: int) -> GradualUnfreezingSpec:
        return self.model_copy(
            update={"layer_decay": DEFAULT_LAYER_DECAY if self.layer_decay == "auto" else self.layer_decay}
        )
