"""layerwise_lr: everything trains, each layer at the rate of the one above times `layer_decay`."""

from __future__ import annotations

from worker.training.strategies.freezing import FreezingStrategy
from worker.training.strategies.layer_groups import decayed_groups
from worker.training.strategies.protocol import NetworkLayout, ParameterGroup


class LayerwiseLearningRates(FreezingStrategy):
    def __init__(self, layer_decay: float) -> None:
        super().__init__()
        self.layer_decay = layer_decay

    def frozen_units(self, epoch: int, num_layers: int) -> int:
        return 0

    def parameter_groups(self, layout: NetworkLayout) -> list[ParameterGroup]:
        return decayed_groups(layout.anatomy, self.layer_decay)
