"""The optimiser's parameter groups: one pair per learning-rate scale, biases and norm weights without weight decay."""

from __future__ import annotations

from torch import nn

from worker.training.strategies.protocol import ParameterGroup


def optimizer_parameter_groups(
    network: nn.Module, groups: list[ParameterGroup], learning_rate: float, weight_decay: float
) -> list[dict[str, object]]:
    """AdamW groups for every parameter the strategy may train, frozen for now or not."""
    names = {id(parameter): name for name, parameter in network.named_parameters()}
    result: list[dict[str, object]] = []
    for group in groups:
        decayed: list[nn.Parameter] = []
        undecayed: list[nn.Parameter] = []
        for parameter in group.parameters:
            is_norm = "norm" in names.get(id(parameter), "").lower()
            (undecayed if parameter.ndim < 2 or is_norm else decayed).append(parameter)
        rate = learning_rate * group.learning_rate_scale
        if decayed:
            result.append({"params": decayed, "lr": rate, "weight_decay": weight_decay})
        if undecayed:
            result.append({"params": undecayed, "lr": rate, "weight_decay": 0.0})
    return result
