from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from cli.main import app
from models import catalog
from models.db import session_scope
from models.settings import Settings, get_settings
from tests.processes import REPO_ROOT, service_environment, wait_for


@pytest.fixture
def cli_settings(settings: Settings) -> Settings:
    get_settings.cache_clear()
    return settings


def invoke(settings: Settings, *arguments: str) -> tuple[int, str]:
    environment = {key: value for key, value in service_environment(settings).items() if key.startswith("GRAFT_")}
    get_settings.cache_clear()
    result = CliRunner().invoke(app, list(arguments), env=environment)
    get_settings.cache_clear()
    return result.exit_code, " ".join(result.output.split())  # rich wraps long lines


def test_keys_create_prints_a_working_key_once(cli_settings: Settings) -> None:
    from models import tenants

    code, output = invoke(cli_settings, "keys", "create", "--tenant", "umbrella")
    assert code == 0, output
    [key] = re.findall(r"sk-graft-\S+", output)
    with session_scope(cli_settings.database_url) as session:
        assert tenants.authenticate(session, key) == tenants.find_tenant(session, "umbrella").id


def test_models_add_registers_a_local_folder_and_list_shows_it(cli_settings: Settings, tiny_bert_folder: Path) -> None:
    code, output = invoke(cli_settings, "models", "add", "my-bert", str(tiny_bert_folder))
    assert code == 0, output
    with session_scope(cli_settings.database_url) as session:
        row = catalog.get_base_model(session, "my-bert")
        assert (row.model_type, row.num_layers, row.max_sequence_length) == ("bert", 2, 64)
    code, output = invoke(cli_settings, "models", "list")
    assert "my-bert" in output


def test_models_add_refuses_a_folder_without_safetensors(cli_settings: Settings, tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "bert", "num_hidden_layers": 2}')
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    code, output = invoke(cli_settings, "models", "add", "pickled", str(tmp_path))
    assert code == 2
    assert "safetensors" in output


def test_up_serves_the_api_and_stops_both_processes_on_ctrl_c(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    environment = {key: value for key, value in os.environ.items() if not key.startswith("GRAFT_")}
    environment.update({"GRAFT_DATA_DIR": str(tmp_path / "var"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT)})
    log = tmp_path / "up.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "up", "--port", str(port)],
            env=environment,
            cwd=tmp_path,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: b" ready." in log.read_bytes(), timeout=60, what="the worker of `graft up`")
        key = next(line for line in log.read_text().splitlines() if line.startswith("sk-graft-"))

        def models() -> httpx.Response | None:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/v1/models", headers={"Authorization": f"Bearer {key}"})
            except httpx.TransportError:
                return None

        response = wait_for(models, timeout=30, what="the API of `graft up`")
        assert [m["id"] for m in response.json()["data"]] == ["sentence-transformers/all-MiniLM-L6-v2"]
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
        assert "Warm shutdown" in log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_models_add_with_an_unreachable_hub_id_says_so(cli_settings: Settings) -> None:
    code, output = invoke(cli_settings, "models", "add", "remote", "no-such-org/no-such-model")
    assert code == 2
    assert "neither a local folder nor a reachable hub model" in output
