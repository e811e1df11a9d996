from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from models.storage.blobs import ArtifactStore


def test_a_blob_appears_only_once_fully_written(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    with pytest.raises(RuntimeError), store.open_blob_writer("files/t/f") as handle:
        handle.write(b"half")
        raise RuntimeError("writer died")
    assert not store.exists("files/t/f")
    assert list((tmp_path / ".tmp").iterdir()) == []
    with store.open_blob_writer("files/t/f") as handle:
        handle.write(b"whole")
    assert store.path("files/t/f").read_bytes() == b"whole"


@pytest.mark.parametrize("key", ["../outside", "/etc/passwd", "files/../../x", ""])
def test_keys_cannot_escape_the_store(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValueError):
        ArtifactStore(tmp_path).path(key)


def test_stale_temporaries_are_removed_and_fresh_ones_kept(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    stale_file, stale_folder, fresh = store.new_temporary_path(), store.new_temporary_path(), store.new_temporary_path()
    stale_file.write_bytes(b"killed upload")
    stale_folder.mkdir()
    (stale_folder / "model.safetensors").write_bytes(b"killed export")
    fresh.write_bytes(b"upload in progress")
    day_ago = time.time() - 86_400
    for path in (stale_file, stale_folder):
        os.utime(path, (day_ago, day_ago))
    assert store.remove_stale_temporaries(older_than_seconds=3600) == 2
    assert [p.name for p in (tmp_path / ".tmp").iterdir()] == [fresh.name]
