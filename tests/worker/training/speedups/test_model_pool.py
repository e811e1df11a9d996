from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest
import torch
from torch import nn
from transformers import PreTrainedModel

from models.storage.blobs import ArtifactStore
from models.strategies.names import StrategyType
from tests.worker.training.conftest import RecordingReporter
from worker.training.recipe import FineTuningRecipe
from worker.training.run_spec import RunSpec
from worker.training.speedups.model_pool import ModelPool, Template, TemplateKey, new_module_names


def set_up(config: RunSpec, store_root: Path, pool: ModelPool | None) -> FineTuningRecipe:
    recipe = FineTuningRecipe(config, ArtifactStore(store_root), RecordingReporter(), model_pool=pool)
    recipe.setup()
    return recipe


def snapshot(network: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in network.state_dict().items()}


def assert_same_tensors(expected: dict[str, torch.Tensor], actual: dict[str, torch.Tensor]) -> None:
    assert list(actual) == list(expected)
    for name, tensor in expected.items():
        assert torch.equal(actual[name], tensor), name


def template_of(pool: ModelPool, recipe: FineTuningRecipe) -> Template:
    template = pool.get(recipe.template_key)
    assert template is not None
    return template


def key(location: str) -> TemplateKey:
    return TemplateKey(
        task="text_classification", location=location, fingerprint="f", head="labels=2", trust_remote_code=False
    )


def fake_template() -> Template:
    return Template(cast(PreTrainedModel, nn.Linear(1, 1)), new_modules=[])


def test_a_job_network_from_a_pool_template_equals_one_loaded_cold_for_the_same_seed(
    make_config: Any, tmp_path: Path
) -> None:
    config = make_config(StrategyType.full)
    cold = set_up(config, tmp_path / "cold", pool=None)
    assert not cold.model_from_pool
    pool = ModelPool(capacity=2)
    first = set_up(config, tmp_path / "first", pool)
    second = set_up(config, tmp_path / "second", pool)
    assert (first.model_from_pool, second.model_from_pool) == (False, True)
    assert first.network is not template_of(pool, first).network
    assert second.network is not first.network
    assert_same_tensors(snapshot(cold.network), snapshot(first.network))
    assert_same_tensors(snapshot(cold.network), snapshot(second.network))
    assert second.network.config.id2label == cold.network.config.id2label == {0: "neg", 1: "pos"}


def test_a_warm_job_trains_exactly_like_a_cold_one(make_config: Any, tmp_path: Path) -> None:
    config = make_config(StrategyType.partial, epochs=1)
    cold = set_up(config, tmp_path / "cold", pool=None)
    cold.train()
    pool = ModelPool(capacity=1)
    set_up(config, tmp_path / "loads", pool)
    warm = set_up(config, tmp_path / "warm", pool)
    assert warm.model_from_pool
    warm.train()
    assert isinstance(cold.reporter, RecordingReporter) and isinstance(warm.reporter, RecordingReporter)
    assert [s.train_loss for s in warm.reporter.steps] == [s.train_loss for s in cold.reporter.steps]
    assert_same_tensors(snapshot(cold.network), snapshot(warm.network))


@pytest.mark.parametrize("kind", [StrategyType.full, StrategyType.feature_extraction])
def test_the_template_is_unchanged_after_a_job_trained_on_its_copy(
    make_config: Any, tmp_path: Path, kind: StrategyType
) -> None:
    pool = ModelPool(capacity=1)
    job = set_up(make_config(kind, epochs=1, learning_rate=3e-3), tmp_path / "job", pool)
    template = template_of(pool, job)
    before = snapshot(template.network)
    labels_before = template.network.config.to_dict()["id2label"]
    job.train()
    job.export("jobs/x/weights.tar")  # export turns gradients back on and moves the network
    assert not torch.equal(snapshot(job.network)["classifier.weight"], before["classifier.weight"])  # it trained
    assert_same_tensors(before, snapshot(template.network))
    assert all(parameter.requires_grad for parameter in template.network.parameters())  # its freezing is the job's
    assert template.network.config.to_dict()["id2label"] == labels_before

    cold = set_up(make_config(kind, epochs=1, learning_rate=3e-3), tmp_path / "cold", pool=None)
    after = set_up(make_config(kind, epochs=1, learning_rate=3e-3), tmp_path / "after", pool)
    assert after.model_from_pool
    assert_same_tensors(snapshot(cold.network), snapshot(after.network))


def test_different_seeds_give_different_heads_on_the_same_body(make_config: Any, tmp_path: Path) -> None:
    pool = ModelPool(capacity=1)
    three = set_up(make_config(seed=3), tmp_path / "three", pool)
    four = set_up(make_config(seed=4), tmp_path / "four", pool)
    assert four.model_from_pool
    assert template_of(pool, four).new_modules == ["classifier"]
    heads = {name for name in snapshot(three.network) if name.startswith("classifier.")}
    assert heads == {"classifier.weight", "classifier.bias"}
    weights_three, weights_four = snapshot(three.network), snapshot(four.network)
    assert not torch.equal(weights_three["classifier.weight"], weights_four["classifier.weight"])
    body = [name for name in weights_three if name not in heads]
    assert body
    for name in body:
        assert torch.equal(weights_three[name], weights_four[name]), name


def test_the_pool_keeps_at_most_capacity_templates_evicting_the_least_recently_used() -> None:
    pool = ModelPool(capacity=2)
    first, second, third = key("a"), key("b"), key("c")
    pool.add(first, fake_template())
    pool.add(second, fake_template())
    assert pool.get(first) is not None  # now the most recently used
    pool.add(third, fake_template())
    assert first in pool
    assert second not in pool
    assert third in pool
    assert pool.get(second) is None


def test_adding_a_template_again_replaces_it_and_makes_it_the_most_recently_used() -> None:
    pool = ModelPool(capacity=2)
    first, second, third = key("a"), key("b"), key("c")
    pool.add(first, fake_template())
    pool.add(second, fake_template())
    replacement = fake_template()
    pool.add(first, replacement)
    pool.add(third, fake_template())
    assert pool.get(first) is replacement
    assert second not in pool


def test_a_pool_of_capacity_zero_keeps_no_template() -> None:
    pool = ModelPool(capacity=0)
    pool.add(key("a"), fake_template())
    assert key("a") not in pool
    assert pool.get(key("a")) is None


def test_jobs_on_a_pool_of_capacity_zero_load_cold_every_time(make_config: Any, tmp_path: Path) -> None:
    pool = ModelPool(capacity=0)
    config = make_config()
    first = set_up(config, tmp_path / "first", pool)
    second = set_up(config, tmp_path / "second", pool)
    assert (first.model_from_pool, second.model_from_pool) == (False, False)
    assert first.template_key not in pool
    assert_same_tensors(snapshot(first.network), snapshot(second.network))


def test_new_module_names_are_the_owners_of_the_missing_keys_in_a_fixed_order() -> None:
    missing = ["classifier.weight", "score.bias", "classifier.bias", "pre_classifier.dense.weight"]
    assert new_module_names(missing) == ["classifier", "pre_classifier.dense", "score"]
