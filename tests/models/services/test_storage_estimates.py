"""A job's storage estimate per strategy, against the sizes measured on all-MiniLM-L6-v2."""

from __future__ import annotations

import pytest

from models.hyperparameters import ResolvedHyperparameters
from models.services.storage_estimates import estimate_job_storage
from models.storage.tables import BaseModel
from models.strategies.names import StrategyType
from models.strategies.specs import AnyStrategySpec, resolved_strategy

# all-MiniLM-L6-v2's counts as models.services.catalog reads them from model.safetensors.
MINILM = BaseModel(
    id="minilm", num_layers=6, embedding_parameters=11_918_592, layer_parameters=10_646_784, top_parameters=147_840
)
# Measured once (python -m bench.checkpoints' set-up, two labels): each strategy's checkpoint folder,
# and the weights archive (22,713,986 parameters with the head, plus tokenizer files).
MEASURED_CHECKPOINT_BYTES = {
    StrategyType.feature_extraction: 1_801_138,
    StrategyType.partial: 44_417_170,  # top 2 of 6 layers
    StrategyType.full: 272_678_154,
    StrategyType.layerwise_lr: 272_680_610,
}
MEASURED_WEIGHTS_BYTES = 91_596_800


def hyperparameters(n_epochs: int) -> ResolvedHyperparameters:
    return ResolvedHyperparameters(
        n_epochs=n_epochs,
        batch_size=32,
        learning_rate_multiplier=1.0,
        learning_rate=1e-4,
        warmup_ratio=0.06,
        max_length=128,
        weight_decay=0.01,
    )


def strategy(kind: StrategyType) -> AnyStrategySpec:
    return resolved_strategy(kind, 6, **({"trainable_layers": 2} if kind is StrategyType.partial else {}))


@pytest.mark.parametrize("kind", list(MEASURED_CHECKPOINT_BYTES))
def test_the_estimate_is_within_one_percent_below_the_measured_sizes(kind: StrategyType) -> None:
    estimate = estimate_job_storage(MINILM, strategy(kind), hyperparameters(3))
    assert estimate is not None
    measured = MEASURED_CHECKPOINT_BYTES[kind]
    assert 0.99 * measured < estimate.checkpoint_bytes <= measured
    assert 0.99 * MEASURED_WEIGHTS_BYTES < estimate.weights_bytes <= MEASURED_WEIGHTS_BYTES


def test_the_peak_is_one_checkpoint_per_epoch_or_the_weights_whichever_is_larger() -> None:
    full = estimate_job_storage(MINILM, strategy(StrategyType.full), hyperparameters(3))
    assert full is not None
    assert full.peak_bytes == 3 * full.checkpoint_bytes == 817_712_640
    head = estimate_job_storage(MINILM, strategy(StrategyType.feature_extraction), hyperparameters(8))
    assert head is not None
    assert head.peak_bytes == head.weights_bytes == 90_852_864


def test_a_model_without_counts_has_no_estimate() -> None:
    unknown = BaseModel(id="hub-model", num_layers=6)
    assert estimate_job_storage(unknown, strategy(StrategyType.full), hyperparameters(3)) is None
