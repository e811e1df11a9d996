"""The worker's cache of data derived from uploaded files: token ids and frozen features.

An entry is a folder of `.npy` arrays under `<root>/<file sha256>/<kind>-<key>`, where the key
hashes everything the data depends on (tokenizer, model weights, max length, layer, precision).
Entries are written under `<root>/.tmp` and renamed into place, so a reader sees a whole entry or
none, and two workers computing the same entry cannot corrupt it. Reading an entry marks it used;
the least recently used entries go when the cache outgrows its byte budget. Arrays are opened as
memory maps (copy on write): a large entry costs address space, not memory, until it is read.

Entries are named by the file's sha256, so a file's derived data can be purged with it. The
Celery process purges (worker.reconciler) and must not load torch, so torch is imported only
where arrays are read.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

METADATA = "metadata.json"


@dataclass(frozen=True)
class CacheEntry:
    folder: Path

    def array_path(self, name: str) -> Path:
        return self.folder / f"{name}.npy"


def entry_key(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


class DerivedDataCache:
    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes

    def entry(self, file_sha256: str, kind: str, parts: dict[str, Any]) -> CacheEntry:
        return CacheEntry(self.root / file_sha256 / f"{kind}-{entry_key(parts)}")

    def load(self, entry: CacheEntry) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        """The entry's arrays (memory-mapped) and metadata, or None when it is absent or unreadable."""
        import torch

        try:
            metadata = json.loads((entry.folder / METADATA).read_text(encoding="utf-8"))
            arrays = {
                name: torch.from_numpy(np.load(entry.array_path(name), mmap_mode="c")) for name in metadata["arrays"]
            }
        except (OSError, ValueError, KeyError):
            return None
        # Least recently used goes first. Another worker may evict the entry this very moment:
        # the arrays stay readable through their memory maps, so that is still a hit.
        with contextlib.suppress(OSError):
            os.utime(entry.folder)
        return arrays, metadata

    def staging_folder(self) -> Path:
        folder = self.root / ".tmp" / uuid.uuid4().hex
        folder.mkdir(parents=True)
        return folder

    def publish(self, staging: Path, entry: CacheEntry, arrays: Iterable[str], metadata: dict[str, Any]) -> None:
        """Move a staging folder whose `.npy` files are written into place; a concurrent writer's copy wins ties."""
        (staging / METADATA).write_text(json.dumps({**metadata, "arrays": list(arrays)}), encoding="utf-8")
        entry.folder.parent.mkdir(parents=True, exist_ok=True)
        try:
            staging.rename(entry.folder)
        except OSError:  # another process published the same entry first
            shutil.rmtree(staging, ignore_errors=True)
        self.evict_to_budget(keep=entry)

    def store(self, entry: CacheEntry, arrays: dict[str, torch.Tensor], metadata: dict[str, Any]) -> bool:
        """Write small arrays; returns False (and writes nothing) when they don't fit the budget or the disk."""
        size = sum(array.numel() * array.element_size() for array in arrays.values())
        if not self.has_room_for(size):
            return False
        staging = self.staging_folder()
        try:
            for name, array in arrays.items():
                np.save(staging / f"{name}.npy", array.numpy())
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            return False
        self.publish(staging, entry, arrays, metadata)
        return True

    def has_room_for(self, size_bytes: int) -> bool:
        if size_bytes > self.max_bytes:
            return False
        self.root.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.root).free
        return size_bytes + _DISK_HEADROOM_BYTES < free

    def evict_to_budget(self, keep: CacheEntry | None = None) -> list[Path]:
        """Delete least recently used entries until the cache fits its budget; returns what went."""
        # Other workers evict and purge the same folder concurrently: an entry that vanishes while
        # it is measured is simply gone, which is what eviction wants.
        measured: dict[Path, tuple[float, int]] = {}
        for folder in self.root.glob("*/*"):
            if folder.parent.name == ".tmp":
                continue
            try:
                measured[folder] = (folder.stat().st_mtime, _folder_bytes(folder))
            except OSError:
                continue
        sizes = {folder: size for folder, (_, size) in measured.items()}
        total = sum(sizes.values())
        removed: list[Path] = []
        for folder in sorted(measured, key=lambda folder: measured[folder][0]):
            if total <= self.max_bytes:
                break
            if keep is not None and folder == keep.folder:
                continue
            shutil.rmtree(folder, ignore_errors=True)
            total -= sizes[folder]
            removed.append(folder)
        return removed

    def purge_files_except(self, live_sha256s: set[str]) -> list[str]:
        """Delete the derived data of every file no longer stored; returns the purged sha256s."""
        if not self.root.is_dir():
            return []
        purged = []
        for folder in self.root.iterdir():
            if folder.is_dir() and folder.name != ".tmp" and folder.name not in live_sha256s:
                shutil.rmtree(folder, ignore_errors=True)
                purged.append(folder.name)
        return purged

    def remove_stale_staging(self, older_than_seconds: float) -> int:
        """Delete staging folders that writers killed mid-write left behind; returns the count."""
        staging = self.root / ".tmp"
        if not staging.is_dir():
            return 0
        cutoff = time.time() - older_than_seconds
        removed = 0
        for folder in staging.iterdir():
            try:
                stale = folder.stat().st_mtime < cutoff
            except OSError:  # published or removed meanwhile
                continue
            if stale:
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
        return removed


_DISK_HEADROOM_BYTES = 1024**3  # never fill the disk to the last gigabyte with a cache


def _folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.iterdir() if path.is_file())
