"""layerwise_lr, torch-free half: the per-layer decay of the learning rate toward the input."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, StrictFloat, field_validator

from models.strategies.common import Auto, StrategyDefaults, StrategySpecBase, check_layer_decay
from models.strategies.names import StrategyType

DEFAULT_LAYER_DECAY = 0.8


class LayerwiseLearningRatesSpec(StrategySpecBase):
    defaults: ClassVar[StrategyDefaults] = StrategyDefaults(
        learning_rate=2e-4, n_epochs=3, warmup_ratio=0.06, weight_decay=0.01
    )

    type: Literal[StrategyType.layerwise_lr] = StrategyType.layerwise_lr
    layer_decay: StrictFloat | Auto = Field(
        default="auto", description="Learning-rate factor per layer toward the input; > 0 and ≤ 1."
    )

    _decay_in_range = field_validator("layer_decay")(check_layer_decay)

    def _resolved_knobs(self, num_layers: int) -> LayerwiseLearningRatesSpec:
        return self.model_copy(
            update={"layer_decay": DEFAULT_LAYER_DECAY if self.layer_decay == "auto" else self.layer_decay}
        )
