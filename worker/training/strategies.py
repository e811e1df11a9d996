"""Transfer strategies: which parts of the pretrained body freeze, and each part's learning-rate scale."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from models.hyperparameters import ResolvedStrategy
from models.strategies.names import StrategyType


@dataclass
class NetworkParts:
    """A task network cut along its depth: input embeddings, the stack of layers, what sits above.

    `body_top` holds body modules above the last layer (a final layer norm). `head` holds everything
    the source task left on top (BERT's pooler) and the new task head: it trains under every strategy.
    """

    embeddings: list[nn.Module]
    layers: list[nn.Module]
    body_top: list[nn.Module]
    head: list[nn.Module]


@dataclass
class ParameterGroup:
    modules: list[nn.Module]
    learning_rate_scale: float


@dataclass
class FreezePlan:
    frozen: list[nn.Module]
    groups: list[ParameterGroup] = field(default_factory=list)
    # The frozen prefix: all embeddings and this many of the lowest layers (0 when the embeddings train).
    frozen_layers: int = 0
    layers: list[nn.Module] = field(default_factory=list)


def split_network(network: nn.Module, num_layers: int) -> NetworkParts:
    """Find the layer stack (the ModuleList of `num_layers` blocks) and sort the rest around it."""
    body: nn.Module = getattr(network, "base_model", network)
    stack_name = _find_layer_stack(body, num_layers)
    stack_path = stack_name.split(".")
    embeddings: list[nn.Module] = []
    body_top: list[nn.Module] = []
    head: list[nn.Module] = []
    embedding_getter = getattr(body, "get_input_embeddings", None)
    input_embedding = embedding_getter() if callable(embedding_getter) else None
    for name, child in body.named_children():
        if name == stack_path[0]:
            body_top.extend(_siblings_of_stack(child, stack_path[1:]))
        elif "pooler" in name:
            head.append(child)
        elif "emb" in name or (input_embedding is not None and _contains(child, input_embedding)):
            embeddings.append(child)
        else:
            body_top.append(child)
    stack = body.get_submodule(stack_name)
    assert isinstance(stack, nn.ModuleList)
    layers = list(stack)
    if body is not network:
        head.extend(child for name, child in network.named_children() if child is not body)
    return NetworkParts(embeddings=embeddings, layers=layers, body_top=body_top, head=head)


def _find_layer_stack(body: nn.Module, num_layers: int) -> str:
    candidates = [
        name for name, module in body.named_modules() if isinstance(module, nn.ModuleList) and len(module) == num_layers
    ]
    if not candidates:
        raise ValueError(f"found no stack of {num_layers} layers in {type(body).__name__}")
    outermost: str = min(candidates, key=lambda name: name.count("."))
    return outermost


def _siblings_of_stack(container: nn.Module, remaining_path: list[str]) -> list[nn.Module]:
    """Modules beside the layer stack inside its container (e.g. a final norm); the stack itself excluded."""
    if not remaining_path:
        return []
    siblings: list[nn.Module] = []
    for name, child in container.named_children():
        if name == remaining_path[0]:
            siblings.extend(_siblings_of_stack(child, remaining_path[1:]))
        else:
            siblings.append(child)
    return siblings


def _contains(module: nn.Module, target: nn.Module) -> bool:
    return any(candidate is target for candidate in module.modules())


def _feature_extraction(parts: NetworkParts, strategy: ResolvedStrategy) -> FreezePlan:
    return FreezePlan(
        frozen=[*parts.embeddings, *parts.layers, *parts.body_top],
        groups=[ParameterGroup(parts.head, 1.0)],
        frozen_layers=len(parts.layers),
        layers=parts.layers,
    )


def _partial(parts: NetworkParts, strategy: ResolvedStrategy) -> FreezePlan:
    assert strategy.trainable_layers is not None
    boundary = len(parts.layers) - strategy.trainable_layers
    return FreezePlan(
        frozen=[*parts.embeddings, *parts.layers[:boundary]],
        groups=[ParameterGroup([*parts.layers[boundary:], *parts.body_top, *parts.head], 1.0)],
        frozen_layers=boundary,
        layers=parts.layers,
    )


def _full(parts: NetworkParts, strategy: ResolvedStrategy) -> FreezePlan:
    return FreezePlan(
        frozen=[],
        groups=[ParameterGroup([*parts.embeddings, *parts.layers, *parts.body_top, *parts.head], 1.0)],
    )


def _layerwise_lr(parts: NetworkParts, strategy: ResolvedStrategy) -> FreezePlan:
    """Head at the full rate, the top layer (and a final norm) at decay¹, layer i of L at decay^(L−i).

    The embeddings sit one step below the first layer, at decay^(L+1).
    """
    assert strategy.layer_decay is not None
    decay, depth = strategy.layer_decay, len(parts.layers)
    groups = [ParameterGroup(parts.head, 1.0), ParameterGroup(parts.body_top, decay)]
    groups += [ParameterGroup([layer], decay ** (depth - index)) for index, layer in enumerate(parts.layers)]
    groups.append(ParameterGroup(parts.embeddings, decay ** (depth + 1)))
    return FreezePlan(frozen=[], groups=groups)


FREEZE_PLANS: dict[StrategyType, Callable[[NetworkParts, ResolvedStrategy], FreezePlan]] = {
    StrategyType.feature_extraction: _feature_extraction,
    StrategyType.partial: _partial,
    StrategyType.full: _full,
    StrategyType.layerwise_lr: _layerwise_lr,
}


def plan_freezing(network: nn.Module, num_layers: int, strategy: ResolvedStrategy) -> FreezePlan:
    """Apply the strategy: frozen parameters stop requiring gradients; returns the plan for the optimiser."""
    plan = FREEZE_PLANS[strategy.type](split_network(network, num_layers), strategy)
    for module in plan.frozen:
        module.requires_grad_(False)
    return plan


def set_training_mode(network: nn.Module, plan: FreezePlan) -> None:
    """Train mode for what learns; eval mode for frozen parts, so their dropout and norms stay pretrained."""
    network.train()
    for module in plan.frozen:
        module.eval()


def optimizer_parameter_groups(plan: FreezePlan, learning_rate: float, weight_decay: float) -> list[dict[str, object]]:
    """AdamW groups: one pair per scale, biases and norm weights without weight decay."""
    groups: list[dict[str, object]] = []
    seen: set[int] = set()
    for group in plan.groups:
        decayed: list[nn.Parameter] = []
        undecayed: list[nn.Parameter] = []
        for module in group.modules:
            for name, parameter in module.named_parameters():
                if not parameter.requires_grad or id(parameter) in seen:
                    continue
                seen.add(id(parameter))
                (undecayed if parameter.ndim < 2 or "norm" in name.lower() else decayed).append(parameter)
        rate = learning_rate * group.learning_rate_scale
        if decayed:
            groups.append({"params": decayed, "lr": rate, "weight_decay": weight_decay})
        if undecayed:
            groups.append({"params": undecayed, "lr": rate, "weight_decay": 0.0})
    return groups
