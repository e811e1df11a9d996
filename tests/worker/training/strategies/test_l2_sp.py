"""L2-SP: α/2·‖θ − θ₀‖² over the pretrained parameters that train, the new head left out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from models.errors import InvalidRequest
from models.storage.blobs import ArtifactStore
from models.strategies.names import StrategyType
from models.strategies.specs import resolved_strategy
from tests.worker.training.conftest import RecordingReporter
from worker.training.anatomy import find_anatomy
from worker.training.recipe import FineTuningRecipe
from worker.training.strategies.protocol import NetworkLayout
from worker.training.strategies.registry import build_strategy

NEW_HEAD = frozenset({"classifier.weight", "classifier.bias"})


def with_l2_sp(kind: StrategyType, alpha: float, **knobs: Any) -> Any:
    return resolved_strategy(kind, 2, regularization={"type": "l2_sp", "alpha": alpha}, **knobs)


def test_the_penalty_is_half_alpha_times_the_squared_distance_of_the_trainable_pretrained_weights(
    tiny_bert_folder: Path,
) -> None:
    network = AutoModelForSequenceClassification.from_pretrained(tiny_bert_folder, num_labels=2)
    strategy = build_strategy(with_l2_sp(StrategyType.partial, 0.3, trainable_layers=1))
    strategy.apply(network, NetworkLayout(find_anatomy(network), NEW_HEAD))
    unmoved = strategy.penalty(network)
    assert unmoved is not None and float(unmoved.detach()) == 0.0
    named = dict(network.named_parameters())
    with torch.no_grad():
        named["bert.encoder.layer.1.output.dense.bias"].add_(0.5)  # trains: 32 values moved by 0.5
        named["classifier.bias"].add_(10.0)  # the new head: no starting point to keep
        named["bert.encoder.layer.0.output.dense.bias"].add_(10.0)  # frozen: not penalised
    penalty = strategy.penalty(network)
    assert penalty is not None
    assert float(penalty.detach()) == pytest.approx(0.3 / 2 * 32 * 0.5**2)


def test_the_pull_keeps_the_fine_tuned_weights_nearer_their_start(make_config: Any, tmp_path: Path) -> None:
    def distance_from_start(alpha: float | None) -> tuple[float, list[float | None]]:
        config = make_config(StrategyType.full, epochs=2, learning_rate=3e-3)
        if alpha is not None:
            config = type(config)(**{**config.__dict__, "strategy": with_l2_sp(StrategyType.full, alpha)})
        reporter = RecordingReporter()
        recipe = FineTuningRecipe(config, ArtifactStore(tmp_path / str(alpha)), reporter)
        recipe.setup()
        start = {name: p.detach().clone() for name, p in recipe.network.named_parameters()}
        recipe.train()
        moved = sum(
            float((p.detach() - start[name]).pow(2).sum())
            for name, p in recipe.network.named_parameters()
            if name not in recipe.new_parameter_names
        )
        return moved, [step.penalty for step in reporter.steps]

    free, no_penalties = distance_from_start(None)
    held, penalties = distance_from_start(50.0)
    assert held < 0.5 * free
    assert set(no_penalties) == {None}
    assert all(value is not None for value in penalties) and penalties[-1] > 0  # reported at every step


def test_feature_extraction_refuses_l2_sp_because_no_pretrained_weight_trains() -> None:
    with pytest.raises(InvalidRequest) as refused:
        resolved_strategy(StrategyType.feature_extraction, 2, regularization={"type": "l2_sp"})
    assert refused.value.param == "strategy.regularization"
