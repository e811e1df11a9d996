"""full: every parameter trains, at one learning rate."""

from __future__ import annotations

from worker.training.strategies.freezing import FreezingStrategy
from worker.training.strategies.layer_groups import deduplicated, one_group
from worker.training.strategies.protocol import NetworkLayout, ParameterGroup


class Full(FreezingStrategy):
    def frozen_units(self, epoch: int, num_layers: int) -> int:
        return 0

    def parameter_groups(self, layout: NetworkLayout) -> list[ParameterGroup]:
        anatomy = layout.anatomy
        return deduplicated([one_group([*anatomy.head, *anatomy.body_top, *anatomy.layers, *anatomy.embeddings])])
