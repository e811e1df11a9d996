"""The fine-tuned model as users download it: a tar of a plain Hugging Face model folder."""

from __future__ import annotations

import shutil
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from models.checksums import sha256_of_file
from worker.training.blob_store import BlobStore


@dataclass(frozen=True)
class ExportManifest:
    blob_key: str
    size_bytes: int
    sha256: str
    files: list[str]


def export_model_archive(
    store: BlobStore, key: str, network: nn.Module, *, save_extras: Callable[[Path], None]
) -> ExportManifest:
    """save_pretrained (safetensors) + the task's extras (tokenizer, …), tarred at the archive root, hashed,
    published atomically.

    Every parameter is exported with requires_grad restored, so the folder loads with the plain
    auto classes and pipeline, no Graft code needed.
    """
    folder = store.new_temporary_path()
    archive = store.new_temporary_path()
    try:
        network.save_pretrained(folder, safe_serialization=True)  # type: ignore[operator]
        save_extras(folder)
        names = sorted(path.name for path in folder.iterdir())
        with tarfile.open(archive, "w") as tar:
            for name in names:
                tar.add(folder / name, arcname=name)
        verify_archive(archive, folder, names)
        size, digest = archive.stat().st_size, sha256_of_file(archive)
        store.publish(archive, key)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        archive.unlink(missing_ok=True)
    return ExportManifest(blob_key=key, size_bytes=size, sha256=digest, files=names)


def verify_archive(archive: Path, folder: Path, names: list[str]) -> None:
    """Read the written archive back: every file present, whole. Raises OSError, so a bad write fails the job."""
    try:
        with tarfile.open(archive) as tar:
            sizes = {member.name: member.size for member in tar.getmembers()}
    except tarfile.TarError as error:
        raise OSError(f"the written archive cannot be read back: {error}") from error
    expected = {name: (folder / name).stat().st_size for name in names}
    if sizes != expected:
        raise OSError(f"the written archive does not match the exported model ({sorted(set(expected) ^ set(sizes))})")


def extract_model_archive(archive: Path, destination: Path) -> None:
    """Unpack a downloaded weights archive safely (PEP 706's 'data' filter refuses links and escapes)."""
    with tarfile.open(archive) as tar:
        tar.extractall(destination, filter="data")
