"""The artifact store: blobs and directories under one root, each published by an atomic rename."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import BinaryIO

CHUNK_BYTES = 1024 * 1024


class ArtifactStore:
    """A local folder (a shared volume in production). Readers never see a half-written object.

    Everything is first written under `<root>/.tmp/` (same filesystem, so `os.replace` is atomic),
    flushed to disk, and only then renamed to its key.
    """

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._tmp = self.root / ".tmp"

    def path(self, key: str) -> Path:
        """The absolute path of `key`; keys are server-made, and anything escaping the root is refused."""
        relative = PurePosixPath(key)
        if relative.is_absolute() or ".." in relative.parts or not relative.parts:
            raise ValueError(f"illegal artifact key {key!r}")
        return self.root.joinpath(*relative.parts)

    def exists(self, key: str) -> bool:
        return self.path(key).exists()

    def new_temporary_path(self) -> Path:
        self._tmp.mkdir(parents=True, exist_ok=True)
        return self._tmp / uuid.uuid4().hex

    @contextmanager
    def open_blob_writer(self, key: str) -> Iterator[BinaryIO]:
        """Write a blob; it appears under `key` only if the block exits without an exception."""
        temporary = self.new_temporary_path()
        try:
            with temporary.open("wb") as handle:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
            self.publish(temporary, key)
        finally:
            temporary.unlink(missing_ok=True)

    def publish(self, temporary: Path, key: str) -> None:
        """Move a finished temporary file or directory to `key` in one atomic step.

        Its bytes are flushed to disk first and the rename after, so even a machine that loses
        power shows either the whole object or none of it.
        """
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        _fsync_tree(temporary)
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(temporary, target)
        _fsync_path(target.parent)

    def open_blob(self, key: str) -> BinaryIO:
        return self.path(key).open("rb")

    def remove_stale_temporaries(self, older_than_seconds: float) -> int:
        """Delete what writers left in the temporary area (a killed upload or export); returns the count.

        Only entries untouched for `older_than_seconds` go, so writes in progress are never removed.
        """
        if not self._tmp.is_dir():
            return 0
        cutoff = time.time() - older_than_seconds
        removed = 0
        for entry in self._tmp.iterdir():
            if entry.stat().st_mtime >= cutoff:
                continue
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink(missing_ok=True)
            removed += 1
        return removed

    def delete(self, key: str) -> None:
        target = self.path(key)
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)


def _fsync_path(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _fsync_tree(path: Path) -> None:
    """fsync a file, or every file of a directory and the directory entries themselves."""
    if path.is_dir():
        for child in path.iterdir():
            _fsync_tree(child)
    _fsync_path(path)
