"""Parameter groups cut along the anatomy, shared by the strategies: the head, each layer, the embeddings."""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from worker.training.anatomy import Anatomy
from worker.training.strategies.protocol import ParameterGroup


def parameters_of(modules: Iterable[nn.Module]) -> list[nn.Parameter]:
    """The modules' parameters, each once, in order."""
    seen: set[int] = set()
    found: list[nn.Parameter] = []
    for module in modules:
        for parameter in module.parameters():
            if id(parameter) not in seen:
                seen.add(id(parameter))
                found.append(parameter)
    return found


def one_group(modules: Iterable[nn.Module], scale: float = 1.0) -> ParameterGroup:
    return ParameterGroup(parameters_of(modules), scale)


def decayed_groups(anatomy: Anatomy, decay: float) -> list[ParameterGroup]:
    """Head at the full rate, the top layer (and a final norm) at decay¹, layer i of L at decay^(L−i),
    the embeddings one step below the first layer, at decay^(L+1)."""
    depth = len(anatomy.layers)
    groups = [one_group(anatomy.head), one_group(anatomy.body_top, decay)]
    groups += [one_group([layer], decay ** (depth - index)) for index, layer in enumerate(anatomy.layers)]
    groups.append(one_group(anatomy.embeddings, decay ** (depth + 1)))
    return deduplicated(groups)


def deduplicated(groups: list[ParameterGroup]) -> list[ParameterGroup]:
    """Each parameter in the first group naming it (a tied weight belongs to one group); empty groups dropped."""
    seen: set[int] = set()
    result: list[ParameterGroup] = []
    for group in groups:
        kept = [p for p in group.parameters if id(p) not in seen]
        seen |= {id(p) for p in kept}
        if kept:
            result.append(ParameterGroup(kept, group.learning_rate_scale))
    return result
