"""The anatomy table: where each model family keeps its embeddings, layer stack and body top."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

# The config keys that count a transformer's layers when the table does not name one, in the order tried.
DEPTH_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")


@dataclass(frozen=True)
class ArchitectureParts:
    """A model family's parts as dotted paths below its base model (`network.base_model`).

    A path names a submodule or a bare parameter (one set directly on a module, outside any child). Whatever
    of the task network lies outside these paths is the head: the new task head and what the source task
    left on top, such as BERT's pooler.
    """

    # Everything the lowest layer reads besides its input, so that freezing the embeddings and the lowest k
    # layers makes the output of layer k a fixed function of the input: shared position tables and norms too.
    embeddings: tuple[str, ...]
    layers: str  # the ModuleList of blocks, bottom to top
    body_top: tuple[str, ...] = ()  # body modules applied after the last layer, such as a final norm
    # Modules outside the stack that compute part of one layer, as (layer index, path): they freeze and
    # train with that layer.
    layer_extras: tuple[tuple[int, str], ...] = ()
    # Paths only some configs build; any other path the network lacks means the table is wrong for it.
    optional: frozenset[str] = frozenset()
    # How many layers there are: the config key that counts them (a list counts by its length), or the
    # number itself where the modeling code fixes it.
    depth: str | int = "num_hidden_layers"

    def claimed_paths(self) -> tuple[str, ...]:
        """Every path the entry names, the layer stack included."""
        return (*self.embeddings, self.layers, *self.body_top, *(path for _, path in self.layer_extras))


_TEXT_ENCODER = ArchitectureParts(embeddings=("embeddings",), layers="encoder.layer")

# Wav2Vec2's base layout (`do_stable_layer_norm` false): the encoder adds the convolutional position embedding
# and applies its layer norm before the first layer, and the model may replace masked frames with
# `masked_spec_embed` (a bare parameter, built when masking is configured) before that.
_WAV2VEC2 = ArchitectureParts(
    embeddings=(
        "feature_extractor",
        "feature_projection",
        "masked_spec_embed",
        "encoder.pos_conv_embed",
        "encoder.layer_norm",
    ),
    layers="encoder.layers",
    body_top=("adapter",),
    optional=frozenset({"masked_spec_embed", "adapter"}),
)

ARCHITECTURES: dict[str, ArchitectureParts] = {
    # A layer is one transformer block unless said otherwise.
    "bert": _TEXT_ENCODER,
    "roberta": _TEXT_ENCODER,
    "distilbert": ArchitectureParts(embeddings=("embeddings",), layers="transformer.layer", depth="n_layers"),
    # Every layer attends through the relative position table, normalised by the encoder's LayerNorm; with
    # `conv_kernel_size` (v2 xlarge) a convolution mixes layer 0's input into its output.
    "deberta-v2": ArchitectureParts(
        embeddings=("embeddings", "encoder.rel_embeddings", "encoder.LayerNorm"),
        layers="encoder.layer",
        layer_extras=((0, "encoder.conv"),),
        optional=frozenset({"encoder.rel_embeddings", "encoder.LayerNorm", "encoder.conv"}),
    ),
    # `embeddings_project` maps embedding_size to hidden_size when they differ.
    "electra": ArchitectureParts(
        embeddings=("embeddings", "embeddings_project"),
        layers="encoder.layer",
        optional=frozenset({"embeddings_project"}),
    ),
    "gpt2": ArchitectureParts(embeddings=("wte", "wpe"), layers="h", body_top=("ln_f",), depth="n_layer"),
    # `rotary_emb` holds no parameters, only the position frequencies every layer reads.
    "llama": ArchitectureParts(embeddings=("embed_tokens", "rotary_emb"), layers="layers", body_top=("norm",)),
    "vit": ArchitectureParts(embeddings=("embeddings",), layers="layers", body_top=("layernorm",)),
    # A layer is a stage (a run of residual blocks at one resolution): `depths` lists the blocks per stage.
    "resnet": ArchitectureParts(embeddings=("embedder",), layers="encoder.stages", depth="depths"),
    # A layer is an inverted residual block; the modeling code always builds 16 and the config has no key.
    "mobilenet_v2": ArchitectureParts(embeddings=("conv_stem",), layers="layer", body_top=("conv_1x1",), depth=16),
    "wav2vec2": _WAV2VEC2,
    # WhisperForAudioClassification has no attribute at Whisper's base_model_prefix ("model"), so its base
    # model is the network itself and the encoder sits at `encoder`. The decoder's depth is not counted.
    "whisper": ArchitectureParts(
        embeddings=("encoder.conv1", "encoder.conv2", "encoder.embed_positions"),
        layers="encoder.layers",
        body_top=("encoder.layer_norm",),
        depth="encoder_layers",
    ),
}

# Entries a config flag selects instead of the model type's own, keyed by (model_type, flag) and used when
# the flag is true. Wav2Vec2's stable layer norm layout applies the encoder's layer norm after the last layer.
FLAG_VARIANTS: dict[tuple[str, str], ArchitectureParts] = {
    ("wav2vec2", "do_stable_layer_norm"): ArchitectureParts(
        embeddings=("feature_extractor", "feature_projection", "masked_spec_embed", "encoder.pos_conv_embed"),
        layers="encoder.layers",
        body_top=("encoder.layer_norm", "adapter"),
        optional=frozenset({"masked_spec_embed", "adapter"}),
    ),
}


def is_known_architecture(model_type: str) -> bool:
    """Whether the table names the parts of this model family (otherwise name-matching heuristics must)."""
    return model_type in ARCHITECTURES


def architecture_parts(model_type: str, config: Mapping[str, object]) -> ArchitectureParts | None:
    """The table's entry for a model family as this config builds it; None for a family not in the table.

    `config` is the config.json content (or `PretrainedConfig.to_dict()`).
    """
    for (variant_type, flag), parts in FLAG_VARIANTS.items():
        if variant_type == model_type and config.get(flag) is True:
            return parts
    return ARCHITECTURES.get(model_type)


def count_layers(model_type: str, config: Mapping[str, object]) -> int | None:
    """The number of layers in the stack, read from the config as the table says; None when it does not say.

    Families outside the table are counted by the first of DEPTH_KEYS the config has.
    """
    parts = ARCHITECTURES.get(model_type)
    depth = parts.depth if parts is not None else find_depth_key(config)
    return None if depth is None else read_layer_count(config, depth)


def find_depth_key(config: Mapping[str, object]) -> str | None:
    """The first of DEPTH_KEYS that the config sets to a whole number, for families outside the table."""
    return next((key for key in DEPTH_KEYS if read_layer_count(config, key) is not None), None)


def read_layer_count(config: Mapping[str, object], depth: str | int) -> int | None:
    """The layer count an entry's `depth` gives for this config; None when the config lacks the key."""
    if isinstance(depth, int):
        return depth
    value = config.get(depth)
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, list | tuple):
        return len(value)
    return None
