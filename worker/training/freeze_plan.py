"""What trains in the current epoch, drawn along the network's depth: embeddings, each layer, the body top, the head.

This is the picture a user of transfer learning asks for: which pretrained parts stay as they were,
which adapt and at what learning rate, and what is new. It is read off the network as the strategy
left it (`requires_grad`) and off the optimiser (each parameter's peak rate, before warm-up and decay
scale it), so it shows what the run does rather than what the spec meant.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

import torch
from torch import nn

from worker.training.anatomy import Anatomy
from worker.training.strategies.layer_groups import parameters_of


class UnitState(StrEnum):
    frozen = "frozen"  # no parameter of the unit trains
    trainable = "trainable"  # every parameter of the unit trains
    partly_trainable = "partly_trainable"  # some do (an adapter inside frozen weights, say)
    new = "new"  # the task head: initialised for this job, always trained


@dataclass(frozen=True)
class PlanUnit:
    name: str  # "embeddings", "layer 0" … "layer N-1", "body top", "head"
    part: str  # the anatomy part: embeddings, layers, body_top, head
    state: UnitState
    parameters: int
    trainable_parameters: int
    learning_rate: float | None  # the peak rate of its training parameters; None when frozen


@dataclass(frozen=True)
class FreezePlan:
    epoch: int
    units: tuple[PlanUnit, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "units": [asdict(unit) for unit in self.units]}

    def same_layout_as(self, other: FreezePlan | None) -> bool:
        return other is not None and other.units == self.units

    def summary(self) -> str:
        """One line: what trains, e.g. "layers 4-5, body top and head train; embeddings and layers 0-3 are frozen"."""
        training = [unit for unit in self.units if unit.state is not UnitState.frozen]
        frozen = [unit for unit in self.units if unit.state is UnitState.frozen]
        text = f"{_names(training)} train" if training else "nothing trains"
        return text + (f"; {_names(frozen)} frozen" if frozen else "")


def freeze_plan(epoch: int, network: nn.Module, anatomy: Anatomy, optimizer: torch.optim.Optimizer) -> FreezePlan:
    """The plan of `network` as it trains now, part by part, bottom to top."""
    rates = _peak_rates(optimizer)
    claimed: set[int] = set()
    units: list[PlanUnit] = []
    body_units = [("embeddings", "embeddings", anatomy.embeddings)]
    body_units += [(f"layer {index}", "layers", [layer]) for index, layer in enumerate(anatomy.layers)]
    body_units += [("body top", "body_top", anatomy.body_top)]
    for name, part, modules in body_units:
        unit = _unit(name, part, _unclaimed(modules, claimed), rates, is_head=False)
        if unit is not None:
            units.append(unit)
    head = _unit("head", "head", _unclaimed(anatomy.head, claimed), rates, is_head=True)
    if head is not None:
        units.append(head)
    return FreezePlan(epoch, tuple(units))


def _peak_rates(optimizer: torch.optim.Optimizer) -> dict[int, float]:
    """Each parameter's rate before the schedule scales it (the scheduler keeps it as `initial_lr`)."""
    return {
        id(parameter): float(group.get("initial_lr", group["lr"]))
        for group in optimizer.param_groups
        for parameter in group["params"]
    }


def _unclaimed(modules: Iterable[nn.Module], claimed: set[int]) -> list[nn.Parameter]:
    """The modules' parameters that no lower unit holds: a tied weight is drawn once, where it sits lowest."""
    found = [parameter for parameter in parameters_of(modules) if id(parameter) not in claimed]
    claimed.update(id(parameter) for parameter in found)
    return found


def _unit(
    name: str, part: str, parameters: list[nn.Parameter], rates: dict[int, float], *, is_head: bool
) -> PlanUnit | None:
    if not parameters:
        return None
    total = sum(parameter.numel() for parameter in parameters)
    training = [parameter for parameter in parameters if parameter.requires_grad]
    trainable = sum(parameter.numel() for parameter in training)
    if is_head:
        state = UnitState.new
    elif trainable == 0:
        state = UnitState.frozen
    elif trainable == total:
        state = UnitState.trainable
    else:
        state = UnitState.partly_trainable
    unit_rates = [rates[id(parameter)] for parameter in training if id(parameter) in rates]
    return PlanUnit(
        name=name,
        part=part,
        state=state,
        parameters=total,
        trainable_parameters=trainable,
        learning_rate=max(unit_rates) if unit_rates else None,
    )


def _names(units: list[PlanUnit]) -> str:
    """Units named as a reader would: consecutive layers as a range ("layers 0-3")."""
    names: list[str] = []
    layers: list[int] = []

    def flush() -> None:
        if layers:
            names.append(f"layer {layers[0]}" if len(layers) == 1 else f"layers {layers[0]}-{layers[-1]}")
            layers.clear()

    for unit in units:
        if unit.part == "layers":
            index = int(unit.name.removeprefix("layer "))
            if layers and index != layers[-1] + 1:
                flush()
            layers.append(index)
            continue
        flush()
        names.append(unit.name)
    flush()
    if len(names) == 1:
        return names[0]
    return ", ".join(names[:-1]) + " and " + names[-1]
