"""Early stopping: training stops once the metric stops improving, and the best epoch's weights are delivered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from models.hyperparameters import EarlyStopping
from models.storage.blobs import ArtifactStore
from models.strategies.names import StrategyType
from tests.worker.training.conftest import Killed, RecordingReporter
from worker.training.checkpoints import load_trainable_weights
from worker.training.early_stopping import BestEpochTracker
from worker.training.export import extract_model_archive
from worker.training.recipe import FineTuningRecipe


def test_the_tracker_keeps_the_best_epoch_and_stops_after_patience_epochs_without_improvement() -> None:
    tracker = BestEpochTracker(EarlyStopping(metric="valid_accuracy", patience=2, min_delta=0.01))
    stops = [
        tracker.observe(epoch=epoch, step=epoch * 10, metrics={"valid_accuracy": value}, blob_key=f"k{epoch}")
        for epoch, value in enumerate([0.5, 0.8, 0.805, 0.7], start=1)  # 0.805 is within min_delta of 0.8
    ]
    assert stops == [False, False, False, True]
    assert tracker.best is not None and (tracker.best.epoch, tracker.best.blob_key) == (2, "k2")


def test_for_a_loss_lower_is_better() -> None:
    tracker = BestEpochTracker(EarlyStopping(metric="valid_loss", patience=1, min_delta=0.0))
    assert not tracker.observe(epoch=1, step=1, metrics={"valid_loss": 0.9}, blob_key="a")
    assert not tracker.observe(epoch=2, step=2, metrics={"valid_loss": 0.5}, blob_key="b")
    assert tracker.observe(epoch=3, step=3, metrics={"valid_loss": 0.6}, blob_key="c")
    assert tracker.best is not None and tracker.best.epoch == 2


def scripted_accuracy(recipe: FineTuningRecipe, values: list[float]) -> None:
    """Make the recipe's evaluation report these accuracies, epoch after epoch: a run whose best epoch is known."""
    evaluate = recipe.evaluate
    remaining = iter(values)

    def scripted() -> dict[str, float]:
        return {**evaluate(), "valid_accuracy": next(remaining)}

    recipe.evaluate = scripted  # type: ignore[method-assign]


def early_stopping_config(make_config: Any, *, epochs: int, patience: int) -> Any:
    config = make_config(StrategyType.full, epochs=epochs, learning_rate=3e-3)
    rule = EarlyStopping(metric="valid_accuracy", patience=patience, min_delta=0.0)
    hyperparameters = type(config.hyperparameters)(**{**config.hyperparameters.__dict__, "early_stopping": rule})
    return type(config)(**{**config.__dict__, "hyperparameters": hyperparameters})


def test_a_run_stops_early_and_delivers_the_weights_of_its_best_epoch_not_its_last(
    make_config: Any, tmp_path: Path
) -> None:
    reporter = RecordingReporter()
    store = ArtifactStore(tmp_path / "store")
    recipe = FineTuningRecipe(early_stopping_config(make_config, epochs=6, patience=2), store, reporter)
    recipe.setup()
    scripted_accuracy(recipe, [0.6, 0.9, 0.7, 0.8, 1.0, 1.0])
    recipe.train()
    assert [epoch["epoch"] for epoch in reporter.epochs] == [1, 2, 3, 4]  # no gain for two epochs after the 2nd
    best = recipe.best_epoch
    assert best is not None and (best.epoch, best.step) == (2, 16)
    assert best.metrics["valid_accuracy"] == 0.9

    best_weights = load_trainable_weights(store.path(best.blob_key))
    last_weights = {name: p.detach().clone() for name, p in recipe.network.named_parameters()}
    assert not torch.equal(best_weights["classifier.weight"], last_weights["classifier.weight"])
    manifest = recipe.export("jobs/x/weights.tar")
    extract_model_archive(store.path(manifest.blob_key), tmp_path / "model")
    exported = load_file(str(tmp_path / "model" / "model.safetensors"))
    for name, value in best_weights.items():
        assert torch.equal(exported[name], value), name


def test_without_a_setback_the_last_epoch_is_the_best_and_is_what_is_delivered(
    make_config: Any, tmp_path: Path
) -> None:
    recipe = FineTuningRecipe(
        early_stopping_config(make_config, epochs=3, patience=1), ArtifactStore(tmp_path), RecordingReporter()
    )
    recipe.setup()
    scripted_accuracy(recipe, [0.5, 0.6, 0.7])
    recipe.train()
    assert recipe.best_epoch is not None and recipe.best_epoch.epoch == 3


@pytest.mark.parametrize("dies_after_epoch", [2, 3])
def test_a_resumed_run_remembers_the_best_epoch_and_its_patience(
    make_config: Any, tmp_path: Path, dies_after_epoch: int
) -> None:
    config = early_stopping_config(make_config, epochs=6, patience=2)
    store = ArtifactStore(tmp_path)

    class DiesAfterEpoch(RecordingReporter):
        def checkpoint_saved(self, **details: Any) -> None:
            super().checkpoint_saved(**details)
            if details["epoch"] == dies_after_epoch:
                raise Killed

    dying = DiesAfterEpoch()
    first = FineTuningRecipe(config, store, dying)
    first.setup()
    scripted_accuracy(first, [0.6, 0.9, 0.7, 0.8])
    with pytest.raises(Killed):
        first.train()
    resumed_reporter = RecordingReporter()
    resumed = FineTuningRecipe(config, store, resumed_reporter)
    resumed.setup()
    resumed.resume(store.path(dying.checkpoints[-1]["blob_key"]))
    scripted_accuracy(resumed, [0.6, 0.9, 0.7, 0.8][dies_after_epoch:])
    resumed.train()
    assert [epoch["epoch"] for epoch in dying.epochs + resumed_reporter.epochs] == [1, 2, 3, 4]
    assert resumed.best_epoch is not None and resumed.best_epoch.epoch == 2
