from __future__ import annotations

import subprocess
import sys

import pytest

from models.architectures import (
    ARCHITECTURES,
    FLAG_VARIANTS,
    architecture_parts,
    count_layers,
    find_depth_key,
    is_known_architecture,
)
from tests.conftest import REPO_ROOT

SERVED_FAMILIES = (
    "bert",
    "distilbert",
    "roberta",
    "deberta-v2",
    "electra",
    "gpt2",
    "llama",
    "vit",
    "resnet",
    "mobilenet_v2",
    "wav2vec2",
    "whisper",
)
ENTRIES = ARCHITECTURES | {f"{model_type} {flag}": parts for (model_type, flag), parts in FLAG_VARIANTS.items()}


@pytest.mark.parametrize("model_type", SERVED_FAMILIES)
def test_every_family_the_service_trains_is_in_the_table(model_type: str) -> None:
    assert is_known_architecture(model_type)


def test_a_family_outside_the_table_is_unknown() -> None:
    assert not is_known_architecture("albert")


@pytest.mark.parametrize("name", list(ENTRIES))
def test_no_entry_names_a_path_twice_or_inside_another(name: str) -> None:
    paths = ENTRIES[name].claimed_paths()
    assert len(set(paths)) == len(paths)
    assert not [(inner, outer) for inner in paths for outer in paths if inner.startswith(outer + ".")]


@pytest.mark.parametrize("name", list(ENTRIES))
def test_optional_paths_are_paths_the_entry_names(name: str) -> None:
    entry = ENTRIES[name]
    assert entry.optional <= set(entry.claimed_paths())
    assert entry.layers not in entry.optional


@pytest.mark.parametrize(
    ("model_type", "config", "expected"),
    [
        ("bert", {"num_hidden_layers": 12}, 12),
        ("gpt2", {"n_layer": 24}, 24),
        ("distilbert", {"n_layers": 6}, 6),
        ("whisper", {"encoder_layers": 4, "decoder_layers": 6, "num_hidden_layers": 4}, 4),
        ("whisper", {"encoder_layers": 32, "decoder_layers": 2}, 32),  # distil-whisper: the decoder is shallower
        ("resnet", {"depths": [3, 4, 6, 3]}, 4),  # a layer is a stage
        ("mobilenet_v2", {"depth_multiplier": 1.0}, 16),  # fixed by the modeling code
        ("falcon", {"num_hidden_layers": 32}, 32),
        ("gpt_neo", {"num_layers": 24}, 24),
        ("bert", {}, None),
        ("falcon", {"num_hidden_layers": True}, None),
        ("falcon", {"hidden_size": 64}, None),
    ],
)
def test_the_layer_count_comes_from_the_key_the_family_uses(
    model_type: str, config: dict[str, object], expected: int | None
) -> None:
    assert count_layers(model_type, config) == expected


def test_outside_the_table_the_first_depth_key_present_counts() -> None:
    assert find_depth_key({"n_layers": 3, "num_layers": 5}) == "num_layers"
    assert find_depth_key({"n_embd": 32}) is None


def test_wav2vec2_stable_layer_norm_moves_the_encoder_norm_above_the_layers() -> None:
    base = architecture_parts("wav2vec2", {"do_stable_layer_norm": False})
    stable = architecture_parts("wav2vec2", {"do_stable_layer_norm": True})
    assert base is not None and stable is not None
    assert "encoder.layer_norm" in base.embeddings and "encoder.layer_norm" not in base.body_top
    assert "encoder.layer_norm" in stable.body_top and "encoder.layer_norm" not in stable.embeddings


def test_a_family_outside_the_table_has_no_entry() -> None:
    assert architecture_parts("albert", {"num_hidden_layers": 12}) is None


def test_the_table_loads_without_torch() -> None:
    check = "import sys, models.architectures; sys.exit('torch' in sys.modules or 'transformers' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", check], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
