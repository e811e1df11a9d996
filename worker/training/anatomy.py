"""Finding a task network's anatomy: its embeddings, layer stack, body top and head."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from torch import nn

from models.architectures import (
    DEPTH_KEYS,
    ArchitectureParts,
    architecture_parts,
    find_depth_key,
    is_known_architecture,
    read_layer_count,
)

# Input embeddings whose names lack "emb": GPT-2's token and position tables, T5's shared one.
_EMBEDDING_NAMES = ("wte", "wpe", "shared")


class UnsplittableArchitecture(ValueError):
    """Neither the anatomy table nor the name-matching heuristics find the parts of a network."""


class ModuleGroup(nn.Module):
    """Pieces of a network handled as one: modules and bare parameters it refers to without owning them.

    A part holds one where the network has no single module for it: a parameter set directly on a module
    (Wav2Vec2's `masked_spec_embed`) or a layer together with its extras (DeBERTa-v2's layer 0 and the
    encoder's `conv`). The group is not registered in the network, so the network's parameter names and state
    dict are unchanged, while `requires_grad_`, `train`/`eval` and `named_parameters` reach the pieces. Each
    piece is named by its dotted path below the base model with "/" for ".", as module names hold no dots.
    """

    def __init__(self, pieces: dict[str, nn.Module | nn.Parameter]) -> None:
        super().__init__()
        for path, piece in pieces.items():
            name = path.replace(".", "/")
            if isinstance(piece, nn.Parameter):
                self.register_parameter(name, piece)
            else:
                self.register_module(name, piece)


@dataclass
class Anatomy:
    """A task network cut along its depth: what the strategies freeze and scale, bottom to top.

    Every part holds modules of the network; a bare parameter, or a layer with extras, comes as a ModuleGroup.
    `head` is everything outside the other three: the new task head and what the source task left on top
    (BERT's pooler). It trains under every strategy.
    """

    embeddings: list[nn.Module]
    layers: list[nn.Module]  # bottom to top
    body_top: list[nn.Module]  # body modules applied after the last layer, such as a final norm
    head: list[nn.Module]
    # Head parameters that are embedding parameters, by name in the network: a language model head tied to the
    # token table (GPT-2's `lm_head.weight`). They are one tensor, so freezing the embeddings freezes them;
    # `parameter_names` counts them as embeddings.
    tied_to_embeddings: list[str] = field(default_factory=list)

    def parts(self) -> dict[str, list[nn.Module]]:
        """The four parts by name, bottom to top."""
        return {"embeddings": self.embeddings, "layers": self.layers, "body_top": self.body_top, "head": self.head}

    def parameter_names(self, network: nn.Module) -> dict[str, set[str]]:
        """Each part's parameters by their names in `network`; a tensor two parts share counts in the lower one.

        Raises ValueError for a part's parameter that is not the network's (an anatomy of another network).
        """
        names = {id(parameter): name for name, parameter in network.named_parameters()}
        claimed: set[int] = set()
        found: dict[str, set[str]] = {}
        for part, modules in self.parts().items():
            found[part] = set()
            for module in modules:
                for parameter in module.parameters():
                    if id(parameter) not in names:
                        raise ValueError(f"a parameter of the {part} is not a parameter of {type(network).__name__}")
                    if id(parameter) not in claimed:
                        claimed.add(id(parameter))
                        found[part].add(names[id(parameter)])
        return found


def find_anatomy(network: nn.Module) -> Anatomy:
    """Cut a network into its parts: the anatomy table's entry for its model_type, else the heuristics.

    Raises UnsplittableArchitecture, naming the model_type, when neither finds the parts.
    """
    return anatomy_from_paths(network, anatomy_paths(network))


def anatomy_paths(network: nn.Module) -> ArchitectureParts:
    """The dotted paths (below the base model) of the parts found, as a table entry would give them.

    A family in the table gets its entry less the optional paths this config does not build; any other
    family gets what `heuristic_paths` finds. Raises UnsplittableArchitecture when the network lacks a path
    the table requires, or the heuristics find no layer stack.
    """
    model_type, config = _read_config(network)
    entry = architecture_parts(model_type, config)
    if entry is None:
        return heuristic_paths(network)
    body = base_model_of(network)
    missing = [path for path in entry.claimed_paths() if path not in entry.optional and _resolve(body, path) is None]
    if missing:
        raise UnsplittableArchitecture(
            f"model_type '{model_type}': the anatomy table names {', '.join(missing)}, which "
            f"{type(network).__name__} does not have; the table does not match this version's layout"
        )

    def present(path: str) -> bool:
        return _resolve(body, path) is not None

    return replace(
        entry,
        embeddings=tuple(filter(present, entry.embeddings)),
        body_top=tuple(filter(present, entry.body_top)),
        layer_extras=tuple((index, path) for index, path in entry.layer_extras if present(path)),
        optional=frozenset(),
    )


def heuristic_paths(network: nn.Module) -> ArchitectureParts:
    """Find the parts by name, for families outside the table.

    The layer stack is the outermost ModuleList holding as many blocks as the config counts layers (the
    first of DEPTH_KEYS it has). Around it: children named like a pooler go to the head; children named like
    an embedding ("emb", GPT-2's "wte"/"wpe") or holding the input embedding go to the embeddings, and so do
    such siblings of the stack inside its container; everything else in the base model is body top. A task
    network that is its own base model keeps its task head among those children, where the names cannot tell
    it from the body: such a family needs a table entry (Whisper's audio classifier has one).
    Raises UnsplittableArchitecture when the config counts no layers or no single such ModuleList exists.
    """
    model_type, config = _read_config(network)
    depth_key = find_depth_key(config)
    num_layers = None if depth_key is None else read_layer_count(config, depth_key)
    if depth_key is None or num_layers is None:
        raise UnsplittableArchitecture(
            f"{_cannot_split_by_name(model_type)}: its config gives no number of layers "
            f"(none of {', '.join(DEPTH_KEYS)})"
        )
    body = base_model_of(network)
    stack_name = _find_layer_stack(body, num_layers, model_type)
    stack_path = stack_name.split(".")
    input_embedding = _input_embedding(body)
    embeddings: list[str] = []
    body_top: list[str] = []
    for name, piece in _named_pieces(body):
        if name == stack_path[0]:
            assert isinstance(piece, nn.Module)
            for sibling_path in _siblings_of_stack(piece, name, stack_path[1:]):
                last_name = sibling_path.rsplit(".", 1)[-1]
                (embeddings if _is_named_like_embedding(last_name) else body_top).append(sibling_path)
        elif "pooler" in name:
            continue  # the source task's top: the head
        elif _is_named_like_embedding(name) or _holds(piece, input_embedding):
            embeddings.append(name)
        else:
            body_top.append(name)
    return ArchitectureParts(embeddings=tuple(embeddings), layers=stack_name, body_top=tuple(body_top), depth=depth_key)


def anatomy_from_paths(network: nn.Module, paths: ArchitectureParts) -> Anatomy:
    """Gather the modules at the given paths; the head is whatever of the network lies outside them.

    Raises UnsplittableArchitecture when a path is missing, one path lies inside another, the layer path is
    not a ModuleList, or the stack holds another number of layers than the config counts.
    """
    model_type, config = _read_config(network)
    body = base_model_of(network)
    claimed = paths.claimed_paths()
    overlaps = sorted(
        {inner for inner in claimed for outer in claimed if inner.startswith(outer + ".")}
        | {path for path in claimed if claimed.count(path) > 1}
    )
    if overlaps:
        raise UnsplittableArchitecture(f"model_type '{model_type}': the parts overlap at {', '.join(overlaps)}")
    pieces = {path: _require(body, path, model_type) for path in claimed}
    stack = pieces[paths.layers]
    if not isinstance(stack, nn.ModuleList | nn.Sequential):
        raise UnsplittableArchitecture(f"model_type '{model_type}': {paths.layers} is not a list of layers")
    expected = read_layer_count(config, paths.depth)
    if expected != len(stack):
        raise UnsplittableArchitecture(
            f"model_type '{model_type}': the config counts {expected} layers, {paths.layers} holds {len(stack)}"
        )
    layers: list[nn.Module] = list(stack)
    extras: dict[int, dict[str, nn.Module | nn.Parameter]] = {}
    for index, path in paths.layer_extras:
        if not 0 <= index < len(layers):
            raise UnsplittableArchitecture(f"model_type '{model_type}': {path} joins layer {index} of {len(layers)}")
        extras.setdefault(index, {f"{paths.layers}.{index}": layers[index]})[path] = pieces[path]
    for index, group in extras.items():
        layers[index] = ModuleGroup(group)

    body_path = "" if body is network else _path_of(network, body)
    head_pieces = list(_unclaimed_pieces(network, "", {_join(body_path, path) for path in claimed}))
    embeddings = [_as_module(path, pieces[path]) for path in paths.embeddings]
    embedding_ids = {id(parameter) for module in embeddings for parameter in module.parameters()}
    head_paths = [path for path, _ in head_pieces]
    tied = [
        name
        for name, parameter in network.named_parameters(remove_duplicate=False)
        if id(parameter) in embedding_ids and any(name == path or name.startswith(path + ".") for path in head_paths)
    ]
    return Anatomy(
        embeddings=embeddings,
        layers=layers,
        body_top=[_as_module(path, pieces[path]) for path in paths.body_top],
        head=[_as_module(path, piece) for path, piece in head_pieces],
        tied_to_embeddings=tied,
    )


def base_model_of(network: nn.Module) -> nn.Module:
    """The body the table's paths start from: `network.base_model`, or the network itself when it has none.

    A task network without an attribute at its `base_model_prefix` (WhisperForAudioClassification) is its
    own base model.
    """
    body = getattr(network, "base_model", network)
    assert isinstance(body, nn.Module)
    return body


def _read_config(network: nn.Module) -> tuple[str, dict[str, Any]]:
    config = getattr(network, "config", None)
    to_dict = getattr(config, "to_dict", None)
    if not callable(to_dict):
        raise UnsplittableArchitecture(f"{type(network).__name__} has no Hugging Face config naming its model_type")
    values: dict[str, Any] = to_dict()
    return str(getattr(config, "model_type", "") or "unknown"), values


def _find_layer_stack(body: nn.Module, num_layers: int, model_type: str) -> str:
    candidates: list[str] = [
        name for name, module in body.named_modules() if isinstance(module, nn.ModuleList) and len(module) == num_layers
    ]
    if not candidates:
        raise UnsplittableArchitecture(
            f"{_cannot_split_by_name(model_type)}: {type(body).__name__} has no list of {num_layers} layers, "
            "the number its config gives"
        )
    outermost_depth = min(name.count(".") for name in candidates)
    outermost = [name for name in candidates if name.count(".") == outermost_depth]
    if len(outermost) > 1:
        raise UnsplittableArchitecture(
            f"{_cannot_split_by_name(model_type)}: {type(body).__name__} has several lists of {num_layers} layers "
            f"({', '.join(outermost)})"
        )
    return outermost[0]


def _cannot_split_by_name(model_type: str) -> str:
    known = "" if is_known_architecture(model_type) else " is not in the anatomy table and"
    return f"model_type '{model_type}'{known} cannot be split by the names of its modules"


def _named_pieces(module: nn.Module) -> Iterator[tuple[str, nn.Module | nn.Parameter]]:
    """A module's bare parameters, then its children."""
    yield from module.named_parameters(recurse=False)
    yield from module.named_children()


def _siblings_of_stack(container: nn.Module, container_path: str, remaining_path: list[str]) -> list[str]:
    """Paths of what sits beside the layer stack inside its containers (e.g. a final norm), the stack excluded."""
    if not remaining_path:
        return []
    siblings: list[str] = []
    for name, piece in _named_pieces(container):
        path = _join(container_path, name)
        if name == remaining_path[0] and isinstance(piece, nn.Module):
            siblings.extend(_siblings_of_stack(piece, path, remaining_path[1:]))
        else:
            siblings.append(path)
    return siblings


def _is_named_like_embedding(name: str) -> bool:
    return "emb" in name or name in _EMBEDDING_NAMES


def _input_embedding(body: nn.Module) -> nn.Module | None:
    getter = getattr(body, "get_input_embeddings", None)
    if not callable(getter):
        return None
    try:
        embedding = getter()
    except NotImplementedError:  # transformers 5 raises it for models without a token table (ResNet, Wav2Vec2)
        return None
    return embedding if isinstance(embedding, nn.Module) else None


def _holds(piece: nn.Module | nn.Parameter, target: nn.Module | None) -> bool:
    if target is None or isinstance(piece, nn.Parameter):
        return False
    return any(candidate is target for candidate in piece.modules())


def _resolve(body: nn.Module, path: str) -> nn.Module | nn.Parameter | None:
    """The submodule or bare parameter at a dotted path; None where the network has none (a config left it out)."""
    try:
        return body.get_submodule(path)
    except AttributeError:
        pass
    try:
        parameter = body.get_parameter(path)
    except AttributeError:
        return None
    return parameter if isinstance(parameter, nn.Parameter) else None


def _require(body: nn.Module, path: str, model_type: str) -> nn.Module | nn.Parameter:
    piece = _resolve(body, path)
    if piece is None:
        raise UnsplittableArchitecture(f"model_type '{model_type}': {type(body).__name__} has nothing at {path}")
    return piece


def _path_of(network: nn.Module, target: nn.Module) -> str:
    path: str = next(name for name, module in network.named_modules() if module is target)
    return path


def _unclaimed_pieces(
    module: nn.Module, prefix: str, claimed: set[str]
) -> Iterator[tuple[str, nn.Module | nn.Parameter]]:
    """The largest pieces of `module` holding nothing claimed: descend only into ancestors of claimed paths."""
    for name, piece in _named_pieces(module):
        path = _join(prefix, name)
        if path in claimed:
            continue
        if isinstance(piece, nn.Module) and any(other.startswith(path + ".") for other in claimed):
            yield from _unclaimed_pieces(piece, path, claimed)
        else:
            yield path, piece


def _as_module(path: str, piece: nn.Module | nn.Parameter) -> nn.Module:
    return ModuleGroup({path: piece}) if isinstance(piece, nn.Parameter) else piece


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name
