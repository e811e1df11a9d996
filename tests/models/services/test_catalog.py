"""The catalog's parameter counts, read from safetensors headers at registration."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from models.services import catalog
from models.services.catalog import ParameterCounts, count_parameters
from models.settings import Settings
from models.storage.database import session_scope

# tiny BERT (tests/tiny_models.py): hidden size 32, 96 tokens, 64 positions, 2 token types, 2 layers of
# intermediate size 64. Embeddings: (96 + 64 + 2) × 32 + a LayerNorm's 64. A layer: four 32×32 projections
# with biases (4,224), two LayerNorms (128), 32→64 and 64→32 with biases (2,112 + 2,080): 8,544.
# The pooler: 32×32 + 32.
TINY_BERT_COUNTS = ParameterCounts(embeddings=5184, layers=2 * 8544, top=1056)


def test_registering_a_model_records_its_parameter_counts_from_the_safetensors_header(
    settings: Settings, tiny_bert_folder: Path
) -> None:
    with session_scope(settings.database_url) as session:
        row = catalog.register_base_model(session, "tiny", str(tiny_bert_folder))
        assert (row.embedding_parameters, row.layer_parameters, row.top_parameters) == (5184, 17088, 1056)


def test_integer_buffers_are_not_parameters(tiny_bert_folder: Path) -> None:
    shapes = catalog.read_tensor_shapes(tiny_bert_folder / "model.safetensors")
    assert "embeddings.position_ids" not in shapes  # an int64 buffer transformers may save
    assert count_parameters(shapes, 2) == TINY_BERT_COUNTS


def test_a_sharded_model_is_counted_over_all_of_its_shards(
    settings: Settings, tiny_bert_folder: Path, tmp_path: Path
) -> None:
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(tiny_bert_folder / "model.safetensors"))
    names = sorted(tensors)
    halves = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    folder = tmp_path / "sharded"
    shutil.copytree(tiny_bert_folder, folder)
    (folder / "model.safetensors").unlink()
    for shard, shard_names in halves.items():
        save_file({name: tensors[name] for name in shard_names}, str(folder / shard))
    weight_map = {name: shard for shard, shard_names in halves.items() for name in shard_names}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}), encoding="utf-8")
    with session_scope(settings.database_url) as session:
        row = catalog.register_base_model(session, "sharded", str(folder))
        assert (row.embedding_parameters, row.layer_parameters, row.top_parameters) == (5184, 17088, 1056)


def test_gpt2_style_names_and_pretraining_heads_are_sorted_as_the_strategies_cut_the_network() -> None:
    shapes = {
        "wte.weight": [100, 8],
        "wpe.weight": [16, 8],
        "h.0.attn.c_attn.weight": [8, 24],
        "h.1.attn.c_attn.weight": [8, 24],
        "h.0.mlp.0.weight": [8, 8],  # a numbered list inside a layer belongs to the layer
        "ln_f.weight": [8],
        "cls.predictions.transform.dense.weight": [8, 8],  # BERT's masked-LM head: a classifier drops it
    }
    assert count_parameters(shapes, 2) == ParameterCounts(embeddings=928, layers=448, top=8)


def test_no_stack_of_the_configured_depth_means_no_counts() -> None:
    assert count_parameters({"encoder.layer.0.weight": [4, 4], "encoder.layer.1.weight": [4, 4]}, 3) is None


def test_unreadable_weights_leave_the_counts_unknown(
    settings: Settings, tiny_bert_folder: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "broken"
    shutil.copytree(tiny_bert_folder, folder)
    (folder / "model.safetensors").write_bytes(b"\xff" * 16)  # claims a header longer than the format allows
    with session_scope(settings.database_url) as session:
        row = catalog.register_base_model(session, "broken", str(folder))
        assert row.layer_parameters is None


def test_a_models_depth_is_counted_as_the_anatomy_table_counts_its_layer_stack() -> None:
    def depth(config: dict[str, object]) -> int:
        return catalog.describe_model_config(config, "folder").num_layers

    assert depth({"model_type": "bert", "num_hidden_layers": 6}) == 6
    assert depth({"model_type": "resnet", "depths": [3, 4, 6, 3]}) == 4  # a layer is a stage
    assert depth({"model_type": "mobilenet_v2"}) == 16  # fixed by the modeling code, absent from the config
    assert depth({"model_type": "whisper", "encoder_layers": 4, "decoder_layers": 2}) == 4
    assert depth({"model_type": "unknown-family", "n_layer": 3}) == 3  # outside the table: the usual keys
