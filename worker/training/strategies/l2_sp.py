"""L2-SP (Li et al., 2018): a pull of the pretrained weights back toward their starting point, against forgetting.

The penalty is α/2 · Σ ‖θ − θ₀‖² over the pretrained parameters that train at the moment; the
new head has no starting point worth keeping, so it is left out.
"""

from __future__ import annotations

import torch
from torch import nn

from worker.training.strategies.protocol import NetworkLayout, ParameterGroup, Strategy


class L2SP:
    """Any strategy, plus the L2-SP penalty; the rest is the inner strategy's."""

    def __init__(self, inner: Strategy, alpha: float) -> None:
        self.inner = inner
        self.alpha = alpha
        self._anchors: list[tuple[nn.Parameter, torch.Tensor]] = []

    def apply(self, network: nn.Module, layout: NetworkLayout) -> list[ParameterGroup]:
        groups = self.inner.apply(network, layout)
        may_train = {id(parameter) for group in groups for parameter in group.parameters}
        self._anchors = [
            (parameter, parameter.detach().clone())
            for name, parameter in network.named_parameters()
            if id(parameter) in may_train and name not in layout.new_parameter_names
        ]
        return groups

    def on_epoch_start(self, epoch: int) -> None:
        self.inner.on_epoch_start(epoch)

    def frozen_layers(self) -> int:
        return self.inner.frozen_layers()

    def frozen_modules(self) -> list[nn.Module]:
        return self.inner.frozen_modules()

    def penalty(self, network: nn.Module) -> torch.Tensor | None:
        inner = self.inner.penalty(network)
        terms = [
            (parameter.float() - anchor.float()).pow(2).sum()
            for parameter, anchor in self._anchors
            if parameter.requires_grad
        ]
        if not terms:
            return inner
        own = 0.5 * self.alpha * torch.stack(terms).sum()
        return own if inner is None else own + inner

    def export(self, network: nn.Module) -> nn.Module:
        return self.inner.export(network)
