from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForSequenceClassification, pipeline

from models.storage.blobs import ArtifactStore
from models.strategies.names import StrategyType
from tests.worker.training.conftest import DiesAfterCheckpointAtStep, Killed, RecordingReporter
from worker.training.anatomy import UnsplittableArchitecture
from worker.training.checkpoints import (
    COMPLETE_MARKER,
    TRAINABLE_WEIGHTS,
    is_complete,
    load_trainable_weights,
)
from worker.training.export import extract_model_archive, verify_archive
from worker.training.recipe import FineTuningRecipe, RunControl, TrainingStopped
from worker.training.reporting import TrainingFailure


def run_recipe(config: Any, store_root: Path) -> tuple[FineTuningRecipe, RecordingReporter]:
    reporter = RecordingReporter()
    recipe = FineTuningRecipe(config, ArtifactStore(store_root), reporter)
    recipe.setup()
    recipe.train()
    return recipe, reporter


def test_same_seed_reproduces_the_same_losses_on_cpu(make_config: Any, tmp_path: Path) -> None:
    _, first = run_recipe(make_config(), tmp_path / "a")
    _, second = run_recipe(make_config(), tmp_path / "b")
    assert [s.train_loss for s in first.steps] == [s.train_loss for s in second.steps]
    _, other_seed = run_recipe(make_config(seed=4), tmp_path / "c")
    assert [s.train_loss for s in other_seed.steps] != [s.train_loss for s in first.steps]


def test_training_learns_the_toy_task_and_reports_each_epoch(make_config: Any, tmp_path: Path) -> None:
    _, reporter = run_recipe(make_config(epochs=6, learning_rate=3e-3), tmp_path)
    assert [epoch["epoch"] for epoch in reporter.epochs] == [1, 2, 3, 4, 5, 6]
    assert reporter.epochs[-1]["valid_accuracy"] == pytest.approx(1.0)
    assert set(reporter.epochs[-1]) >= {"valid_loss", "valid_macro_f1"}
    assert reporter.steps[-1].step == reporter.steps[-1].total_steps == 6 * 8  # 64 rows / batch 8 = 8 steps/epoch
    assert reporter.steps[-1].samples_per_second > 0


def test_reported_parameter_counts_follow_the_strategy(make_config: Any, tmp_path: Path) -> None:
    recipe, reporter = run_recipe(make_config(StrategyType.feature_extraction, epochs=1), tmp_path)
    head = 32 * 32 + 32 + 32 * 2 + 2  # pooler dense + classifier, hidden size 32, two labels
    assert reporter.started["trainable_parameters"] == head
    assert reporter.started["total_parameters"] == sum(p.numel() for p in recipe.network.parameters())


def test_a_complete_checkpoint_is_written_at_each_epoch_end(make_config: Any, tmp_path: Path) -> None:
    recipe, reporter = run_recipe(make_config(StrategyType.feature_extraction, epochs=2), tmp_path)
    assert [c["step"] for c in reporter.checkpoints] == [8, 16]
    folder = ArtifactStore(tmp_path).path(reporter.checkpoints[-1]["blob_key"])
    assert is_complete(folder)
    assert (folder / COMPLETE_MARKER).is_file()
    weights = load_trainable_weights(folder)
    assert set(weights) == {n for n, p in recipe.network.named_parameters() if p.requires_grad}
    assert (folder / TRAINABLE_WEIGHTS).stat().st_size < 100_000  # the frozen body is not copied
    assert not list((tmp_path / ".tmp").iterdir())


def test_each_checkpoint_reports_the_bytes_it_published(make_config: Any, tmp_path: Path) -> None:
    _, reporter = run_recipe(make_config(StrategyType.feature_extraction, epochs=2), tmp_path)
    for checkpoint in reporter.checkpoints:
        folder = ArtifactStore(tmp_path).path(checkpoint["blob_key"])
        assert checkpoint["size_bytes"] == sum(path.stat().st_size for path in folder.iterdir()) > 0


def test_exported_archive_loads_with_plain_transformers(make_config: Any, tmp_path: Path) -> None:
    recipe, _ = run_recipe(make_config(epochs=6, learning_rate=3e-3), tmp_path / "store")
    manifest = recipe.export("jobs/x/weights.tar")
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(manifest.files)
    extract_model_archive(ArtifactStore(tmp_path / "store").path(manifest.blob_key), tmp_path / "model")
    network = AutoModelForSequenceClassification.from_pretrained(tmp_path / "model")
    assert network.config.id2label == {0: "neg", 1: "pos"}
    classify = pipeline("text-classification", model=str(tmp_path / "model"))
    assert [result["label"] for result in classify(["the film was great", "the film was awful"])] == [
        "pos",
        "neg",
    ]


def test_a_missing_base_model_is_a_training_failure_naming_the_model(make_config: Any, tmp_path: Path) -> None:
    config = make_config()
    broken = type(config)(**{**config.__dict__, "base_model_location": str(tmp_path / "gone")})
    recipe = FineTuningRecipe(broken, ArtifactStore(tmp_path), RecordingReporter())
    with pytest.raises(TrainingFailure) as caught:
        recipe.setup()
    assert caught.value.code == "base_model_unavailable"
    assert str(tmp_path / "gone") in caught.value.message


def test_a_diverging_run_fails_with_advice(make_config: Any, tmp_path: Path) -> None:
    recipe = FineTuningRecipe(make_config(learning_rate=1e12), ArtifactStore(tmp_path), RecordingReporter())
    recipe.setup()
    with pytest.raises(TrainingFailure) as caught:
        recipe.train()
    assert caught.value.code == "training_diverged"
    assert "learning_rate_multiplier" in caught.value.message


class _DiesAfterFirstCheckpoint(RecordingReporter):
    def checkpoint_saved(
        self, *, step: int, epoch: int, metrics: dict[str, float], blob_key: str, kind: str, size_bytes: int
    ) -> None:
        super().checkpoint_saved(
            step=step, epoch=epoch, metrics=metrics, blob_key=blob_key, kind=kind, size_bytes=size_bytes
        )
        raise Killed


@pytest.mark.parametrize("kind", [StrategyType.full, StrategyType.partial])
def test_a_resumed_run_continues_exactly_where_the_checkpoint_left_off(
    make_config: Any, tmp_path: Path, kind: StrategyType
) -> None:
    config = make_config(kind, epochs=3, learning_rate=3e-3)
    uninterrupted, reference = run_recipe(config, tmp_path / "reference")

    store = ArtifactStore(tmp_path / "interrupted")
    dying = _DiesAfterFirstCheckpoint()
    first = FineTuningRecipe(config, store, dying)
    first.setup()
    with pytest.raises(Killed):
        first.train()
    [checkpoint] = dying.checkpoints

    resumed_reporter = RecordingReporter()
    resumed = FineTuningRecipe(config, store, resumed_reporter)
    resumed.setup()
    assert resumed.resume(store.path(checkpoint["blob_key"])) == checkpoint["step"] == 8
    trained_tokens = resumed.train()

    steps_after = [s for s in reference.steps if s.step > 8]
    assert [s.step for s in resumed_reporter.steps] == [s.step for s in steps_after]
    assert [s.train_loss for s in resumed_reporter.steps] == pytest.approx([s.train_loss for s in steps_after])
    assert [e["epoch"] for e in resumed_reporter.epochs] == [2, 3]
    assert [e["valid_loss"] for e in resumed_reporter.epochs] == pytest.approx(
        [e["valid_loss"] for e in reference.epochs[1:]]
    )
    assert trained_tokens == reference.steps[-1].trained_tokens
    for (name, expected), actual in zip(
        uninterrupted.network.state_dict().items(), resumed.network.state_dict().values(), strict=True
    ):
        assert torch.allclose(expected, actual, atol=1e-6), name


def test_resume_refuses_a_half_written_checkpoint(make_config: Any, tmp_path: Path) -> None:
    recipe, reporter = run_recipe(make_config(StrategyType.feature_extraction, epochs=1), tmp_path)
    folder = ArtifactStore(tmp_path).path(reporter.checkpoints[0]["blob_key"])
    (folder / COMPLETE_MARKER).unlink()
    with pytest.raises(ValueError, match="not a complete checkpoint"):
        recipe.resume(folder)


def assert_resumed_run_matches(
    reference: RecordingReporter, uninterrupted: FineTuningRecipe, resumed: RecordingReporter, recipe: FineTuningRecipe
) -> None:
    first_step = resumed.steps[0].step
    steps_after = [s for s in reference.steps if s.step >= first_step]
    assert [s.step for s in resumed.steps] == [s.step for s in steps_after]
    assert [s.train_loss for s in resumed.steps] == pytest.approx([s.train_loss for s in steps_after])
    assert [e["valid_loss"] for e in resumed.epochs] == pytest.approx(
        [e["valid_loss"] for e in reference.epochs[-len(resumed.epochs) :]]
    )
    for (name, expected), actual in zip(
        uninterrupted.network.state_dict().items(), recipe.network.state_dict().values(), strict=True
    ):
        assert torch.allclose(expected, actual, atol=1e-6), name


def test_interval_checkpoints_are_taken_mid_epoch_and_resume_at_the_exact_batch(
    make_config: Any, tmp_path: Path
) -> None:
    config = make_config(StrategyType.full, epochs=2, learning_rate=3e-3)
    uninterrupted, reference = run_recipe(config, tmp_path / "reference")

    store = ArtifactStore(tmp_path / "interrupted")
    dying = DiesAfterCheckpointAtStep(5)
    every_step = RunControl(checkpoint_interval_seconds=1e-9)
    first = FineTuningRecipe(config, store, dying, every_step)
    first.setup()
    with pytest.raises(Killed):
        first.train()
    assert [(c["step"], c["kind"]) for c in dying.checkpoints] == [(step, "interval") for step in range(1, 6)]

    resumed_reporter = RecordingReporter()
    resumed = FineTuningRecipe(config, store, resumed_reporter)
    resumed.setup()
    assert resumed.resume(store.path(dying.checkpoints[-1]["blob_key"])) == 5
    resumed.train()
    assert resumed_reporter.steps[0].step == 6
    assert [e["epoch"] for e in resumed_reporter.epochs] == [1, 2]
    assert_resumed_run_matches(reference, uninterrupted, resumed_reporter, resumed)


def test_a_stop_request_checkpoints_the_step_in_hand_and_a_resumed_run_loses_nothing(
    make_config: Any, tmp_path: Path
) -> None:
    config = make_config(StrategyType.partial, epochs=2, learning_rate=3e-3)
    uninterrupted, reference = run_recipe(config, tmp_path / "reference")

    store = ArtifactStore(tmp_path / "stopped")
    reporter = RecordingReporter()
    stopping = FineTuningRecipe(config, store, reporter, RunControl(stop_requested=lambda: len(reporter.steps) >= 11))
    stopping.setup()
    with pytest.raises(TrainingStopped) as stopped:
        stopping.train()
    assert stopped.value.step == 11
    assert [(c["step"], c["kind"]) for c in reporter.checkpoints] == [(8, "epoch"), (11, "stop")]

    resumed_reporter = RecordingReporter()
    resumed = FineTuningRecipe(config, store, resumed_reporter)
    resumed.setup()
    assert resumed.resume(store.path(reporter.checkpoints[-1]["blob_key"])) == 11
    resumed.train()
    assert_resumed_run_matches(reference, uninterrupted, resumed_reporter, resumed)


def test_a_stop_request_right_after_a_checkpoint_writes_no_second_one(make_config: Any, tmp_path: Path) -> None:
    reporter = RecordingReporter()
    recipe = FineTuningRecipe(
        make_config(StrategyType.feature_extraction, epochs=2),
        ArtifactStore(tmp_path),
        reporter,
        RunControl(stop_requested=lambda: len(reporter.checkpoints) == 1),
    )
    recipe.setup()
    with pytest.raises(TrainingStopped) as stopped:
        recipe.train()
    assert stopped.value.step == 8
    assert [c["kind"] for c in reporter.checkpoints] == ["epoch"]


def test_an_archive_that_does_not_read_back_whole_is_refused_before_it_is_published(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"x" * 50_000)
    archive = tmp_path / "model.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(folder / "model.safetensors", arcname="model.safetensors")
    verify_archive(archive, folder, ["model.safetensors"])
    with archive.open("r+b") as handle:  # a write cut short, as on a full disk
        handle.truncate(20_000)
    with pytest.raises(OSError, match="archive"):
        verify_archive(archive, folder, ["model.safetensors"])


def test_a_checkpoint_from_before_mid_epoch_checkpoints_still_resumes(make_config: Any, tmp_path: Path) -> None:
    recipe, reporter = run_recipe(make_config(StrategyType.feature_extraction, epochs=1), tmp_path)
    folder = ArtifactStore(tmp_path).path(reporter.checkpoints[0]["blob_key"])
    state = json.loads((folder / "trainer_state.json").read_text())
    del state["batches_into_epoch"]  # the older format
    (folder / "trainer_state.json").write_text(json.dumps(state))
    assert recipe.resume(folder) == 8
    assert recipe.position.batches_into_epoch == 0


def test_full_trains_a_network_the_anatomy_cannot_split_and_other_strategies_fail_clearly(
    make_config: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unsplittable(network: torch.nn.Module) -> None:
        raise UnsplittableArchitecture("no layer stack in a 'toy' model")

    monkeypatch.setattr("worker.training.recipe.find_anatomy", unsplittable)
    recipe, reporter = run_recipe(make_config(StrategyType.full, epochs=1), tmp_path / "full")
    assert reporter.started["trainable_parameters"] == reporter.started["total_parameters"]
    assert reporter.epochs
    partial = FineTuningRecipe(
        make_config(StrategyType.partial), ArtifactStore(tmp_path / "partial"), RecordingReporter()
    )
    with pytest.raises(TrainingFailure, match="no layer stack"):
        partial.setup()
