from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from models.storage.blobs import ArtifactStore
from models.strategies.names import StrategyType
from tests.worker.training.speedups.test_frozen_features import MessageRecordingReporter, varied_config
from worker.training.recipe import FineTuningRecipe, RunControl, TrainingStopped
from worker.training.run_spec import RunSpec
from worker.training.speedups.data_cache import DerivedDataCache
from worker.training.speedups.feature_reuse import FileRole
from worker.training.speedups.prepared_data import CacheOptions, encoded_file, model_fingerprint

FROZEN_KINDS = [StrategyType.feature_extraction, StrategyType.partial]
LARGE_CACHE_BYTES = 10**9
LAZY_ROWS = 160  # three feature batches of 64: filled over several training steps, not by the first


def in_memory(cache_root: Path) -> CacheOptions:
    return CacheOptions(cache=DerivedDataCache(cache_root, LARGE_CACHE_BYTES))


def memory_mapped(cache_root: Path) -> CacheOptions:
    """No memory for features at all: they go into a cache file and are read back through a memory map."""
    return CacheOptions(cache=DerivedDataCache(cache_root, LARGE_CACHE_BYTES), feature_memory_limit_bytes=0)


def recomputed(cache_root: Path) -> CacheOptions:
    """Room neither in memory nor in the cache: the frozen layers run at every step."""
    return CacheOptions(cache=DerivedDataCache(cache_root, max_bytes=1), feature_memory_limit_bytes=0)


def train(
    config: RunSpec, store_root: Path, options: CacheOptions, control: RunControl | None = None
) -> tuple[FineTuningRecipe, MessageRecordingReporter]:
    reporter = MessageRecordingReporter()
    recipe = FineTuningRecipe(config, ArtifactStore(store_root), reporter, control, cache_options=options)
    recipe.setup()
    recipe.train()
    return recipe, reporter


def losses(reporter: MessageRecordingReporter) -> torch.Tensor:
    return torch.tensor([step.train_loss for step in reporter.steps], dtype=torch.float64)


def valid_losses(reporter: MessageRecordingReporter) -> torch.Tensor:
    return torch.tensor([epoch["valid_loss"] for epoch in reporter.epochs], dtype=torch.float64)


def trainable_weights(recipe: FineTuningRecipe) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in recipe.network.named_parameters() if p.requires_grad}


# Softmax is blind to a key bias (it adds the same score to every key of a query), so its true
# gradient is zero and what it gets is rounding noise, which AdamW scales up to full-size steps:
# two runs that differ only in the last bits of a sum end with unrelated key biases and the same
# function. Every other weight is compared.
_GRADIENT_FREE_WEIGHTS = ("attention.self.key.bias",)


def assert_same_weights(expected: dict[str, torch.Tensor], actual: dict[str, torch.Tensor], atol: float) -> None:
    assert set(expected) == set(actual)
    for name, weight in expected.items():
        if not name.endswith(_GRADIENT_FREE_WEIGHTS):
            torch.testing.assert_close(actual[name], weight, rtol=0, atol=atol, msg=name)


@pytest.fixture
def varied(make_config: Any, tmp_path: Path) -> Any:
    def _make(kind: StrategyType, *, epochs: int = 2, training_rows: int = 64) -> RunSpec:
        # 1e-2 moves the head enough in 16 steps that the losses depend on every feature's value.
        config = make_config(kind, epochs=epochs, learning_rate=1e-2)
        return varied_config(config, tmp_path / "data", training_rows)

    return _make


@pytest.mark.parametrize("kind", FROZEN_KINDS)
def test_cached_memory_mapped_and_recomputed_features_train_to_the_same_losses(
    varied: Any, tmp_path: Path, kind: StrategyType
) -> None:
    config = varied(kind, training_rows=LAZY_ROWS)
    cached_run, cached = train(config, tmp_path / "a", in_memory(tmp_path / "cache-a"))
    mapped_run, mapped = train(config, tmp_path / "b", memory_mapped(tmp_path / "cache-b"))
    slow_run, every_step = train(config, tmp_path / "c", recomputed(tmp_path / "cache-c"))

    assert {role: event["frozen_features"] for role, event in cached.feature_events().items()} == {
        "training": "cached",
        "validation": "cached",
    }
    assert {role: event["frozen_features"] for role, event in mapped.feature_events().items()} == {
        "training": "memory_mapped",
        "validation": "memory_mapped",
    }
    assert {role: event["frozen_features"] for role, event in every_step.feature_events().items()} == {
        "training": "recomputed"
    }
    assert len(cached.steps) == 40
    torch.testing.assert_close(losses(mapped), losses(cached), rtol=0, atol=1e-6)
    torch.testing.assert_close(valid_losses(mapped), valid_losses(cached), rtol=0, atol=1e-6)
    # Computing the frozen layers once, in other batches, may change float rounding and nothing else.
    torch.testing.assert_close(losses(every_step), losses(cached), rtol=0, atol=5e-6)
    torch.testing.assert_close(valid_losses(every_step), valid_losses(cached), rtol=0, atol=5e-6)
    assert_same_weights(trainable_weights(slow_run), trainable_weights(cached_run), atol=1e-5)
    assert_same_weights(trainable_weights(mapped_run), trainable_weights(cached_run), atol=1e-6)


def test_feature_extraction_reports_first_token_states_and_partial_every_tokens_states(
    varied: Any, tmp_path: Path
) -> None:
    _, extraction = train(varied(StrategyType.feature_extraction, epochs=1), tmp_path / "a", in_memory(tmp_path / "c"))
    recipe, partial = train(varied(StrategyType.partial, epochs=1), tmp_path / "b", in_memory(tmp_path / "c"))
    training = extraction.feature_events()["training"]
    assert (training["first_token_only"], training["frozen_layers"]) == (True, 2)
    assert training["size_bytes"] == 64 * 32 * 4  # one float32 vector of width 32 per example
    training = partial.feature_events()["training"]
    assert (training["first_token_only"], training["frozen_layers"]) == (False, 1)
    assert recipe.training_examples.total_tokens == sum(6 + index % 7 for index in range(64))  # [CLS] … [SEP]
    assert training["size_bytes"] == recipe.training_examples.total_tokens * 32 * 4  # a vector for every token


def test_a_run_without_a_cache_or_memory_recomputes_the_frozen_layers(varied: Any, tmp_path: Path) -> None:
    config = varied(StrategyType.partial, epochs=1)
    _, reference = train(config, tmp_path / "a", in_memory(tmp_path / "cache"))
    recipe, reporter = train(config, tmp_path / "b", CacheOptions(cache=None, feature_memory_limit_bytes=0))
    assert reporter.feature_events()["training"]["frozen_features"] == "recomputed"
    assert "Frozen layers run at every step" in next(text for text, data in reporter.messages if data)
    assert recipe.features.features.get(FileRole.training) is None
    torch.testing.assert_close(losses(reporter), losses(reference), rtol=0, atol=5e-6)


@pytest.mark.parametrize("kind", FROZEN_KINDS)
def test_a_second_job_on_the_same_file_and_model_reuses_the_cached_features(
    varied: Any, tmp_path: Path, kind: StrategyType
) -> None:
    config = varied(kind)
    _, first = train(config, tmp_path / "a", in_memory(tmp_path / "cache"))
    _, second = train(config, tmp_path / "b", in_memory(tmp_path / "cache"))
    assert {role: event["from_cache"] for role, event in first.feature_events().items()} == {
        "training": False,
        "validation": False,
    }
    reused = {role: (event["from_cache"], event["frozen_features"]) for role, event in second.feature_events().items()}
    assert reused == {"training": (True, "cached"), "validation": (True, "cached")}
    # The same numbers; a tolerance only because a job on cached vectors trains its head on one CPU thread.
    torch.testing.assert_close(losses(second), losses(first), rtol=0, atol=1e-6)
    torch.testing.assert_close(valid_losses(second), valid_losses(first), rtol=0, atol=1e-6)


def test_cached_features_over_the_memory_limit_are_read_through_a_memory_map(varied: Any, tmp_path: Path) -> None:
    config = varied(StrategyType.partial, epochs=1)
    _, first = train(config, tmp_path / "a", in_memory(tmp_path / "cache"))
    _, second = train(config, tmp_path / "b", memory_mapped(tmp_path / "cache"))
    training = second.feature_events()["training"]
    assert (training["from_cache"], training["frozen_features"]) == (True, "memory_mapped")
    torch.testing.assert_close(losses(second), losses(first), rtol=0, atol=1e-6)


def test_features_of_another_max_length_or_freeze_depth_are_not_reused(varied: Any, tmp_path: Path) -> None:
    config = varied(StrategyType.feature_extraction, epochs=1)
    train(config, tmp_path / "a", in_memory(tmp_path / "cache"))
    _, other_length = train(replace_max_length(config, 16), tmp_path / "b", in_memory(tmp_path / "cache"))
    assert other_length.feature_events()["training"]["from_cache"] is False
    _, other_depth = train(varied(StrategyType.partial, epochs=1), tmp_path / "c", in_memory(tmp_path / "cache"))
    assert other_depth.feature_events()["training"]["from_cache"] is False


def replace_max_length(config: RunSpec, max_length: int) -> RunSpec:
    return replace(config, hyperparameters=replace(config.hyperparameters, max_length=max_length))


def test_encoded_file_comes_back_from_the_cache_equal_to_a_fresh_tokenisation(varied: Any, tmp_path: Path) -> None:
    config = varied(StrategyType.full)
    recipe = FineTuningRecipe(config, ArtifactStore(tmp_path / "store"), MessageRecordingReporter())
    recipe.setup()
    cache = DerivedDataCache(tmp_path / "cache", LARGE_CACHE_BYTES)
    fingerprint = model_fingerprint(config.base_model_location)
    fresh, from_cache = encoded_file(
        recipe.task, config.training_file, recipe.processor, config, cache=cache, fingerprint=fingerprint
    )
    assert not from_cache
    cached, from_cache = encoded_file(
        recipe.task, config.training_file, recipe.processor, config, cache=cache, fingerprint=fingerprint
    )
    assert from_cache
    assert torch.equal(cached.offsets, fresh.offsets)
    assert set(cached.token_fields) == set(fresh.token_fields) == {"input_ids", "token_type_ids"}
    for name, values in fresh.token_fields.items():
        assert torch.equal(cached.token_fields[name], values), name
    assert torch.equal(cached.example_fields["labels"], fresh.example_fields["labels"])
    assert (cached.pad_values, cached.padding_side) == (fresh.pad_values, fresh.padding_side)
    assert torch.equal(cached.batch([0, 5, 9])["input_ids"], fresh.batch([0, 5, 9])["input_ids"])


def test_the_model_fingerprint_changes_when_a_file_of_the_model_changes(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    before = model_fingerprint(str(folder))
    assert model_fingerprint(str(folder)) == before
    (folder / "config.json").write_text('{"hidden_size": 8}')
    assert model_fingerprint(str(folder)) != before
    assert model_fingerprint("org/hub-model") != model_fingerprint("org/other-model")


def features_entries(config: RunSpec, cache_root: Path) -> list[str]:
    folder = cache_root / config.training_file.sha256
    return sorted(path.name for path in folder.glob("features-*")) if folder.is_dir() else []


def completed_files(reporter: MessageRecordingReporter) -> list[str]:
    return [data["frozen_features_computed"] for _, data in reporter.messages if "frozen_features_computed" in data]


def test_features_are_written_to_the_cache_only_once_every_example_is_computed(varied: Any, tmp_path: Path) -> None:
    config = varied(StrategyType.partial, training_rows=LAZY_ROWS)
    reporter = MessageRecordingReporter()
    stopping = FineTuningRecipe(
        config,
        ArtifactStore(tmp_path / "stopped"),
        reporter,
        RunControl(stop_requested=lambda: len(reporter.steps) >= 1),
        cache_options=in_memory(tmp_path / "cache"),
    )
    stopping.setup()
    with pytest.raises(TrainingStopped):
        stopping.train()
    features = stopping.features.features.get(FileRole.training)
    assert features is not None and features.filler is not None
    assert not features.filler.complete
    assert completed_files(reporter) == []
    assert features_entries(config, tmp_path / "cache") == []

    _, whole = train(config, tmp_path / "whole", in_memory(tmp_path / "cache"))
    assert completed_files(whole) == ["training", "validation"]
    assert len(features_entries(config, tmp_path / "cache")) == 1


@pytest.mark.parametrize("kind", FROZEN_KINDS)
@pytest.mark.parametrize(("stop_after", "features_complete"), [(2, False), (12, True)])
def test_a_run_stopped_mid_epoch_resumes_on_cached_features_to_the_same_weights(
    varied: Any, tmp_path: Path, kind: StrategyType, stop_after: int, features_complete: bool
) -> None:
    config = varied(kind, epochs=1, training_rows=LAZY_ROWS)  # 20 steps
    uninterrupted, reference = train(config, tmp_path / "reference", CacheOptions())

    options = in_memory(tmp_path / "cache")
    store = ArtifactStore(tmp_path / "stopped")
    reporter = MessageRecordingReporter()
    stop = RunControl(stop_requested=lambda: len(reporter.steps) >= stop_after)
    stopping = FineTuningRecipe(config, store, reporter, stop, cache_options=options)
    stopping.setup()
    with pytest.raises(TrainingStopped) as stopped:
        stopping.train()
    assert stopped.value.step == stop_after
    assert ("training" in completed_files(reporter)) is features_complete

    resumed_reporter = MessageRecordingReporter()
    resumed = FineTuningRecipe(config, store, resumed_reporter, cache_options=options)
    resumed.setup()
    assert resumed.resume(store.path(reporter.checkpoints[-1]["blob_key"])) == stop_after
    resumed.train()

    assert resumed_reporter.feature_events()["training"]["from_cache"] is features_complete
    assert [s.step for s in resumed_reporter.steps] == list(range(stop_after + 1, 21))
    torch.testing.assert_close(losses(resumed_reporter), losses(reference)[stop_after:], rtol=0, atol=5e-6)
    torch.testing.assert_close(valid_losses(resumed_reporter), valid_losses(reference), rtol=0, atol=5e-6)
    assert_same_weights(trainable_weights(uninterrupted), trainable_weights(resumed), atol=1e-6)
