"""The freeze plan: what trains in each epoch, read off the network and optimiser, from the embeddings up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from models.storage.blobs import ArtifactStore
from models.strategies.names import StrategyType
from models.strategies.specs import resolved_strategy
from tests.worker.training.conftest import RecordingReporter
from worker.training.freeze_plan import FreezePlan, UnitState
from worker.training.recipe import FineTuningRecipe


def states(plan: FreezePlan) -> dict[str, str]:
    return {unit.name: unit.state.value for unit in plan.units}


def run(config: Any, tmp_path: Path) -> RecordingReporter:
    reporter = RecordingReporter()
    recipe = FineTuningRecipe(config, ArtifactStore(tmp_path), reporter)
    recipe.setup()
    recipe.train()
    return reporter


def with_strategy(config: Any, kind: StrategyType, **knobs: Any) -> Any:
    return type(config)(**{**config.__dict__, "strategy": resolved_strategy(kind, 2, **knobs)})


def test_partial_reports_one_plan_frozen_below_and_trainable_above(make_config: Any, tmp_path: Path) -> None:
    config = make_config(StrategyType.partial, epochs=2)

    [plan] = run(config, tmp_path).plans  # nothing changes between epochs: reported once

    assert plan.epoch == 1
    assert [unit.name for unit in plan.units] == ["embeddings", "layer 0", "layer 1", "head"]
    trainable_layers = config.strategy.trainable_layers
    expected = {"embeddings": "frozen", "head": "new"}
    expected |= {f"layer {index}": "trainable" if index >= 2 - trainable_layers else "frozen" for index in (0, 1)}
    assert states(plan) == expected
    assert all(unit.learning_rate is None for unit in plan.units if unit.state is UnitState.frozen)
    assert all(
        unit.trainable_parameters == unit.parameters for unit in plan.units if unit.state is not UnitState.frozen
    )
    assert sum(unit.parameters for unit in plan.units) == sum(p.numel() for p in _network(config).parameters())


def test_gradual_unfreezing_reports_a_new_plan_each_epoch_a_layer_thaws_with_its_decayed_rate(
    make_config: Any, tmp_path: Path
) -> None:
    config = with_strategy(make_config(StrategyType.full, epochs=4), StrategyType.gradual_unfreezing, layer_decay=0.5)

    plans = run(config, tmp_path).plans

    assert [plan.epoch for plan in plans] == [1, 2, 3, 4]
    assert [states(plan) for plan in plans] == [
        {"embeddings": "frozen", "layer 0": "frozen", "layer 1": "frozen", "head": "new"},
        {"embeddings": "frozen", "layer 0": "frozen", "layer 1": "trainable", "head": "new"},
        {"embeddings": "frozen", "layer 0": "trainable", "layer 1": "trainable", "head": "new"},
        {"embeddings": "trainable", "layer 0": "trainable", "layer 1": "trainable", "head": "new"},
    ]
    rates = {unit.name: unit.learning_rate for unit in plans[-1].units}
    head_rate = config.hyperparameters.learning_rate
    assert rates == {"head": head_rate, "layer 1": head_rate / 2, "layer 0": head_rate / 4, "embeddings": head_rate / 8}
    assert plans[1].summary() == "layer 1 and head train; embeddings and layer 0 frozen"


def _network(config: Any) -> Any:
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(config.base_model_location, num_labels=2)
