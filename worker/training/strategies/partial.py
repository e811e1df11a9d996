"""partial: the top `trainable_layers` layers train with the head; the embeddings and the layers below stay frozen."""

from __future__ import annotations

from worker.training.strategies.freezing import FreezingStrategy
from worker.training.strategies.layer_groups import deduplicated, one_group
from worker.training.strategies.protocol import NetworkLayout, ParameterGroup


class Partial(FreezingStrategy):
    def __init__(self, trainable_layers: int) -> None:
        super().__init__()
        self.trainable_layers = trainable_layers

    def frozen_units(self, epoch: int, num_layers: int) -> int:
        return 1 + num_layers - min(self.trainable_layers, num_layers)

    def parameter_groups(self, layout: NetworkLayout) -> list[ParameterGroup]:
        anatomy = layout.anatomy
        top_layers = anatomy.layers[len(anatomy.layers) - self.trainable_layers :]
        return deduplicated([one_group([*top_layers, *anatomy.body_top, *anatomy.head])])
