"""Where the engine publishes blobs (checkpoints, the exported model): a protocol the worker side fills."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class BlobStore(Protocol):
    def new_temporary_path(self) -> Path:
        """A fresh path inside the store, to write a file or folder under before publishing it."""
        ...

    def publish(self, temporary: Path, key: str) -> None:
        """Move a finished file or folder into place under `key`, atomically."""
        ...

    def path(self, key: str) -> Path:
        """Where the blob `key` lies (to read a checkpoint back)."""
        ...
