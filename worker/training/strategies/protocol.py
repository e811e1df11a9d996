"""What a transfer strategy decides: what trains, at which rate, when that changes, and any penalty."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from worker.training.anatomy import Anatomy


@dataclass
class ParameterGroup:
    """Parameters that share a learning rate: the strategy's rate times `learning_rate_scale`."""

    parameters: list[nn.Parameter]
    learning_rate_scale: float


@dataclass(frozen=True)
class NetworkLayout:
    """What a strategy knows of the task network: its anatomy, and which parameters are new (the head)."""

    anatomy: Anatomy
    new_parameter_names: frozenset[str]


class Strategy(Protocol):
    def apply(self, network: nn.Module, layout: NetworkLayout) -> list[ParameterGroup]:
        """Set what trains in the first epoch; return every parameter the run may ever train, grouped by rate.

        The optimiser is built once over these groups; a parameter frozen for now simply gets no
        gradient (AdamW then leaves it and its state alone), so a schedule can unfreeze it later.
        """
        ...

    def on_epoch_start(self, epoch: int) -> None:
        """Set what trains in epoch `epoch` (1-based); called before every epoch, a resumed one included."""
        ...

    def frozen_layers(self) -> int:
        """How many of the lowest layers, with the embeddings below them, are frozen now: a fixed
        function of the input, whose output the frozen-features speed-up may compute once.
        0 when the embeddings train, or when anything inside those layers does (adapters)."""
        ...

    def frozen_modules(self) -> list[nn.Module]:
        """The modules frozen now: kept in eval mode, so their dropout and norms stay pretrained."""
        ...

    def penalty(self, network: nn.Module) -> torch.Tensor | None:
        """A term added to the training loss (a regulariser), or None."""
        ...

    def export(self, network: nn.Module) -> nn.Module:
        """The network to publish once training ends (adapters merged, say)."""
        ...
