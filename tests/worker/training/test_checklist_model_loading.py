"""Reliability checklist item 16: pickled weights and repository code are never executed, whatever a folder holds."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path
from typing import Any

import pytest

from models.errors import InvalidRequest
from models.services import catalog
from models.settings import Settings
from models.storage.database import session_scope
from worker.training.run_spec import RunSpec
from worker.training.speedups.model_pool import TemplateKey
from worker.training.tasks.text_classification import TextClassification


class _WritesMarkerWhenUnpickled:
    """A pickle whose loading opens (so creates) a file: proof that someone unpickled it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def template_key(config: RunSpec) -> TemplateKey:
    return TextClassification().template_key(config, fingerprint="")


def booby_trapped_pickle(marker: Path) -> bytes:
    return pickle.dumps(_WritesMarkerWhenUnpickled(marker))


def folder_needing_remote_code(tiny_bert_folder: Path, target: Path, marker: Path) -> Path:
    """The tiny BERT re-labelled as a custom architecture whose modelling code creates `marker` on import."""
    folder = Path(shutil.copytree(tiny_bert_folder, target))
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config["model_type"] = "graft_custom"
    config["auto_map"] = {
        "AutoConfig": "modeling_custom.CustomConfig",
        "AutoModelForSequenceClassification": "modeling_custom.CustomModel",
    }
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    (folder / "modeling_custom.py").write_text(f"open({str(marker)!r}, 'w').close()\n", encoding="utf-8")
    return folder


@pytest.mark.parametrize(
    "weights_name", ["pytorch_model.bin", "model.pt", "model.pth", "model.ckpt", "pytorch_model.bin.index.json"]
)
def test_registering_a_folder_with_only_pickled_weights_is_refused(
    settings: Settings, tiny_bert_folder: Path, tmp_path: Path, weights_name: str
) -> None:
    folder = Path(shutil.copytree(tiny_bert_folder, tmp_path / "pickled"))
    (folder / "model.safetensors").unlink()
    (folder / weights_name).write_bytes(booby_trapped_pickle(tmp_path / "marker"))
    with pytest.raises(InvalidRequest) as refused, session_scope(settings.database_url) as session:
        catalog.register_base_model(session, "pickled", str(folder))
    assert refused.value.param == "path"
    assert "only safetensors weights are accepted" in refused.value.message
    assert not (tmp_path / "marker").exists()
    with session_scope(settings.database_url) as session:
        assert [row.id for row in catalog.list_base_models(session)] == []


def test_pickled_weights_beside_safetensors_are_never_unpickled(
    make_config: Any, tiny_bert_folder: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "marker"
    folder = Path(shutil.copytree(tiny_bert_folder, tmp_path / "both"))
    for name in ("pytorch_model.bin", "model.pt", "training_args.bin"):
        (folder / name).write_bytes(booby_trapped_pickle(marker))
    config = make_config()
    config = type(config)(**{**config.__dict__, "base_model_location": str(folder)})
    task = TextClassification()
    task.load_processor(config)
    network = task.load_template(template_key(config)).network
    assert network.config.num_labels == 2
    assert not marker.exists()


def test_a_folder_whose_safetensors_vanished_is_not_loaded_from_its_pickle(
    make_config: Any, tiny_bert_folder: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "marker"
    folder = Path(shutil.copytree(tiny_bert_folder, tmp_path / "swapped"))
    (folder / "model.safetensors").unlink()  # registered while it had safetensors, then swapped for a pickle
    (folder / "pytorch_model.bin").write_bytes(booby_trapped_pickle(marker))
    config = make_config()
    config = type(config)(**{**config.__dict__, "base_model_location": str(folder)})
    with pytest.raises(OSError, match="no file named model.safetensors"):
        TextClassification().load_template(template_key(config))
    assert not marker.exists()


def test_a_model_needing_remote_code_fails_to_load_and_its_code_never_runs(
    make_config: Any, tiny_bert_folder: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "marker"
    folder = folder_needing_remote_code(tiny_bert_folder, tmp_path / "custom", marker)
    config = make_config()
    config = type(config)(**{**config.__dict__, "base_model_location": str(folder)})
    assert config.trust_remote_code is False
    with pytest.raises(ValueError, match="contains custom code which must be executed"):
        TextClassification().load_template(template_key(config))
    assert not marker.exists()


def test_registering_a_model_that_needs_remote_code_is_refused(
    settings: Settings, tiny_bert_folder: Path, tmp_path: Path
) -> None:
    folder = folder_needing_remote_code(tiny_bert_folder, tmp_path / "custom", tmp_path / "marker")
    with pytest.raises(InvalidRequest) as refused, session_scope(settings.database_url) as session:
        catalog.register_base_model(session, "custom", str(folder))
    assert refused.value.param == "path"
    assert "needs remote code" in refused.value.message
    assert "auto_map (AutoConfig, AutoModelForSequenceClassification)" in refused.value.message
    assert not (tmp_path / "marker").exists()
    with session_scope(settings.database_url) as session:
        assert [row.id for row in catalog.list_base_models(session)] == []


def test_an_administrator_may_register_a_model_needing_remote_code_explicitly(
    settings: Settings, tiny_bert_folder: Path, tmp_path: Path
) -> None:
    folder = folder_needing_remote_code(tiny_bert_folder, tmp_path / "custom", tmp_path / "marker")
    with session_scope(settings.database_url) as session:
        catalog.register_base_model(session, "custom", str(folder), trust_remote_code=True)
    with session_scope(settings.database_url) as session:
        row = catalog.get_base_model(session, "custom")
        assert (row.model_type, row.trust_remote_code) == ("graft_custom", True)
    assert not (tmp_path / "marker").exists()  # registering reads config.json only; workers run the code


@pytest.fixture
def hub_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    """A fake hub: `config` is what config.json holds, `files` what the repository lists."""
    import huggingface_hub

    hub: dict[str, Any] = {"config": {"model_type": "bert", "num_hidden_layers": 2}, "files": {"model.safetensors"}}

    def download(repo_id: str, filename: str) -> str:
        path = tmp_path / "hub" / repo_id / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(hub["config"]), encoding="utf-8")
        return str(path)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda repo_id, filename: None)
    monkeypatch.setattr(huggingface_hub, "file_exists", lambda repo_id, filename: filename in hub["files"])
    return hub


def test_a_hub_model_with_safetensors_is_registered(settings: Settings, hub_model: dict[str, Any]) -> None:
    with session_scope(settings.database_url) as session:
        row = catalog.register_base_model(session, "hub-bert", "some-org/some-bert")
        assert (row.source, row.location, row.trust_remote_code) == ("hub", "some-org/some-bert", False)


def test_a_hub_model_with_only_pickled_weights_is_refused(settings: Settings, hub_model: dict[str, Any]) -> None:
    hub_model["files"] = {"pytorch_model.bin"}
    with pytest.raises(InvalidRequest) as refused, session_scope(settings.database_url) as session:
        catalog.register_base_model(session, "hub-bert", "some-org/some-bert")
    assert refused.value.param == "path"
    assert "only safetensors weights are accepted" in refused.value.message


def test_a_hub_model_that_needs_remote_code_is_refused(settings: Settings, hub_model: dict[str, Any]) -> None:
    hub_model["config"] = {**hub_model["config"], "auto_map": {"AutoModel": "modeling_custom.CustomModel"}}
    with pytest.raises(InvalidRequest) as refused, session_scope(settings.database_url) as session:
        catalog.register_base_model(session, "hub-custom", "some-org/some-custom")
    assert refused.value.param == "path"
    assert "needs remote code" in refused.value.message
