"""gradual_unfreezing (ULMFiT): the head alone first, then one more layer per epoch from the top down.

Epoch 1 trains the head; epoch 2 adds the top layer (with a final norm); epoch e adds layer
L − e + 2; the embeddings join last, in epoch L + 2. With `layer_decay`, each layer also learns at
the rate of the one above times the decay (ULMFiT's discriminative fine-tuning).
"""

from __future__ import annotations

from worker.training.strategies.freezing import FreezingStrategy
from worker.training.strategies.layer_groups import decayed_groups
from worker.training.strategies.protocol import NetworkLayout, ParameterGroup


class GradualUnfreezing(FreezingStrategy):
    def __init__(self, layer_decay: float | None) -> None:
        super().__init__()
        self.layer_decay = layer_decay

    def frozen_units(self, epoch: int, num_layers: int) -> int:
        return max(0, num_layers + 1 - (epoch - 1))

    def parameter_groups(self, layout: NetworkLayout) -> list[ParameterGroup]:
        return decayed_groups(layout.anatomy, 1.0 if self.layer_decay is None else self.layer_decay)
