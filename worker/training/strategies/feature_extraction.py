"""feature_extraction: the pretrained body stays frozen; only the head trains."""

from __future__ import annotations

from worker.training.strategies.freezing import FreezingStrategy
from worker.training.strategies.layer_groups import deduplicated, one_group
from worker.training.strategies.protocol import NetworkLayout, ParameterGroup


class FeatureExtraction(FreezingStrategy):
    def frozen_units(self, epoch: int, num_layers: int) -> int:
        return num_layers + 1

    def parameter_groups(self, layout: NetworkLayout) -> list[ParameterGroup]:
        return deduplicated([one_group(layout.anatomy.head)])
