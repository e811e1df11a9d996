"""A job's data made ready once: token ids per file, and the frozen prefix's features, through the cache.

Both are keyed by what they depend on, so a second job on the same file and model skips the
work: tokens by (file, model files, max length, task, labels), features additionally by the
freeze depth, the pooling the head needs and the numeric precision.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from worker.training.examples import TokenisedExamples
from worker.training.run_spec import DataFile, RunSpec
from worker.training.speedups.data_cache import CacheEntry, DerivedDataCache
from worker.training.speedups.frozen_features import (
    BoundaryFeatures,
    FeatureFiller,
    FeaturePath,
    FrozenPrefix,
    compute_boundary_states,
)
from worker.training.tasks.protocol import EngineTask, Examples

# Bump when tokenisation or feature computation changes, so older cache entries are never read.
CACHE_FORMAT = 2
FEATURE_BATCH_SIZE = 64  # inference batches of examples of similar length


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


def encoded_file(
    task: EngineTask,
    data_file: DataFile,
    processor: Any,
    spec: RunSpec,
    *,
    cache: DerivedDataCache | None,
    fingerprint: str,
) -> tuple[Examples, bool]:
    """The file's examples as the task encodes them, and whether they came from the cache.

    Token examples are cached, keyed by everything their encoding depends on: the file, the
    model's files, the task and its settings (labels), the maximum length.
    """
    entry = None
    if cache is not None:
        entry = cache.entry(
            data_file.sha256,
            "tokens",
            {
                "format": CACHE_FORMAT,
                "model": fingerprint,
                "task": spec.task.value,
                "max_length": spec.hyperparameters.max_length,
                "settings": spec.task_settings,
            },
        )
        loaded = cache.load(entry)
        if loaded is not None:
            return _examples_from_arrays(*loaded), True
    examples = task.build_examples(data_file, processor, spec)
    if cache is not None and entry is not None and isinstance(examples, TokenisedExamples):
        with contextlib.suppress(OSError):  # the cache is an optimisation: a job never fails for it
            cache.store(entry, *_arrays_of_examples(examples))
    return examples, False


_FIELD_KINDS = ("token", "example", "side_token", "side_example")


def _arrays_of_examples(examples: TokenisedExamples) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    arrays = {"offsets": examples.offsets}
    for kind, fields in zip(_FIELD_KINDS, _fields_of(examples), strict=True):
        arrays |= {f"{kind}.{name}": values for name, values in fields.items()}
    return arrays, {"pad_values": examples.pad_values, "padding_side": examples.padding_side}


def _fields_of(examples: TokenisedExamples) -> tuple[dict[str, torch.Tensor], ...]:
    return (examples.token_fields, examples.example_fields, examples.side_token_fields, examples.side_example_fields)


def _examples_from_arrays(arrays: dict[str, torch.Tensor], metadata: dict[str, Any]) -> TokenisedExamples:
    fields = {
        kind: {name.removeprefix(f"{kind}."): a for name, a in arrays.items() if name.startswith(f"{kind}.")}
        for kind in _FIELD_KINDS
    }
    return TokenisedExamples(
        offsets=arrays["offsets"],
        token_fields=fields["token"],
        example_fields=fields["example"],
        pad_values=metadata["pad_values"],
        padding_side=metadata["padding_side"],
        side_token_fields=fields["side_token"],
        side_example_fields=fields["side_example"],
    )


@dataclass(frozen=True)
class PreparedFeatures:
    features: BoundaryFeatures | None
    path: FeaturePath
    from_cache: bool
    size_bytes: int


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
    on_computed: Callable[[float], None] = lambda _seconds: None,
) -> PreparedFeatures:
    """The boundary states of every example: from the cache, or computed into memory or into a disk file.

    `first_token_only` is asked only when the cache has no entry (an entry records the answer).
    Computed states fill in as training first reads each example (FeatureFiller); once all are
    in, they are written to the cache for the next job (when it has room) and `on_computed(seconds)`
    is called. Up to `feature_memory_limit_bytes` they are held in memory; above it they go
    straight into a memory-mapped cache file. When they fit neither, returns the `recomputed`
    path: the frozen layers then run at every step.
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
    rows = len(examples) if first_only else examples.total_tokens
    hidden_size = int(getattr(prefix.network.config, "hidden_size", 0) or 0)
    if hidden_size == 0:  # an unusual config: compute upfront, learning the width from the first batch
        states = compute_boundary_states(
            prefix,
            examples,
            first_token_only=first_only,
            batch_size=FEATURE_BATCH_SIZE,
            device=device,
            allocate=lambda shape: torch.empty(shape, dtype=torch.float32),
            autocast=autocast,
        )
        features = BoundaryFeatures(examples, states, first_token_only=first_only)
        return PreparedFeatures(features, FeaturePath.cached, from_cache=False, size_bytes=states.numel() * 4)
    size = rows * hidden_size * 4
    staging: Path | None = None
    if size <= options.feature_memory_limit_bytes:
        states = torch.empty((rows, hidden_size), dtype=torch.float32)
        path = FeaturePath.cached
    elif cache is not None and entry is not None and cache.has_room_for(size):
        staging = cache.staging_folder()
        states = _memory_mapped_output(staging / "states.npy", (rows, hidden_size))
        path = FeaturePath.memory_mapped
    else:
        return PreparedFeatures(None, FeaturePath.recomputed, from_cache=False, size_bytes=size)

    def computed(seconds: float) -> None:
        if cache is not None and entry is not None:
            try:
                if staging is not None:
                    cache.publish(staging, entry, ["states"], {"rows": rows})
                else:
                    cache.store(entry, {"states": states}, {"rows": rows})
            except OSError:  # the cache is an optimisation: a job never fails for it
                pass
        on_computed(seconds)

    filler = FeatureFiller(
        prefix,
        examples,
        states,
        first_token_only=first_only,
        batch_size=FEATURE_BATCH_SIZE,
        device=device,
        autocast=autocast,
        on_complete=computed,
    )
    features = BoundaryFeatures(examples, states, first_token_only=first_only, filler=filler)
    return PreparedFeatures(features, path, from_cache=False, size_bytes=size)


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
