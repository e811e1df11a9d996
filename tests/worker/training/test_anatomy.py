from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import pytest
import torch
import transformers
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from models.architectures import ARCHITECTURES
from worker.training.anatomy import (
    Anatomy,
    UnsplittableArchitecture,
    anatomy_from_paths,
    anatomy_paths,
    find_anatomy,
    heuristic_paths,
)

TEXT_SIZES: dict[str, Any] = {
    "vocab_size": 64,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 48,
    "max_position_embeddings": 32,
}
TEXT_HEADS = {
    "sequence": transformers.AutoModelForSequenceClassification,
    "token": transformers.AutoModelForTokenClassification,
    "question": transformers.AutoModelForQuestionAnswering,
}


def text_example() -> dict[str, torch.Tensor]:
    return {"input_ids": torch.tensor([[2, 7, 11, 5, 3]]), "attention_mask": torch.ones(1, 5, dtype=torch.long)}


def image_example(size: int) -> Callable[[], dict[str, torch.Tensor]]:
    # Two images: batch norm in training mode needs more than one value per channel.
    return lambda: {"pixel_values": torch.randn(2, 3, size, size)}


@dataclass(frozen=True)
class Family:
    """A tiny network of one family, with what the test expects of its anatomy written out by hand."""

    build_config: Callable[[], PretrainedConfig]
    build_network: Callable[[PretrainedConfig], PreTrainedModel]
    example: Callable[[], dict[str, torch.Tensor]]
    stack: str  # where the layers sit in the network
    depth: Callable[[PretrainedConfig], int]  # the number of layers, as the config gives it
    # Name prefixes of the parameters still training once the embeddings and layer 0 are frozen.
    trainable_above_layer_0: tuple[str, ...]
    layer_0_output: str  # the module whose output is layer 0's


def sequence_classifier(config: PretrainedConfig) -> PreTrainedModel:
    network: PreTrainedModel = transformers.AutoModelForSequenceClassification.from_config(config)
    return network


def causal_lm(config: PretrainedConfig) -> PreTrainedModel:
    network: PreTrainedModel = transformers.AutoModelForCausalLM.from_config(config)
    return network


def image_classifier(config: PretrainedConfig) -> PreTrainedModel:
    network: PreTrainedModel = transformers.AutoModelForImageClassification.from_config(config)
    return network


def num_hidden_layers(config: PretrainedConfig) -> int:
    depth: int = config.num_hidden_layers
    return depth


def deberta_v3_config(**extra: Any) -> PretrainedConfig:
    # deberta-v3's layout: relative attention over bucketed positions, the table normalised by encoder.LayerNorm.
    return transformers.DebertaV2Config(
        **TEXT_SIZES,
        relative_attention=True,
        position_buckets=8,
        norm_rel_ebd="layer_norm",
        pos_att_type=["p2c", "c2p"],
        **extra,
    )


def llama_config(**extra: Any) -> PretrainedConfig:
    return transformers.LlamaConfig(**TEXT_SIZES, num_key_value_heads=1, **extra)


def wav2vec2_config(**extra: Any) -> PretrainedConfig:
    # Masking on, so that training replaces frames with masked_spec_embed; no layerdrop, so layer 0 always runs.
    sizes: dict[str, Any] = {
        "vocab_size": 32,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 48,
        "conv_dim": (8, 8, 8),
        "conv_stride": (4, 4, 2),
        "conv_kernel": (8, 8, 4),
        "num_conv_pos_embeddings": 8,
        "num_conv_pos_embedding_groups": 2,
        "classifier_proj_size": 16,
    }
    return transformers.Wav2Vec2Config(**(sizes | extra), mask_time_prob=0.5, mask_time_length=2, layerdrop=0.0)


def wav2vec2_classifier(config: PretrainedConfig) -> PreTrainedModel:
    return transformers.Wav2Vec2ForSequenceClassification(config)


def whisper_config() -> PretrainedConfig:
    return transformers.WhisperConfig(
        vocab_size=64,
        d_model=32,
        encoder_layers=2,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=48,
        decoder_ffn_dim=48,
        num_mel_bins=8,
        max_source_positions=16,
        max_target_positions=16,
        pad_token_id=1,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=3,
        begin_suppress_tokens=None,
        classifier_proj_size=16,
    )


def whisper_classifier(config: PretrainedConfig) -> PreTrainedModel:
    return transformers.WhisperForAudioClassification(config)


FAMILIES: dict[str, Family] = {
    "bert": Family(
        lambda: transformers.BertConfig(**TEXT_SIZES),
        sequence_classifier,
        text_example,
        "bert.encoder.layer",
        num_hidden_layers,
        ("bert.encoder.layer.1.", "bert.pooler.", "classifier."),
        "bert.encoder.layer.0",
    ),
    "distilbert": Family(
        lambda: transformers.DistilBertConfig(
            vocab_size=64, dim=32, n_layers=2, n_heads=2, hidden_dim=48, max_position_embeddings=32
        ),
        sequence_classifier,
        text_example,
        "distilbert.transformer.layer",
        lambda config: int(config.n_layers),
        ("distilbert.transformer.layer.1.", "pre_classifier.", "classifier."),
        "distilbert.transformer.layer.0",
    ),
    "roberta": Family(
        lambda: transformers.RobertaConfig(**TEXT_SIZES),
        sequence_classifier,
        text_example,
        "roberta.encoder.layer",
        num_hidden_layers,
        ("roberta.encoder.layer.1.", "classifier."),
        "roberta.encoder.layer.0",
    ),
    "deberta-v2": Family(
        deberta_v3_config,
        sequence_classifier,
        text_example,
        "deberta.encoder.layer",
        num_hidden_layers,
        ("deberta.encoder.layer.1.", "pooler.", "classifier."),
        "deberta.encoder.layer.0",
    ),
    # deberta-v2-xlarge's layout: a convolution beside the stack adds layer 0's input to its output.
    "deberta-v2 with conv": Family(
        lambda: deberta_v3_config(conv_kernel_size=3, conv_act="gelu"),
        sequence_classifier,
        text_example,
        "deberta.encoder.layer",
        num_hidden_layers,
        ("deberta.encoder.layer.1.", "pooler.", "classifier."),
        "deberta.encoder.conv",
    ),
    "electra": Family(
        lambda: transformers.ElectraConfig(**TEXT_SIZES, embedding_size=16),
        sequence_classifier,
        text_example,
        "electra.encoder.layer",
        num_hidden_layers,
        ("electra.encoder.layer.1.", "classifier."),
        "electra.encoder.layer.0",
    ),
    "gpt2": Family(
        lambda: transformers.GPT2Config(
            vocab_size=64, n_embd=32, n_layer=2, n_head=2, n_positions=32, bos_token_id=1, eos_token_id=2
        ),
        causal_lm,
        lambda: {"input_ids": torch.tensor([[2, 7, 11, 5, 3]])},
        "transformer.h",
        lambda config: int(config.n_layer),
        ("transformer.h.1.", "transformer.ln_f."),  # lm_head.weight is wte.weight: it freezes with the embeddings
        "transformer.h.0",
    ),
    "llama": Family(
        llama_config,
        causal_lm,
        lambda: {"input_ids": torch.tensor([[2, 7, 11, 5, 3]])},
        "model.layers",
        num_hidden_layers,
        ("model.layers.1.", "model.norm.", "lm_head."),
        "model.layers.0",
    ),
    "llama with tied head": Family(
        lambda: llama_config(tie_word_embeddings=True),
        causal_lm,
        lambda: {"input_ids": torch.tensor([[2, 7, 11, 5, 3]])},
        "model.layers",
        num_hidden_layers,
        ("model.layers.1.", "model.norm."),
        "model.layers.0",
    ),
    "vit": Family(
        lambda: transformers.ViTConfig(
            image_size=16,
            patch_size=8,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=48,
        ),
        image_classifier,
        image_example(16),
        "vit.layers",
        num_hidden_layers,
        ("vit.layers.1.", "vit.layernorm.", "classifier."),
        "vit.layers.0",
    ),
    "resnet": Family(
        lambda: transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 16], depths=[1, 1, 1]),
        image_classifier,
        image_example(32),
        "resnet.encoder.stages",
        lambda config: len(config.depths),  # a layer is a stage
        ("resnet.encoder.stages.1.", "resnet.encoder.stages.2.", "classifier."),
        "resnet.encoder.stages.0",
    ),
    "mobilenet_v2": Family(
        lambda: transformers.MobileNetV2Config(image_size=32, depth_multiplier=0.25),
        image_classifier,
        image_example(32),
        "mobilenet_v2.layer",
        lambda config: 16,  # the modeling code always builds 16 inverted residual blocks; the config has no key
        (*(f"mobilenet_v2.layer.{index}." for index in range(1, 16)), "mobilenet_v2.conv_1x1.", "classifier."),
        "mobilenet_v2.layer.0",
    ),
    "wav2vec2": Family(
        wav2vec2_config,
        wav2vec2_classifier,
        lambda: {"input_values": torch.randn(1, 800)},
        "wav2vec2.encoder.layers",
        num_hidden_layers,
        ("wav2vec2.encoder.layers.1.", "projector.", "classifier."),
        "wav2vec2.encoder.layers.0",
    ),
    # The large checkpoints' layout: the encoder's layer norm comes after the last layer.
    "wav2vec2 stable layer norm": Family(
        lambda: wav2vec2_config(do_stable_layer_norm=True, feat_extract_norm="layer"),
        wav2vec2_classifier,
        lambda: {"input_values": torch.randn(1, 800)},
        "wav2vec2.encoder.layers",
        num_hidden_layers,
        ("wav2vec2.encoder.layers.1.", "wav2vec2.encoder.layer_norm.", "projector.", "classifier."),
        "wav2vec2.encoder.layers.0",
    ),
    # The head mixes every layer's output through `layer_weights`, a parameter set on the task network itself.
    "wav2vec2 weighted layer sum": Family(
        lambda: wav2vec2_config(use_weighted_layer_sum=True),
        wav2vec2_classifier,
        lambda: {"input_values": torch.randn(1, 800)},
        "wav2vec2.encoder.layers",
        num_hidden_layers,
        ("wav2vec2.encoder.layers.1.", "layer_weights", "projector.", "classifier."),
        "wav2vec2.encoder.layers.0",
    ),
    "whisper": Family(
        whisper_config,
        whisper_classifier,
        lambda: {"input_features": torch.randn(1, 8, 32)},  # 2 × max_source_positions frames of 8 mel bins
        "encoder.layers",
        lambda config: int(config.encoder_layers),
        ("encoder.layers.1.", "encoder.layer_norm.", "projector.", "classifier."),
        "encoder.layers.0",
    ),
}


def build(family: str) -> PreTrainedModel:
    torch.manual_seed(0)
    return FAMILIES[family].build_network(FAMILIES[family].build_config())


def parameter_ids_by_part(anatomy: Anatomy) -> dict[str, set[int]]:
    return {
        part: {id(parameter) for module in modules for parameter in module.parameters()}
        for part, modules in anatomy.parts().items()
    }


def assert_each_parameter_in_one_part(network: nn.Module, anatomy: Anatomy) -> None:
    ids_by_part = parameter_ids_by_part(anatomy)
    tied = {id(network.get_parameter(name)) for name in anatomy.tied_to_embeddings}
    for name, parameter in network.named_parameters():
        holders = {part for part, ids in ids_by_part.items() if id(parameter) in ids}
        if id(parameter) in tied:
            assert holders == {"embeddings", "head"}, name
        else:
            assert len(holders) == 1, (name, holders)
    names = anatomy.parameter_names(network)
    assert sum(len(part_names) for part_names in names.values()) == len(dict(network.named_parameters()))
    assert set().union(*names.values()) == set(dict(network.named_parameters()))


def trainable_names(network: nn.Module) -> set[str]:
    return {name for name, parameter in network.named_parameters() if parameter.requires_grad}


def parameters_reaching(output: torch.Tensor, network: nn.Module) -> set[str]:
    """The trainable parameters the output depends on through the autograd graph."""
    trainable = [(name, parameter) for name, parameter in network.named_parameters() if parameter.requires_grad]
    if not output.requires_grad:
        return set()
    gradients = torch.autograd.grad(output.sum(), [parameter for _, parameter in trainable], allow_unused=True)
    return {name for (name, _), gradient in zip(trainable, gradients, strict=True) if gradient is not None}


def first_tensor(output: Any) -> torch.Tensor:
    while not isinstance(output, torch.Tensor):
        output = output[0]
    return output


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_parameter_lies_in_exactly_one_part(family: str) -> None:
    network = build(family)
    assert_each_parameter_in_one_part(network, find_anatomy(network))


@pytest.mark.parametrize("head", list(TEXT_HEADS))
@pytest.mark.parametrize("family", ["bert", "distilbert", "roberta", "deberta-v2", "electra"])
def test_every_text_task_head_leaves_each_parameter_in_exactly_one_part(family: str, head: str) -> None:
    network: PreTrainedModel = TEXT_HEADS[head].from_config(FAMILIES[family].build_config())
    anatomy = find_anatomy(network)
    assert_each_parameter_in_one_part(network, anatomy)
    head_names = anatomy.parameter_names(network)["head"]
    new_head = {"sequence": "classifier.", "token": "classifier.", "question": "qa_outputs."}[head]
    assert any(name.startswith(new_head) for name in head_names)
    assert not any(name.startswith(FAMILIES[family].stack) for name in head_names)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_layers_are_the_stack_the_config_counts_bottom_to_top(family: str) -> None:
    network = build(family)
    layers = find_anatomy(network).layers
    assert len(layers) == FAMILIES[family].depth(network.config)
    stack = network.get_submodule(FAMILIES[family].stack)
    # DeBERTa-v2's layer 0 comes grouped with the convolution beside the stack.
    first = [module for module in layers[0].modules() if module is stack[0]]
    assert first == [stack[0]]
    assert all(layer is stack[index] for index, layer in enumerate(layers) if index > 0)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_freezing_embeddings_and_layer_0_trains_exactly_what_lies_above(family: str) -> None:
    network = build(family)
    anatomy = find_anatomy(network)
    for module in [*anatomy.embeddings, anatomy.layers[0]]:
        module.requires_grad_(False)
    names = set(dict(network.named_parameters()))
    prefixes = FAMILIES[family].trainable_above_layer_0
    assert all(any(name.startswith(prefix) for name in names) for prefix in prefixes)
    assert trainable_names(network) == {name for name in names if name.startswith(prefixes)}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_layer_0_output_is_a_fixed_function_of_the_input_once_frozen(family: str) -> None:
    """Shared position tables and norms must freeze too: nothing trainable may reach layer 0's output."""
    network = build(family)
    anatomy = find_anatomy(network)
    for module in [*anatomy.embeddings, anatomy.layers[0]]:
        module.requires_grad_(False)
    captured: list[torch.Tensor] = []
    hook = network.get_submodule(FAMILIES[family].layer_0_output).register_forward_hook(
        lambda module, inputs, output: captured.append(first_tensor(output))
    )
    network.train()  # training-only paths too: Wav2Vec2 writes masked_spec_embed into masked frames
    outputs = network(**FAMILIES[family].example())
    hook.remove()
    assert len(captured) == 1
    assert parameters_reaching(captured[0], network) == set()
    assert parameters_reaching(outputs.logits, network) >= {
        name for name in trainable_names(network) if name.startswith(FAMILIES[family].trainable_above_layer_0[-1])
    }


@pytest.mark.parametrize("family", ["gpt2", "llama with tied head"])
def test_a_language_model_head_tied_to_the_token_table_is_reported(family: str) -> None:
    network = build(family)
    anatomy = find_anatomy(network)
    assert anatomy.tied_to_embeddings == ["lm_head.weight"]
    assert "lm_head.weight" not in anatomy.parameter_names(network)["head"]
    for module in anatomy.embeddings:
        module.requires_grad_(False)
    assert network.get_parameter("lm_head.weight").requires_grad is False


def test_an_untied_language_model_head_is_the_head() -> None:
    network = build("llama")
    anatomy = find_anatomy(network)
    assert anatomy.tied_to_embeddings == []
    assert anatomy.parameter_names(network)["head"] == {"lm_head.weight"}


def test_shared_position_table_and_norm_of_deberta_v2_are_embeddings() -> None:
    network = build("deberta-v2")
    assert anatomy_paths(network).embeddings == ("embeddings", "encoder.rel_embeddings", "encoder.LayerNorm")


def test_masked_spec_embed_is_held_as_a_parameter_of_the_embeddings() -> None:
    network = build("wav2vec2")
    before = list(network.state_dict())
    embeddings = find_anatomy(network).embeddings
    assert any(
        parameter is network.wav2vec2.masked_spec_embed for module in embeddings for parameter in module.parameters()
    )
    assert list(network.state_dict()) == before


def test_paths_a_config_does_not_build_are_left_out() -> None:
    network = sequence_classifier(transformers.ElectraConfig(**TEXT_SIZES, embedding_size=32))
    assert anatomy_paths(network).embeddings == ("embeddings",)


def test_whisper_classifier_is_its_own_base_model() -> None:
    network = build("whisper")
    assert network.base_model is network
    names = find_anatomy(network).parameter_names(network)
    assert names["embeddings"] == {
        "encoder.conv1.weight",
        "encoder.conv1.bias",
        "encoder.conv2.weight",
        "encoder.conv2.bias",
        "encoder.embed_positions.weight",
    }
    assert names["body_top"] == {"encoder.layer_norm.weight", "encoder.layer_norm.bias"}


@pytest.mark.parametrize("family", ["bert", "distilbert", "roberta", "llama", "vit"])
def test_heuristics_split_as_the_table_does_where_both_work(family: str) -> None:
    network = build(family)
    guessed = heuristic_paths(network)
    assert guessed == replace(ARCHITECTURES[network.config.model_type], optional=frozenset())
    assert guessed == anatomy_paths(network)
    by_names = anatomy_from_paths(network, guessed).parameter_names(network)
    assert by_names == find_anatomy(network).parameter_names(network)


def test_heuristics_refuse_two_stacks_of_the_same_depth() -> None:
    # Two feature-encoder convolutions and two transformer layers: the names cannot tell which is the stack.
    network = wav2vec2_classifier(wav2vec2_config(conv_dim=(8, 8), conv_stride=(4, 4), conv_kernel=(8, 8)))
    with pytest.raises(UnsplittableArchitecture, match="several lists of 2 layers"):
        heuristic_paths(network)
    assert len(find_anatomy(network).layers) == 2


class ToyConfig(PretrainedConfig):
    model_type = "toy-mlp"


class ToyNetwork(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.config = ToyConfig(num_hidden_layers=2)
        self.blocks = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))


def test_a_network_with_no_stack_of_layers_is_unsplittable() -> None:
    with pytest.raises(UnsplittableArchitecture, match="model_type 'toy-mlp' is not in the anatomy table"):
        find_anatomy(ToyNetwork())


def test_a_network_without_a_config_is_unsplittable() -> None:
    with pytest.raises(UnsplittableArchitecture, match="Sequential has no Hugging Face config"):
        find_anatomy(nn.Sequential(nn.Linear(4, 4)))


def test_a_table_entry_that_does_not_match_the_network_is_refused() -> None:
    network = build("bert")
    network.bert.encoder = nn.Module()
    with pytest.raises(UnsplittableArchitecture, match="model_type 'bert': the anatomy table names encoder.layer"):
        find_anatomy(network)


def test_a_stack_of_another_depth_than_the_config_counts_is_refused() -> None:
    network = build("bert")
    network.config.num_hidden_layers = 3
    with pytest.raises(UnsplittableArchitecture, match="the config counts 3 layers, encoder.layer holds 2"):
        find_anatomy(network)
