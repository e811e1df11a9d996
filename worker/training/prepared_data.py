"""A job's data made ready once: token ids per file, and the frozen prefix's features, through the cache.

Both are keyed by what they depend on, so a second job on the same file and model skips the
work: tokens by (file, model files, max length, task, labels), features additionally by the
freeze depth, the pooling the head needs and the numeric precision.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from worker.training.config import DataFile, TrainingConfig
from worker.training.data_cache import CacheEntry, DerivedDataCache
from worker.training.examples import TokenisedExamples
from worker.training.frozen_features import BoundaryFeatures, FeaturePath, FrozenPrefix, compute_boundary_states
from worker.training.heads import TaskAdapter

# Bump when tokenisation or feature computation changes, so older cache entries are never read.
CACHE_FORMAT = 1
FEATURE_BATCH_SIZE = 64  # inference batches of similar length: measured fastest for MiniLM on 2 cores


@dataclass(frozen=True)
class CacheOptions:
    cache: DerivedDataCache | None = None
    feature_memory_limit_bytes: int = 2 * 1024**3


def model_fingerprint(location: str) -> str:
    """Identifies the base model's files (weights, config, tokenizer) without reading the weights.

    A local folder is fingerprinted by the name, size and modification time of every file in it;
    anything else (a hub id) by its name, since hub snapshots are immutable per revision.
    """
    digest = hashlib.sha256(location.encode())
    folder = Path(location)
    if folder.is_dir():
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                stat = path.stat()
                digest.update(f"{path.relative_to(folder)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:24]


def tokenised_file(
    task: TaskAdapter,
    data_file: DataFile,
    tokenizer: PreTrainedTokenizerBase,
    config: TrainingConfig,
    *,
    cache: DerivedDataCache | None,
    fingerprint: str,
) -> tuple[TokenisedExamples, bool]:
    """The file's examples as token ids, and whether they came from the cache."""
    entry = None
    if cache is not None:
        entry = cache.entry(
            data_file.sha256,
            "tokens",
            {
                "format": CACHE_FORMAT,
                "model": fingerprint,
                "task": config.task.value,
                "max_length": config.hyperparameters.max_length,
                "labels": [str(label) for label in config.label_names],
            },
        )
        loaded = cache.load(entry)
        if loaded is not None:
            return _examples_from_arrays(*loaded), True
    examples = task.tokenise_file(data_file, tokenizer, config)
    if cache is not None and entry is not None:
        arrays = {"offsets": examples.offsets}
        arrays |= {f"token.{name}": values for name, values in examples.token_fields.items()}
        arrays |= {f"example.{name}": values for name, values in examples.example_fields.items()}
        cache.store(entry, arrays, {"pad_values": examples.pad_values, "padding_side": examples.padding_side})
    return examples, False


def _examples_from_arrays(arrays: dict[str, torch.Tensor], metadata: dict[str, Any]) -> TokenisedExamples:
    return TokenisedExamples(
        offsets=arrays["offsets"],
        token_fields={name.removeprefix("token."): a for name, a in arrays.items() if name.startswith("token.")},
        example_fields={name.removeprefix("example."): a for name, a in arrays.items() if name.startswith("example.")},
        pad_values=metadata["pad_values"],
        padding_side=metadata["padding_side"],
    )


@dataclass(frozen=True)
class PreparedFeatures:
    features: BoundaryFeatures | None
    path: FeaturePath
    from_cache: bool
    size_bytes: int
    seconds: float = 0.0


def frozen_features(
    prefix: FrozenPrefix,
    examples: TokenisedExamples,
    data_file: DataFile,
    *,
    first_token_only: Callable[[], bool],
    options: CacheOptions,
    key_parts: dict[str, Any],
    device: torch.device,
    autocast: Callable[[], AbstractContextManager[Any]],
) -> PreparedFeatures:
    """The boundary states of every example: from the cache, computed into memory, or into a disk file.

    `first_token_only` is asked only when the cache has no entry (an entry records the answer).
    Up to `feature_memory_limit_bytes` the states are computed in memory (and also written to the
    cache when it has room, for the next job); above it they are computed straight into a
    memory-mapped cache file. When they fit neither, returns the `recomputed` path: the frozen
    layers then run at every step.
    """
    cache = options.cache

    def entry_for(first_only: bool) -> CacheEntry | None:
        if cache is None:
            return None
        parts = {"format": CACHE_FORMAT, **key_parts, "layers": prefix.depth, "first_token_only": first_only}
        return cache.entry(data_file.sha256, "features", parts)

    if cache is not None:
        for first_only in (True, False):
            entry = entry_for(first_only)
            loaded = cache.load(entry) if entry is not None else None
            if loaded is not None:
                return _from_cache(examples, loaded[0]["states"], first_only, options.feature_memory_limit_bytes)
    first_only = first_token_only()
    entry = entry_for(first_only)
    hidden_size = int(getattr(prefix.network.config, "hidden_size", 0)) or None
    rows = len(examples) if first_only else examples.total_tokens
    size = rows * (hidden_size or 0) * 4

    def compute(allocate: Callable[[tuple[int, int]], torch.Tensor]) -> torch.Tensor:
        return compute_boundary_states(
            prefix,
            examples,
            first_token_only=first_only,
            batch_size=FEATURE_BATCH_SIZE,
            device=device,
            allocate=allocate,
            autocast=autocast,
        )

    if hidden_size is None or size <= options.feature_memory_limit_bytes:
        states = compute(lambda shape: torch.empty(shape, dtype=torch.float32))
        size = states.numel() * 4
        if cache is not None and entry is not None:
            cache.store(entry, {"states": states}, {"rows": rows})
        features = BoundaryFeatures(examples, states, first_token_only=first_only)
        return PreparedFeatures(features, FeaturePath.cached, from_cache=False, size_bytes=size)
    if cache is None or entry is None or not cache.has_room_for(size):
        return PreparedFeatures(None, FeaturePath.recomputed, from_cache=False, size_bytes=size)
    staging = cache.staging_folder()
    try:
        compute(lambda shape: _memory_mapped_output(staging / "states.npy", shape))
        cache.publish(staging, entry, ["states"], {"rows": rows})
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        return PreparedFeatures(None, FeaturePath.recomputed, from_cache=False, size_bytes=size)
    loaded = cache.load(entry)
    if loaded is None:  # evicted at once by a concurrent writer: the budget is too small for it
        return PreparedFeatures(None, FeaturePath.recomputed, from_cache=False, size_bytes=size)
    features = BoundaryFeatures(examples, loaded[0]["states"], first_token_only=first_only)
    return PreparedFeatures(features, FeaturePath.memory_mapped, from_cache=False, size_bytes=size)


def _from_cache(
    examples: TokenisedExamples, states: torch.Tensor, first_only: bool, memory_limit_bytes: int
) -> PreparedFeatures:
    size = states.numel() * states.element_size()
    in_memory = size <= memory_limit_bytes
    if in_memory:
        states = states.clone()  # read the file once now rather than page by page while training
    features = BoundaryFeatures(examples, states, first_token_only=first_only)
    path = FeaturePath.cached if in_memory else FeaturePath.memory_mapped
    return PreparedFeatures(features, path, from_cache=True, size_bytes=size)


def _memory_mapped_output(path: Path, shape: tuple[int, int]) -> torch.Tensor:
    """A float32 tensor backed by a new .npy file; what is written to it lands in the file."""
    mapped = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)
    return torch.from_numpy(mapped)
