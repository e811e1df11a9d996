"""The frozen-features speed-up of one run: the frozen prefix's output computed once per depth, served per batch.

A strategy opts in by reporting a frozen depth (Strategy.frozen_layers): the embeddings and that
many of the lowest layers are frozen, so their output is a fixed function of each example. The
loop asks for a batch; it gets the states at the boundary and a network whose frozen layers pass
them through, or None, when the speed-up does not apply, and then runs the network whole.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import torch
from torch import nn

from worker.training.examples import Batch, TokenisedExamples
from worker.training.run_spec import DataFile
from worker.training.speedups.frozen_features import BoundaryFeatures, FeaturePath, FrozenPrefix
from worker.training.speedups.prepared_data import CacheOptions, PreparedFeatures, frozen_features


class FileRole(StrEnum):
    training = "training"
    validation = "validation"


@dataclass(frozen=True)
class FeatureSource:
    """One file's examples, for the speed-up; token examples only (other kinds never take it)."""

    examples: Any
    data_file: DataFile


class FrozenLayerFeatures:
    """Keeps the boundary states of the training and validation files for the current frozen depth."""

    def __init__(
        self,
        network: nn.Module,
        layers: list[nn.Module],
        sources: dict[FileRole, FeatureSource],
        *,
        reads_every_token: bool,
        label_fields: tuple[str, ...],
        options: CacheOptions,
        key_parts: dict[str, Any],
        device: torch.device,
        autocast: Callable[[], AbstractContextManager[Any]],
        pin_memory: bool,
        report: Callable[[str, dict[str, Any]], None],
    ) -> None:
        self.network = network
        self.layers = layers
        self.sources = sources
        self.reads_every_token = reads_every_token
        self.label_fields = label_fields
        self.options = options
        self.key_parts = key_parts
        self.device = device
        self.autocast = autocast
        self.pin_memory = pin_memory
        self.report = report
        self.prefix: FrozenPrefix | None = None
        self.features: dict[FileRole, BoundaryFeatures | None] = {}
        self.path = FeaturePath.not_applicable
        self._first_token_only: bool | None = None

    def use_depth(self, depth: int) -> None:
        """Serve the states after `depth` frozen layers from now on (0: none); the states of another depth go."""
        current = self.prefix.depth if self.prefix is not None else 0
        if depth == current:
            return
        training = self.sources[FileRole.training].examples
        usable = depth > 0 and isinstance(training, TokenisedExamples)
        self.prefix = FrozenPrefix(self.network, self.layers, depth, label_fields=self.label_fields) if usable else None
        self.features = {}
        self._first_token_only = None
        self.path = FeaturePath.not_applicable

    def prepare(self, role: FileRole) -> None:
        """Find or start computing the file's states; the validation file follows the training file's path."""
        if self.prefix is None or role in self.features or role not in self.sources:
            return
        if role is FileRole.validation and self.path is FeaturePath.recomputed:
            return
        source = self.sources[role]
        prepared = self._prepare(source, role)
        self.features[role] = prepared.features
        if role is FileRole.training:
            self.path = prepared.path
        self.report(
            describe_features(prepared, self.prefix.depth, role),
            {
                "frozen_features": prepared.path.value,
                "file": role.value,
                "frozen_layers": self.prefix.depth,
                "first_token_only": prepared.features.first_token_only if prepared.features else None,
                "from_cache": prepared.from_cache,
                "size_bytes": prepared.size_bytes,
            },
        )

    def _prepare(self, source: FeatureSource, role: FileRole) -> PreparedFeatures:
        assert self.prefix is not None

        def computed(seconds: float) -> None:
            self.report(
                f"Frozen features of the {role.value} file complete: the frozen layers ran over it once, "
                f"in {seconds:.1f} s",
                {"frozen_features_computed": role.value, "seconds": round(seconds, 3)},
            )

        return frozen_features(
            self.prefix,
            source.examples,
            source.data_file,
            first_token_only=self.first_token_only,
            options=self.options,
            key_parts=self.key_parts,
            device=self.device,
            autocast=self.autocast,
            on_computed=computed,
        )

    def first_token_only(self) -> bool:
        """Whether the head reads only the first token's state: possible only when every layer is frozen."""
        assert self.prefix is not None
        if self._first_token_only is None:
            training = self.sources[FileRole.training].examples
            self._first_token_only = (
                not self.reads_every_token
                and self.prefix.depth == len(self.layers)
                and self.prefix.head_reads_first_token_only(training, self.device)
            )
        return self._first_token_only

    def batch(self, role: FileRole, indices: list[int]) -> Batch | None:
        """The batch on the device with the prefix primed with its states; None when the states are not kept."""
        features = self.features.get(role)
        if features is None or self.prefix is None:
            return None
        batch, self.prefix.pending = features.batch(indices, self.device, pin_memory=self.pin_memory)
        return batch

    def serving(self, role: FileRole) -> AbstractContextManager[None]:
        """Within the block the frozen layers pass the served states through (when the file has them)."""
        if self.prefix is None or self.features.get(role) is None:
            return nullcontext()
        return self._serving()

    @contextmanager
    def _serving(self) -> Iterator[None]:
        assert self.prefix is not None
        with self.prefix.replaced():
            yield

    def head_only_on_cached_vectors(self) -> bool:
        """Whether a training step is only the head on one cached vector per example (tiny operations).

        Decided by the job alone, never by what the cache held, so a run computes the same numbers
        on a cold and a warm cache and when resumed.
        """
        features = self.features.get(FileRole.training)
        return features is not None and features.first_token_only


def describe_features(prepared: PreparedFeatures, depth: int, role: FileRole) -> str:
    size = prepared.size_bytes / 1024**2
    if prepared.features is None:
        return (
            f"Frozen layers run at every step: the {role.value} file's states after layer {depth} ({size:.0f} MB) "
            "fit neither the memory limit nor the disk cache"
        )
    what = "first-token states" if prepared.features.first_token_only else "hidden states"
    source = "reused from the cache" if prepared.from_cache else "computed once, as training first reads each example"
    where = "in memory" if prepared.path is FeaturePath.cached else "memory-mapped from disk"
    return f"Frozen features of the {role.value} file ({what} after layer {depth}): {source}, {size:.1f} MB {where}"
