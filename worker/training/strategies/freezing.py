"""The common shape of the layer-freezing strategies: freeze the lowest units of the body, train the rest."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn

from worker.training.strategies.protocol import NetworkLayout, ParameterGroup


class FreezingStrategy(ABC):
    """The body as units from the bottom up: the embeddings, each layer, and the body top (a final norm,
    which trains or freezes with the top layer). `frozen_units(epoch)` says how many of the lowest are
    frozen; the head always trains. Subclasses choose that number and the learning-rate groups.
    """

    def __init__(self) -> None:
        self._units: list[list[nn.Module]] = []
        self._frozen: list[nn.Module] = []
        self._frozen_units = 0

    @abstractmethod
    def frozen_units(self, epoch: int, num_layers: int) -> int:
        """How many units, from the embeddings up, are frozen in epoch `epoch`: 0 to num_layers + 1."""

    @abstractmethod
    def parameter_groups(self, layout: NetworkLayout) -> list[ParameterGroup]:
        """Every parameter the strategy ever trains, by learning-rate scale."""

    def apply(self, network: nn.Module, layout: NetworkLayout) -> list[ParameterGroup]:
        anatomy = layout.anatomy
        layers = list(anatomy.layers)
        top_unit = [*layers[-1:], *anatomy.body_top]
        self._units = [list(anatomy.embeddings), *[[layer] for layer in layers[:-1]], top_unit]
        self._num_layers = len(layers)
        network.requires_grad_(True)
        groups = self.parameter_groups(layout)
        trained = {id(parameter) for group in groups for parameter in group.parameters}
        for parameter in network.parameters():
            if id(parameter) not in trained:
                parameter.requires_grad_(False)
        self._never_trained = [p for p in network.parameters() if id(p) not in trained]
        self.on_epoch_start(1)
        return groups

    def on_epoch_start(self, epoch: int) -> None:
        count = self.frozen_units(epoch, self._num_layers)
        if not 0 <= count <= len(self._units):
            raise ValueError(f"cannot freeze {count} of {len(self._units)} units")
        self._frozen_units = count
        self._frozen = [module for unit in self._units[:count] for module in unit]
        for index, unit in enumerate(self._units):
            for module in unit:
                module.requires_grad_(index >= count)
        for parameter in self._never_trained:
            parameter.requires_grad_(False)

    def frozen_layers(self) -> int:
        if self._frozen_units == 0:
            return 0
        return min(self._frozen_units - 1, self._num_layers)

    def frozen_modules(self) -> list[nn.Module]:
        return list(self._frozen)

    def penalty(self, network: nn.Module) -> torch.Tensor | None:
        return None

    def export(self, network: nn.Module) -> nn.Module:
        return network
