from __future__ import annotations

import hashlib
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from transformers import AutoModelForSequenceClassification

from models.storage.blobs import ArtifactStore
from models.strategies.names import StrategyType
from models.tasks.text_classification import DataFormat
from tests.conftest import write_jsonl
from tests.worker.training.conftest import RecordingReporter, sentiment_rows
from worker.training.batching import length_grouped_batches, length_sorted_batches
from worker.training.examples import TokenisedExamples, from_lists
from worker.training.export import extract_model_archive
from worker.training.recipe import FineTuningRecipe, RunControl, TrainingStopped
from worker.training.run_spec import DataFile, RunSpec
from worker.training.speedups.frozen_features import (
    BoundaryFeatures,
    FeatureFiller,
    FrozenPrefix,
    compute_boundary_states,
    fill_boundary_states,
)

CPU = torch.device("cpu")
RecipeFor = Callable[[StrategyType], FineTuningRecipe]


@dataclass
class MessageRecordingReporter(RecordingReporter):
    """Also keeps the free-form messages, whose data says which frozen-features path a run took."""

    messages: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def message(self, text: str, data: dict[str, Any] | None = None) -> None:
        self.messages.append((text, data or {}))

    def feature_events(self) -> dict[str, dict[str, Any]]:
        return {data["file"]: data for _, data in self.messages if "frozen_features" in data}


def varied_sentiment_rows(count: int) -> list[dict[str, object]]:
    """The toy task with 0 to 6 fillers per sentence, so batches hold examples of different lengths."""
    return [
        {**row, "text": str(row["text"]).replace("was ", "was " + "very " * (index % 7))}
        for index, row in enumerate(sentiment_rows(count))
    ]


def varied_config(config: RunSpec, folder: Path, training_rows: int = 64) -> RunSpec:
    """The config with files of varied lengths, each named by its real sha256 as the derived-data cache needs."""
    folder.mkdir(parents=True, exist_ok=True)

    def data_file(name: str, count: int) -> DataFile:
        path = write_jsonl(folder / name, varied_sentiment_rows(count))
        return DataFile(path, DataFormat.jsonl, hashlib.sha256(path.read_bytes()).hexdigest())

    training = data_file("train.jsonl", training_rows)
    return replace(config, training_file=training, validation_file=data_file("valid.jsonl", 24))


@pytest.fixture
def recipe_for(make_config: Any, tmp_path: Path) -> RecipeFor:
    """A recipe set up (not trained) on the varied-length files under a strategy."""

    def _set_up(kind: StrategyType) -> FineTuningRecipe:
        return set_up(varied_config(make_config(kind), tmp_path / "data"), tmp_path / "store")

    return _set_up


def set_up(config: RunSpec, store_root: Path) -> FineTuningRecipe:
    recipe = FineTuningRecipe(config, ArtifactStore(store_root), MessageRecordingReporter())
    recipe.setup()
    return recipe


def evaluation_mode(network: nn.Module) -> None:
    network.eval()


def ragged_examples() -> TokenisedExamples:
    """Three examples of 3, 2 and 5 tokens."""
    return from_lists({"input_ids": [[2, 7, 3], [2, 3], [2, 7, 8, 9, 3]]}, {"labels": [1, 0, 1]}, {"input_ids": 0})


def inputs_of(examples: TokenisedExamples, indices: list[int]) -> dict[str, torch.Tensor]:
    return {name: tensor for name, tensor in examples.batch(indices).items() if name != "labels"}


def test_the_probe_finds_that_berts_pooler_reads_only_the_first_token(recipe_for: RecipeFor) -> None:
    recipe = recipe_for(StrategyType.feature_extraction)
    assert recipe.features.prefix is not None
    assert recipe.features.prefix.depth == 2
    assert recipe.features.prefix.head_reads_first_token_only(recipe.training_examples, CPU)


def test_the_probe_finds_that_a_trainable_layer_above_the_boundary_reads_every_token(recipe_for: RecipeFor) -> None:
    recipe = recipe_for(StrategyType.partial)
    assert recipe.features.prefix is not None
    assert recipe.features.prefix.depth == 1
    assert not recipe.features.prefix.head_reads_first_token_only(recipe.training_examples, CPU)


def test_the_probe_answers_no_for_left_padded_examples(recipe_for: RecipeFor) -> None:
    recipe = recipe_for(StrategyType.feature_extraction)
    assert recipe.features.prefix is not None
    left_padded = replace(recipe.training_examples, padding_side="left")
    assert not recipe.features.prefix.head_reads_first_token_only(left_padded, CPU)


def test_the_probe_leaves_the_network_whole_and_in_its_mode(recipe_for: RecipeFor) -> None:
    recipe = recipe_for(StrategyType.feature_extraction)
    assert recipe.features.prefix is not None
    recipe.network.train()
    recipe.features.prefix.head_reads_first_token_only(recipe.training_examples, CPU)
    assert recipe.network.training
    assert all("forward" not in vars(layer) for layer in recipe.features.layers)
    assert recipe.features.prefix.pending is None


@pytest.mark.parametrize("depth", [1, 2])
def test_boundary_states_are_the_hidden_states_after_the_last_frozen_layer(recipe_for: RecipeFor, depth: int) -> None:
    recipe = recipe_for(StrategyType.feature_extraction)
    prefix = FrozenPrefix(recipe.network, recipe.features.layers, depth, label_fields=recipe.task.label_fields)
    evaluation_mode(recipe.network)
    inputs = inputs_of(recipe.training_examples, [0, 1, 2, 3])
    with torch.no_grad():
        states = prefix.boundary_states(inputs)
        expected = recipe.network(**inputs, output_hidden_states=True).hidden_states[depth]
    assert torch.equal(states, expected)


def test_a_prefix_must_hold_between_one_and_all_layers(recipe_for: RecipeFor) -> None:
    recipe = recipe_for(StrategyType.feature_extraction)
    for depth in (0, 3):
        with pytest.raises(ValueError, match="a frozen prefix needs 1 to 2 layers"):
            FrozenPrefix(recipe.network, recipe.features.layers, depth, label_fields=recipe.task.label_fields)


@pytest.mark.parametrize("depth", [1, 2])
def test_the_replaced_layers_return_the_pending_states_and_the_network_gives_the_same_logits(
    recipe_for: RecipeFor, depth: int
) -> None:
    recipe = recipe_for(StrategyType.feature_extraction)
    prefix = FrozenPrefix(recipe.network, recipe.features.layers, depth, label_fields=recipe.task.label_fields)
    evaluation_mode(recipe.network)
    inputs = inputs_of(recipe.training_examples, [5, 6, 7])
    with torch.no_grad():
        expected = recipe.network(**inputs).logits
        states = prefix.boundary_states(inputs)
        with prefix.replaced():
            prefix.pending = states
            replaced_logits = recipe.network(**inputs).logits
            prefix.pending = torch.zeros_like(states)
            from_zeros = recipe.network(**inputs).logits
    assert torch.equal(replaced_logits, expected)
    assert not torch.allclose(from_zeros, expected)  # the frozen layers really did not compute


def test_the_frozen_layers_forward_is_restored_even_when_the_block_raises(recipe_for: RecipeFor) -> None:
    recipe = recipe_for(StrategyType.feature_extraction)
    prefix = FrozenPrefix(recipe.network, recipe.features.layers, 2, label_fields=recipe.task.label_fields)
    with pytest.raises(RuntimeError, match="boom"), prefix.replaced():
        prefix.pending = torch.zeros(1, 1, 32)
        assert all("forward" in vars(layer) for layer in recipe.features.layers)
        raise RuntimeError("boom")
    assert all("forward" not in vars(layer) for layer in recipe.features.layers)
    assert prefix.pending is None


@pytest.mark.parametrize("first_token_only", [True, False])
def test_computed_boundary_states_match_each_example_run_alone(recipe_for: RecipeFor, first_token_only: bool) -> None:
    recipe = recipe_for(StrategyType.feature_extraction)
    prefix = FrozenPrefix(recipe.network, recipe.features.layers, 2, label_fields=recipe.task.label_fields)
    examples = recipe.training_examples
    assert len(set(examples.lengths.tolist())) == 7
    recipe.network.train()
    states = compute_boundary_states(
        prefix,
        examples,
        first_token_only=first_token_only,
        batch_size=16,
        device=CPU,
        allocate=lambda shape: torch.full(shape, float("nan")),
    )
    assert recipe.network.training
    assert states.shape == ((len(examples), 32) if first_token_only else (examples.total_tokens, 32))
    evaluation_mode(recipe.network)
    with torch.no_grad():
        for index in range(0, len(examples), 5):
            alone = prefix.boundary_states(inputs_of(examples, [index]))[0]
            start, end = int(examples.offsets[index]), int(examples.offsets[index + 1])
            expected = alone[:1] if first_token_only else alone
            actual = states[index : index + 1] if first_token_only else states[start:end]
            torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", [StrategyType.feature_extraction, StrategyType.partial])
def test_a_batch_of_cached_features_gives_the_logits_of_the_whole_network(
    recipe_for: RecipeFor, kind: StrategyType
) -> None:
    recipe = recipe_for(kind)
    prefix, examples = recipe.features.prefix, recipe.training_examples
    assert prefix is not None
    first_token_only = kind is StrategyType.feature_extraction
    states = compute_boundary_states(
        prefix,
        examples,
        first_token_only=first_token_only,
        batch_size=64,
        device=CPU,
        allocate=lambda shape: torch.empty(shape),
    )
    features = BoundaryFeatures(examples, states, first_token_only=first_token_only)
    indices = [9, 2, 30, 17, 4]  # 2, 2, 2, 3 and 4 fillers: padded in the batch
    evaluation_mode(recipe.network)
    with torch.no_grad():
        expected = recipe.network(**inputs_of(examples, indices)).logits
        batch, pending = features.batch(indices, CPU)
        inputs = {name: tensor for name, tensor in batch.items() if name != "labels"}
        with prefix.replaced():
            prefix.pending = pending
            logits = recipe.network(**inputs).logits
        unreplaced = recipe.network(**inputs).logits
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-6)
    if first_token_only:  # the cut batch alone, without the cached states, is a different input
        assert not torch.allclose(unreplaced, expected, rtol=0, atol=1e-5)


def test_boundary_features_refuse_states_of_the_wrong_row_count(recipe_for: RecipeFor) -> None:
    recipe = recipe_for(StrategyType.feature_extraction)
    examples = recipe.training_examples
    with pytest.raises(ValueError, match=f"cached features hold 3 rows where {len(examples)} are needed"):
        BoundaryFeatures(examples, torch.zeros(3, 32), first_token_only=True)
    with pytest.raises(ValueError, match=f"where {examples.total_tokens} are needed"):
        BoundaryFeatures(examples, torch.zeros(len(examples), 32), first_token_only=False)


def test_a_first_token_batch_is_cut_to_one_position_with_each_examples_own_state() -> None:
    examples = ragged_examples()
    states = torch.arange(len(examples) * 4, dtype=torch.float32).reshape(len(examples), 4)
    batch, batch_states = BoundaryFeatures(examples, states, first_token_only=True).batch([2, 0], CPU)
    assert batch["input_ids"].tolist() == [[2], [2]]
    assert batch["attention_mask"].tolist() == [[1], [1]]
    assert batch["labels"].tolist() == [1, 1]
    assert torch.equal(batch_states, states[[2, 0]].unsqueeze(1))


def test_an_all_token_batch_places_each_tokens_state_under_the_mask_and_zeros_at_pads() -> None:
    examples = ragged_examples()
    states = torch.randn(examples.total_tokens, 4)
    batch, batch_states = BoundaryFeatures(examples, states, first_token_only=False).batch([1, 2, 0], CPU)
    assert batch["attention_mask"].tolist() == [[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    assert batch_states.shape == (3, 5, 4)
    assert torch.equal(batch_states[0, :2], states[3:5])
    assert torch.equal(batch_states[1], states[5:10])
    assert torch.equal(batch_states[2, :3], states[0:3])
    assert not batch_states[0, 2:].any()
    assert not batch_states[2, 3:].any()


def filler_for(
    recipe: FineTuningRecipe, output: torch.Tensor, *, first_token_only: bool, completions: list[float] | None = None
) -> FeatureFiller:
    assert recipe.features.prefix is not None
    return FeatureFiller(
        recipe.features.prefix,
        recipe.training_examples,
        output,
        first_token_only=first_token_only,
        batch_size=16,  # 64 examples: four length-sorted batches
        device=CPU,
        autocast=nullcontext,
        on_complete=(completions if completions is not None else []).append,
    )


def upfront_states(recipe: FineTuningRecipe, *, first_token_only: bool) -> torch.Tensor:
    assert recipe.features.prefix is not None
    return compute_boundary_states(
        recipe.features.prefix,
        recipe.training_examples,
        first_token_only=first_token_only,
        batch_size=16,
        device=CPU,
        allocate=lambda shape: torch.empty(shape),
    )


def unfilled(recipe: FineTuningRecipe, *, first_token_only: bool) -> torch.Tensor:
    examples = recipe.training_examples
    return torch.full((len(examples) if first_token_only else examples.total_tokens, 32), float("nan"))


@pytest.mark.parametrize("kind", [StrategyType.feature_extraction, StrategyType.partial])
def test_features_filled_as_training_asks_for_them_equal_an_upfront_pass_exactly(
    recipe_for: RecipeFor, kind: StrategyType
) -> None:
    recipe = recipe_for(kind)
    first_token_only = kind is StrategyType.feature_extraction
    expected = upfront_states(recipe, first_token_only=first_token_only)
    output = unfilled(recipe, first_token_only=first_token_only)
    filler = filler_for(recipe, output, first_token_only=first_token_only)
    for indices in length_grouped_batches(recipe.training_examples.lengths, 8, seed=5, epoch=1):
        filler.ensure(indices)
    assert filler.complete
    assert torch.equal(output, expected)


def test_ensure_computes_only_the_batches_that_hold_the_requested_examples(recipe_for: RecipeFor) -> None:
    recipe = recipe_for(StrategyType.feature_extraction)
    expected = upfront_states(recipe, first_token_only=True)
    output = unfilled(recipe, first_token_only=True)
    completions: list[float] = []
    filler = filler_for(recipe, output, first_token_only=True, completions=completions)
    shortest = length_sorted_batches(recipe.training_examples.lengths, 16)[0]
    filler.ensure(shortest[3:5])
    filled = ~output.isnan().any(dim=1)
    assert sorted(filled.nonzero().flatten().tolist()) == sorted(shortest)
    assert torch.equal(output[shortest], expected[shortest])
    assert not filler.complete
    assert completions == []


def test_on_complete_runs_once_when_the_last_batch_is_in(recipe_for: RecipeFor) -> None:
    recipe = recipe_for(StrategyType.feature_extraction)
    completions: list[float] = []
    filler = filler_for(recipe, unfilled(recipe, first_token_only=True), first_token_only=True, completions=completions)
    batches = length_sorted_batches(recipe.training_examples.lengths, 16)
    for indices in batches[:-1]:
        filler.ensure(indices)
    assert completions == []
    filler.ensure(batches[-1][:1])
    filler.ensure(list(range(len(recipe.training_examples))))
    filler.fill_all()
    assert len(completions) == 1
    assert completions[0] > 0


def test_features_filled_while_the_frozen_layers_are_replaced_are_computed_for_real(recipe_for: RecipeFor) -> None:
    recipe = recipe_for(StrategyType.partial)
    prefix = recipe.features.prefix
    assert prefix is not None
    expected = upfront_states(recipe, first_token_only=False)
    output = unfilled(recipe, first_token_only=False)
    filler = filler_for(recipe, output, first_token_only=False)
    evaluation_mode(recipe.network)
    inputs = inputs_of(recipe.training_examples, [0, 1, 2])
    with torch.no_grad():
        full_network = recipe.network(**inputs).logits
        with prefix.replaced():
            filler.fill_all()
            # and the replaced layers serve cached states again right after
            prefix.pending = prefix.boundary_states(inputs)
            served = recipe.network(**inputs).logits
            prefix.pending = torch.zeros_like(prefix.pending)
            from_zeros = recipe.network(**inputs).logits
    assert torch.equal(output, expected)
    assert torch.equal(served, full_network)
    assert not torch.allclose(from_zeros, full_network)


def test_filling_features_leaves_every_modules_training_mode_as_it_found_it(recipe_for: RecipeFor) -> None:
    recipe = recipe_for(StrategyType.partial)
    assert recipe.features.prefix is not None
    recipe.start_epoch(1)  # the body's frozen part in eval, the rest training
    modes = [module.training for module in recipe.network.modules()]
    assert any(modes) and not all(modes)
    output = unfilled(recipe, first_token_only=False)
    fill_boundary_states(
        recipe.features.prefix, recipe.training_examples, [0, 1, 2], output, first_token_only=False, device=CPU
    )
    assert [module.training for module in recipe.network.modules()] == modes


@pytest.mark.parametrize("kind", [StrategyType.feature_extraction, StrategyType.partial])
def test_frozen_parameters_never_get_a_gradient_nor_move_while_the_rest_trains(
    make_config: Any, tmp_path: Path, kind: StrategyType
) -> None:
    recipe = set_up(varied_config(make_config(kind, epochs=1), tmp_path / "data"), tmp_path)
    frozen_before = {name: p.detach().clone() for name, p in recipe.network.named_parameters() if not p.requires_grad}
    trainable_before = {name: p.detach().clone() for name, p in recipe.network.named_parameters() if p.requires_grad}
    assert frozen_before
    recipe.train()
    assert isinstance(recipe.reporter, MessageRecordingReporter)
    assert recipe.reporter.feature_events()["training"]["frozen_features"] == "cached"
    parameters = dict(recipe.network.named_parameters())
    assert {name for name, p in parameters.items() if not p.requires_grad} == set(frozen_before)
    for name, before in frozen_before.items():
        assert parameters[name].grad is None, name
        assert torch.equal(parameters[name], before), name
    for name, before in trainable_before.items():
        assert not torch.equal(parameters[name], before), name


def test_the_frozen_layers_forward_is_restored_after_training_and_export_matches_the_network(
    make_config: Any, tmp_path: Path
) -> None:
    config = varied_config(make_config(StrategyType.feature_extraction, epochs=1), tmp_path / "data")
    recipe = set_up(config, tmp_path / "store")
    recipe.train()
    assert all("forward" not in vars(layer) for layer in recipe.features.layers)
    inputs = inputs_of(recipe.training_examples, list(range(8)))
    evaluation_mode(recipe.network)
    with torch.no_grad():
        expected = recipe.network(**inputs).logits
    manifest = recipe.export("jobs/x/weights.tar")
    extract_model_archive(ArtifactStore(tmp_path / "store").path(manifest.blob_key), tmp_path / "model")
    exported = AutoModelForSequenceClassification.from_pretrained(tmp_path / "model").eval()
    with torch.no_grad():
        torch.testing.assert_close(exported(**inputs).logits, expected)


def test_the_frozen_layers_forward_is_restored_when_a_run_stops(make_config: Any, tmp_path: Path) -> None:
    reporter = MessageRecordingReporter()
    recipe = FineTuningRecipe(
        varied_config(make_config(StrategyType.partial), tmp_path / "data"),
        ArtifactStore(tmp_path),
        reporter,
        RunControl(stop_requested=lambda: len(reporter.steps) >= 3),
    )
    recipe.setup()
    with pytest.raises(TrainingStopped):
        recipe.train()
    assert all("forward" not in vars(layer) for layer in recipe.features.layers)
    assert recipe.features.prefix is not None
    assert recipe.features.prefix.pending is None
