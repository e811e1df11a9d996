from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.conftest import REPO_ROOT
from worker.training.speedups import data_cache
from worker.training.speedups.data_cache import METADATA, CacheEntry, DerivedDataCache, entry_key

FILE_A = "a" * 64
FILE_B = "b" * 64


def floats(count: int) -> dict[str, torch.Tensor]:
    return {"states": torch.arange(count, dtype=torch.float32)}


def set_last_used(entry: CacheEntry, seconds: float) -> None:
    os.utime(entry.folder, (seconds, seconds))


def staging_files(cache: DerivedDataCache) -> list[Path]:
    staging = cache.root / ".tmp"
    return list(staging.iterdir()) if staging.is_dir() else []


def test_an_entry_lives_under_the_files_sha256_named_by_kind_and_a_key_of_its_parts(tmp_path: Path) -> None:
    cache = DerivedDataCache(tmp_path, max_bytes=10**6)
    entry = cache.entry(FILE_A, "tokens", {"model": "m", "max_length": 32})
    assert entry.folder == tmp_path / FILE_A / f"tokens-{entry_key({'max_length': 32, 'model': 'm'})}"
    assert cache.entry(FILE_A, "tokens", {"model": "m", "max_length": 64}).folder != entry.folder
    assert cache.entry(FILE_A, "tokens", {"max_length": 32, "model": "m"}).folder == entry.folder


def test_store_then_load_returns_equal_arrays_and_the_metadata(tmp_path: Path) -> None:
    cache = DerivedDataCache(tmp_path, max_bytes=10**6)
    entry = cache.entry(FILE_A, "tokens", {"model": "m"})
    arrays = {
        "offsets": torch.tensor([0, 3, 7], dtype=torch.long),
        "token.input_ids": torch.tensor([2, 5, 3, 2, 6, 7, 3], dtype=torch.int32),
        "states": torch.randn(4, 3),
    }
    assert cache.store(entry, arrays, {"pad_values": {"input_ids": 0}, "padding_side": "right"})
    loaded = cache.load(entry)
    assert loaded is not None
    loaded_arrays, metadata = loaded
    assert set(loaded_arrays) == set(arrays)
    for name, array in arrays.items():
        assert loaded_arrays[name].dtype == array.dtype, name
        assert torch.equal(loaded_arrays[name], array), name
    assert metadata["pad_values"] == {"input_ids": 0}
    assert metadata["padding_side"] == "right"
    assert sorted(metadata["arrays"]) == sorted(arrays)
    assert staging_files(cache) == []


def test_writing_to_a_loaded_array_leaves_the_cached_entry_unchanged(tmp_path: Path) -> None:
    cache = DerivedDataCache(tmp_path, max_bytes=10**6)
    entry = cache.entry(FILE_A, "features", {})
    assert cache.store(entry, floats(8), {})
    loaded = cache.load(entry)
    assert loaded is not None
    loaded[0]["states"][:] = -1.0
    again = cache.load(entry)
    assert again is not None
    assert torch.equal(again[0]["states"], floats(8)["states"])


def test_loading_a_missing_entry_gives_none(tmp_path: Path) -> None:
    cache = DerivedDataCache(tmp_path, max_bytes=10**6)
    assert cache.load(cache.entry(FILE_A, "tokens", {"model": "m"})) is None


def test_loading_a_half_written_entry_without_metadata_gives_none(tmp_path: Path) -> None:
    cache = DerivedDataCache(tmp_path, max_bytes=10**6)
    entry = cache.entry(FILE_A, "tokens", {"model": "m"})
    entry.folder.mkdir(parents=True)
    np.save(entry.array_path("states"), np.zeros(4, dtype=np.float32))
    assert cache.load(entry) is None


def test_loading_an_entry_whose_metadata_names_a_missing_array_gives_none(tmp_path: Path) -> None:
    cache = DerivedDataCache(tmp_path, max_bytes=10**6)
    entry = cache.entry(FILE_A, "tokens", {"model": "m"})
    assert cache.store(entry, {"offsets": torch.tensor([0, 2]), "states": torch.zeros(2)}, {})
    entry.array_path("states").unlink()
    assert cache.load(entry) is None


def test_loading_an_entry_with_a_truncated_array_gives_none(tmp_path: Path) -> None:
    cache = DerivedDataCache(tmp_path, max_bytes=10**6)
    entry = cache.entry(FILE_A, "features", {})
    assert cache.store(entry, floats(1000), {})
    path = entry.array_path("states")
    with path.open("r+b") as handle:
        handle.truncate(path.stat().st_size // 2)
    assert cache.load(entry) is None


def test_store_refuses_arrays_over_the_budget_and_writes_nothing(tmp_path: Path) -> None:
    cache = DerivedDataCache(tmp_path, max_bytes=399)
    entry = cache.entry(FILE_A, "features", {})
    assert not cache.store(entry, floats(100), {})  # 100 float32 = 400 bytes
    assert not entry.folder.exists()
    assert staging_files(cache) == []
    assert cache.load(entry) is None
    assert cache.store(entry, floats(99), {})


def test_eviction_removes_the_least_recently_used_entries_first(tmp_path: Path) -> None:
    cache = DerivedDataCache(tmp_path, max_bytes=3000)
    first, second, third = (cache.entry(FILE_A, "features", {"layer": layer}) for layer in (1, 2, 3))
    for entry in (first, second, third):
        assert cache.store(entry, floats(100), {})  # about 600 bytes on disk each, with header and metadata
    set_last_used(first, 1000)
    set_last_used(second, 2000)
    set_last_used(third, 3000)
    assert cache.load(first) is not None  # reading it makes it the most recently used

    newest = cache.entry(FILE_B, "features", {})
    assert cache.store(newest, floats(500), {})  # about 2200 bytes on disk: two of the old ones must go
    assert not second.folder.exists()
    assert not third.folder.exists()
    assert cache.load(first) is not None
    assert cache.load(newest) is not None


def test_eviction_stops_as_soon_as_the_cache_fits(tmp_path: Path) -> None:
    cache = DerivedDataCache(tmp_path, max_bytes=2000)
    entries = [cache.entry(FILE_A, "features", {"layer": layer}) for layer in range(3)]
    for seconds, entry in enumerate(entries, start=1):
        assert cache.store(entry, floats(100), {})
        set_last_used(entry, seconds * 1000)
    removed = cache.evict_to_budget()
    assert removed == []
    cache.max_bytes = 1300
    assert cache.evict_to_budget() == [entries[0].folder]
    assert [entry.folder.exists() for entry in entries] == [False, True, True]


def test_eviction_never_removes_the_entry_just_written(tmp_path: Path) -> None:
    cache = DerivedDataCache(tmp_path, max_bytes=2100)
    older = cache.entry(FILE_A, "features", {"layer": 1})
    assert cache.store(older, floats(100), {})
    newest = cache.entry(FILE_A, "features", {"layer": 2})
    # 2000 bytes of arrays fit the budget, but not with the .npy header and metadata (about 2200 on disk):
    # eviction runs past every older entry to the new one, and must leave it.
    assert cache.store(newest, floats(500), {})
    assert not older.folder.exists()
    loaded = cache.load(newest)
    assert loaded is not None
    assert torch.equal(loaded[0]["states"], floats(500)["states"])


def test_the_kept_entry_survives_eviction_even_when_it_is_the_least_recently_used(tmp_path: Path) -> None:
    cache = DerivedDataCache(tmp_path, max_bytes=10**6)
    kept, other = cache.entry(FILE_A, "features", {"layer": 1}), cache.entry(FILE_A, "features", {"layer": 2})
    assert cache.store(kept, floats(100), {})
    assert cache.store(other, floats(100), {})
    set_last_used(kept, 1000)  # older than everything, as a clock stepped back could make it
    set_last_used(other, 2000)
    cache.max_bytes = 1000  # room for one of the two (about 600 bytes on disk each)
    assert cache.evict_to_budget(keep=kept) == [other.folder]
    assert cache.load(kept) is not None


def test_purge_files_except_removes_only_the_other_files_folders(tmp_path: Path) -> None:
    cache = DerivedDataCache(tmp_path, max_bytes=10**6)
    kept = cache.entry(FILE_A, "tokens", {})
    purged = cache.entry(FILE_B, "tokens", {})
    assert cache.store(kept, floats(4), {})
    assert cache.store(purged, floats(4), {})
    staging = cache.staging_folder()  # a writer in flight
    assert cache.purge_files_except({FILE_A}) == [FILE_B]
    assert not (tmp_path / FILE_B).exists()
    assert cache.load(kept) is not None
    assert staging.is_dir()


def test_purge_of_a_cache_never_written_purges_nothing(tmp_path: Path) -> None:
    assert DerivedDataCache(tmp_path / "absent", max_bytes=10**6).purge_files_except(set()) == []


def test_a_second_publish_of_the_same_entry_keeps_one_readable_copy(tmp_path: Path) -> None:
    cache = DerivedDataCache(tmp_path, max_bytes=10**6)
    entry = cache.entry(FILE_A, "features", {})
    first, second = cache.staging_folder(), cache.staging_folder()  # two workers computing the same entry
    np.save(first / "states.npy", np.full(4, 1.0, dtype=np.float32))
    np.save(second / "states.npy", np.full(4, 2.0, dtype=np.float32))
    cache.publish(first, entry, ["states"], {"rows": 4})
    cache.publish(second, entry, ["states"], {"rows": 4})
    loaded = cache.load(entry)
    assert loaded is not None
    assert loaded[0]["states"].tolist() == [1.0] * 4
    assert sorted(path.name for path in entry.folder.iterdir()) == [METADATA, "states.npy"]
    assert staging_files(cache) == []
    assert [path.name for path in (tmp_path / FILE_A).iterdir()] == [entry.folder.name]


def test_remove_stale_staging_deletes_only_folders_older_than_the_cutoff(tmp_path: Path) -> None:
    cache = DerivedDataCache(tmp_path, max_bytes=10**6)
    assert cache.remove_stale_staging(older_than_seconds=60) == 0  # no staging folder yet
    stale, fresh = cache.staging_folder(), cache.staging_folder()
    np.save(stale / "states.npy", np.zeros(4, dtype=np.float32))
    an_hour_ago = time.time() - 3600
    os.utime(stale, (an_hour_ago, an_hour_ago))
    entry = cache.entry(FILE_A, "tokens", {})
    assert cache.store(entry, floats(4), {})
    set_last_used(entry, an_hour_ago)
    assert cache.remove_stale_staging(older_than_seconds=60) == 1
    assert not stale.exists()
    assert fresh.is_dir()
    assert cache.load(entry) is not None  # published entries are not staging, however old


def test_the_cache_module_imports_without_torch_for_the_celery_process() -> None:
    code = "import sys, worker.training.speedups.data_cache; assert 'torch' not in sys.modules, 'torch was imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=False)
    assert result.returncode == 0, result.stderr


def test_an_entry_another_worker_evicts_while_it_is_read_is_a_hit_or_a_miss_never_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = DerivedDataCache(tmp_path, max_bytes=10**6)
    entry = cache.entry(FILE_A, "features", {})
    assert cache.store(entry, floats(8), {})
    read_array = np.load

    def read_then_evicted(*args: Any, **kwargs: Any) -> Any:
        array = read_array(*args, **kwargs)
        shutil.rmtree(entry.folder)  # another worker's evict_to_budget, right after this read
        return array

    monkeypatch.setattr(np, "load", read_then_evicted)
    loaded = cache.load(entry)
    assert loaded is None or torch.equal(loaded[0]["states"], floats(8)["states"])


def test_storing_while_another_worker_evicts_the_same_entries_does_not_fail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = DerivedDataCache(tmp_path, max_bytes=1000)  # room for one small entry (about 550 bytes on disk)
    older = [cache.entry(FILE_A, "features", {"layer": layer}) for layer in range(2)]
    assert cache.store(older[0], floats(100), {})
    set_last_used(older[0], 1000)
    assert cache.store(older[1], floats(100), {})  # evicts older[0]
    set_last_used(older[1], 2000)
    size_folder = data_cache._folder_bytes

    def size_while_another_worker_evicts(folder: Path) -> int:
        shutil.rmtree(older[1].folder, ignore_errors=True)  # the other worker got there first
        return size_folder(folder)

    monkeypatch.setattr(data_cache, "_folder_bytes", size_while_another_worker_evicts)
    newest = cache.entry(FILE_B, "features", {})
    assert cache.store(newest, floats(100), {})
    assert not older[1].folder.exists()
    assert cache.load(newest) is not None
