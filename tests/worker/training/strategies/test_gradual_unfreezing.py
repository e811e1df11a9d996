"""gradual_unfreezing: the head first, then one more layer per epoch from the top, resumable mid-schedule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from models.storage.blobs import ArtifactStore
from models.strategies.names import StrategyType
from models.strategies.specs import resolved_strategy
from tests.worker.training.conftest import DiesAfterCheckpointAtStep, Killed, RecordingReporter
from worker.training.anatomy import find_anatomy
from worker.training.recipe import FineTuningRecipe, RunControl
from worker.training.strategies.protocol import NetworkLayout
from worker.training.strategies.registry import build_strategy

HEAD = {"bert.pooler.dense.weight", "bert.pooler.dense.bias", "classifier.weight", "classifier.bias"}


def trainable_prefixes(network: torch.nn.Module) -> set[str]:
    """What trains, by part: `head`, `layer.N`, `embeddings`."""
    parts = set()
    for name, parameter in network.named_parameters():
        if not parameter.requires_grad:
            continue
        if name in HEAD:
            parts.add("head")
        elif name.startswith("bert.encoder.layer."):
            parts.add("layer." + name.split(".")[3])
        elif name.startswith("bert.embeddings."):
            parts.add("embeddings")
    return parts


def test_each_epoch_unfreezes_one_more_layer_from_the_top_and_the_embeddings_last(tiny_bert_folder: Path) -> None:
    network = AutoModelForSequenceClassification.from_pretrained(tiny_bert_folder, num_labels=2)
    strategy = build_strategy(resolved_strategy(StrategyType.gradual_unfreezing, 2))
    groups = strategy.apply(network, NetworkLayout(find_anatomy(network), frozenset()))
    schedule = []
    for epoch in (1, 2, 3, 4, 5):
        strategy.on_epoch_start(epoch)
        schedule.append((trainable_prefixes(network), strategy.frozen_layers()))
    assert schedule == [
        ({"head"}, 2),
        ({"head", "layer.1"}, 1),
        ({"head", "layer.1", "layer.0"}, 0),
        ({"head", "layer.1", "layer.0", "embeddings"}, 0),
        ({"head", "layer.1", "layer.0", "embeddings"}, 0),
    ]
    # The optimiser holds everything from the start, so later epochs need no new optimiser.
    grouped = {id(p) for group in groups for p in group.parameters}
    assert grouped == {id(p) for p in network.parameters()}


def test_with_a_layer_decay_each_layer_learns_at_the_rate_of_the_one_above_times_the_decay(
    tiny_bert_folder: Path,
) -> None:
    network = AutoModelForSequenceClassification.from_pretrained(tiny_bert_folder, num_labels=2)
    strategy = build_strategy(resolved_strategy(StrategyType.gradual_unfreezing, 2, layer_decay=0.5))
    groups = strategy.apply(network, NetworkLayout(find_anatomy(network), frozenset()))
    named = dict(network.named_parameters())
    scale_of = {id(p): group.learning_rate_scale for group in groups for p in group.parameters}
    assert scale_of[id(named["classifier.weight"])] == 1.0
    assert scale_of[id(named["bert.encoder.layer.1.attention.self.query.weight"])] == 0.5
    assert scale_of[id(named["bert.encoder.layer.0.attention.self.query.weight"])] == 0.25
    assert scale_of[id(named["bert.embeddings.word_embeddings.weight"])] == 0.125


def test_a_frozen_layer_does_not_move_until_its_epoch_comes(make_config: Any, tmp_path: Path) -> None:
    config = make_config(StrategyType.full, epochs=2)
    config = type(config)(**{**config.__dict__, "strategy": resolved_strategy(StrategyType.gradual_unfreezing, 2)})
    recipe = FineTuningRecipe(config, ArtifactStore(tmp_path), RecordingReporter())
    recipe.setup()
    before = {name: p.detach().clone() for name, p in recipe.network.named_parameters()}
    recipe.train()
    moved = {name for name, p in recipe.network.named_parameters() if not torch.equal(before[name], p.detach())}
    assert {name for name in moved if name.startswith("bert.encoder.layer.1.")}  # unfrozen in epoch 2
    assert not {name for name in moved if name.startswith(("bert.encoder.layer.0.", "bert.embeddings."))}
    assert moved >= HEAD


@pytest.mark.parametrize("dies_at_step", [8, 12])  # an epoch end, and mid-epoch 2
def test_a_run_resumed_mid_schedule_trains_what_the_schedule_says_and_reproduces_the_losses(
    make_config: Any, tmp_path: Path, dies_at_step: int
) -> None:
    config = make_config(StrategyType.full, epochs=3, learning_rate=3e-3)
    config = type(config)(**{**config.__dict__, "strategy": resolved_strategy(StrategyType.gradual_unfreezing, 2)})
    reference_reporter = RecordingReporter()
    reference = FineTuningRecipe(config, ArtifactStore(tmp_path / "reference"), reference_reporter)
    reference.setup()
    reference.train()

    store = ArtifactStore(tmp_path / "interrupted")
    dying = DiesAfterCheckpointAtStep(dies_at_step)
    first = FineTuningRecipe(config, store, dying, RunControl(checkpoint_interval_seconds=1e-9))
    first.setup()
    with pytest.raises(Killed):
        first.train()
    resumed_reporter = RecordingReporter()
    resumed = FineTuningRecipe(config, store, resumed_reporter)
    resumed.setup()
    assert resumed.resume(store.path(dying.checkpoints[-1]["blob_key"])) == dies_at_step
    resumed.train()
    expected = [s.train_loss for s in reference_reporter.steps if s.step > dies_at_step]
    assert [s.train_loss for s in resumed_reporter.steps] == pytest.approx(expected)
    for (name, want), got in zip(
        reference.network.state_dict().items(), resumed.network.state_dict().values(), strict=True
    ):
        assert torch.allclose(want, got, atol=1e-6), name
