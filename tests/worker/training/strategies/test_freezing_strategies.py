from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, DistilBertConfig, PreTrainedModel, RobertaConfig

from models.strategies.names import StrategyType
from models.strategies.specs import AnyStrategySpec, resolved_strategy
from worker.training.anatomy import find_anatomy
from worker.training.strategies.parameter_groups import optimizer_parameter_groups
from worker.training.strategies.protocol import NetworkLayout, ParameterGroup, Strategy
from worker.training.strategies.registry import build_strategy

HEAD = {"bert.pooler.dense.weight", "bert.pooler.dense.bias", "classifier.weight", "classifier.bias"}


def load_tiny_bert(folder: Path) -> PreTrainedModel:
    network: PreTrainedModel = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=3)
    return network


def trainable_names(network: torch.nn.Module) -> set[str]:
    return {name for name, parameter in network.named_parameters() if parameter.requires_grad}


def strategy(kind: StrategyType, trainable_layers: int | None = None, decay: float | None = None) -> AnyStrategySpec:
    knobs: dict[str, object] = {}
    if trainable_layers is not None:
        knobs["trainable_layers"] = trainable_layers
    if decay is not None:
        knobs["layer_decay"] = decay
    return resolved_strategy(kind, 3, **knobs)


class Applied:
    """A strategy applied to a network, as the recipe applies it: its groups and the optimiser's."""

    def __init__(self, network: torch.nn.Module, spec: AnyStrategySpec) -> None:
        self.network = network
        self.strategy: Strategy = build_strategy(spec)
        self.groups: list[ParameterGroup] = self.strategy.apply(
            network, NetworkLayout(find_anatomy(network), frozenset({"classifier.weight", "classifier.bias"}))
        )

    def optimizer_groups(self, learning_rate: float, weight_decay: float) -> list[dict[str, object]]:
        return optimizer_parameter_groups(self.network, self.groups, learning_rate, weight_decay)

    def set_training_mode(self) -> None:
        self.network.train()
        for module in self.strategy.frozen_modules():
            module.eval()


def test_feature_extraction_trains_only_pooler_and_classifier(tiny_bert_folder: Path) -> None:
    network = load_tiny_bert(tiny_bert_folder)
    Applied(network, strategy(StrategyType.feature_extraction))
    assert trainable_names(network) == HEAD


def test_partial_trains_the_top_layers_and_the_head(tiny_bert_folder: Path) -> None:
    network = load_tiny_bert(tiny_bert_folder)
    Applied(network, strategy(StrategyType.partial, trainable_layers=1))
    names = trainable_names(network)
    assert names >= HEAD
    assert all(name.startswith("bert.encoder.layer.1.") for name in names - HEAD)
    assert any(name.startswith("bert.encoder.layer.1.") for name in names)
    assert not any("embeddings" in name or "layer.0." in name for name in names)


def test_full_trains_everything(tiny_bert_folder: Path) -> None:
    network = load_tiny_bert(tiny_bert_folder)
    Applied(network, strategy(StrategyType.full))
    assert trainable_names(network) == {name for name, _ in network.named_parameters()}


def test_layerwise_lr_decays_by_depth_toward_the_input(tiny_bert_folder: Path) -> None:
    network = load_tiny_bert(tiny_bert_folder)
    applied = Applied(network, strategy(StrategyType.layerwise_lr, decay=0.5))
    groups = applied.optimizer_groups(learning_rate=1e-3, weight_decay=0.01)
    rate_of = {
        name: group["lr"]
        for group in groups
        for name, parameter in network.named_parameters()
        if any(parameter is member for member in group["params"])  # type: ignore[attr-defined]
    }
    assert rate_of["classifier.weight"] == pytest.approx(1e-3)
    assert rate_of["bert.pooler.dense.weight"] == pytest.approx(1e-3)
    assert rate_of["bert.encoder.layer.1.attention.self.query.weight"] == pytest.approx(5e-4)
    assert rate_of["bert.encoder.layer.0.attention.self.query.weight"] == pytest.approx(2.5e-4)
    assert rate_of["bert.embeddings.word_embeddings.weight"] == pytest.approx(1.25e-4)


@pytest.mark.parametrize(
    "kind", [StrategyType.feature_extraction, StrategyType.partial, StrategyType.full, StrategyType.layerwise_lr]
)
def test_every_parameter_the_strategy_trains_is_in_exactly_one_optimizer_group(
    tiny_bert_folder: Path, kind: StrategyType
) -> None:
    network = load_tiny_bert(tiny_bert_folder)
    applied = Applied(
        network,
        strategy(
            kind,
            trainable_layers=1 if kind is StrategyType.partial else None,
            decay=0.8 if kind is StrategyType.layerwise_lr else None,
        ),
    )
    grouped = [id(p) for group in applied.optimizer_groups(1e-3, 0.0) for p in group["params"]]  # type: ignore[attr-defined]
    assert len(grouped) == len(set(grouped))
    assert set(grouped) == {id(p) for p in network.parameters() if p.requires_grad}


def test_biases_and_norms_get_no_weight_decay(tiny_bert_folder: Path) -> None:
    network = load_tiny_bert(tiny_bert_folder)
    applied = Applied(network, strategy(StrategyType.full))
    groups = applied.optimizer_groups(1e-3, 0.01)
    undecayed = {id(p) for g in groups if g["weight_decay"] == 0.0 for p in g["params"]}  # type: ignore[attr-defined]
    named = dict(network.named_parameters())
    assert id(named["classifier.bias"]) in undecayed
    assert id(named["bert.embeddings.LayerNorm.weight"]) in undecayed
    assert id(named["classifier.weight"]) not in undecayed


def test_frozen_parts_stay_in_eval_mode_while_training(tiny_bert_folder: Path) -> None:
    network = load_tiny_bert(tiny_bert_folder)
    applied = Applied(network, strategy(StrategyType.partial, trainable_layers=1))
    applied.set_training_mode()
    modules = dict(network.named_modules())
    assert not modules["bert.embeddings"].training
    assert not modules["bert.encoder.layer.0"].training
    assert not modules["bert.encoder.layer.0.attention.self.dropout"].training
    assert modules["bert.encoder.layer.1"].training
    assert modules["bert.pooler"].training
    assert modules["classifier"].training


def test_frozen_weights_do_not_move_in_a_training_step(tiny_bert_folder: Path) -> None:
    torch.manual_seed(0)
    network = load_tiny_bert(tiny_bert_folder)
    applied = Applied(network, strategy(StrategyType.feature_extraction))
    before = {name: p.detach().clone() for name, p in network.named_parameters()}
    optimizer = torch.optim.AdamW(applied.optimizer_groups(1e-2, 0.0))
    applied.set_training_mode()
    batch = {"input_ids": torch.randint(5, 40, (4, 8)), "labels": torch.tensor([0, 1, 2, 0])}
    network(**batch).loss.backward()
    optimizer.step()
    for name, parameter in network.named_parameters():
        moved = not torch.equal(before[name], parameter.detach())
        assert moved == (name in HEAD), name


@pytest.mark.parametrize(
    ("config", "layer_prefix", "embedding_prefix"),
    [
        (
            DistilBertConfig(vocab_size=50, dim=16, n_layers=3, n_heads=2, hidden_dim=32, max_position_embeddings=32),
            "distilbert.transformer.layer.",
            "distilbert.embeddings.",
        ),
        (
            RobertaConfig(
                vocab_size=50,
                hidden_size=16,
                num_hidden_layers=3,
                num_attention_heads=2,
                intermediate_size=32,
                max_position_embeddings=40,
            ),
            "roberta.encoder.layer.",
            "roberta.embeddings.",
        ),
    ],
)
def test_other_encoder_architectures_split_along_their_layers(
    config: DistilBertConfig | RobertaConfig, layer_prefix: str, embedding_prefix: str
) -> None:
    config.num_labels = 2
    network = AutoModelForSequenceClassification.from_config(config)
    assert len(find_anatomy(network).layers) == 3
    Applied(network, strategy(StrategyType.partial, trainable_layers=1))
    names = trainable_names(network)
    assert any(name.startswith(f"{layer_prefix}2.") for name in names)
    assert not any(name.startswith((f"{layer_prefix}0.", f"{layer_prefix}1.", embedding_prefix)) for name in names)
    assert any(name.startswith("classifier") for name in names)
